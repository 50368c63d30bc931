import { crc32 } from 'node:zlib';
import { CofferError } from '../core/errors';
import { checkEntryName } from './entries';
import type { SourceReader } from './source-reader';

/**
 * The end records and the central directory of a zip, read by coffer itself: the end of central
 * directory record (and the Zip64 locator and record, past 65,535 entries or 4 GiB), then the whole
 * directory in windows of 1 MiB, parsed in one loop. Every entry is validated before
 * `readCentralDirectory` returns (names, types, encryption, compression, sizes, overlaps), and what
 * reading needs is kept in typed-array columns and one buffer of names: for 100,000 entries about
 * 10 MB, with no object per entry.
 */

export const ENTRY_DIRECTORY = 0x1;
export const ENTRY_DEFLATED = 0x2;

export interface CentralDirectory {
  readonly count: number;
  /** Where the directory starts: no entry's data may reach past it. */
  readonly offset: number;
  /** The UTF-8 of every entry's name, back to back: entry i is `names[nameStart[i], nameStart[i + 1])`. */
  readonly names: Buffer;
  readonly nameStart: Uint32Array;
  readonly compressedSize: Float64Array;
  readonly uncompressedSize: Float64Array;
  readonly localHeaderOffset: Float64Array;
  /** Where the next entry's local header (or the directory) starts: the entry's data must end before. */
  readonly dataLimit: Float64Array;
  readonly crc32: Uint32Array;
  /** ENTRY_DIRECTORY, ENTRY_DEFLATED. */
  readonly flags: Uint8Array;
  /** Length of the name as stored (the local header must repeat it). */
  readonly rawNameLength: Uint16Array;
  /** The stored name bytes of the (rare) entries whose name is not stored as its UTF-8 (CP437, Unicode Path field). */
  readonly rawNames: ReadonlyMap<number, Buffer>;
  readonly totalUncompressedSize: number;
  /** Finds entries by name. */
  readonly paths: PathTable;
}

const EOCD_SIGNATURE = 0x06054b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const ZIP64_EOCD_SIZE = 56;
const CENTRAL_HEADER_SIGNATURE = 0x02014b50;
const CENTRAL_HEADER_SIZE = 46;
const MAX_COMMENT = 0xffff;
export const LOCAL_HEADER_SIGNATURE = 0x04034b50;
export const LOCAL_HEADER_FIXED_SIZE = 30;

const FLAG_ENCRYPTED = 0x1;
const FLAG_STRONG_ENCRYPTION = 0x40;
const FLAG_UTF8 = 0x800;
const EXTRA_ZIP64 = 0x0001;
const EXTRA_UNICODE_PATH = 0x7075;
const U32_MAX = 0xffffffff;

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const DOS_DIRECTORY = 0x10;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
/** Deflate cannot expand data more than ~1032:1; declared sizes beyond that are lies. */
const MAX_DEFLATE_RATIO = 1032;

// prettier-ignore
const CP437 = '\u0000☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼ !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~⌂ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ ';

/** Names without the UTF-8 flag are CP437 (the zip specification's default), as Info-ZIP and yauzl read them. */
function decodeCp437(raw: Buffer): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) out += CP437[raw[i]];
  return out;
}

function readUInt64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + 4) * 0x100000000 + buf.readUInt32LE(at);
}

function corrupt(problem: string): CofferError {
  return new CofferError('E_ARCHIVE_INVALID', `invalid zip archive: corrupt central directory (${problem})`);
}

function truncatedDirectory(): CofferError {
  return new CofferError('E_ARCHIVE_TRUNCATED', 'zip archive is truncated: the central directory extends past the end of the file');
}

export function unsafeEntry(name: string, reason: string): CofferError {
  return new CofferError('E_ARCHIVE_UNSAFE_ENTRY', `unsafe zip entry '${printableName(name)}': ${reason}`, { details: { entry: name, reason } });
}

