/**
 * The two encrypted formats behind one door: format v1 (`\x89COFFER\n`, raw keys and passphrases) and
 * age v1 (`age-encryption.org/v1`, X25519 recipients). The first bytes choose, never a file name. Both
 * end up as a chunk cipher and the offset where the chunks start, so streaming decryption and random
 * access are written once.
 */
import { CofferError } from '../core/errors';
import type { Encryption, RandomAccessSource } from '../core/types';
import { ageHeaderMac, agePayloadKey, AGE_ARMOR_BEGIN, AGE_NONCE_SIZE, AGE_PREFIX, checkAgePrefix, decodeBase64, mayBeAge, parseAgeHeader, type AgeHeader } from './age/header';
import { FILE_KEY_SIZE, unwrapFileKey } from './age/keys';
import { ageCipher, type ChunkCipher, v1Cipher } from './chunk';
import { openHeader } from './decrypt';
import { HEADER_SIZE, MAGIC, parseHeaderFields } from './format';
import { sameBytes, type KeySource } from './keys';

export type { Encryption } from '../core/types';

/** What a key source writes. */
export function encryptionFor(source: KeySource | undefined): Encryption {
  if (source === undefined) return 'none';
  return source.kind === 'recipients' || source.kind === 'identities' ? 'age' : 'aes-256-gcm';
}

/** The recipients (age1…) a key source seals to; none for format v1. */
export function recipientsOf(source: KeySource | undefined): string[] {
  return source?.kind === 'recipients' ? source.recipients.map((r) => r.text) : [];
}

/** Enough leading bytes to tell the formats apart. */
export const SNIFF_BYTES = 64;

/** Which format a file is in, from its first bytes (an armored age file counts as age: its reader explains). */
export function encryptionOf(first: Buffer): Encryption {
  if (first.length >= MAGIC.length && first.subarray(0, MAGIC.length).equals(MAGIC)) return 'aes-256-gcm';
  const text = first.subarray(0, SNIFF_BYTES).toString('latin1');
  if (text.startsWith(AGE_PREFIX) || text.startsWith(AGE_ARMOR_BEGIN)) return 'age';
  return 'none';
}

export interface OpenedEnvelope {
  encryption: 'aes-256-gcm' | 'age';
  cipher: ChunkCipher;
  /** Where chunk 0 starts. */
  payloadOffset: number;
  /** Format v1 with a raw key: the key id (hex). */
  keyIdHex?: string;
  /** age: how many recipient stanzas the header holds. */
  recipients?: number;
}

/**
 * Opens the header at the start of `prefix` with `key`. Returns null when more bytes are needed;
 * `final` says the input ends with `prefix`, so an incomplete header is truncation.
 */
export async function openEnvelope(prefix: Buffer, final: boolean, key: KeySource | undefined): Promise<{ opened: OpenedEnvelope; consumed: number } | null> {
  if (prefix.length === 0 && !final) return null;
  if (prefix.length === 0 && key?.kind === 'identities') throw new CofferError('E_CRYPT_TRUNCATED', 'encrypted archive is truncated: the file is empty');
  if (mayBeAge(prefix)) return openAge(prefix, final, key);
  if (prefix.length > 0 && prefix[0] !== MAGIC[0]) {
    if (key?.kind === 'identities') throw new CofferError('E_AGE_NOT_AGE', 'not an age file (it does not start with "age-encryption.org/")');
    throw new CofferError('E_CRYPT_NOT_COFFER', 'not an encrypted archive: neither coffer format v1 nor age (bad magic)');
  }
  if (prefix.length < HEADER_SIZE && !final) {
    const seen = Math.min(prefix.length, MAGIC.length);
    // Fail fast on non-coffer input instead of waiting for 120 bytes that may never come.
    if (!prefix.subarray(0, seen).equals(MAGIC.subarray(0, seen))) {
      throw new CofferError('E_CRYPT_NOT_COFFER', 'not a coffer encrypted archive (bad magic)');
    }
    return null;
  }
  if (key?.kind === 'identities' || key?.kind === 'recipients') {
    // Structural checks first, so a damaged file is reported as such rather than as the wrong key.
    const header = parseHeaderFields(prefix.subarray(0, HEADER_SIZE));
    const what = header.keySource === 'raw' ? `a raw 32-byte key (key id ${header.keyId.toString('hex')})` : 'an argon2id passphrase';
    throw new CofferError('E_CRYPT_KEY_REQUIRED', `archive is encrypted with ${what} (format v1), but ${key.kind === 'identities' ? 'age identities were' : 'age recipients were'} given`);
  }
  const v1 = await openHeader(prefix, key);
  return {
    opened: { encryption: 'aes-256-gcm', cipher: v1Cipher(v1.payloadKey, v1.noncePrefix), payloadOffset: HEADER_SIZE, keyIdHex: v1.keyIdHex },
    consumed: HEADER_SIZE,
  };
}

