import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { constants as zlibConstants, crc32, createInflateRaw, inflateRawSync } from 'node:zlib';
import { CofferError, errorMessage, isCofferError, type ErrorCode } from '../core/errors';
import type { RandomAccessSource } from '../core/types';
import { ENTRY_DEFLATED, ENTRY_DIRECTORY, LOCAL_HEADER_FIXED_SIZE, LOCAL_HEADER_SIGNATURE, printableName, readCentralDirectory, unsafeEntry, type CentralDirectory } from './central-directory';
import { SourceReader } from './source-reader';

const INFLATE_CHUNK_SIZE = 256 * 1024;

/**
 * Entries of at most this many declared bytes are read by `readEntryBuffer` in one piece: the local
 * header and data come from the reader's block cache, are inflated by one synchronous zlib call whose
 * output is capped at the declared size, and checked with one CRC-32, so a small upload costs a few
 * microseconds instead of a stream pipeline, an inflate stream and their abort signals. Larger entries
 * are streamed.
 */
export const SMALL_ENTRY_BYTES = 64 * 1024;
/**
 * Deflate never needs much more room than the data it holds (5 bytes a 64 KiB stored block): an entry
 * declaring a small size but more stored bytes than this is read as a stream, so a lie in the central
 * directory cannot make a small read allocate the rest of the archive.
 */
const SMALL_ENTRY_STORED_BYTES = SMALL_ENTRY_BYTES + 1024;

export interface ZipEntryInfo {
  readonly name: string;
  readonly compressedSize: number;
  /** Declared size; reading the entry fails unless the real size is exactly this. */
  readonly uncompressedSize: number;
  readonly isDirectory: boolean;
  readonly crc32: number;
}

export interface OpenZipOptions {
  /** The only names the first path segment may have, e.g. ARCHIVE_TOP_LEVEL. */
  allowedTopLevel: readonly string[];
}

export interface ZipArchive {
  /** How many entries the archive has. */
  readonly entryCount: number;
  /**
   * The entries in central-directory order, whose name starts with `prefix` when given. Each
   * ZipEntryInfo is made as the iteration reaches it and kept by nobody: for 100,000 entries this is
   * the way to walk the archive.
   */
  list(prefix?: string): IterableIterator<ZipEntryInfo>;
  /**
   * Every entry, in central-directory order, as one array made on first use and kept: about 150
   * bytes an entry. Code that walks a large archive uses `list()`.
   */
  readonly entries: readonly ZipEntryInfo[];
  /** Sum of the declared sizes: what extracting everything writes (check free space against it). */
  readonly totalUncompressedSize: number;
  has(name: string): boolean;
  /**
   * The entry's bytes, streamed. The stream fails with E_ARCHIVE_UNSAFE_ENTRY as soon as the data
   * exceeds the declared size, and at its end with E_ARCHIVE_INVALID if it was shorter or
   * E_ARCHIVE_CHECKSUM if the CRC-32 differs: treat what was read as bad unless the stream ends cleanly.
   */
  openEntry(name: string): Promise<Readable>;
  /** The whole entry in memory, for small entries; refused if its declared size exceeds `maxBytes`. */
  readEntryBuffer(name: string, maxBytes: number): Promise<Buffer>;
  /** Closes the archive and its source. */
  close(): Promise<void>;
}

/**
 * Opens a zip and validates its whole central directory before returning: unsafe names, links and
 * special files, entries outside `allowedTopLevel`, duplicates, encryption, unknown compression,
 * impossible or overlapping sizes. The archive takes ownership of `source`: it is closed by
 * `ZipArchive.close()`, or here if opening fails.
 */