/** Names may hold control characters; keep messages on one line. */
export function printableName(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[\x00-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

async function readExactly(reader: SourceReader, position: number, length: number): Promise<Buffer | undefined> {
  const buf = Buffer.allocUnsafe(length);
  return (await reader.readAt(buf, 0, length, position)) === length ? buf : undefined;
}

interface EndRecord {
  count: number;
  offset: number;
  /** Where the records after the directory start (Zip64 end record, or the end record). */
  end: number;
}

async function readEndRecord(reader: SourceReader, size: number): Promise<EndRecord> {
  if (size === 0) throw new CofferError('E_ARCHIVE_INVALID', 'not a zip archive: the file is empty');
  const tailLength = Math.min(size, ZIP64_LOCATOR_SIZE + EOCD_SIZE + MAX_COMMENT);
  const tailStart = size - tailLength;
  const tail = (await readExactly(reader, tailStart, tailLength))!;
  // Backwards: the last signature is the end record, unless the comment holds one (then its length is wrong).
  for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
    if (tail.readUInt32LE(i) !== EOCD_SIGNATURE) continue;
    if (tail.readUInt16LE(i + 20) !== tailLength - i - EOCD_SIZE) {
      throw new CofferError('E_ARCHIVE_INVALID', 'invalid zip archive: unexpected bytes after the end of central directory record');
    }
    let disk = tail.readUInt16LE(i + 4);
    let count = tail.readUInt16LE(i + 10);
    let offset = tail.readUInt32LE(i + 16);
    let end = tailStart + i;
    if (i >= ZIP64_LOCATOR_SIZE && tail.readUInt32LE(i - ZIP64_LOCATOR_SIZE) === ZIP64_LOCATOR_SIGNATURE) {
      const at = readUInt64(tail, i - ZIP64_LOCATOR_SIZE + 8);
      const record = at + ZIP64_EOCD_SIZE <= size ? await readExactly(reader, at, ZIP64_EOCD_SIZE) : undefined;
      if (record === undefined) throw truncatedDirectory();
      if (record.readUInt32LE(0) !== ZIP64_EOCD_SIGNATURE) throw corrupt('invalid zip64 end of central directory record signature');
      disk = record.readUInt32LE(16);
      count = readUInt64(record, 32);
      offset = readUInt64(record, 48);
      end = at;
    }
    if (disk !== 0) throw corrupt(`multi-disk zip files are not supported: found disk number: ${disk}`);
    return { count, offset, end };
  }
  // A zip starts with a local header; if this file does, it is a zip that lost its end.
  const head = await readExactly(reader, 0, Math.min(4, size));
  if (head !== undefined && head.length === 4 && head.readUInt32LE(0) === LOCAL_HEADER_SIGNATURE) {
    throw new CofferError('E_ARCHIVE_TRUNCATED', 'zip archive is truncated: end of central directory not found');
  }
  throw new CofferError('E_ARCHIVE_INVALID', 'not a zip archive: end of central directory not found');
}

const WINDOW = 1024 * 1024;

/** At least `length` bytes of the directory at `position` (fewer only at its end), up to WINDOW. */
async function readWindow(reader: SourceReader, position: number, end: number, length: number): Promise<Buffer> {
  const n = Math.min(end - position, Math.max(WINDOW, length));
  const buf = await reader.readRange(position, n);
  if (buf.length !== n) throw truncatedDirectory();
  return buf;
}

/** Grows by doubling; `bytes()` is the exact-size copy. */
class ByteBuilder {
  private buf: Buffer;
  length = 0;
  constructor(initial: number) {
    this.buf = Buffer.allocUnsafe(Math.max(64, initial));
  }
  push(from: Buffer, start: number, end: number): void {
    this.reserve(end - start);
    this.length += from.copy(this.buf, this.length, start, end);
  }
  pushString(s: string): void {
    this.reserve(Buffer.byteLength(s));
    this.length += this.buf.write(s, this.length);
  }
  get current(): Buffer {
    return this.buf;
  }
  /** The bytes written; copied to their exact size only when that saves more than an eighth. */
  bytes(): Buffer {
    const used = this.buf.subarray(0, this.length);
    return this.buf.length - this.length > this.buf.length / 8 ? Buffer.from(used) : used;
  }
  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(bigger, 0, 0, this.length);
    this.buf = bigger;
  }
}

