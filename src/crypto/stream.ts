/**
 * Streaming encryption and decryption for both formats: the header, then 64 KiB chunks, each sealed
 * with a tag (format v1: AES-256-GCM; age: ChaCha20-Poly1305). The decryptor releases a chunk's
 * plaintext only after its tag has verified, and holds the last chunk back until the input ends.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { CofferError } from '../core/errors';
import { type ChunkCipher, openFinalChunk, openMiddleChunk, tooManyChunks } from './chunk';
import { openEnvelope } from './envelope';
import { CHUNK_SIZE, SEALED_CHUNK_SIZE } from './format';
import type { KeySource } from './keys';

export class EncryptStream extends Transform {
  private readonly buf = Buffer.alloc(CHUNK_SIZE);
  private filled = 0;
  private index = 0;

  constructor(
    header: Buffer,
    private readonly cipher: ChunkCipher,
  ) {
    super();
    this.push(header);
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      let off = 0;
      while (off < data.length) {
        if (this.filled === CHUNK_SIZE) {
          // A full chunk is sealed only once more input proves it is not the last one.
          this.seal(this.buf, false);
          this.filled = 0;
        }
        const remaining = data.length - off;
        if (this.filled === 0 && remaining > CHUNK_SIZE) {
          this.seal(data.subarray(off, off + CHUNK_SIZE), false);
          off += CHUNK_SIZE;
          continue;
        }
        const n = Math.min(remaining, CHUNK_SIZE - this.filled);
        data.copy(this.buf, this.filled, off, off + n);
        this.filled += n;
        off += n;
      }
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      // Empty input still gets one (empty) final chunk, so a reader can tell it from truncation.
      this.seal(this.buf.subarray(0, this.filled), true);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private seal(plaintext: Buffer, last: boolean): void {
    if (this.index >= this.cipher.maxChunks) throw tooManyChunks(this.index + 1, this.cipher.maxChunks);
    const [ciphertext, tag] = this.cipher.seal(this.index, last, plaintext);
    this.push(ciphertext);
    this.push(tag);
    this.index += 1;
  }
}

class DecryptStream extends Transform {
  /** Header bytes gathered until the envelope opens (its length is only known to the format). */
  private head: Buffer[] = [];
  private headLen = 0;
  private cipher: ChunkCipher | null = null;
  // One sealed chunk is always held back: whether it is the last one is only known from what follows.
  private readonly pending = Buffer.alloc(SEALED_CHUNK_SIZE);
  private pendingLen = 0;
  private index = 0;

  constructor(private readonly source: KeySource | undefined) {
    super();
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.cipher !== null) {
      this.consumeOrFail(data, this.cipher, callback);
      return;
    }
    this.head.push(data);
    this.headLen += data.length;
    this.tryOpen(false).then(
      (rest) => {
        if (rest === null) callback();
        else this.consumeOrFail(rest, this.cipher!, callback);
      },
      (err: unknown) => callback(err as Error),
    );
  }

  override _flush(callback: TransformCallback): void {
    const finish = (): void => {
      try {
        const cipher = this.cipher;
        if (cipher === null) throw new CofferError('E_INTERNAL', 'decryptor ended without a header');
        if (this.pendingLen === 0) {
          throw new CofferError(
            'E_CRYPT_TRUNCATED',
            this.index === 0
              ? 'encrypted archive is truncated: no chunks after the header'
              : `encrypted archive is truncated: no final chunk after chunk ${this.index - 1}`,
          );
        }
        if (this.index >= cipher.maxChunks) throw tooManyChunks(this.index + 1, cipher.maxChunks);
        this.push(openFinalChunk(cipher, this.index, this.pending.subarray(0, this.pendingLen)));
        callback();
      } catch (err) {
        callback(err as Error);
      }
    };
    if (this.cipher !== null) {
      finish();
      return;
    }
    // The input ended before the header was complete: opening it now reports why.
    this.tryOpen(true).then((rest) => {
      if (rest !== null) this.consume(rest, this.cipher!);
      finish();
    }, (err: unknown) => callback(err as Error));
  }

  /** Opens the header once enough bytes have arrived; returns the bytes after it, or null for "more". */
  private async tryOpen(final: boolean): Promise<Buffer | null> {
    const prefix = this.head.length === 1 ? this.head[0] : Buffer.concat(this.head, this.headLen);
    this.head = [prefix];
    const result = await openEnvelope(prefix, final, this.source);
    if (result === null) return null;
    this.cipher = result.opened.cipher;
    this.head = [];
    return prefix.subarray(result.consumed);
  }

  private consumeOrFail(data: Buffer, cipher: ChunkCipher, callback: TransformCallback): void {
    try {
      this.consume(data, cipher);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private consume(data: Buffer, cipher: ChunkCipher): void {
    let off = 0;
    while (off < data.length) {
      if (this.pendingLen === SEALED_CHUNK_SIZE) {
        // More bytes follow the held-back chunk, so it is not the last one.
        this.openMiddle(cipher, this.pending);
        this.pendingLen = 0;
      }
      const remaining = data.length - off;
      if (this.pendingLen === 0 && remaining > SEALED_CHUNK_SIZE) {
        // A whole chunk with bytes after it in the same input: open it in place, no copy.
        this.openMiddle(cipher, data.subarray(off, off + SEALED_CHUNK_SIZE));
        off += SEALED_CHUNK_SIZE;
        continue;
      }
      const n = Math.min(remaining, SEALED_CHUNK_SIZE - this.pendingLen);
      data.copy(this.pending, this.pendingLen, off, off + n);
      this.pendingLen += n;
      off += n;
    }
  }

  private openMiddle(cipher: ChunkCipher, sealed: Buffer): void {
    if (this.index >= cipher.maxChunks - 1) throw tooManyChunks(this.index + 2, cipher.maxChunks);
    this.push(openMiddleChunk(cipher, this.index, sealed));
    this.index += 1;
  }
}

/**
 * A Transform from an encrypted archive (format v1 or age, told apart by its first bytes) to its
 * plaintext. Errors are CofferErrors; everything pushed before an error belongs to chunks that
 * authenticated as non-final chunks, so a consumer must still treat the output as incomplete when the
 * stream fails.
 */
export function createDecryptStream(source: KeySource | undefined): Transform {
  return new DecryptStream(source);
}
