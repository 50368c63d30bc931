/**
 * Encryption (DESIGN.md section 4, docs/FORMAT.md): format v1 for raw keys and passphrases, age v1 for
 * recipients. The public API of src/crypto.
 */
export {
  ARGON2_LIMITS,
  type Argon2Params,
  CHUNK_SIZE,
  DEFAULT_ARGON2_PARAMS,
  HEADER_SIZE,
  isCofferEncrypted,
  MAGIC,
  parseHeaderFields,
  SEALED_CHUNK_SIZE,
} from './format';
export { openSealedKeySource, sealKeySource } from './seal';
export { type KeySource, generateKey, keyIdOf, parseAesKey } from './keys';
export { createEncryptStream, encryptFile, type EncryptOptions } from './encrypt';
export { type OpenedHeader } from './decrypt';
export { createDecryptStream } from './stream';
export { encryptionFor, encryptionOf, recipientsOf, type Encryption, readEnvelope, SNIFF_BYTES } from './envelope';
export { EncryptedFileReader } from './random-access';
export {
  AgeIdentity,
  AgeRecipient,
  generateAgeIdentity,
  parseIdentity,
  parseIdentityFile,
  parseRecipient,
  parseRecipientsFile,
  uniqueRecipients,
} from './age/keys';
export { AGE_MAGIC, parseAgeHeader } from './age/header';
