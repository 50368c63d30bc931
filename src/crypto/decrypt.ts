/**
 * Reading format v1: opening the header (reading order, key checks, header MAC) and the streaming
 * decryptor, which releases a chunk's plaintext only after its tag has verified.
 */
import type { FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { CofferError } from '../core/errors';
import { type ChunkContext, openFinalChunk, openMiddleChunk, tooManyChunks } from './chunk';
import {
  HEADER_SIZE,
  headerMac,
  MAGIC,
  MAX_CHUNKS,
  type ParsedHeader,
  parseHeaderFields,
  SEALED_CHUNK_SIZE,
} from './format';
import { checkRawKey, deriveArchiveKeys, deriveFromPassphrase, keyIdOf, type KeySource, sameBytes } from './keys';

/** What a reader needs after the header has been authenticated. */
export interface OpenedHeader extends ChunkContext {
  header: ParsedHeader;
  keyIdHex: string;
}

function describeArchiveKey(header: ParsedHeader): string {
  return header.keySource === 'raw'
    ? `a raw 32-byte key (key id ${header.keyId.toString('hex')})`
    : 'an argon2id passphrase';
}

async function masterKeyFor(header: ParsedHeader, source: KeySource | undefined): Promise<Buffer> {
  if (source === undefined) {
    throw new CofferError(
      'E_CRYPT_KEY_REQUIRED',
      `archive is encrypted with ${describeArchiveKey(header)}, but none was given`,
    );
  }
  if (header.keySource === 'raw') {
    if (source.kind !== 'raw') {
      throw new CofferError(
        'E_CRYPT_KEY_REQUIRED',
        `archive is encrypted with ${describeArchiveKey(header)}, but a passphrase was given`,
      );
    }
    checkRawKey(source.key);
    const given = keyIdOf(source.key);
    if (!sameBytes(given, header.keyId)) {
      throw new CofferError(
        'E_CRYPT_KEY_MISMATCH',
        `archive needs key id ${header.keyId.toString('hex')}, the key given has id ${given.toString('hex')}`,
      );
    }
    return source.key;
  }
  if (source.kind !== 'passphrase') {
    throw new CofferError(
      'E_CRYPT_KEY_REQUIRED',
      `archive is encrypted with ${describeArchiveKey(header)}, but a raw key was given`,
    );
  }
  if (header.argon2 === null) throw new CofferError('E_INTERNAL', 'argon2id header parsed without parameters');
  // parseHeaderFields has already checked the parameters against the limits.
  const masterKey = await deriveFromPassphrase(source.passphrase, header.argon2Salt, header.argon2);
  // The derived key id is not shown: it would be a cheap check for guesses near the real passphrase.
  if (!sameBytes(keyIdOf(masterKey), header.keyId)) {
    throw new CofferError('E_CRYPT_WRONG_PASSPHRASE', 'wrong passphrase');
  }
  return masterKey;
}

/**
 * Checks a complete (or short) header in the format's reading order and derives the payload key.
 * The key id is checked before the MAC, so a matching id followed by a bad MAC means the header was
 * altered rather than the key being wrong.
 */
export async function openHeader(headerBytes: Buffer, source: KeySource | undefined): Promise<OpenedHeader> {
  const header = parseHeaderFields(headerBytes.subarray(0, HEADER_SIZE));
  const masterKey = await masterKeyFor(header, source);
  const { headerKey, payloadKey } = deriveArchiveKeys(masterKey, header.archiveSalt);
  if (!sameBytes(headerMac(headerKey, header.authenticated), header.mac)) {
    throw new CofferError('E_CRYPT_HEADER', 'encrypted archive header failed authentication (corrupted or tampered)');
  }
  return { header, keyIdHex: header.keyId.toString('hex'), payloadKey, noncePrefix: header.noncePrefix };
}

/** Reads and opens the header of an encrypted archive held in a buffer or an open file. */
export async function readHeader(input: FileHandle | Buffer, source: KeySource | undefined): Promise<OpenedHeader> {
  if (Buffer.isBuffer(input)) return openHeader(input, source);
  const buf = Buffer.alloc(HEADER_SIZE);
  let filled = 0;
  while (filled < HEADER_SIZE) {
    const { bytesRead } = await input.read(buf, filled, HEADER_SIZE - filled, filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return openHeader(buf.subarray(0, filled), source);
}

class DecryptStream extends Transform {
  private readonly headerBuf = Buffer.alloc(HEADER_SIZE);
  private headerLen = 0;
  private ctx: ChunkContext | null = null;
  // One sealed chunk is always held back: whether it is the last one is only known from what follows.
  private readonly pending = Buffer.alloc(SEALED_CHUNK_SIZE);
  private pendingLen = 0;
  private index = 0;

  constructor(private readonly source: KeySource | undefined) {
    super();
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.ctx !== null) {
      this.consumeOrFail(data, this.ctx, callback);
      return;
    }
    const n = Math.min(data.length, HEADER_SIZE - this.headerLen);
    data.copy(this.headerBuf, this.headerLen, 0, n);
    this.headerLen += n;
    if (this.headerLen < HEADER_SIZE) {
      const seen = Math.min(this.headerLen, MAGIC.length);
      // Fail fast on non-coffer input instead of waiting for 120 bytes that may never come.
      if (!this.headerBuf.subarray(0, seen).equals(MAGIC.subarray(0, seen))) {
        callback(new CofferError('E_CRYPT_NOT_COFFER', 'not a coffer encrypted archive (bad magic)'));
        return;
      }
      callback();
      return;
    }
    openHeader(this.headerBuf, this.source).then(
      (opened) => {
        this.ctx = { payloadKey: opened.payloadKey, noncePrefix: opened.noncePrefix };
        this.consumeOrFail(data.subarray(n), this.ctx, callback);
      },
      (err: unknown) => callback(err as Error),
    );
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.ctx === null) {
        // Throws: the input ended inside the header (or was not an archive at all).
        parseHeaderFields(this.headerBuf.subarray(0, this.headerLen));
        throw new CofferError('E_INTERNAL', 'decryptor ended without a header');
      }
      if (this.pendingLen === 0) {
        throw new CofferError(
          'E_CRYPT_TRUNCATED',
          this.index === 0
            ? 'encrypted archive is truncated: no chunks after the header'
            : `encrypted archive is truncated: no final chunk after chunk ${this.index - 1}`,
        );
      }
      if (this.index >= MAX_CHUNKS) throw tooManyChunks(this.index + 1);
      this.push(openFinalChunk(this.ctx, this.index, this.pending.subarray(0, this.pendingLen)));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private consumeOrFail(data: Buffer, ctx: ChunkContext, callback: TransformCallback): void {
    try {
      this.consume(data, ctx);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private consume(data: Buffer, ctx: ChunkContext): void {
    let off = 0;
    while (off < data.length) {
      if (this.pendingLen === SEALED_CHUNK_SIZE) {
        // More bytes follow the held-back chunk, so it is not the last one.
        this.openMiddle(ctx, this.pending);
        this.pendingLen = 0;
      }
      const remaining = data.length - off;
      if (this.pendingLen === 0 && remaining > SEALED_CHUNK_SIZE) {
        // A whole chunk with bytes after it in the same input: open it in place, no copy.
        this.openMiddle(ctx, data.subarray(off, off + SEALED_CHUNK_SIZE));
        off += SEALED_CHUNK_SIZE;
        continue;
      }
      const n = Math.min(remaining, SEALED_CHUNK_SIZE - this.pendingLen);
      data.copy(this.pending, this.pendingLen, off, off + n);
      this.pendingLen += n;
      off += n;
    }
  }

  private openMiddle(ctx: ChunkContext, sealed: Buffer): void {
    if (this.index >= MAX_CHUNKS - 1) throw tooManyChunks(this.index + 2);
    this.push(openMiddleChunk(ctx, this.index, sealed));
    this.index += 1;
  }
}

/**
 * A Transform from an encrypted archive to its plaintext. Errors are CofferErrors with E_CRYPT_* codes;
 * everything pushed before an error belongs to chunks that authenticated as non-final chunks, so a
 * consumer must still treat the output as incomplete when the stream fails.
 */
export function createDecryptStream(source: KeySource | undefined): Transform {
  return new DecryptStream(source);
}