/**
 * Reads and validates the whole central directory. Failures: E_ARCHIVE_INVALID (not a zip, corrupt
 * records), E_ARCHIVE_TRUNCATED (cut off), E_ARCHIVE_UNSAFE_ENTRY (naming the entry and the reason).
 */
export async function readCentralDirectory(reader: SourceReader, size: number, allowedTopLevel: readonly string[]): Promise<CentralDirectory> {
  const { count, offset, end } = await readEndRecord(reader, size);
  if (offset + (count > 0 ? CENTRAL_HEADER_SIZE : 0) > size) throw truncatedDirectory();
  if (offset > end) throw corrupt('the directory starts after its end record');
  // Each record is at least 46 bytes: a count the directory cannot hold is refused before allocating for it.
  if (count * CENTRAL_HEADER_SIZE > end - offset) throw corrupt(`${count} entries do not fit in ${end - offset} bytes`);
  // Read in windows of 1 MiB (or one record, if larger), so a large directory is never one big buffer.
  let base = offset;
  let dir = await readWindow(reader, base, end, CENTRAL_HEADER_SIZE);
  const short = (at: number, length: number): boolean => at + length > dir.length && base + dir.length < end;
  const slide = async (at: number, length: number): Promise<number> => {
    base += at;
    dir = await readWindow(reader, base, end, length);
    return 0;
  };

  const nameStart = new Uint32Array(count + 1);
  const compressedSize = new Float64Array(count);
  const uncompressedSize = new Float64Array(count);
  const localHeaderOffset = new Float64Array(count);
  const crcs = new Uint32Array(count);
  const flags = new Uint8Array(count);
  const rawNameLength = new Uint16Array(count);
  const rawNames = new Map<number, Buffer>();
  const names = new ByteBuilder(Math.min(end - offset - count * CENTRAL_HEADER_SIZE, count * 64));
  const final: { names?: Buffer } = {};
  const paths = new PathTable(() => final.names ?? names.current, nameStart, count + 16);
  let total = 0;
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (short(p, CENTRAL_HEADER_SIZE)) p = await slide(p, CENTRAL_HEADER_SIZE);
    if (p + CENTRAL_HEADER_SIZE > dir.length) throw corrupt(`it ends after ${i} of its ${count} entries`);
    const signature = dir.readUInt32LE(p);
    if (signature !== CENTRAL_HEADER_SIGNATURE) throw corrupt(`invalid central directory file header signature: 0x${signature.toString(16)}`);
    const bitFlag = dir.readUInt16LE(p + 8);
    const method = dir.readUInt16LE(p + 10);
    const crc = dir.readUInt32LE(p + 16);
    let csize = dir.readUInt32LE(p + 20);
    let usize = dir.readUInt32LE(p + 24);
    const nameLength = dir.readUInt16LE(p + 28);
    const extraLength = dir.readUInt16LE(p + 30);
    const commentLength = dir.readUInt16LE(p + 32);
    const attributes = dir.readUInt32LE(p + 38);
    let lho = dir.readUInt32LE(p + 42);
    const recordLength = CENTRAL_HEADER_SIZE + nameLength + extraLength + commentLength;
    if (short(p, recordLength)) p = await slide(p, recordLength);
    const nameAt = p + CENTRAL_HEADER_SIZE;
    const extraAt = nameAt + nameLength;
    const next = extraAt + extraLength + commentLength;
    if (next > dir.length) throw corrupt(`entry ${i + 1} runs past the end of the directory`);

    let unicodeName: string | undefined;
    for (let x = extraAt; x < extraAt + extraLength - 3; ) {
      const id = dir.readUInt16LE(x);
      const dataAt = x + 4;
      const dataEnd = dataAt + dir.readUInt16LE(x + 2);
      if (dataEnd > extraAt + extraLength) throw corrupt('extra field length exceeds extra field buffer size');
      if (id === EXTRA_ZIP64) {
        let at = dataAt;
        const take = (what: string): number => {
          if (at + 8 > dataEnd) throw corrupt(`zip64 extended information extra field does not include ${what}`);
          const v = readUInt64(dir, at);
          at += 8;
          return v;
        };
        if (usize === U32_MAX) usize = take('uncompressed size');
        if (csize === U32_MAX) csize = take('compressed size');
        if (lho === U32_MAX) lho = take('relative header offset');
      } else if (id === EXTRA_UNICODE_PATH && unicodeName === undefined && dataEnd - dataAt >= 6 && dir[dataAt] === 1) {
        // Info-ZIP Unicode Path: used only while its CRC matches the stored name, as the field's specification says.
        if (crc32(dir.subarray(nameAt, extraAt)) === dir.readUInt32LE(dataAt + 1)) unicodeName = dir.toString('utf8', dataAt + 5, dataEnd);
      }
      x = dataEnd;
    }

    const raw = dir.subarray(nameAt, extraAt);
    const name = unicodeName ?? ((bitFlag & FLAG_UTF8) !== 0 ? dir.toString('utf8', nameAt, extraAt) : decodeCp437(raw));
    const isDirectory = name.endsWith('/');
    const reason = checkEntryName(name, allowedTopLevel) ?? typeProblem(attributes, isDirectory, usize) ?? dataProblem(bitFlag, method, csize, usize);
    if (reason !== null) throw unsafeEntry(name, reason);

    const utf8 = (bitFlag & FLAG_UTF8) !== 0 && unicodeName === undefined ? !name.includes('\ufffd') : raw.length === Buffer.byteLength(name) && raw.toString('utf8') === name;
    if (utf8) names.push(dir, nameAt, extraAt);
    else {
      names.pushString(name);
      rawNames.set(i, Buffer.from(raw));
    }
    if (names.length > U32_MAX) throw corrupt('the names add up to more than 4 GiB');
    nameStart[i + 1] = names.length;
    const clash = paths.add(i);
    if (clash !== null) throw unsafeEntry(name, clash);
    compressedSize[i] = csize;
    uncompressedSize[i] = usize;
    localHeaderOffset[i] = lho;
    crcs[i] = crc;
    rawNameLength[i] = nameLength;
    flags[i] = (isDirectory ? ENTRY_DIRECTORY : 0) | (method === METHOD_DEFLATED ? ENTRY_DEFLATED : 0);
    total += usize;
    p = next;
  }
  const nameBytes = names.bytes();
  final.names = nameBytes;
  const nameOf = (i: number): string => nameBytes.toString('utf8', nameStart[i], nameStart[i + 1]);
  const dataLimit = dataLimits({ count, offset, localHeaderOffset, compressedSize, rawNameLength, nameOf });
  return {
    count,
    offset,
    names: nameBytes,
    nameStart,
    compressedSize,
    uncompressedSize,
    localHeaderOffset,
    dataLimit,
    crc32: crcs,
    flags,
    rawNameLength,
    rawNames,
    totalUncompressedSize: total,
    paths,
  };
}

