/**
 * Sealing and opening one chunk (STREAM nonces: AES-256-GCM for format v1, ChaCha20-Poly1305 for age),
 * and the rules that turn a failed open into the right error. Shared by both formats' streaming
 * decryptors and the random-access reader so that all report the same damage the same way.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { CofferError } from '../core/errors';
import { MAX_CHUNKS, NONCE_PREFIX_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE } from './format';

/** nonce = prefix(7) ‖ u32be(index) ‖ last flag: binds each chunk to its position and to being last. */
export function chunkNonce(noncePrefix: Buffer, index: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(NONCE_PREFIX_SIZE + 5);
  noncePrefix.copy(nonce, 0, 0, NONCE_PREFIX_SIZE);
  nonce.writeUInt32BE(index, NONCE_PREFIX_SIZE);
  nonce[NONCE_PREFIX_SIZE + 4] = last ? 1 : 0;
  return nonce;
}

/** Returns [ciphertext, tag]; kept apart so the caller can write them without copying 64 KiB. */
export function sealChunk(
  payloadKey: Buffer,
  noncePrefix: Buffer,
  index: number,
  last: boolean,
  plaintext: Buffer,
): [Buffer, Buffer] {
  const cipher = createCipheriv('aes-256-gcm', payloadKey, chunkNonce(noncePrefix, index, last));
  const ciphertext = cipher.update(plaintext);
  cipher.final();
  return [ciphertext, cipher.getAuthTag()];
}

/** The chunk's plaintext, or null if it does not authenticate as chunk `index` with this last flag. */
export function openChunk(
  payloadKey: Buffer,
  noncePrefix: Buffer,
  index: number,
  last: boolean,
  sealed: Buffer,
): Buffer | null {
  if (sealed.length < TAG_SIZE || sealed.length > SEALED_CHUNK_SIZE) return null;
  const body = sealed.subarray(0, sealed.length - TAG_SIZE);
  const decipher = createDecipheriv('aes-256-gcm', payloadKey, chunkNonce(noncePrefix, index, last));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  // update() output is unauthenticated until final() succeeds; it is only returned after that.
  const plaintext = decipher.update(body);
  try {
    decipher.final();
  } catch {
    return null;
  }
  return plaintext;
}

/**
 * One format's chunk cipher. Both formats cut the plaintext into 64 KiB chunks, each sealed with a
 * 16-byte tag under a nonce that binds its index and whether it is the last one.
 */
export interface ChunkCipher {
  seal(index: number, last: boolean, plaintext: Buffer): [Buffer, Buffer];
  open(index: number, last: boolean, sealed: Buffer): Buffer | null;
  /** How many chunks the nonce can count. */
  readonly maxChunks: number;
}

export function v1Cipher(payloadKey: Buffer, noncePrefix: Buffer): ChunkCipher {
  return {
    seal: (index, last, plaintext) => sealChunk(payloadKey, noncePrefix, index, last, plaintext),
    open: (index, last, sealed) => openChunk(payloadKey, noncePrefix, index, last, sealed),
    maxChunks: MAX_CHUNKS,
  };
}

/** age: ChaCha20-Poly1305, nonce = 11-byte big-endian counter ‖ last flag. */
export function ageCipher(payloadKey: Buffer): ChunkCipher {
  const nonce = (index: number, last: boolean): Buffer => {
    const n = Buffer.alloc(12);
    n.writeUIntBE(index, 5, 6);
    n[11] = last ? 1 : 0;
    return n;
  };
  return {
    seal(index, last, plaintext) {
      const cipher = createCipheriv('chacha20-poly1305', payloadKey, nonce(index, last), { authTagLength: TAG_SIZE });
      const ciphertext = cipher.update(plaintext);
      cipher.final();
      return [ciphertext, cipher.getAuthTag()];
    },
    open(index, last, sealed) {
      if (sealed.length < TAG_SIZE || sealed.length > SEALED_CHUNK_SIZE) return null;
      const decipher = createDecipheriv('chacha20-poly1305', payloadKey, nonce(index, last), { authTagLength: TAG_SIZE });
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
      const plaintext = decipher.update(sealed.subarray(0, sealed.length - TAG_SIZE));
      try {
        decipher.final();
      } catch {
        return null;
      }
      return plaintext;
    },
    // 2^48 chunks of 64 KiB is far beyond any file; the counter is kept within JavaScript's safe integers.
    maxChunks: 2 ** 48,
  };
}

/**
 * Opens a chunk that has more data after it. If it fails but opens as a final chunk, the file is a
 * complete archive with something appended, which deserves its own message.
 */
export function openMiddleChunk(ctx: ChunkCipher, index: number, sealed: Buffer): Buffer {
  const plaintext = ctx.open(index, false, sealed);
  if (plaintext !== null) return plaintext;
  if (ctx.open(index, true, sealed) !== null) {
    throw new CofferError(
      'E_CRYPT_TRAILING_DATA',
      `encrypted archive has data after its final chunk (chunk ${index}); the archive itself is complete`,
    );
  }
  throw new CofferError('E_CRYPT_CORRUPT', `chunk ${index} failed authentication (corrupted or tampered)`);
}

/**
 * Opens the chunk the file ends with. A cut exactly at a chunk boundary leaves a chunk that opens as
 * non-final: that is certainly truncation, so it is told apart from the general failure, where
 * truncation, tampering and appended bytes cannot be distinguished.
 */
export function openFinalChunk(ctx: ChunkCipher, index: number, sealed: Buffer): Buffer {
  if (sealed.length < TAG_SIZE) {
    throw new CofferError(
      'E_CRYPT_TRUNCATED',
      `encrypted archive is truncated: chunk ${index} is ${sealed.length} bytes, shorter than its ${TAG_SIZE}-byte tag`,
    );
  }
  const plaintext = ctx.open(index, true, sealed);
  if (plaintext !== null) {
    if (plaintext.length === 0 && index > 0) {
      throw new CofferError(
        'E_CRYPT_CORRUPT',
        `chunk ${index}: empty final chunk after data (not allowed)`,
      );
    }
    return plaintext;
  }
  const fullChunk = sealed.length === SEALED_CHUNK_SIZE;
  if (fullChunk && ctx.open(index, false, sealed) !== null) {
    throw new CofferError(
      'E_CRYPT_TRUNCATED',
      `encrypted archive is truncated: it ends after chunk ${index}, which is not the final chunk`,
    );
  }
  throw new CofferError('E_CRYPT_CORRUPT', `chunk ${index}: truncated, tampered or data appended`);
}

/** The nonce counter is bounded (a u32 in format v1), so a longer file cannot be a valid archive. */
export function tooManyChunks(count: number, limit: number = MAX_CHUNKS): CofferError {
  return new CofferError(
    'E_CRYPT_CORRUPT',
    `encrypted archive has ${count} chunks, more than the format's limit of 2^${Math.log2(limit)}`,
  );
}
