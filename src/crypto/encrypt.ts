/**
 * Writing: format v1 for a raw key or a passphrase (the 120-byte header, then AES-256-GCM chunks), an
 * age v1 file for recipients (the textual header with one X25519 stanza each, a 16-byte nonce, then
 * ChaCha20-Poly1305 chunks).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createAtomicFile } from '../core/atomic-file';
import { CofferError } from '../core/errors';
import { AGE_NONCE_SIZE, agePayloadKey, encodeAgeHeader, encodeBase64 } from './age/header';
import { FILE_KEY_SIZE, uniqueRecipients, wrapFileKey, type AgeRecipient } from './age/keys';
import { ageCipher, v1Cipher } from './chunk';
import {
  ARCHIVE_SALT_SIZE,
  ARGON2_SALT_SIZE,
  checkArgon2Params,
  encodeHeader,
  type HeaderFields,
  NONCE_PREFIX_SIZE,
} from './format';
import { EncryptStream } from './stream';
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

function fixedOrRandom(name: string, given: Buffer | undefined, size: number): Buffer {
  if (given === undefined) return randomBytes(size);
  if (given.length !== size) throw new CofferError('E_INTERNAL', `${name} must be ${size} bytes, got ${given.length}`);
  return Buffer.from(given);
}

async function writerHeader(
  source: Extract<KeySource, { kind: 'raw' | 'passphrase' }>,
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
  if (source.kind === 'recipients') return createAgeEncryptStream(source.recipients);
  if (source.kind === 'identities') {
    throw new CofferError('E_USAGE', 'an identity opens age files; to seal one, give its recipient (age1…, printed by coffer keygen --age and age-keygen -y)');
  }
  const { masterKey, fields } = await writerHeader(source, opts);
  const { headerKey, payloadKey } = deriveArchiveKeys(masterKey, fields.archiveSalt);
  return new EncryptStream(encodeHeader(fields, headerKey), v1Cipher(payloadKey, fields.noncePrefix));
}

/** An age v1 file sealed to every recipient (each once): any one of their identities opens it. */
function createAgeEncryptStream(recipients: AgeRecipient[]): Transform {
  const unique = uniqueRecipients(recipients);
  if (unique.length === 0) throw new CofferError('E_AGE_RECIPIENT_INVALID', 'no recipients given: an age file needs at least one');
  const fileKey = randomBytes(FILE_KEY_SIZE);
  const stanzas = unique.map((r) => {
    const { share, body } = wrapFileKey(fileKey, r);
    return { type: 'X25519', args: [encodeBase64(share)], body };
  });
  const nonce = randomBytes(AGE_NONCE_SIZE);
  return new EncryptStream(Buffer.concat([encodeAgeHeader(stanzas, fileKey), nonce]), ageCipher(agePayloadKey(fileKey, nonce)));
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
