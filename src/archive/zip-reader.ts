import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { crc32, createInflateRaw } from 'node:zlib';
import * as yauzl from 'yauzl';
import { CofferError, isCofferError, type ErrorCode } from '../core/errors';
import type { RandomAccessSource } from '../core/types';
import { checkEntryName, EntryNameRegistry } from './entries';

const INFLATE_CHUNK_SIZE = 256 * 1024;
import { SourceReader } from './source-reader';

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
    const entries = await readCentralDirectory(zipfile, opts.allowedTopLevel, source.size);
    return new HardenedZipArchive(zipfile, source, entries);
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

interface EntryRecord {
  readonly info: ZipEntryInfo;
  readonly raw: yauzl.Entry;
  /** Offset its data must end before: the next local header or the central directory. */
  dataLimit: number;
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

async function readCentralDirectory(zipfile: yauzl.ZipFile, allowedTopLevel: readonly string[], fileSize: number): Promise<EntryRecord[]> {
  // yauzl's cursor starts at the central directory offset (internal field, typed wrongly as boolean).
  const cursor: unknown = (zipfile as unknown as { readEntryCursor: unknown }).readEntryCursor;
  const centralDirectoryOffset = typeof cursor === 'number' ? cursor : fileSize;
  const names = new EntryNameRegistry();
  const records: EntryRecord[] = [];
  for (let raw = await nextEntry(zipfile); raw !== null; raw = await nextEntry(zipfile)) {
    records.push(validateEntry(raw, allowedTopLevel, names));
  }
  assignDataLimits(records, centralDirectoryOffset);
  return records;
}

function nextEntry(zipfile: yauzl.ZipFile): Promise<yauzl.Entry | null> {
  return new Promise((resolve, reject) => {
    const onEntry = (entry: yauzl.Entry): void => settle(() => resolve(entry));
    const onEnd = (): void => settle(() => resolve(null));
    const onError = (err: unknown): void => settle(() => reject(centralDirectoryError(err)));
    const settle = (then: () => void): void => {
      zipfile.off('entry', onEntry).off('end', onEnd).off('error', onError);
      then();
    };
    zipfile.on('entry', onEntry).on('end', onEnd).on('error', onError);
    zipfile.readEntry();
  });
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
  return { info, raw, dataLimit: 0 };
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
function assignDataLimits(records: EntryRecord[], centralDirectoryOffset: number): void {
  const byOffset = [...records].sort((a, b) => a.raw.relativeOffsetOfLocalHeader - b.raw.relativeOffsetOfLocalHeader);
  byOffset.forEach((record, i) => {
    const next = byOffset[i + 1];
    const limit = next === undefined ? centralDirectoryOffset : next.raw.relativeOffsetOfLocalHeader;
    const minimalEnd = record.raw.relativeOffsetOfLocalHeader + LOCAL_HEADER_FIXED_SIZE + record.raw.fileNameLength + record.info.compressedSize;
    if (minimalEnd > limit) {
      const what = next === undefined ? 'the central directory' : `entry '${next.info.name}'`;
      throw unsafe(record.info.name, `its data overlaps ${what}`);
    }
    record.dataLimit = limit;
  });
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
  private readonly byName: ReadonlyMap<string, EntryRecord>;
  private readonly openStreams = new Set<Readable>();
  private closed = false;

  constructor(
    private readonly zipfile: yauzl.ZipFile,
    private readonly source: RandomAccessSource,
    records: readonly EntryRecord[],
  ) {
    this.entries = Object.freeze(records.map((r) => r.info));
    this.totalUncompressedSize = records.reduce((sum, r) => sum + r.info.uncompressedSize, 0);
    this.byName = new Map(records.map((r) => [r.info.name, r]));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  async openEntry(name: string): Promise<Readable> {
    const record = this.record(name);
    if (record.info.isDirectory) throw new CofferError('E_USAGE', `zip entry '${printable(name)}' is a directory`);
    let raw: Readable;
    try {
      raw = await this.openRaw(record);
    } catch (err) {
      throw entryReadError(name, err);
    }
    return this.track(verifiedStream(record.info, raw));
  }

  async readEntryBuffer(name: string, maxBytes: number): Promise<Buffer> {
    const record = this.record(name);
    if (record.info.uncompressedSize > maxBytes) {
      throw unsafe(name, `declares ${record.info.uncompressedSize} bytes, more than the ${maxBytes} allowed`);
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

  private record(name: string): EntryRecord {
    if (this.closed) throw new CofferError('E_INTERNAL', 'zip archive is already closed');
    const record = this.byName.get(name);
    if (record === undefined) throw new CofferError('E_ARCHIVE_INVALID', `zip archive has no entry '${printable(name)}'`);
    return record;
  }

  /** Reads the local header, checks it agrees with the central directory, and opens the data range. */
  private async openRaw(record: EntryRecord): Promise<Readable> {
    const { raw, info } = record;
    const header = await this.zipfile.readLocalFileHeaderPromise(raw, { minimal: false });
    if (!header.fileName.equals(raw.fileNameRaw)) {
      throw unsafe(info.name, 'local header names a different file than the central directory');
    }
    if (header.fileDataStart + info.compressedSize > record.dataLimit) {
      throw unsafe(info.name, 'its data overlaps the next entry or the central directory');
    }
    // Not openReadStreamLowLevelPromise: in yauzl 3.4 it calls openReadStream with the wrong arguments.
    const stored = await new Promise<Readable>((resolve, reject) => {
      this.zipfile.openReadStreamLowLevel(header.fileDataStart, info.compressedSize, 0, info.compressedSize, false, null, (err, stream) =>
        err ? reject(err) : resolve(stream),
      );
    });
    if (raw.compressionMethod !== METHOD_DEFLATED) return stored;
    // Inflated here rather than by yauzl, whose inflater uses zlib's 16 KiB output chunks: every chunk
    // is a round trip from the threadpool to the main thread, and larger ones cut those sixteenfold.
    return pipeline(stored, createInflateRaw({ chunkSize: INFLATE_CHUNK_SIZE }), () => undefined);
  }

  private track(stream: Readable): Readable {
    this.openStreams.add(stream);
    stream.once('close', () => this.openStreams.delete(stream));
    return stream;
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
      callback(unsafe(this.info.name, `data expands beyond its declared size of ${this.info.uncompressedSize} bytes`));
      return;
    }
    this.crc = crc32(chunk, this.crc);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const { name, uncompressedSize, crc32: expected } = this.info;
    if (this.bytes < uncompressedSize) {
      callback(entryError('E_ARCHIVE_INVALID', name, `has ${this.bytes} bytes, fewer than the ${uncompressedSize} declared`));
    } else if (this.crc !== expected) {
      callback(entryError('E_ARCHIVE_CHECKSUM', name, `CRC-32 mismatch (expected ${hex32(expected)}, got ${hex32(this.crc)})`));
    } else {
      callback();
    }
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
