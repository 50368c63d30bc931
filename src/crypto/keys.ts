/**
 * Key sources and key derivation for format v1: where the 32-byte master key K comes from (a raw key
 * or an argon2id passphrase) and the HKDF-SHA256 sub-keys derived from it.
 */
import { hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import * as argon2 from 'argon2';
import type { AgeIdentity, AgeRecipient } from './age/keys';
import { CofferError } from '../core/errors';
import {
  ARGON2_SALT_SIZE,
  type Argon2Params,
  checkArgon2Params,
  DEFAULT_ARGON2_PARAMS,
  KEY_ID_SIZE,
  KEY_SIZE,
} from './format';

export type { Argon2Params } from './format';

/**
 * What the caller holds. A raw key or a passphrase writes and reads format v1 (`params` only matters
 * when writing: readers take argon2id parameters from the archive header, within the format's limits).
 * Recipients (public keys) write age files; identities (their secret keys) read them.
 */
export type KeySource =
  | { kind: 'raw'; key: Buffer }
  | { kind: 'passphrase'; passphrase: string; params?: Argon2Params }
  | { kind: 'recipients'; recipients: AgeRecipient[] }
  | { kind: 'identities'; identities: AgeIdentity[] };

export interface ArchiveKeys {
  headerKey: Buffer;
  payloadKey: Buffer;
}

const EMPTY = Buffer.alloc(0);
const HEX_KEY = /^[0-9a-fA-F]+$/;
const BASE64_CHARS = /^[A-Za-z0-9+/]*={0,2}$/;

function invalidKey(reason: string): CofferError {
  return new CofferError('E_AES_KEY_INVALID', `invalid AES key: ${reason}`);
}

/**
 * A raw key as typed by an operator: 64 hex digits (either case) or standard base64 of exactly 32 bytes.
 * Surrounding whitespace is ignored because key files usually end with a newline. Messages describe
 * the problem by length and position only, never by the key's characters.
 */
export function parseAesKey(text: string): Buffer {
  const s = text.trim();
  if (s.length === 0) throw invalidKey('it is empty (need 64 hex characters or base64 of 32 bytes)');
  if (HEX_KEY.test(s)) {
    if (s.length === 64) return Buffer.from(s, 'hex');
    throw invalidKey(`a hex key must be 64 characters, got ${s.length} characters`);
  }
  if (s.length === 64) {
    // 64 characters almost always means a hex key with a typo, so say so rather than talk about base64.
    const bad = [...s].findIndex((ch) => !/[0-9a-fA-F]/.test(ch));
    throw invalidKey(`64 characters but non-hex characters (first at position ${bad + 1})`);
  }
  if (!BASE64_CHARS.test(s) || s.length % 4 !== 0) {
    const bad = [...s].findIndex((ch) => !/[A-Za-z0-9+/=]/.test(ch));
    throw invalidKey(
      bad >= 0
        ? `neither 64 hex characters nor base64 (character at position ${bad + 1} is neither)`
        : `not valid base64 (${s.length} characters; base64 of 32 bytes is 44 characters ending in "=")`,
    );
  }
  const key = Buffer.from(s, 'base64');
  if (key.length !== KEY_SIZE) throw invalidKey(`base64 decoding to ${key.length} bytes, need ${KEY_SIZE}`);
  // Node's decoder ignores stray bits; insisting on the canonical form keeps one spelling per key.
  if (key.toString('base64') !== s) throw invalidKey('base64 is not in canonical form');
  return key;
}

export function generateKey(): Buffer {
  return randomBytes(KEY_SIZE);
}

function hkdf(key: Buffer, salt: Buffer, info: string, length: number): Buffer {
  return Buffer.from(hkdfSync('sha256', key, salt, info, length));
}

/** Public 8-byte identifier of a master key K: lets a reader name the key an archive needs. */
export function keyIdOf(masterKey: Buffer): Buffer {
  return hkdf(masterKey, EMPTY, 'coffer/v1 key-id', KEY_ID_SIZE);
}

export function deriveArchiveKeys(masterKey: Buffer, archiveSalt: Buffer): ArchiveKeys {
  return {
    headerKey: hkdf(masterKey, archiveSalt, 'coffer/v1 header', KEY_SIZE),
    payloadKey: hkdf(masterKey, archiveSalt, 'coffer/v1 payload', KEY_SIZE),
  };
}

/** K for a passphrase archive. Limits are checked first so that out-of-range parameters cost nothing. */
export async function deriveFromPassphrase(passphrase: string, salt: Buffer, params: Argon2Params): Promise<Buffer> {
  checkArgon2Params(params, 'refusing argon2id parameters');
  if (salt.length !== ARGON2_SALT_SIZE) {
    throw new CofferError('E_INTERNAL', `argon2id salt must be ${ARGON2_SALT_SIZE} bytes, got ${salt.length}`);
  }
  return argon2.hash(Buffer.from(passphrase, 'utf8'), {
    type: argon2.argon2id,
    version: 0x13,
    raw: true,
    salt,
    memoryCost: params.memoryKiB,
    timeCost: params.iterations,
    parallelism: params.parallelism,
    hashLength: KEY_SIZE,
  });
}

export function checkRawKey(key: Buffer): void {
  if (key.length !== KEY_SIZE) throw invalidKey(`a raw key must be ${KEY_SIZE} bytes, got ${key.length} bytes`);
}

/** Argon2id parameters a writer uses for a passphrase source: the caller's, or the format defaults. */
export function writerArgon2Params(source: Extract<KeySource, { kind: 'passphrase' }>): Argon2Params {
  return { ...(source.params ?? DEFAULT_ARGON2_PARAMS) };
}

export function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