/** Only regular files and directories can be extracted safely; links could point anywhere. */
function typeProblem(attributes: number, isDirectory: boolean, uncompressedSize: number): string | null {
  const type = (attributes >>> 16) & S_IFMT;
  if (type === S_IFLNK) return 'symbolic link';
  if (type !== 0 && type !== S_IFREG && type !== S_IFDIR) return `special file (type 0o${type.toString(8)})`;
  const marksDirectory = type === S_IFDIR || (attributes & DOS_DIRECTORY) !== 0;
  if (marksDirectory && !isDirectory) return 'directory attributes on a name without a trailing slash';
  if (isDirectory && uncompressedSize !== 0) return 'directory entry carries data';
  return null;
}

function dataProblem(bitFlag: number, method: number, compressedSize: number, uncompressedSize: number): string | null {
  if ((bitFlag & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) !== 0) return 'encrypted entry';
  if (method === METHOD_STORED) {
    if (compressedSize !== uncompressedSize) {
      return `stored entry declares ${compressedSize} compressed but ${uncompressedSize} uncompressed bytes`;
    }
    return null;
  }
  if (method !== METHOD_DEFLATED) return `unsupported compression method ${method}`;
  if (uncompressedSize > (compressedSize + 1) * MAX_DEFLATE_RATIO) {
    return `declares ${uncompressedSize} bytes from ${compressedSize} compressed bytes, more than deflate can produce`;
  }
  return null;
}

