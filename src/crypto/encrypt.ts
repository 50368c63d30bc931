/**
 * Writing format v1: the header, then the plaintext cut into 64 KiB chunks, each sealed with
 * AES-256-GCM under a STREAM nonce.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createAtomicFile } from '../core/atomic-file';
import { CofferError } from '../core/errors';
import { type ChunkContext, sealChunk, tooManyChunks } from './chunk';
import {
  ARCHIVE_SALT_SIZE,
  ARGON2_SALT_SIZE,
  CHUNK_SIZE,
  checkArgon2Params,
  encodeHeader,
  type HeaderFields,
  MAX_CHUNKS,
  NONCE_PREFIX_SIZE,
} from './format';
import {
  checkRawKey,
  deriveArchiveKeys,
  deriveFromPassphrase,
  keyIdOf,
  type KeySource,
  writerArgon2Params,
} from './keys';

/** Fixed salts and nonce prefix, for known-answer tests only; normal use leaves them random. */
export interface EncryptOptions {
  archiveSalt?: Buffer;
  noncePrefix?: Buffer;
  argon2Salt?: Buffer;
}

class EncryptStream extends Transform {
  private readonly buf = Buffer.alloc(CHUNK_SIZE);
  private filled = 0;
  private index = 0;

  constructor(
    header: Buffer,
    private readonly ctx: ChunkContext,
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
    if (this.index >= MAX_CHUNKS) throw tooManyChunks(this.index + 1);
    const [ciphertext, tag] = sealChunk(this.ctx.payloadKey, this.ctx.noncePrefix, this.index, last, plaintext);
    this.push(ciphertext);
    this.push(tag);
    this.index += 1;
  }
}

function fixedOrRandom(name: string, given: Buffer | undefined, size: number): Buffer {
  if (given === undefined) return randomBytes(size);
  if (given.length !== size) throw new CofferError('E_INTERNAL', `${name} must be ${size} bytes, got ${given.length}`);
  return Buffer.from(given);
}

async function writerHeader(
  source: KeySource,
  opts: EncryptOptions,
): Promise<{ masterKey: Buffer; fields: HeaderFields }> {
  const archiveSalt = fixedOrRandom('archive salt', opts.archiveSalt, ARCHIVE_SALT_SIZE);
  const noncePrefix = fixedOrRandom('nonce prefix', opts.noncePrefix, NONCE_PREFIX_SIZE);
  if (source.kind === 'raw') {
    checkRawKey(source.key);
    const masterKey = Buffer.from(source.key);
    const fields: HeaderFields = {
      keySource: 'raw',
      argon2: null,
      argon2Salt: Buffer.alloc(ARGON2_SALT_SIZE),
      keyId: keyIdOf(masterKey),
      archiveSalt,
      noncePrefix,
    };
    return { masterKey, fields };
  }
  if (source.passphrase.length === 0) throw new CofferError('E_PASSPHRASE_INVALID', 'the passphrase is empty');
  const params = writerArgon2Params(source);
  checkArgon2Params(params, 'refusing to write archive');
  const argon2Salt = fixedOrRandom('argon2id salt', opts.argon2Salt, ARGON2_SALT_SIZE);
  const masterKey = await deriveFromPassphrase(source.passphrase, argon2Salt, params);
  const fields: HeaderFields = {
    keySource: 'argon2id',
    argon2: params,
    argon2Salt,
    keyId: keyIdOf(masterKey),
    archiveSalt,
    noncePrefix,
  };
  return { masterKey, fields };
}

/**
 * A Transform from plaintext to an encrypted archive. Async because a passphrase source runs argon2id
 * before the header can be written; all key and parameter errors surface here, before any output.
 */
export async function createEncryptStream(source: KeySource, opts: EncryptOptions = {}): Promise<Transform> {
  const { masterKey, fields } = await writerHeader(source, opts);
  const { headerKey, payloadKey } = deriveArchiveKeys(masterKey, fields.archiveSalt);
  return new EncryptStream(encodeHeader(fields, headerKey), { payloadKey, noncePrefix: fields.noncePrefix });
}

/**
 * Encrypts a file. Output goes to `<outPath>.partial` and is renamed into place only when complete,
 * so a failed run never leaves something at outPath that looks like a finished archive.
 */
export async function encryptFile(inPath: string, outPath: string, source: KeySource): Promise<void> {
  const encrypt = await createEncryptStream(source);
  const out = createAtomicFile(outPath);
  try {
    await pipeline(createReadStream(inPath), encrypt, out.stream);
    await out.commit();
  } catch (err) {
    await out.abort();
    throw err;
  }
}