export async function openZip(source: RandomAccessSource, opts: OpenZipOptions): Promise<ZipArchive> {
  const reader = new SourceReader(source);
  try {
    const directory = await readCentralDirectory(reader, source.size, opts.allowedTopLevel);
    return new HardenedZipArchive(reader, source, directory);
  } catch (err) {
    await source.close().catch(() => undefined);
    throw isCofferError(err) ? err : new CofferError('E_ARCHIVE_INVALID', `invalid zip archive: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------------
// The archive and entry streams

class HardenedZipArchive implements ZipArchive {
  readonly entryCount: number;
  readonly totalUncompressedSize: number;
  private readonly openStreams = new Set<Readable>();
  private allEntries: readonly ZipEntryInfo[] | undefined;
  private lastName: string | undefined;
  private lastIndex = -1;
  private closed = false;

  constructor(
    private readonly reader: SourceReader,
    private readonly source: RandomAccessSource,
    private readonly dir: CentralDirectory,
  ) {
    this.entryCount = dir.count;
    this.totalUncompressedSize = dir.totalUncompressedSize;
  }

  get entries(): readonly ZipEntryInfo[] {
    if (this.allEntries === undefined) this.allEntries = Object.freeze(Array.from(this.list()));
    return this.allEntries;
  }

  *list(prefix?: string): IterableIterator<ZipEntryInfo> {
    const { names, nameStart, count } = this.dir;
    const key = prefix === undefined || prefix === '' ? undefined : Buffer.from(prefix, 'utf8');
    for (let i = 0; i < count; i++) {
      if (key !== undefined) {
        const start = nameStart[i];
        if (nameStart[i + 1] - start < key.length || names.compare(key, 0, key.length, start, start + key.length) !== 0) continue;
      }
      yield this.info(i);
    }
  }

  has(name: string): boolean {
    return this.dir.paths.lookup(name) !== -1;
  }

  async openEntry(name: string): Promise<Readable> {
    const index = this.index(name);
    const info = this.info(index);
    if (info.isDirectory) throw new CofferError('E_USAGE', `zip entry '${printableName(name)}' is a directory`);
    let raw: Readable;
    try {
      raw = await this.openRaw(index);
    } catch (err) {
      throw entryReadError(name, err);
    }
    return this.track(verifiedStream(info, raw));
  }

  async readEntryBuffer(name: string, maxBytes: number): Promise<Buffer> {
    const index = this.index(name);
    const size = this.dir.uncompressedSize[index];
    if (size > maxBytes) {
      throw unsafeEntry(name, `declares ${size} bytes, more than the ${maxBytes} allowed`);
    }
    if (size <= SMALL_ENTRY_BYTES && this.dir.compressedSize[index] <= SMALL_ENTRY_STORED_BYTES && (this.dir.flags[index] & ENTRY_DIRECTORY) === 0) {
      try {
        return await this.readSmall(index);
      } catch (err) {
        throw entryReadError(name, err);
      }
    }
    const chunks: Buffer[] = [];
    for await (const chunk of await this.openEntry(name)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.openStreams) stream.destroy();
    await this.source.close();
  }

  private name(index: number): string {
    const name = this.dir.names.toString('utf8', this.dir.nameStart[index], this.dir.nameStart[index + 1]);
    // Callers read the entry list() just gave them: that name is found without hashing.
    this.lastName = name;
    this.lastIndex = index;
    return name;
  }

  private info(index: number): ZipEntryInfo {
    const d = this.dir;
    return Object.freeze({
      name: this.name(index),
      compressedSize: d.compressedSize[index],
      uncompressedSize: d.uncompressedSize[index],
      isDirectory: (d.flags[index] & ENTRY_DIRECTORY) !== 0,
      crc32: d.crc32[index],
    });
  }

  private index(name: string): number {
    if (this.closed) throw new CofferError('E_INTERNAL', 'zip archive is already closed');
    const index = name === this.lastName ? this.lastIndex : this.dir.paths.lookup(name);
    if (index === -1) throw new CofferError('E_ARCHIVE_INVALID', `zip archive has no entry '${printableName(name)}'`);
    return index;
  }

  /**
   * Reads the local header, checks it agrees with the central directory and that the data stays
   * inside the entry's bounds; returns where the data starts. Failures are plain errors, classified
   * by entryReadError.
   */
  private async dataStart(index: number): Promise<number> {
    const header = this.headerBuffer(index);
    if ((await this.reader.readAt(header, 0, header.length, this.dir.localHeaderOffset[index])) < header.length) throw new Error('unexpected EOF');
    return this.checkHeader(index, header);
  }

  private headerBuffer(index: number): Buffer {
    return Buffer.allocUnsafe(LOCAL_HEADER_FIXED_SIZE + this.dir.rawNameLength[index]);
  }

  private checkHeader(index: number, header: Buffer): number {
    const d = this.dir;
    const localHeaderOffset = d.localHeaderOffset[index];
    const rawNameLength = d.rawNameLength[index];
    const compressedSize = d.compressedSize[index];
    const signature = header.readUInt32LE(0);
    if (signature !== LOCAL_HEADER_SIGNATURE) throw new Error(`invalid local file header signature: 0x${signature.toString(16)}`);
    const nameLength = header.readUInt16LE(26);
    const rawName = d.rawNames.get(index);
    const nameMatches =
      nameLength === rawNameLength &&
      (rawName === undefined
        ? d.names.compare(header, LOCAL_HEADER_FIXED_SIZE, header.length, d.nameStart[index], d.nameStart[index + 1]) === 0
        : header.subarray(LOCAL_HEADER_FIXED_SIZE).equals(rawName));
    if (!nameMatches) throw unsafeEntry(this.name(index), 'local header names a different file than the central directory');
    const start = localHeaderOffset + LOCAL_HEADER_FIXED_SIZE + nameLength + header.readUInt16LE(28);
    if (start + compressedSize > this.source.size) {
      throw new Error(`file data overflows file bounds: ${start} + ${compressedSize} > ${this.source.size}`);
    }
    if (start + compressedSize > d.dataLimit[index]) {
      throw unsafeEntry(this.name(index), 'its data overlaps the next entry or the central directory');
    }
    return start;
  }

  /** Opens the data range of an entry as a stream, inflated where it is deflated. */
  private async openRaw(index: number): Promise<Readable> {
    const start = await this.dataStart(index);
    const stored = this.source.createReadStream(start, start + this.dir.compressedSize[index]);
    if ((this.dir.flags[index] & ENTRY_DEFLATED) === 0) return stored;
    // zlib's default output chunk is 16 KiB: every chunk is a round trip from the threadpool to the
    // main thread, and larger ones cut those sixteenfold. An entry declared smaller than a chunk gets
    // one output buffer of its size and a byte (the inflater allocates one at once, whatever comes out;
    // a 100 KiB upload need not cost 256 KiB). A declared size that lies is still caught by the checks
    // the caller puts after this stream: the first byte past it fails the entry.
    const chunkSize = Math.min(INFLATE_CHUNK_SIZE, Math.max(zlibConstants.Z_MIN_CHUNK, this.dir.uncompressedSize[index] + 1));
    return pipeline(stored, createInflateRaw({ chunkSize }), () => undefined);
  }

  /**
   * A small entry in one piece, with the stream path's checks: the output is capped at the declared
   * size (a bomb stops there), then its length and CRC-32 must be exactly what was declared.
   */
  private async readSmall(index: number): Promise<Buffer> {
    const d = this.dir;
    // Without waiting when the blocks are cached, as they mostly are for neighbouring small entries.
    const header = this.headerBuffer(index);
    const got = this.reader.readAtSync(header, 0, header.length, d.localHeaderOffset[index]);
    let start: number;
    if (got === undefined) start = await this.dataStart(index);
    else if (got < header.length) throw new Error('unexpected EOF');
    else start = this.checkHeader(index, header);
    const data = Buffer.allocUnsafe(d.compressedSize[index]);
    const read = this.reader.readAtSync(data, 0, data.length, start) ?? (await this.reader.readAt(data, 0, data.length, start));
    if (read < data.length) throw new Error('unexpected EOF');
    const size = d.uncompressedSize[index];
    let out: Buffer;
    if ((d.flags[index] & ENTRY_DEFLATED) === 0) {
      out = data;
    } else {
      try {
        // maxOutputLength must be at least 1; one byte more than an empty entry declares is still refused below.
        // One output buffer of the declared size and a byte (zlib's default is a fresh 16 KiB buffer per
        // call, which for 1 KB entries is most of the garbage); zlib takes no less than 64 bytes.
        out = inflateRawSync(data, { maxOutputLength: Math.max(1, size), chunkSize: Math.max(64, size + 1) });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw expandsBeyond(this.info(index));
        throw err;
      }
    }
    if (out.length !== size || crc32(out) !== d.crc32[index]) checkComplete(this.info(index), out.length, out.length > size ? 0 : crc32(out));
    return out;
  }

  private track(stream: Readable): Readable {
    this.openStreams.add(stream);
    stream.once('close', () => this.openStreams.delete(stream));
    return stream;
  }
}

function expandsBeyond(info: ZipEntryInfo): CofferError {
  return unsafeEntry(info.name, `data expands beyond its declared size of ${info.uncompressedSize} bytes`);
}

/** The end-of-entry checks shared by both paths: exactly the declared size, and the declared CRC-32. */
function checkComplete(info: ZipEntryInfo, bytes: number, crc: number): void {
  const { name, uncompressedSize, crc32: expected } = info;
  if (bytes > uncompressedSize) throw expandsBeyond(info);
  if (bytes < uncompressedSize) {
    throw entryError('E_ARCHIVE_INVALID', name, `has ${bytes} bytes, fewer than the ${uncompressedSize} declared`);
  }
  if (crc !== expected) {
    throw entryError('E_ARCHIVE_CHECKSUM', name, `CRC-32 mismatch (expected ${hex32(expected)}, got ${hex32(crc)})`);
  }
}

/** Pipes an entry's (inflated) data through the size and CRC check, translating every failure to a CofferError. */
function verifiedStream(info: ZipEntryInfo, raw: Readable): Readable {
  const verifier = new EntryVerifier(info);
  raw.on('error', (err: unknown) => verifier.destroy(entryReadError(info.name, err)));
  verifier.once('close', () => {
    // The consumer stopped early or the check failed: stop reading and inflating.
    if (!raw.readableEnded) raw.destroy();
  });
  raw.pipe(verifier);
  return verifier;
}

/**
 * Enforces that the entry has exactly its declared size (failing as soon as it grows past it, so a
 * zip bomb never inflates beyond what the central directory announced) and the declared CRC-32.
 */
class EntryVerifier extends Transform {
  private bytes = 0;
  private crc = 0;

  constructor(private readonly info: ZipEntryInfo) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.info.uncompressedSize) {
      callback(expandsBeyond(this.info));
      return;
    }
    this.crc = crc32(chunk, this.crc);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    try {
      checkComplete(this.info, this.bytes, this.crc);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback();
  }
}

function entryError(code: ErrorCode, name: string, problem: string, cause?: unknown): CofferError {
  return new CofferError(code, `zip entry '${printableName(name)}' ${problem}`, cause === undefined ? undefined : { cause });
}

/** Classifies a failure while reading an entry; the message always names the entry. */
function entryReadError(name: string, err: unknown): CofferError {
  if (isCofferError(err)) {
    return err.message.includes(`'${printableName(name)}'`) ? err : entryError(err.code, name, `could not be read: ${err.message}`, err);
  }
  const e = err as NodeJS.ErrnoException;
  const message = errorMessage(err);
  if (typeof e.code === 'string' && e.code.startsWith('Z_')) {
    return entryError('E_ARCHIVE_INVALID', name, `has corrupt compressed data (${message})`, err);
  }
  if (message.startsWith('not enough bytes') || message === 'unexpected EOF' || message.startsWith('file data overflows')) {
    return entryError('E_ARCHIVE_TRUNCATED', name, `extends past the end of the archive (${message})`, err);
  }
  if (typeof e.syscall === 'string') return entryError('E_INTERNAL', name, `could not be read (${message})`, err);
  return entryError('E_ARCHIVE_INVALID', name, `could not be read (${message})`, err);
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}