/**
 * Refuses entries whose local header and data overlap another entry or the central directory: that is
 * how "overlapping" zip bombs make many large entries out of one small compressed block. The bound used
 * here is the smallest the entry can occupy; reading checks the real data start against the limit.
 */
function dataLimits(d: {
  count: number;
  offset: number;
  localHeaderOffset: Float64Array;
  compressedSize: Float64Array;
  rawNameLength: Uint16Array;
  nameOf: (i: number) => string;
}): Float64Array {
  const { count, localHeaderOffset: lho } = d;
  const limits = new Float64Array(count);
  const byOffset = new Uint32Array(count);
  for (let i = 0; i < count; i++) byOffset[i] = i;
  byOffset.sort((a, b) => lho[a] - lho[b] || a - b);
  for (let k = 0; k < count; k++) {
    const index = byOffset[k];
    const next = k + 1 < count ? byOffset[k + 1] : -1;
    const limit = next === -1 ? d.offset : lho[next];
    const minimalEnd = lho[index] + LOCAL_HEADER_FIXED_SIZE + d.rawNameLength[index] + d.compressedSize[index];
    if (minimalEnd > limit) {
      const what = next === -1 ? 'the central directory' : `entry '${d.nameOf(next)}'`;
      throw unsafeEntry(d.nameOf(index), `its data overlaps ${what}`);
    }
    limits[index] = limit;
  }
  return limits;
}

const PATH_FILE = 1;
const PATH_DIRECTORY = 2;
const PATH_IMPLIED_DIRECTORY = 3;
const SLASH = 0x2f;
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * Every path of the archive (entry names without a trailing slash, and every parent folder they imply)
 * in an open-addressing table over FNV-1a hashes of the UTF-8 bytes, each path stored as (entry,
 * length): a prefix of that entry's name in the names buffer. It refuses what EntryNameRegistry
 * refuses (exact duplicates, a file beside a directory of the same name, a file used as a parent), with
 * the same reasons, and then finds entries by name; no string is kept per entry.
 */
export class PathTable {
  private entry: Int32Array;
  private hash: Uint32Array;
  private length: Uint16Array;
  private kind: Uint8Array;
  private mask: number;
  private used = 0;

  /** `names()` is the current names buffer (it grows while the directory is read). */
  constructor(
    private readonly names: () => Buffer,
    private readonly nameStart: Uint32Array,
    expected: number,
  ) {
    let size = 64;
    while (size < expected * 2) size *= 2;
    this.entry = new Int32Array(size);
    this.hash = new Uint32Array(size);
    this.length = new Uint16Array(size);
    this.kind = new Uint8Array(size);
    this.mask = size - 1;
  }

