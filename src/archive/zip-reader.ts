import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { crc32, createInflateRaw, inflateRawSync } from 'node:zlib';
import * as yauzl from 'yauzl';
import { CofferError, isCofferError, type ErrorCode } from '../core/errors';
import type { RandomAccessSource } from '../core/types';
import { checkEntryName, EntryNameRegistry } from './entries';

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
  /** In central-directory order. */
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
  let zipfile: yauzl.ZipFile | undefined;
  try {
    zipfile = await openYauzl(reader, source.size);
    const directory = await readCentralDirectory(zipfile, opts.allowedTopLevel, source.size);
    return new HardenedZipArchive(zipfile, reader, source, directory);
  } catch (err) {
    zipfile?.close();
    await source.close().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// Opening and classifying failures

const LOCAL_HEADER_SIGNATURE = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

async function openYauzl(reader: SourceReader, size: number): Promise<yauzl.ZipFile> {
  if (size === 0) throw new CofferError('E_ARCHIVE_INVALID', 'not a zip archive: the file is empty');
  const options: yauzl.Options = {
    lazyEntries: true,
    autoClose: false,
    // Names are decoded and validated here, not by yauzl: it would turn `\` into `/` silently and stop
    // at the first bad name with a message that is hard to classify.
    decodeStrings: false,
    strictFileNames: true,
    // Sizes are enforced by EntryVerifier below, which also checks the CRC and classifies failures.
    validateEntrySizes: false,
  };
  try {
    return await new Promise<yauzl.ZipFile>((resolve, reject) => {
      yauzl.fromRandomAccessReader(reader, size, options, (err, zipfile) => (err ? reject(err) : resolve(zipfile)));
    });
  } catch (err) {
    throw await classifyOpenError(err, reader);
  }
}

async function classifyOpenError(err: unknown, reader: SourceReader): Promise<unknown> {
  if (isCofferError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (message.startsWith('End of central directory record signature not found')) {
    // A zip starts with a local header; if this file does, it is a zip that lost its end.
    const head = Buffer.alloc(4);
    const n = await reader.readAt(head, 0, 4, 0).catch(() => 0);
    return n === 4 && head.equals(LOCAL_HEADER_SIGNATURE)
      ? new CofferError('E_ARCHIVE_TRUNCATED', 'zip archive is truncated: end of central directory not found', { cause: err })
      : new CofferError('E_ARCHIVE_INVALID', 'not a zip archive: end of central directory not found', { cause: err });
  }
  return centralDirectoryError(err);
}

/** Errors yauzl raises while reading the end record or the central directory. */
function centralDirectoryError(err: unknown): CofferError {
  if (isCofferError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (message === 'unexpected EOF') {
    return new CofferError('E_ARCHIVE_TRUNCATED', 'zip archive is truncated: the central directory extends past the end of the file', { cause: err });
  }
  if (message.startsWith('Invalid comment length')) {
    return new CofferError('E_ARCHIVE_INVALID', 'invalid zip archive: unexpected bytes after the end of central directory record', { cause: err });
  }
  return new CofferError('E_ARCHIVE_INVALID', `invalid zip archive: corrupt central directory (${message})`, { cause: err });
}

// ---------------------------------------------------------------------------------------------------
// Central directory validation

/** What validating one central-directory record keeps; the yauzl Entry itself is dropped. */
interface EntryRecord {
  readonly info: ZipEntryInfo;
  readonly localHeaderOffset: number;
  readonly method: number;
  /** The name's bytes as stored, kept only when they are not the UTF-8 encoding of `info.name`. */
  readonly rawName: Buffer | null;
  readonly rawNameLength: number;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const DOS_DIRECTORY = 0x10;
const FLAG_ENCRYPTED = 0x1;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
/** Deflate cannot expand data more than ~1032:1; declared sizes beyond that are lies. */
const MAX_DEFLATE_RATIO = 1032;
const LOCAL_HEADER_FIXED_SIZE = 30;

/**
 * The validated central directory, kept compactly: one frozen ZipEntryInfo per entry plus typed arrays
 * for what reading needs (local header offset, data limit, method), so that 100,000 entries cost a few
 * megabytes rather than yauzl's Entry objects with their raw name and extra-field buffers.
 */
interface CentralDirectory {
  readonly records: EntryRecord[];
  readonly dataLimits: Float64Array;
}

async function readCentralDirectory(zipfile: yauzl.ZipFile, allowedTopLevel: readonly string[], fileSize: number): Promise<CentralDirectory> {
  // yauzl's cursor starts at the central directory offset (internal field, typed wrongly as boolean).
  const cursor: unknown = (zipfile as unknown as { readEntryCursor: unknown }).readEntryCursor;
  const centralDirectoryOffset = typeof cursor === 'number' ? cursor : fileSize;
  const names = new EntryNameRegistry();
  const records: EntryRecord[] = [];
  // One set of listeners for the whole directory: each entry asks for the next one.
  await new Promise<void>((resolve, reject) => {
    const onEntry = (raw: yauzl.Entry): void => {
      try {
        records.push(validateEntry(raw, allowedTopLevel, names));
      } catch (err) {
        settle(() => reject(err));
        return;
      }
      zipfile.readEntry();
    };
    const onEnd = (): void => settle(resolve);
    const onError = (err: unknown): void => settle(() => reject(centralDirectoryError(err)));
    const settle = (then: () => void): void => {
      zipfile.off('entry', onEntry).off('end', onEnd).off('error', onError);
      then();
    };
    zipfile.on('entry', onEntry).on('end', onEnd).on('error', onError);
    zipfile.readEntry();
  });
  return { records, dataLimits: dataLimits(records, centralDirectoryOffset) };
}

function validateEntry(raw: yauzl.Entry, allowedTopLevel: readonly string[], names: EntryNameRegistry): EntryRecord {
  const name = yauzl.getFileNameLowLevel(raw.generalPurposeBitFlag, raw.fileNameRaw, raw.extraFields, true);
  const info: ZipEntryInfo = Object.freeze({
    name,
    compressedSize: raw.compressedSize,
    uncompressedSize: raw.uncompressedSize,
    isDirectory: name.endsWith('/'),
    crc32: raw.crc32,
  });
  const reason =
    checkEntryName(name, allowedTopLevel) ?? entryTypeProblem(raw, info) ?? dataProblem(raw, info) ?? names.add(name);
  if (reason !== null) throw unsafe(name, reason);
  const raw8 = raw.fileNameRaw;
  const utf8 = raw8.length === Buffer.byteLength(name) && raw8.toString('utf8') === name;
  return {
    info,
    localHeaderOffset: raw.relativeOffsetOfLocalHeader,
    method: raw.compressionMethod,
    rawName: utf8 ? null : Buffer.from(raw8),
    rawNameLength: raw8.length,
  };
}

/** Only regular files and directories can be extracted safely; links could point anywhere. */
function entryTypeProblem(raw: yauzl.Entry, info: ZipEntryInfo): string | null {
  const type = (raw.externalFileAttributes >>> 16) & S_IFMT;
  if (type === S_IFLNK) return 'symbolic link';
  if (type !== 0 && type !== S_IFREG && type !== S_IFDIR) return `special file (type 0o${type.toString(8)})`;
  const marksDirectory = type === S_IFDIR || (raw.externalFileAttributes & DOS_DIRECTORY) !== 0;
  if (marksDirectory && !info.isDirectory) return 'directory attributes on a name without a trailing slash';
  if (info.isDirectory && info.uncompressedSize !== 0) return 'directory entry carries data';
  return null;
}

function dataProblem(raw: yauzl.Entry, info: ZipEntryInfo): string | null {
  if ((raw.generalPurposeBitFlag & FLAG_ENCRYPTED) !== 0) return 'encrypted entry';
  if (raw.compressionMethod === METHOD_STORED) {
    if (info.compressedSize !== info.uncompressedSize) {
      return `stored entry declares ${info.compressedSize} compressed but ${info.uncompressedSize} uncompressed bytes`;
    }
    return null;
  }
  if (raw.compressionMethod !== METHOD_DEFLATED) return `unsupported compression method ${raw.compressionMethod}`;
  if (info.uncompressedSize > (info.compressedSize + 1) * MAX_DEFLATE_RATIO) {
    return `declares ${info.uncompressedSize} bytes from ${info.compressedSize} compressed bytes, more than deflate can produce`;
  }
  return null;
}

/**
 * Refuses entries whose local header and data overlap another entry or the central directory: that is
 * how "overlapping" zip bombs make many large entries out of one small compressed block. The bound used
 * here is the smallest the entry can occupy; openEntry checks the real data start against `dataLimit`.
 */
function dataLimits(records: EntryRecord[], centralDirectoryOffset: number): Float64Array {
  const limits = new Float64Array(records.length);
  const byOffset = Uint32Array.from(records.keys()).sort((a, b) => records[a].localHeaderOffset - records[b].localHeaderOffset || a - b);
  byOffset.forEach((index, i) => {
    const record = records[index];
    const next = i + 1 < byOffset.length ? records[byOffset[i + 1]] : undefined;
    const limit = next === undefined ? centralDirectoryOffset : next.localHeaderOffset;
    const minimalEnd = record.localHeaderOffset + LOCAL_HEADER_FIXED_SIZE + record.rawNameLength + record.info.compressedSize;
    if (minimalEnd > limit) {
      const what = next === undefined ? 'the central directory' : `entry '${next.info.name}'`;
      throw unsafe(record.info.name, `its data overlaps ${what}`);
    }
    limits[index] = limit;
  });
  return limits;
}

function unsafe(name: string, reason: string): CofferError {
  return new CofferError('E_ARCHIVE_UNSAFE_ENTRY', `unsafe zip entry '${printable(name)}': ${reason}`, { details: { entry: name, reason } });
}

/** Names may hold control characters; keep messages on one line. */
function printable(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[\x00-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

// ---------------------------------------------------------------------------------------------------
// The archive and entry streams

class HardenedZipArchive implements ZipArchive {
  readonly entries: readonly ZipEntryInfo[];
  readonly totalUncompressedSize: number;
  private readonly records: readonly EntryRecord[];
  private readonly dataLimits: Float64Array;
  private readonly byName = new Map<string, number>();
  private readonly openStreams = new Set<Readable>();
  private closed = false;

  constructor(
    private readonly zipfile: yauzl.ZipFile,
    private readonly reader: SourceReader,
    private readonly source: RandomAccessSource,
    directory: CentralDirectory,
  ) {
    this.records = directory.records;
    this.dataLimits = directory.dataLimits;
    const infos = new Array<ZipEntryInfo>(this.records.length);
    let total = 0;
    this.records.forEach((r, i) => {
      infos[i] = r.info;
      total += r.info.uncompressedSize;
      this.byName.set(r.info.name, i);
    });
    this.entries = Object.freeze(infos);
    this.totalUncompressedSize = total;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  async openEntry(name: string): Promise<Readable> {
    const index = this.index(name);
    const record = this.records[index];
    if (record.info.isDirectory) throw new CofferError('E_USAGE', `zip entry '${printable(name)}' is a directory`);
    let raw: Readable;
    try {
      raw = await this.openRaw(index);
    } catch (err) {
      throw entryReadError(name, err);
    }
    return this.track(verifiedStream(record.info, raw));
  }

  async readEntryBuffer(name: string, maxBytes: number): Promise<Buffer> {
    const index = this.index(name);
    const { info } = this.records[index];
    if (info.uncompressedSize > maxBytes) {
      throw unsafe(name, `declares ${info.uncompressedSize} bytes, more than the ${maxBytes} allowed`);
    }
    if (info.uncompressedSize <= SMALL_ENTRY_BYTES && !info.isDirectory) {
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
    this.zipfile.close();
    await this.source.close();
  }

  private index(name: string): number {
    if (this.closed) throw new CofferError('E_INTERNAL', 'zip archive is already closed');
    const index = this.byName.get(name);
    if (index === undefined) throw new CofferError('E_ARCHIVE_INVALID', `zip archive has no entry '${printable(name)}'`);
    return index;
  }

  /**
   * Reads the local header, checks it agrees with the central directory and that the data stays
   * inside the entry's bounds; returns where the data starts. Failures are plain errors worded like
   * yauzl's, classified by entryReadError.
   */
  private async dataStart(index: number): Promise<number> {
    const { info, localHeaderOffset, rawName, rawNameLength } = this.records[index];
    const header = Buffer.allocUnsafe(LOCAL_HEADER_FIXED_SIZE + rawNameLength);
    if ((await this.reader.readAt(header, 0, header.length, localHeaderOffset)) < header.length) throw new Error('unexpected EOF');
    const signature = header.readUInt32LE(0);
    if (signature !== LOCAL_HEADER_SIGNATURE.readUInt32LE(0)) throw new Error(`invalid local file header signature: 0x${signature.toString(16)}`);
    const nameLength = header.readUInt16LE(26);
    const nameMatches =
      nameLength === rawNameLength &&
      (rawName === null ? header.toString('utf8', LOCAL_HEADER_FIXED_SIZE) === info.name : header.subarray(LOCAL_HEADER_FIXED_SIZE).equals(rawName));
    if (!nameMatches) throw unsafe(info.name, 'local header names a different file than the central directory');
    const start = localHeaderOffset + LOCAL_HEADER_FIXED_SIZE + nameLength + header.readUInt16LE(28);
    if (start + info.compressedSize > this.source.size) {
      throw new Error(`file data overflows file bounds: ${start} + ${info.compressedSize} > ${this.source.size}`);
    }
    if (start + info.compressedSize > this.dataLimits[index]) {
      throw unsafe(info.name, 'its data overlaps the next entry or the central directory');
    }
    return start;
  }

  /** Opens the data range of an entry as a stream, inflated where it is deflated. */
  private async openRaw(index: number): Promise<Readable> {
    const { info, method } = this.records[index];
    const start = await this.dataStart(index);
    // Not openReadStreamLowLevelPromise: in yauzl 3.4 it calls openReadStream with the wrong arguments.
    const stored = await new Promise<Readable>((resolve, reject) => {
      this.zipfile.openReadStreamLowLevel(start, info.compressedSize, 0, info.compressedSize, false, null, (err, stream) =>
        err ? reject(err) : resolve(stream),
      );
    });
    if (method !== METHOD_DEFLATED) return stored;
    // Inflated here rather than by yauzl, whose inflater uses zlib's 16 KiB output chunks: every chunk
    // is a round trip from the threadpool to the main thread, and larger ones cut those sixteenfold.
    return pipeline(stored, createInflateRaw({ chunkSize: INFLATE_CHUNK_SIZE }), () => undefined);
  }

  /**
   * A small entry in one piece, with the stream path's checks: the output is capped at the declared
   * size (a bomb stops there), then its length and CRC-32 must be exactly what was declared.
   */
  private async readSmall(index: number): Promise<Buffer> {
    const { info, method } = this.records[index];
    const start = await this.dataStart(index);
    const data = Buffer.allocUnsafe(info.compressedSize);
    if ((await this.reader.readAt(data, 0, data.length, start)) < data.length) throw new Error('unexpected EOF');
    let out: Buffer;
    if (method !== METHOD_DEFLATED) {
      out = data;
    } else {
      try {
        // maxOutputLength must be at least 1; one byte more than an empty entry declares is still refused below.
        out = inflateRawSync(data, { maxOutputLength: Math.max(1, info.uncompressedSize) });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw expandsBeyond(info);
        throw err;
      }
    }
    checkComplete(info, out.length, out.length > info.uncompressedSize ? 0 : crc32(out));
    return out;
  }

  private track(stream: Readable): Readable {
    this.openStreams.add(stream);
    stream.once('close', () => this.openStreams.delete(stream));
    return stream;
  }
}

function expandsBeyond(info: ZipEntryInfo): CofferError {
  return unsafe(info.name, `data expands beyond its declared size of ${info.uncompressedSize} bytes`);
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

/** Pipes yauzl's stream through the size and CRC check, translating every failure to a CofferError. */
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
  return new CofferError(code, `zip entry '${printable(name)}' ${problem}`, cause === undefined ? undefined : { cause });
}

/** Classifies a failure while reading an entry; the message always names the entry. */
function entryReadError(name: string, err: unknown): CofferError {
  if (isCofferError(err)) {
    return err.message.includes(`'${printable(name)}'`) ? err : entryError(err.code, name, `could not be read: ${err.message}`, err);
  }
  const e = err as NodeJS.ErrnoException;
  const message = e instanceof Error ? e.message : String(err);
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
