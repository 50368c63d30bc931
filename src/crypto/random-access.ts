/**
 * The plaintext of an encrypted archive file, readable at any offset. Restore reads the zip's central
 * directory at the end of the file first, so whole-file sequential decryption is not an option.
 */
import { Readable } from 'node:stream';
import { CofferError, isCofferError } from '../core/errors';
import type { RandomAccessSource } from '../core/types';
import { type ChunkCipher, openFinalChunk, openMiddleChunk, tooManyChunks } from './chunk';
import { readEnvelope, type OpenedEnvelope } from './envelope';
import { CHUNK_SIZE, SEALED_CHUNK_SIZE } from './format';
import type { KeySource } from './keys';

/** Zip readers jump to the central directory and then walk entries in order: a few chunks suffice. */
const CACHE_CHUNKS = 4;
/** Whole chunks a range stream reads from the file at once (1 MiB): fewer, larger reads (and ranged GETs). */
const BATCH_CHUNKS = 16;
/**
 * Whole chunks a range stream opens for one read() and hands over as one buffer (256 KiB, what a
 * plain file's range stream reads at once): a consumer such as zlib pays a round trip per buffer it
 * is given, and four 64 KiB pieces cost it four.
 */
const PIECE_CHUNKS = 4;
/** The most plaintext a range stream opens for one read(). */
export const RANGE_PIECE_SIZE = PIECE_CHUNKS * CHUNK_SIZE;
/** Batch buffers kept for reuse: two for each of a few streams read side by side (restore's jobs). */
const SPARE_BATCH_BUFFERS = 8;

export class EncryptedFileReader implements RandomAccessSource {
  private readonly cache = new Map<number, Promise<Buffer>>();
  private readonly spareBatchBuffers: Buffer[] = [];
  private closed = false;

  private constructor(
    private readonly file: RandomAccessSource,
    private readonly ctx: ChunkCipher,
    private readonly lastIndex: number,
    private readonly lastSealedSize: number,
    finalPlaintext: Buffer,
    /** Which format, where its chunks start, and for format v1 the key id: for messages, records and logs. */
    readonly envelope: Omit<OpenedEnvelope, 'cipher'>,
  ) {
    this.size = lastIndex * CHUNK_SIZE + finalPlaintext.length;
    this.cache.set(lastIndex, Promise.resolve(finalPlaintext));
  }

  /** Plaintext size in bytes. */
  readonly size: number;