  /** Records entry `index` (its name already in the names buffer); returns why it clashes, or null. */
  add(index: number): string | null {
    const buf = this.names();
    const start = this.nameStart[index];
    const end = this.nameStart[index + 1];
    const isDir = end > start && buf[end - 1] === SLASH;
    const pathEnd = isDir ? end - 1 : end;
    // One pass: the hash of each parent prefix on the way to the hash of the whole path.
    let h = FNV_OFFSET;
    let depth = 0;
    for (let i = start; i < pathEnd; i++) {
      if (buf[i] === SLASH) {
        if (depth === parents.length) growParents();
        parents[depth] = i - start;
        parentHashes[depth++] = h >>> 0;
      }
      h = Math.imul(h ^ buf[i], FNV_PRIME);
    }
    const hash = h >>> 0;
    const pathLength = pathEnd - start;
    const own = this.find(buf, start, pathLength, hash);
    if (own !== -1) {
      const kind = this.kind[own];
      const path = (): string => buf.toString('utf8', start, pathEnd);
      if (!isDir) return kind === PATH_FILE ? 'duplicate name' : `file clashes with directory '${path()}/'`;
      if (kind === PATH_DIRECTORY) return 'duplicate name';
      if (kind === PATH_FILE) return `directory clashes with file '${path()}'`;
    }
    for (let k = 0; k < depth; k++) {
      const slot = this.find(buf, start, parents[k], parentHashes[k]);
      if (slot !== -1 && this.kind[slot] === PATH_FILE) return `parent '${buf.toString('utf8', start, start + parents[k])}' is a file`;
    }
    if (own !== -1) {
      // An explicit directory entry for a folder an earlier name implied.
      this.entry[own] = index;
      this.kind[own] = PATH_DIRECTORY;
    } else this.insert(hash, index, pathLength, isDir ? PATH_DIRECTORY : PATH_FILE);
    for (let k = 0; k < depth; k++) {
      if (this.find(buf, start, parents[k], parentHashes[k]) === -1) this.insert(parentHashes[k], index, parents[k], PATH_IMPLIED_DIRECTORY);
    }
    return null;
  }

  /** The index of the entry named `name`, or -1. */
  lookup(name: string): number {
    const key = Buffer.from(name, 'utf8');
    const isDir = key.length > 0 && key[key.length - 1] === SLASH;
    const pathLength = isDir ? key.length - 1 : key.length;
    let h = FNV_OFFSET;
    for (let i = 0; i < pathLength; i++) h = Math.imul(h ^ key[i], FNV_PRIME);
    const hash = h >>> 0;
    for (let slot = hash & this.mask; this.kind[slot] !== 0; slot = (slot + 1) & this.mask) {
      if (this.hash[slot] !== hash || this.length[slot] !== pathLength) continue;
      const e = this.entry[slot];
      if (!sameBytes(key, 0, this.names(), this.nameStart[e], pathLength)) continue;
      const kind = this.kind[slot];
      return (isDir ? kind === PATH_DIRECTORY : kind === PATH_FILE) ? e : -1;
    }
    return -1;
  }

  private find(buf: Buffer, start: number, length: number, hash: number): number {
    for (let slot = hash & this.mask; this.kind[slot] !== 0; slot = (slot + 1) & this.mask) {
      if (this.hash[slot] !== hash || this.length[slot] !== length) continue;
      if (sameBytes(buf, start, buf, this.nameStart[this.entry[slot]], length)) return slot;
    }
    return -1;
  }

  private insert(hash: number, entry: number, length: number, kind: number): void {
    if ((this.used + 1) * 2 > this.mask + 1) this.grow();
    let slot = hash & this.mask;
    while (this.kind[slot] !== 0) slot = (slot + 1) & this.mask;
    this.entry[slot] = entry;
    this.hash[slot] = hash;
    this.length[slot] = length;
    this.kind[slot] = kind;
    this.used++;
  }

  private grow(): void {
    const { entry, hash, length, kind } = this;
    const size = (this.mask + 1) * 2;
    this.entry = new Int32Array(size);
    this.hash = new Uint32Array(size);
    this.length = new Uint16Array(size);
    this.kind = new Uint8Array(size);
    this.mask = size - 1;
    this.used = 0;
    for (let slot = 0; slot < kind.length; slot++) if (kind[slot] !== 0) this.insert(hash[slot], entry[slot], length[slot], kind[slot]);
  }
}

/** Scratch space for PathTable.add: where each parent prefix of the current name ends, and its hash. */
let parents = new Int32Array(64);
let parentHashes = new Uint32Array(64);
function growParents(): void {
  const p = new Int32Array(parents.length * 2);
  p.set(parents);
  parents = p;
  const h = new Uint32Array(parentHashes.length * 2);
  h.set(parentHashes);
  parentHashes = h;
}

function sameBytes(a: Buffer, aStart: number, b: Buffer, bStart: number, length: number): boolean {
  for (let i = length - 1; i >= 0; i--) if (a[aStart + i] !== b[bStart + i]) return false;
  return true;
}
