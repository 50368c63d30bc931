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

export class EncryptedFileReader implements RandomAccessSource {
  private readonly cache = new Map<number, Promise<Buffer>>();
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
    return new PlaintextRangeStream((index) => this.chunk(index), start, end);
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
      pieces.push(Buffer.from(plaintext.subarray(from, to)));
      pos = index * CHUNK_SIZE + to;
    }
    return Buffer.concat(pieces);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    await this.file.close();
  }

  /** Authenticated plaintext of chunk `index`, through a small LRU cache shared by all streams. */
  private chunk(index: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(new CofferError('E_INTERNAL', 'encrypted archive reader is closed'));
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

  private async loadChunk(index: number): Promise<Buffer> {
    const last = index === this.lastIndex;
    const sealed = await readExactly(this.file, this.envelope.payloadOffset + index * SEALED_CHUNK_SIZE, last ? this.lastSealedSize : SEALED_CHUNK_SIZE);
    return last ? openFinalChunk(this.ctx, index, sealed) : openMiddleChunk(this.ctx, index, sealed);
  }
}

/** Streams [start, end) of the plaintext, one chunk per read() so back-pressure reaches the file. */
class PlaintextRangeStream extends Readable {
  constructor(
    private readonly fetchChunk: (index: number) => Promise<Buffer>,
    private pos: number,
    private readonly end: number,
  ) {
    super({ highWaterMark: CHUNK_SIZE });
  }

  override _read(): void {
    if (this.pos >= this.end) {
      this.push(null);
      return;
    }
    const index = Math.floor(this.pos / CHUNK_SIZE);
    const chunkStart = index * CHUNK_SIZE;
    // _read() is not called again until push(), so at most one chunk is in flight per stream, plus
    // the next one, started early so that its file read overlaps this chunk's consumer.
    const current = this.fetchChunk(index);
    if (chunkStart + CHUNK_SIZE < this.end) this.fetchChunk(index + 1).catch(() => undefined);
    current.then(
      (plaintext) => {
        if (this.destroyed) return;
        const to = Math.min(plaintext.length, this.end - chunkStart);
        // Copied so that a consumer writing into its buffer cannot corrupt the shared cache.
        const piece = Buffer.from(plaintext.subarray(this.pos - chunkStart, to));
        this.pos = chunkStart + to;
        this.push(piece);
        if (this.pos >= this.end) this.push(null);
      },
      (err: unknown) => this.destroy(err as Error),
    );
  }
}

async function readExactly(file: RandomAccessSource, position: number, length: number): Promise<Buffer> {
  let buf: Buffer;
  try {
    buf = position + length <= file.size ? await file.read(position, length) : Buffer.alloc(0);
  } catch (err) {
    if (isCofferError(err) && err.code === 'E_ARCHIVE_TRUNCATED') buf = Buffer.alloc(0);
    else throw err;
  }
  if (buf.length !== length) throw new CofferError('E_CRYPT_TRUNCATED', 'encrypted archive file became shorter while it was being read');
  return buf;
}