  /**
   * Opens and authenticates the header and the final chunk, so truncation and appended data are
   * reported now rather than halfway through a restore.
   */
  static async open(fh: RandomAccessSource, source: KeySource | undefined): Promise<EncryptedFileReader> {
    try {
      const fileSize = fh.size;
      const opened = await readEnvelope(fh, source);
      const ctx = opened.cipher;
      const payloadOffset = opened.payloadOffset;
      const chunkOffset = (index: number): number => payloadOffset + index * SEALED_CHUNK_SIZE;
      const count = Math.ceil(Math.max(0, fileSize - payloadOffset) / SEALED_CHUNK_SIZE);
      if (count === 0) {
        throw new CofferError('E_CRYPT_TRUNCATED', 'encrypted archive is truncated: no chunks after the header');
      }
      if (count > ctx.maxChunks) throw tooManyChunks(count, ctx.maxChunks);
      const lastIndex = count - 1;
      const lastSealedSize = fileSize - chunkOffset(lastIndex);
      // The chunk before the last is checked too, as the streaming decryptor would: appended data after
      // a complete archive shows up there (it authenticates as final), and the diagnosis stays the same.
      const beforeLast =
        lastIndex > 0
          ? openMiddleChunk(ctx, lastIndex - 1, await readExactly(fh, chunkOffset(lastIndex - 1), SEALED_CHUNK_SIZE))
          : null;
      const finalSealed = await readExactly(fh, chunkOffset(lastIndex), lastSealedSize);
      const finalPlaintext = openFinalChunk(ctx, lastIndex, finalSealed);
      const envelope = { encryption: opened.encryption, payloadOffset, keyIdHex: opened.keyIdHex, recipients: opened.recipients };
      const reader = new EncryptedFileReader(fh, ctx, lastIndex, lastSealedSize, finalPlaintext, envelope);
      if (beforeLast !== null) reader.cache.set(lastIndex - 1, Promise.resolve(beforeLast));
      return reader;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Plaintext bytes [start, end). Only chunks the range touches are read and authenticated. */
  createReadStream(start: number, end: number): Readable {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end > this.size) {
      throw new RangeError(`range [${start}, ${end}) is outside the plaintext of ${this.size} bytes`);
    }
    return new PlaintextRangeStream(this, start, end);
  }

  /** Plaintext bytes [position, position + length), fewer only at the end. */
  async read(position: number, length: number): Promise<Buffer> {
    const end = Math.min(this.size, position + length);
    if (!Number.isSafeInteger(position) || position < 0 || position > end) {
      throw new RangeError(`range [${position}, ${end}) is outside the plaintext of ${this.size} bytes`);
    }
    const pieces: Buffer[] = [];
    for (let pos = position; pos < end; ) {
      const index = Math.floor(pos / CHUNK_SIZE);
      const plaintext = await this.chunk(index);
      const from = pos - index * CHUNK_SIZE;
      const to = Math.min(plaintext.length, end - index * CHUNK_SIZE);
      pieces.push(plaintext.subarray(from, to));
      pos = index * CHUNK_SIZE + to;
    }
    // Copied (once) so that a caller writing into the result cannot corrupt the shared cache.
    return pieces.length === 1 ? Buffer.from(pieces[0]) : Buffer.concat(pieces);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    await this.file.close();
  }

  /** Authenticated plaintext of chunk `index`, through a small LRU cache shared by all streams. */
  chunk(index: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(closedError());
    const cached = this.cache.get(index);
    if (cached !== undefined) {
      this.cache.delete(index);
      this.cache.set(index, cached);
      return cached;
    }
    const loading = this.loadChunk(index);
    this.cache.set(index, loading);
    loading.catch(() => {
      if (this.cache.get(index) === loading) this.cache.delete(index);
    });
    while (this.cache.size > CACHE_CHUNKS) {
      const oldest = this.cache.keys().next().value as number;
      this.cache.delete(oldest);
    }
    return loading;
  }

  /** How many of the chunks from `first` on are whole middle chunks inside the plaintext range ending at `end`. */
  wholeChunksFrom(first: number, end: number): number {
    return Math.max(0, Math.min(BATCH_CHUNKS, this.lastIndex - first, Math.floor(end / CHUNK_SIZE) - first));
  }

  /**
   * Starts reading the sealed bytes of `count` middle chunks from `first` on, in one read of the file
   * (not authenticated yet). Where the file can read into a given buffer, the batch borrows one of the
   * reader's batch buffers, so that a long restore does not allocate a buffer a read; the stream gives
   * it back with releaseBatch once every chunk of the batch has been opened.
   */
  startBatch(first: number, count: number): SealedBatch {
    const position = this.envelope.payloadOffset + first * SEALED_CHUNK_SIZE;
    const length = count * SEALED_CHUNK_SIZE;
    const file = this.file;
    if (this.closed) return { first, count, sealed: Promise.reject(closedError()) };
    if (file.readInto === undefined) return { first, count, sealed: readExactly(file, position, length) };
    const buffer = this.spareBatchBuffers.pop() ?? Buffer.allocUnsafe(BATCH_CHUNKS * SEALED_CHUNK_SIZE);
    const into = buffer.subarray(0, length);
    const sealed = file.readInto(into, position).then(
      () => into,
      (err: unknown) => {
        throw shorterFile(err);
      },
    );
    return { first, count, sealed, buffer };
  }

  /** Takes back a batch's buffer: its read has completed and its chunks have all been opened. */
  releaseBatch(batch: SealedBatch): void {
    if (batch.buffer !== undefined && this.spareBatchBuffers.length < SPARE_BATCH_BUFFERS) this.spareBatchBuffers.push(batch.buffer);
  }

  /** Authenticated plaintext of middle chunk `index` from its sealed bytes: a new buffer, never cached. */
  openMiddle(index: number, sealed: Buffer): Buffer {
    return openMiddleChunk(this.ctx, index, sealed);
  }

  private async loadChunk(index: number): Promise<Buffer> {
    const last = index === this.lastIndex;
    const sealed = await readExactly(this.file, this.envelope.payloadOffset + index * SEALED_CHUNK_SIZE, last ? this.lastSealedSize : SEALED_CHUNK_SIZE);
    return last ? openFinalChunk(this.ctx, index, sealed) : openMiddleChunk(this.ctx, index, sealed);
  }
}

function closedError(): CofferError {
  return new CofferError('E_INTERNAL', 'encrypted archive reader is closed');
}

interface SealedBatch {
  first: number;
  count: number;
  sealed: Promise<Buffer>;
  /** The reader's buffer that `sealed` is read into, when the file can read into a given buffer. */
  buffer?: Buffer;
}

/**
 * Streams [start, end) of the plaintext. Chunks the range covers whole (the bulk of a zip entry) are
 * read from the file in batches of up to BATCH_CHUNKS, the next batch read while this one is being
 * consumed, and they are opened only when the consumer asks for them (up to PIECE_CHUNKS a read(),
 * so back-pressure holds and at most that much is decrypted ahead). Their plaintext is handed over as
 * one buffer: the decipher's own where one chunk is left, else the opened chunks joined (one copy).
 * Chunks the range covers in part (shared with the neighbouring entries) go through the reader's cache.
 */
class PlaintextRangeStream extends Readable {
  private batch: SealedBatch | null = null;
  private next: SealedBatch | null = null;

