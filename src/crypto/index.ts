/** Encryption format v1 (DESIGN.md section 4, docs/FORMAT.md): the public API of src/crypto. */
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
export { createDecryptStream, type OpenedHeader, readHeader } from './decrypt';
export { EncryptedFileReader } from './random-access';
