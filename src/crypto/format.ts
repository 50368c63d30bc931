/**
 * Encryption format v1: constants, header encoding and the structural header checks.
 * The byte layout is documented in docs/FORMAT.md; DESIGN.md section 4 is the contract.
 * Nothing here touches keys except the header MAC, which is part of the header's bytes.
 */
import { createHmac } from 'node:crypto';
import { CofferError } from '../core/errors';

export const MAGIC = Buffer.from([0x89, 0x43, 0x4f, 0x46, 0x46, 0x45, 0x52, 0x0a]);
export const FORMAT_VERSION = 1;
export const CIPHER_AES_256_GCM = 1;
export const KEY_SOURCE_RAW = 0;
export const KEY_SOURCE_ARGON2ID = 1;
export const LOG2_CHUNK_SIZE = 16;

export const HEADER_SIZE = 120;
/** The header MAC covers bytes [0, HEADER_MAC_OFFSET). */
export const HEADER_MAC_OFFSET = 88;
export const CHUNK_SIZE = 1 << LOG2_CHUNK_SIZE;
export const TAG_SIZE = 16;
export const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
/** The chunk counter is a u32 in the nonce, so a file holds at most 2^32 chunks. */
export const MAX_CHUNKS = 2 ** 32;

export const KEY_SIZE = 32;
export const KEY_ID_SIZE = 8;
export const ARGON2_SALT_SIZE = 16;
export const ARCHIVE_SALT_SIZE = 32;
export const NONCE_PREFIX_SIZE = 7;

const OFF = {
  version: 8,
  cipher: 9,
  keySource: 10,
  log2ChunkSize: 11,
  argon2Memory: 12,
  argon2Iterations: 16,
  argon2Parallelism: 20,
  argon2Salt: 21,
  keyId: 37,
  archiveSalt: 45,
  noncePrefix: 77,
  reserved: 84,
  mac: HEADER_MAC_OFFSET,
} as const;

export interface Argon2Params {
  memoryKiB: number;
  iterations: number;
  parallelism: number;
}

export const DEFAULT_ARGON2_PARAMS: Readonly<Argon2Params> = Object.freeze({
  memoryKiB: 65536,
  iterations: 3,
  parallelism: 4,
});

/** Limits every reader enforces before deriving, so a crafted header cannot make us burn RAM or CPU. */
export const ARGON2_LIMITS = Object.freeze({
  maxMemoryKiB: 1048576,
  maxIterations: 10,
  maxParallelism: 16,
});

export type HeaderKeySource = 'raw' | 'argon2id';

export interface HeaderFields {
  keySource: HeaderKeySource;
  /** Null for raw-key archives (all argon2id fields are zero on disk). */
  argon2: Argon2Params | null;
  /** 16 bytes; zeros for raw-key archives. */
  argon2Salt: Buffer;
  keyId: Buffer;
  archiveSalt: Buffer;
  noncePrefix: Buffer;
}

export interface ParsedHeader extends HeaderFields {
  /** The 88 bytes the MAC covers. */
  authenticated: Buffer;
  mac: Buffer;
}

/** True when the first bytes of a file are the format's magic. Encryption is detected by content only. */
export function isCofferEncrypted(first8: Buffer): boolean {
  return first8.length >= MAGIC.length && first8.subarray(0, MAGIC.length).equals(MAGIC);
}

/** Throws E_CRYPT_PARAMS unless the argon2id parameters are within the format's limits. */
export function checkArgon2Params(params: Argon2Params, where: string): void {
  const { memoryKiB: m, iterations: t, parallelism: p } = params;
  const problem = (what: string): CofferError => new CofferError('E_CRYPT_PARAMS', `${where}: ${what}`);
  if (!Number.isInteger(m) || !Number.isInteger(t) || !Number.isInteger(p)) {
    throw problem('argon2id parameters must be integers');
  }
  if (t < 1) throw problem(`argon2id iterations ${t} is below the minimum of 1`);
  if (t > ARGON2_LIMITS.maxIterations) {
    throw problem(`argon2id iterations ${t} is above the limit of ${ARGON2_LIMITS.maxIterations}`);
  }
  if (p < 1) throw problem(`argon2id parallelism ${p} is below the minimum of 1`);
  if (p > ARGON2_LIMITS.maxParallelism) {
    throw problem(`argon2id parallelism ${p} is above the limit of ${ARGON2_LIMITS.maxParallelism}`);
  }
  if (m > ARGON2_LIMITS.maxMemoryKiB) {
    throw problem(`argon2id memory ${m} KiB is above the limit of ${ARGON2_LIMITS.maxMemoryKiB} KiB`);
  }
  if (m < 8 * p) throw problem(`argon2id memory ${m} KiB is below 8 KiB per lane (${8 * p} KiB for parallelism ${p})`);
}

function checkLength(name: string, buf: Buffer, size: number): void {
  if (buf.length !== size) {
    throw new CofferError('E_INTERNAL', `header field ${name} must be ${size} bytes, got ${buf.length}`);
  }
}

