import { once } from 'node:events';
import { Readable } from 'node:stream';
import { crc32, createDeflateRaw, deflateRaw, deflateRawSync } from 'node:zlib';
import { promisify } from 'node:util';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { checkEntryName, EntryNameRegistry } from './entries';

export interface ZipWriterOptions {
  /** Deflate level 0–9 for entries that are not stored. Default 6. */
  level?: number;
}

export interface ZipEntryOptions {
  /**
   * Store the entry instead of deflating it (already-compressed media). Default false.
   * 'if-incompressible' (buffers): deflate, and store instead when that does not save a tenth, the
   * rule of looksIncompressible, judged on the whole buffer at no extra cost; streams are deflated.
   */
  store?: boolean | 'if-incompressible';
  /** Modification time recorded in the entry. Default: now. */
  date?: Date;
  /** Unix permission bits (e.g. 0o644). Default 0644 for files, 0755 for directories. */
  mode?: number;
}

export interface ZipWriter {
  /** The zip bytes. Errors if anything fails, so a consumer never sees a well-formed but incomplete zip. */
  readonly output: Readable;
  /**
   * Appends one entry read from `source` and resolves once `source` has been fully consumed and the
   * entry written, so the caller can append the next one. The writer owns `source` from here on: it is
   * consumed, or destroyed if the entry is refused or writing fails.
   */
  addStream(name: string, source: Readable, opts?: ZipEntryOptions): Promise<void>;
  addBuffer(name: string, data: Buffer, opts?: ZipEntryOptions): Promise<void>;
  /**
   * Appends an entry whose data is already compressed (deflated by the caller, e.g. into a spool
   * file or by a BufferDeflater): `source` gives the bytes as they go into the zip (a stream, or all of
   * them in one buffer), and `meta` their CRC-32 and sizes. `meta`
   * may be a function, called once `source` has ended, so a source still being produced can be
   * followed. The sizes are checked against what `source` gave; Zip64 applies as for addStream.
   */
  addPrecompressed(name: string, source: Readable | Buffer, meta: PrecompressedMeta | (() => PrecompressedMeta), opts?: Omit<ZipEntryOptions, 'store'>): Promise<void>;
  /** Appends a directory entry; a trailing `/` is added if missing. */
  addDirectory(name: string, opts?: Omit<ZipEntryOptions, 'store'>): Promise<void>;
  /** Writes the central directory; resolves once every byte has been handed to `output`. */
  finalize(): Promise<{ bytes: number }>;
  /** Stops writing: pending and later calls reject, `output` errors with `err` (default E_ABORTED). */
  abort(err?: unknown): void;
  /** Bytes of zip produced so far. */
  readonly bytesWritten: number;
}

/** What addPrecompressed needs to know about data compressed elsewhere. */
export interface PrecompressedMeta {
  /** CRC-32 of the uncompressed bytes. */
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  /** 8 (deflate) or 0 (stored). */
  method: 0 | 8;
}

export function createZipWriter(opts: ZipWriterOptions = {}): ZipWriter {
  return new StreamingZipWriter(opts.level ?? DEFAULT_LEVEL);
}

const DEFAULT_LEVEL = 6;
/** zlib output chunks: large enough that a byte makes few hops, small enough to keep memory flat. */
const ZLIB_CHUNK_SIZE = 64 * 1024;
const OUTPUT_HIGH_WATER_MARK = 1024 * 1024;
/**
 * Buffers of at most this size given to addBuffer are deflated by one synchronous zlib call (about 10
 * microseconds for a 1 KB upload) instead of a round trip to the threadpool.
 */
const SMALL_BUFFER_BYTES = 64 * 1024;
/**
 * Pieces smaller than this (headers, descriptors, small entries' data) are gathered and handed to
 * `output` together, so 100,000 small files make ~2,000 output chunks for the stages after the writer
 * (encryption, hashing, the file or the HTTP response), not 300,000.
 */
const BATCH_BYTES = 64 * 1024;
/** store: 'if-incompressible' stores what deflate does not shrink below this share (as looksIncompressible). */
export const INCOMPRESSIBLE_RATIO = 0.9;
/** ... and always deflates what is shorter than this: too little to judge. */
export const INCOMPRESSIBLE_MIN_BYTES = 512;

