/** Reading format v1: opening the header (reading order, key checks, header MAC). */
import { CofferError } from '../core/errors';
import { HEADER_SIZE, headerMac, type ParsedHeader, parseHeaderFields } from './format';
import { checkRawKey, deriveArchiveKeys, deriveFromPassphrase, keyIdOf, type KeySource, sameBytes } from './keys';

/** What a reader needs after the header has been authenticated. */
export interface OpenedHeader {
  header: ParsedHeader;
  keyIdHex: string;
  payloadKey: Buffer;
  noncePrefix: Buffer;
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