/** The first read of a file's header: format v1 needs 120 bytes, an age header about 100 a recipient. */
const FIRST_HEADER_READ = 16 * 1024;

/** Reads as much of the start of a file as its header turns out to need, and opens it. */
export async function readEnvelope(file: RandomAccessSource, key: KeySource | undefined): Promise<OpenedEnvelope> {
  for (let length = Math.min(file.size, FIRST_HEADER_READ); ; length = Math.min(file.size, length * 4)) {
    const prefix = await file.read(0, length);
    const result = await openEnvelope(prefix, prefix.length >= file.size, key);
    if (result !== null) return result.opened;
    if (prefix.length >= file.size) throw new CofferError('E_INTERNAL', 'header reader ended without a header');
  }
}

async function openAge(prefix: Buffer, final: boolean, key: KeySource | undefined): Promise<{ opened: OpenedEnvelope; consumed: number } | null> {
  checkAgePrefix(prefix);
  const header = parseAgeHeader(prefix, final);
  if (header === null) return null;
  const consumed = header.length + AGE_NONCE_SIZE;
  if (prefix.length < consumed) {
    if (!final) return null;
    throw new CofferError('E_CRYPT_TRUNCATED', `encrypted archive is truncated: it ends inside the age payload nonce (${prefix.length - header.length} of ${AGE_NONCE_SIZE} bytes)`);
  }
  const fileKey = ageFileKey(header, key);
  if (!sameBytes(ageHeaderMac(fileKey, header.authenticated), header.mac)) {
    throw new CofferError('E_AGE_HEADER_MAC', 'age header failed authentication (its MAC does not match): corrupted or tampered');
  }
  const payloadKey = agePayloadKey(fileKey, prefix.subarray(header.length, consumed));
  return { opened: { encryption: 'age', cipher: ageCipher(payloadKey), payloadOffset: consumed, recipients: header.stanzas.length }, consumed };
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The file key, unwrapped with one of the identities in `key`. */
function ageFileKey(header: AgeHeader, key: KeySource | undefined): Buffer {
  const { stanzas } = header;
  const scrypt = stanzas.findIndex((s) => s.type === 'scrypt');
  if (scrypt >= 0) {
    if (stanzas.length > 1) throw new CofferError('E_AGE_HEADER', `invalid age header: an scrypt stanza must be the only stanza, this header has ${stanzas.length}`);
    throw new CofferError('E_AGE_UNSUPPORTED', 'this age file is encrypted with a passphrase (stanza type scrypt), which coffer does not read: coffer reads X25519 recipients; decrypt it with age -d first');
  }
  const x25519: Array<{ number: number; share: Buffer; body: Buffer }> = [];
  stanzas.forEach((s, i) => {
    if (s.type !== 'X25519') return;
    const share = s.args.length === 1 ? decodeBase64(s.args[0]) : null;
    if (share === null || share.length !== 32) throw new CofferError('E_AGE_HEADER', `invalid age header: stanza ${i + 1} (X25519) must have one argument, the base64 of a 32-byte share`);
    if (s.body.length !== FILE_KEY_SIZE + 16) throw new CofferError('E_AGE_HEADER', `invalid age header: stanza ${i + 1} (X25519) has a ${s.body.length}-byte body, not 32`);
    x25519.push({ number: i + 1, share, body: s.body });
  });
  const others = [...new Set(stanzas.filter((s) => s.type !== 'X25519').map((s) => s.type))];
  if (x25519.length === 0) {
    throw new CofferError('E_AGE_UNSUPPORTED', `this age file is sealed only to recipient types coffer does not read (stanza type ${others.map((t) => JSON.stringify(t.slice(0, 40))).join(', ')}); coffer reads X25519 recipients`);
  }
  const sealedTo = plural(stanzas.length, 'recipient', 'recipients');
  if (key === undefined) throw new CofferError('E_CRYPT_KEY_REQUIRED', `archive is an age file sealed to ${sealedTo}, but no identity was given (--identity FILE)`);
  if (key.kind !== 'identities') {
    throw new CofferError('E_CRYPT_KEY_REQUIRED', `archive is an age file sealed to ${sealedTo}, but ${key.kind === 'raw' ? 'a raw key was' : key.kind === 'passphrase' ? 'a passphrase was' : 'recipients were'} given: it opens with an age identity (--identity FILE)`);
  }
  for (const identity of key.identities) {
    for (const s of x25519) {
      const fileKey = unwrapFileKey(identity, s.share, s.body, s.number);
      if (fileKey !== null) return fileKey;
    }
  }
  const unread = others.length > 0 ? ` (stanza types coffer does not read: ${others.map((t) => t.slice(0, 40)).join(', ')})` : '';
  throw new CofferError('E_AGE_NO_MATCH', `archive is sealed to ${sealedTo}; none of the ${key.identities.length} identities given matches${unread}`);
}