const deflateRawAsync = promisify(deflateRaw);

type State = 'open' | 'busy' | 'finalizing' | 'done' | 'failed';

const SIG_LOCAL = 0x04034b50;
const SIG_DESCRIPTOR = 0x08074b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_ZIP64_END = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_END = 0x06054b50;
/** Bit 3: sizes and CRC follow the data (we stream); bit 11: names are UTF-8. */
const FLAGS = 0x0808;
const VERSION_DEFAULT = 20;
const VERSION_ZIP64 = 45;
/** Made by Unix (3), so readers take the mode from the external attributes. */
const VERSION_MADE_BY = (3 << 8) | VERSION_ZIP64;
const MAX32 = 0xffffffff;
const MAX16 = 0xffff;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

interface CentralRecord {
  name: Buffer;
  method: number;
  time: number;
  date: number;
  crc: number;
  compressedSize: number;
  size: number;
  offset: number;
  externalAttributes: number;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

function dosDateTime(d: Date): { time: number; date: number } {
  const year = Math.min(Math.max(d.getFullYear(), 1980), 2107);
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

/**
 * A streaming zip writer. Each entry is written as local header, data (stored, or deflated by zlib
 * on the threadpool) and a data descriptor with the CRC-32 (zlib's native crc32) and sizes; the
 * central directory follows at finalize, with Zip64 records wherever a size, an offset or the entry
 * count needs them. Back-pressure from `output` holds the source back, so memory stays flat.
 */
class StreamingZipWriter implements ZipWriter {
  readonly output: Readable;
  private readonly names = new EntryNameRegistry();
  private readonly central = new CentralDirectoryBytes();
  private state: State = 'open';
  private failure: CofferError | null = null;
  private pendingName: string | null = null;
  private pendingSource: Readable | null = null;
  private waiter: Waiter | null = null;
  private offset = 0;
  private batch: Buffer[] = [];
  private batchBytes = 0;

  constructor(private readonly level: number) {
    if (!Number.isInteger(level) || level < 0 || level > 9) {
      throw new CofferError('E_INTERNAL', `zip deflate level must be an integer 0-9, got ${level}`);
    }
    this.output = new Readable({
      highWaterMark: OUTPUT_HIGH_WATER_MARK,
      read: () => {
        const w = this.waiter;
        this.waiter = null;
        w?.resolve();
      },
    });
    // A consumer that goes away (client disconnect) must stop the writer, or a pending addStream would
    // wait forever on back-pressure.
    this.output.once('close', () => {
      if (this.state !== 'done') this.fail(new CofferError('E_ABORTED', 'zip output was closed before the archive was complete'));
    });
  }

  get bytesWritten(): number {
    return this.offset;
  }

  addStream(name: string, source: Readable, opts: ZipEntryOptions = {}): Promise<void> {
    const refusal = this.refusal(name, opts, source);
    if (refusal !== null) {
      source.destroy();
      return Promise.reject(refusal);
    }
    return this.run(name, source, () => this.writeEntry(name, source, opts));
  }

  addBuffer(name: string, data: Buffer, opts: ZipEntryOptions = {}): Promise<void> {
    const refusal = this.refusal(name, opts);
    if (refusal !== null) return Promise.reject(refusal);
    return this.run(name, null, () => this.writeEntry(name, data, opts));
  }

  addPrecompressed(name: string, source: Readable | Buffer, meta: PrecompressedMeta | (() => PrecompressedMeta), opts: Omit<ZipEntryOptions, 'store'> = {}): Promise<void> {
    const stream = Buffer.isBuffer(source) ? undefined : source;
    const refusal = this.refusal(name, opts, stream);
    if (refusal !== null) {
      stream?.destroy();
      return Promise.reject(refusal);
    }
    return this.run(name, stream ?? null, () => this.writePrecompressed(name, source, meta, opts));
  }

  addDirectory(name: string, opts: Omit<ZipEntryOptions, 'store'> = {}): Promise<void> {
    const dirName = name.endsWith('/') ? name : `${name}/`;
    const refusal = this.refusal(dirName, opts);
    if (refusal !== null) return Promise.reject(refusal);
    return this.run(dirName, null, () => this.writeEntry(dirName, Buffer.alloc(0), { ...opts, store: true }));
  }

  async finalize(): Promise<{ bytes: number }> {
    const refusal = this.stateRefusal('finalize');
    if (refusal !== null) throw refusal;
    this.state = 'finalizing';
    try {
      await this.writeCentralDirectory();
    } catch (err) {
      const failure = this.wrap(err);
      this.fail(failure);
      throw failure;
    }
    if (this.failure) throw this.failure;
    this.state = 'done';
    if (this.batchBytes > 0) this.output.push(this.takeBatch());
    this.output.push(null);
    return { bytes: this.offset };
  }

  abort(err?: unknown): void {
    this.fail(err === undefined ? new CofferError('E_ABORTED', 'zip writing was aborted') : this.wrap(err));
  }

  /** Runs one entry's writing; any failure puts the whole writer into its failed state. */
  private async run(name: string, source: Readable | null, write: () => Promise<void>): Promise<void> {
    this.state = 'busy';
    this.pendingName = name;
    this.pendingSource = source;
    try {
      await write();
    } catch (err) {
      const failure = this.failure ?? this.wrap(err);
      this.fail(failure);
      throw failure;
    }
    if (this.failure) throw this.failure;
    this.state = 'open';
    this.pendingName = null;
    this.pendingSource = null;
  }

  /**
   * Hands bytes to the consumer; resolves at once unless the consumer is behind. Small pieces wait in
   * the batch until it holds BATCH_BYTES, or a larger piece or the end of the archive follows.
   */
  private emit(buf: Buffer): Promise<void> | undefined {
    if (this.state === 'failed') throw this.failure;
    this.offset += buf.length;
    let ok: boolean;
    if (buf.length < BATCH_BYTES) {
      this.batch.push(buf);
      this.batchBytes += buf.length;
      if (this.batchBytes < BATCH_BYTES) return undefined;
      ok = this.output.push(this.takeBatch());
    } else {
      const batched = this.batchBytes > 0 ? this.output.push(this.takeBatch()) : true;
      ok = this.output.push(buf) && batched;
    }
    if (ok) return undefined;
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  private takeBatch(): Buffer {
    const out = this.batch.length === 1 ? this.batch[0] : Buffer.concat(this.batch, this.batchBytes);
    this.batch = [];
    this.batchBytes = 0;
    return out;
  }

  private async emitAll(buf: Buffer): Promise<void> {
    const wait = this.emit(buf);
    if (wait) await wait;
  }

  private async writeEntry(name: string, source: Readable | Buffer, opts: ZipEntryOptions): Promise<void> {
    const nameBuf = Buffer.from(name, 'utf8');
    const isDir = name.endsWith('/');
    let method = opts.store === true || isDir ? 0 : 8;
    const { time, date } = dosDateTime(opts.date ?? new Date());
    const offset = this.offset;
    const mode = (opts.mode ?? (isDir ? 0o755 : 0o644)) | (isDir ? S_IFDIR : S_IFREG);
    const externalAttributes = ((mode << 16) | (isDir ? 0x10 : 0)) >>> 0;

    if (Buffer.isBuffer(source)) {
      // Deflated before the header is written, so the method can still change.
      let data = source;
      if (method === 8) {
        data = source.length <= SMALL_BUFFER_BYTES ? deflateRawSync(source, { level: this.level }) : await deflateRawAsync(source, { level: this.level });
        if (opts.store === 'if-incompressible' && source.length >= INCOMPRESSIBLE_MIN_BYTES && data.length > source.length * INCOMPRESSIBLE_RATIO) {
          method = 0;
          data = source;
        }
      }
      const crc = crc32(source);
      await this.emitAll(localHeader(nameBuf, method, time, date));
      await this.emitAll(data);
      await this.emitAll(dataDescriptor(crc, data.length, source.length));
      this.central.push({ name: nameBuf, method, time, date, crc, compressedSize: data.length, size: source.length, offset, externalAttributes });
      return;
    }

    await this.emitAll(localHeader(nameBuf, method, time, date));
    let crc = 0;
    let size = 0;
    let compressedSize = 0;
    if (method === 0) {
      for await (const chunk of source) {
        const buf = chunk as Buffer;
        crc = crc32(buf, crc);
        size += buf.length;
        const wait = this.emit(buf);
        if (wait) await wait;
      }
      compressedSize = size;
    } else {
      const deflate = createDeflateRaw({ level: this.level, chunkSize: ZLIB_CHUNK_SIZE });
      // Feeding and draining run side by side: zlib compresses on the threadpool while we emit.
      const feeding = (async () => {
        for await (const chunk of source) {
          const buf = chunk as Buffer;
          crc = crc32(buf, crc);
          size += buf.length;
          if (!deflate.write(buf)) await once(deflate, 'drain');
        }
        deflate.end();
      })().catch((err: Error) => deflate.destroy(err));
      for await (const out of deflate) {
        const buf = out as Buffer;
        compressedSize += buf.length;
        const wait = this.emit(buf);
        if (wait) await wait;
      }
      await feeding;
    }
    await this.emitAll(dataDescriptor(crc, compressedSize, size));
    this.central.push({ name: nameBuf, method, time, date, crc, compressedSize, size, offset, externalAttributes });
  }

  /** Local header, the caller's compressed bytes copied as they are, data descriptor (Zip64 as needed). */
  private async writePrecompressed(name: string, source: Readable | Buffer, given: PrecompressedMeta | (() => PrecompressedMeta), opts: Omit<ZipEntryOptions, 'store'>): Promise<void> {
    const nameBuf = Buffer.from(name, 'utf8');
    const { time, date } = dosDateTime(opts.date ?? new Date());
    const offset = this.offset;
    const mode = (opts.mode ?? 0o644) | S_IFREG;
    // The method is known before the data only when meta is given up front; a followed source is deflated.
    const method = typeof given === 'function' ? 8 : given.method;
    await this.emitAll(localHeader(nameBuf, method, time, date));
    let copied = 0;
    if (Buffer.isBuffer(source)) {
      copied = source.length;
      await this.emitAll(source);
    } else {
      for await (const chunk of source) {
        const buf = chunk as Buffer;
        copied += buf.length;
        const wait = this.emit(buf);
        if (wait) await wait;
      }
    }
    const meta = typeof given === 'function' ? given() : given;
    if (meta.method !== method) throw new CofferError('E_INTERNAL', `zip entry '${name}': precompressed method changed from ${method} to ${meta.method}`);
    if (meta.compressedSize !== copied) throw new CofferError('E_INTERNAL', `zip entry '${name}': precompressed source gave ${copied} bytes, ${meta.compressedSize} were declared`);
    if (method === 0 && meta.uncompressedSize !== copied) throw new CofferError('E_INTERNAL', `zip entry '${name}': a stored entry's sizes must be equal`);
    await this.emitAll(dataDescriptor(meta.crc32, meta.compressedSize, meta.uncompressedSize));
    this.central.push({ name: nameBuf, method, time, date, crc: meta.crc32, compressedSize: meta.compressedSize, size: meta.uncompressedSize, offset, externalAttributes: (mode << 16) >>> 0 });
  }

  private async writeCentralDirectory(): Promise<void> {
    const start = this.offset;
    for (const chunk of this.central.chunks()) await this.emitAll(chunk);
    const size = this.offset - start;
    const count = this.central.length;
    if (count >= MAX16 || start >= MAX32 || size >= MAX32) {
      const zip64End = this.offset;
      await this.emitAll(zip64EndRecord(count, size, start));
      await this.emitAll(zip64Locator(zip64End));
    }
    await this.emitAll(endRecord(count, size, start));
  }

  /** Why a new entry cannot be added now, or null. Checked before any state changes. */
  private refusal(name: string, opts: ZipEntryOptions, source?: Readable): CofferError | null {
    const stateRefusal = this.stateRefusal(`add entry '${name}'`);
    if (stateRefusal !== null) return stateRefusal;
    const optionProblem = entryOptionsProblem(opts);
    if (optionProblem !== null) return new CofferError('E_INTERNAL', `cannot add zip entry '${name}': ${optionProblem}`);
    // A stream that has already ended would never deliver its data.
    if (source !== undefined && (source.readableEnded || source.destroyed)) {
      return new CofferError('E_INTERNAL', `cannot add zip entry '${name}': its source stream was already consumed or destroyed`);
    }
    // Last, because it records the name.
    const reason = checkEntryName(name) ?? this.names.add(name);
    if (reason === null) return null;
    return new CofferError('E_ARCHIVE_UNSAFE_ENTRY', `refusing to write zip entry '${name}': ${reason}`);
  }

  private stateRefusal(action: string): CofferError | null {
    switch (this.state) {
      case 'open':
        return null;
      case 'failed':
        return this.failure;
      case 'busy':
        return new CofferError('E_INTERNAL', `cannot ${action}: entry '${this.pendingName}' is still being written (await it first)`);
      case 'finalizing':
      case 'done':
        return new CofferError('E_INTERNAL', `cannot ${action}: the zip has already been finalized`);
    }
  }

  /** Puts the writer in its failed state once; every later call rejects with the same error. */
  private fail(err: CofferError): void {
    if (this.state === 'failed' || this.state === 'done') return;
    this.state = 'failed';
    this.failure = err;
    this.pendingSource?.destroy();
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    this.output.destroy(err);
  }

  /** CofferErrors (e.g. from the database stream) keep their code; anything else becomes E_BACKUP_FAILED. */
  private wrap(err: unknown): CofferError {
    if (isCofferError(err)) return err;
    const entry = this.pendingName === null ? '' : ` entry '${this.pendingName}'`;
    return new CofferError('E_BACKUP_FAILED', `writing zip${entry} failed: ${errorMessage(err)}`, { cause: err });
  }
}

function localHeader(name: Buffer, method: number, time: number, date: number): Buffer {
  const h = Buffer.allocUnsafe(30 + name.length).fill(0);
  h.writeUInt32LE(SIG_LOCAL, 0);
  h.writeUInt16LE(VERSION_ZIP64, 4);
  h.writeUInt16LE(FLAGS, 6);
  h.writeUInt16LE(method, 8);
  h.writeUInt16LE(time, 10);
  h.writeUInt16LE(date, 12);
  // CRC and sizes (14..25) stay zero: they follow the data in the descriptor.
  h.writeUInt16LE(name.length, 26);
  h.writeUInt16LE(0, 28);
  name.copy(h, 30);
  return h;
}

/** Sizes past 4 GiB make the descriptor's size fields 8 bytes each (Zip64). */
function dataDescriptor(crc: number, compressedSize: number, size: number): Buffer {
  const zip64 = compressedSize >= MAX32 || size >= MAX32;
  const d = Buffer.allocUnsafe(zip64 ? 24 : 16).fill(0);
  d.writeUInt32LE(SIG_DESCRIPTOR, 0);
  d.writeUInt32LE(crc >>> 0, 4);
  if (zip64) {
    d.writeBigUInt64LE(BigInt(compressedSize), 8);
    d.writeBigUInt64LE(BigInt(size), 16);
  } else {
    d.writeUInt32LE(compressedSize, 8);
    d.writeUInt32LE(size, 12);
  }
  return d;
}

const CENTRAL_SLAB_BYTES = 64 * 1024;

/**
 * The central directory, encoded as each entry is written: 64 KiB slabs of header bytes instead of
 * an object and a name buffer per entry, so 100,000 entries cost ~10 MB in a few hundred buffers.
 */
class CentralDirectoryBytes {
  length = 0;
  private readonly full: Buffer[] = [];
  private slab = Buffer.allocUnsafe(CENTRAL_SLAB_BYTES);
  private used = 0;

  push(r: CentralRecord): void {
    const header = centralHeader(r);
    if (this.used + header.length > this.slab.length) {
      this.full.push(this.slab.subarray(0, this.used));
      this.slab = Buffer.allocUnsafe(Math.max(CENTRAL_SLAB_BYTES, header.length));
      this.used = 0;
    }
    header.copy(this.slab, this.used);
    this.used += header.length;
    this.length++;
  }

  chunks(): Buffer[] {
    return this.used > 0 ? [...this.full, this.slab.subarray(0, this.used)] : [...this.full];
  }
}

function centralHeader(r: CentralRecord): Buffer {
  const extra: bigint[] = [];
  if (r.size >= MAX32) extra.push(BigInt(r.size));
  if (r.compressedSize >= MAX32) extra.push(BigInt(r.compressedSize));
  if (r.offset >= MAX32) extra.push(BigInt(r.offset));
  const extraLen = extra.length ? 4 + 8 * extra.length : 0;
  // allocUnsafe + fill: small headers come from Node's shared pool rather than an allocation each.
  const h = Buffer.allocUnsafe(46 + r.name.length + extraLen).fill(0);
  h.writeUInt32LE(SIG_CENTRAL, 0);
  h.writeUInt16LE(VERSION_MADE_BY, 4);
  h.writeUInt16LE(extra.length ? VERSION_ZIP64 : VERSION_DEFAULT, 6);
  h.writeUInt16LE(FLAGS, 8);
  h.writeUInt16LE(r.method, 10);
  h.writeUInt16LE(r.time, 12);
  h.writeUInt16LE(r.date, 14);
  h.writeUInt32LE(r.crc >>> 0, 16);
  h.writeUInt32LE(r.compressedSize >= MAX32 ? MAX32 : r.compressedSize, 20);
  h.writeUInt32LE(r.size >= MAX32 ? MAX32 : r.size, 24);
  h.writeUInt16LE(r.name.length, 28);
  h.writeUInt16LE(extraLen, 30);
  // comment length, disk number start, internal attributes: zero
  h.writeUInt32LE(r.externalAttributes, 38);
  h.writeUInt32LE(r.offset >= MAX32 ? MAX32 : r.offset, 42);
  r.name.copy(h, 46);
  if (extra.length) {
    let p = 46 + r.name.length;
    h.writeUInt16LE(0x0001, p);
    h.writeUInt16LE(8 * extra.length, p + 2);
    p += 4;
    for (const v of extra) {
      h.writeBigUInt64LE(v, p);
      p += 8;
    }
  }
  return h;
}

function zip64EndRecord(count: number, size: number, offset: number): Buffer {
  const e = Buffer.alloc(56);
  e.writeUInt32LE(SIG_ZIP64_END, 0);
  e.writeBigUInt64LE(44n, 4);
  e.writeUInt16LE(VERSION_MADE_BY, 12);
  e.writeUInt16LE(VERSION_ZIP64, 14);
  // this disk, disk with the central directory: zero
  e.writeBigUInt64LE(BigInt(count), 24);
  e.writeBigUInt64LE(BigInt(count), 32);
  e.writeBigUInt64LE(BigInt(size), 40);
  e.writeBigUInt64LE(BigInt(offset), 48);
  return e;
}

function zip64Locator(zip64EndOffset: number): Buffer {
  const l = Buffer.alloc(20);
  l.writeUInt32LE(SIG_ZIP64_LOCATOR, 0);
  l.writeBigUInt64LE(BigInt(zip64EndOffset), 8);
  l.writeUInt32LE(1, 16);
  return l;
}

function endRecord(count: number, size: number, offset: number): Buffer {
  const e = Buffer.alloc(22);
  e.writeUInt32LE(SIG_END, 0);
  e.writeUInt16LE(Math.min(count, MAX16), 8);
  e.writeUInt16LE(Math.min(count, MAX16), 10);
  e.writeUInt32LE(Math.min(size, MAX32), 12);
  e.writeUInt32LE(Math.min(offset, MAX32), 16);
  return e;
}

function entryOptionsProblem(opts: ZipEntryOptions): string | null {
  if (opts.date !== undefined && Number.isNaN(opts.date.getTime())) return 'invalid date';
  if (opts.mode !== undefined && (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777)) {
    return `mode must be permission bits 0-0o7777, got ${opts.mode}`;
  }
  return null;
}