/** The 88 authenticated header bytes (everything but the MAC). */
export function encodeHeaderBody(fields: HeaderFields): Buffer {
  checkLength('key id', fields.keyId, KEY_ID_SIZE);
  checkLength('archive salt', fields.archiveSalt, ARCHIVE_SALT_SIZE);
  checkLength('nonce prefix', fields.noncePrefix, NONCE_PREFIX_SIZE);
  checkLength('argon2id salt', fields.argon2Salt, ARGON2_SALT_SIZE);
  const body = Buffer.alloc(HEADER_MAC_OFFSET);
  MAGIC.copy(body, 0);
  body[OFF.version] = FORMAT_VERSION;
  body[OFF.cipher] = CIPHER_AES_256_GCM;
  body[OFF.log2ChunkSize] = LOG2_CHUNK_SIZE;
  if (fields.keySource === 'argon2id') {
    if (fields.argon2 === null) throw new CofferError('E_INTERNAL', 'argon2id header without argon2id parameters');
    checkArgon2Params(fields.argon2, 'refusing to write archive');
    body[OFF.keySource] = KEY_SOURCE_ARGON2ID;
    body.writeUInt32BE(fields.argon2.memoryKiB, OFF.argon2Memory);
    body.writeUInt32BE(fields.argon2.iterations, OFF.argon2Iterations);
    body.writeUInt8(fields.argon2.parallelism, OFF.argon2Parallelism);
    fields.argon2Salt.copy(body, OFF.argon2Salt);
  } else {
    // Raw-key headers keep every argon2id field zero; readers reject anything else.
    body[OFF.keySource] = KEY_SOURCE_RAW;
  }
  fields.keyId.copy(body, OFF.keyId);
  fields.archiveSalt.copy(body, OFF.archiveSalt);
  fields.noncePrefix.copy(body, OFF.noncePrefix);
  return body;
}

export function headerMac(headerKey: Buffer, authenticated: Buffer): Buffer {
  return createHmac('sha256', headerKey).update(authenticated.subarray(0, HEADER_MAC_OFFSET)).digest();
}

/** The full 120-byte header: body followed by HMAC-SHA256(header key, body). */
export function encodeHeader(fields: HeaderFields, headerKey: Buffer): Buffer {
  const body = encodeHeaderBody(fields);
  return Buffer.concat([body, headerMac(headerKey, body)], HEADER_SIZE);
}

function isAllZero(buf: Buffer): boolean {
  for (const byte of buf) if (byte !== 0) return false;
  return true;
}

/**
 * Structural header checks in the format's reading order (everything that needs no key).
 * `buf` may be shorter than the header when the input ended early: the magic is still checked first,
 * so a short non-coffer file is reported as such rather than as a truncated archive.
 */
export function parseHeaderFields(buf: Buffer): ParsedHeader {
  const magicBytes = Math.min(buf.length, MAGIC.length);
  if (!buf.subarray(0, magicBytes).equals(MAGIC.subarray(0, magicBytes))) {
    throw new CofferError('E_CRYPT_NOT_COFFER', 'not a coffer encrypted archive (bad magic)');
  }
  if (buf.length < HEADER_SIZE) {
    throw new CofferError(
      'E_CRYPT_TRUNCATED',
      `encrypted archive is truncated: it ends inside the header (${buf.length} of ${HEADER_SIZE} bytes)`,
    );
  }
  const version = buf[OFF.version];
  if (version !== FORMAT_VERSION) {
    throw new CofferError(
      'E_CRYPT_UNSUPPORTED',
      `unsupported encryption format version ${version} (this build reads version ${FORMAT_VERSION})`,
    );
  }
  const cipher = buf[OFF.cipher];
  if (cipher !== CIPHER_AES_256_GCM) {
    throw new CofferError('E_CRYPT_UNSUPPORTED', `unsupported cipher ${cipher} (this build reads 1, AES-256-GCM)`);
  }
  const keySourceByte = buf[OFF.keySource];
  if (keySourceByte !== KEY_SOURCE_RAW && keySourceByte !== KEY_SOURCE_ARGON2ID) {
    throw new CofferError(
      'E_CRYPT_UNSUPPORTED',
      `unsupported key source ${keySourceByte} (this build reads 0, raw key, and 1, argon2id passphrase)`,
    );
  }
  const log2 = buf[OFF.log2ChunkSize];
  if (log2 !== LOG2_CHUNK_SIZE) {
    throw new CofferError(
      'E_CRYPT_UNSUPPORTED',
      `unsupported chunk size 2^${log2} (format version 1 uses 2^${LOG2_CHUNK_SIZE})`,
    );
  }
  if (!isAllZero(buf.subarray(OFF.reserved, OFF.mac))) {
    throw new CofferError('E_CRYPT_HEADER', 'invalid encrypted archive header: reserved bytes are not zero');
  }

  const argon2Fields = buf.subarray(OFF.argon2Memory, OFF.keyId);
  const argon2Salt = Buffer.from(buf.subarray(OFF.argon2Salt, OFF.keyId));
  let argon2: Argon2Params | null = null;
  if (keySourceByte === KEY_SOURCE_RAW) {
    if (!isAllZero(argon2Fields)) {
      throw new CofferError(
        'E_CRYPT_HEADER',
        'invalid encrypted archive header: raw-key archive with non-zero argon2id fields',
      );
    }
  } else {
    argon2 = {
      memoryKiB: buf.readUInt32BE(OFF.argon2Memory),
      iterations: buf.readUInt32BE(OFF.argon2Iterations),
      parallelism: buf.readUInt8(OFF.argon2Parallelism),
    };
    checkArgon2Params(argon2, 'refusing archive header');
  }

  return {
    keySource: keySourceByte === KEY_SOURCE_RAW ? 'raw' : 'argon2id',
    argon2,
    argon2Salt,
    keyId: Buffer.from(buf.subarray(OFF.keyId, OFF.archiveSalt)),
    archiveSalt: Buffer.from(buf.subarray(OFF.archiveSalt, OFF.noncePrefix)),
    noncePrefix: Buffer.from(buf.subarray(OFF.noncePrefix, OFF.reserved)),
    authenticated: Buffer.from(buf.subarray(0, OFF.mac)),
    mac: Buffer.from(buf.subarray(OFF.mac, HEADER_SIZE)),
  };
}