  constructor(
    private readonly reader: EncryptedFileReader,
    private pos: number,
    private readonly end: number,
  ) {
    super({ highWaterMark: RANGE_PIECE_SIZE });
  }

  override _read(): void {
    if (this.pos >= this.end) {
      this.push(null);
      return;
    }
    const index = Math.floor(this.pos / CHUNK_SIZE);
    const chunkStart = index * CHUNK_SIZE;
    let piece: Promise<Buffer>;
    try {
      piece = this.pos === chunkStart && this.reader.wholeChunksFrom(index, this.end) > 0 ? this.wholeChunk(index) : this.partOfChunk(index, chunkStart);
    } catch (err) {
      this.destroy(err as Error);
      return;
    }
    // _read() is not called again until push(), so one piece at a time is opened per stream.
    piece.then(
      (plaintext) => {
        if (this.destroyed) return;
        this.pos += plaintext.length;
        this.push(plaintext);
        if (this.pos < this.end) return;
        // The last batch is consumed; a stream destroyed earlier keeps its buffers (a read may be in flight).
        if (this.batch !== null) this.reader.releaseBatch(this.batch);
        this.batch = null;
        this.push(null);
      },
      (err: unknown) => this.destroy(err as Error),
    );
  }

  /** Part of a chunk, from the shared cache; copied so that a consumer cannot corrupt the cache. */
  private async partOfChunk(index: number, chunkStart: number): Promise<Buffer> {
    // The whole chunks after it, if any, start loading now, overlapping this chunk's consumer.
    if (this.next === null && this.batch === null) this.next = this.startBatch(index + 1);
    const plaintext = await this.reader.chunk(index);
    return Buffer.from(plaintext.subarray(this.pos - chunkStart, Math.min(plaintext.length, this.end - chunkStart)));
  }

  /** Up to PIECE_CHUNKS whole chunks from `index` on (all of one batch), opened and joined into one buffer. */
  private async wholeChunk(index: number): Promise<Buffer> {
    if (this.batch === null || index >= this.batch.first + this.batch.count) {
      // Every chunk of the batch before has been opened (each into a new buffer): its buffer can go back.
      if (this.batch !== null) this.reader.releaseBatch(this.batch);
      this.batch = this.next !== null && this.next.first === index ? this.next : this.startBatch(index);
      this.next = this.startBatch(this.batch!.first + this.batch!.count);
    }
    const { first, count, sealed } = this.batch!;
    // The batch holds only whole middle chunks of this range, so its end bounds the piece.
    const n = Math.min(PIECE_CHUNKS, first + count - index);
    const batch = await sealed;
    const opened: Buffer[] = [];
    for (let i = index; i < index + n; i++) {
      const offset = (i - first) * SEALED_CHUNK_SIZE;
      try {
        opened.push(this.reader.openMiddle(i, batch.subarray(offset, offset + SEALED_CHUNK_SIZE)));
      } catch (err) {
        // The chunks before a damaged one are handed over; the next read() meets the damage again.
        if (opened.length === 0) throw err;
        break;
      }
    }
    return opened.length === 1 ? opened[0] : Buffer.concat(opened);
  }

  /** Starts reading the whole chunks from `first` on, or returns null when there are none. */
  private startBatch(first: number): SealedBatch | null {
    const count = this.reader.wholeChunksFrom(first, this.end);
    if (count === 0) return null;
    const batch = this.reader.startBatch(first, count);
    // Read ahead: a stream destroyed before it gets here must not leave an unhandled rejection.
    batch.sealed.catch(() => undefined);
    return batch;
  }
}

async function readExactly(file: RandomAccessSource, position: number, length: number): Promise<Buffer> {
  let buf: Buffer;
  try {
    buf = position + length <= file.size ? await file.read(position, length) : Buffer.alloc(0);
  } catch (err) {
    throw shorterFile(err);
  }
  if (buf.length !== length) throw shorterFile(undefined);
  return buf;
}

/** A read that came up short is the file shrinking under us; other errors pass through. */
function shorterFile(err: unknown): unknown {
  if (err !== undefined && !(isCofferError(err) && err.code === 'E_ARCHIVE_TRUNCATED')) return err;
  return new CofferError('E_CRYPT_TRUNCATED', 'encrypted archive file became shorter while it was being read');
}
