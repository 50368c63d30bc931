/**
 * Sealing and opening one chunk (AES-256-GCM, STREAM nonces), and the rules that turn a failed open
 * into the right error. Shared by the streaming decryptor and the random-access reader so that both
 * report the same damage the same way.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { CofferError } from '../core/errors';
import { NONCE_PREFIX_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE } from './format';

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

export interface ChunkContext {
  payloadKey: Buffer;
  noncePrefix: Buffer;
}

/**
 * Opens a chunk that has more data after it. If it fails but opens as a final chunk, the file is a
 * complete archive with something appended, which deserves its own message.
 */
export function openMiddleChunk(ctx: ChunkContext, index: number, sealed: Buffer): Buffer {
  const plaintext = openChunk(ctx.payloadKey, ctx.noncePrefix, index, false, sealed);
  if (plaintext !== null) return plaintext;
  if (openChunk(ctx.payloadKey, ctx.noncePrefix, index, true, sealed) !== null) {
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
export function openFinalChunk(ctx: ChunkContext, index: number, sealed: Buffer): Buffer {
  if (sealed.length < TAG_SIZE) {
    throw new CofferError(
      'E_CRYPT_TRUNCATED',
      `encrypted archive is truncated: chunk ${index} is ${sealed.length} bytes, shorter than its ${TAG_SIZE}-byte tag`,
    );
  }
  const plaintext = openChunk(ctx.payloadKey, ctx.noncePrefix, index, true, sealed);
  if (plaintext !== null) {
    if (plaintext.length === 0 && index > 0) {
      throw new CofferError(
        'E_CRYPT_CORRUPT',
        `chunk ${index}: empty final chunk after data (not allowed in format v1)`,
      );
    }
    return plaintext;
  }
  const fullChunk = sealed.length === SEALED_CHUNK_SIZE;
  if (fullChunk && openChunk(ctx.payloadKey, ctx.noncePrefix, index, false, sealed) !== null) {
    throw new CofferError(
      'E_CRYPT_TRUNCATED',
      `encrypted archive is truncated: it ends after chunk ${index}, which is not the final chunk`,
    );
  }
  throw new CofferError('E_CRYPT_CORRUPT', `chunk ${index}: truncated, tampered or data appended`);
}

/** The nonce counter is a u32, so a longer file cannot be a valid archive. */
export function tooManyChunks(count: number): CofferError {
  return new CofferError(
    'E_CRYPT_CORRUPT',
    `encrypted archive has ${count} chunks, more than the format's limit of 2^32`,
  );
}
