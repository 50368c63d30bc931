import { Writable } from 'node:stream';
import { createDecryptStream, HEADER_SIZE, isCofferEncrypted, MAGIC } from '../../src/crypto';
import { sealChunk } from '../../src/crypto/chunk';
import { encodeHeader, headerMac, parseHeaderFields } from '../../src/crypto/format';
import { deriveArchiveKeys } from '../../src/crypto/keys';
import { decryptBuffer, encryptBuffer, expectCode, RAW_KEY } from './helpers';

const SOURCE = { kind: 'raw', key: RAW_KEY } as const;
const ARCHIVE_SALT = Buffer.alloc(32, 0x40);
const NONCE_PREFIX = Buffer.alloc(7, 0xa0);

async function sample(): Promise<Buffer> {
  return encryptBuffer(Buffer.from('hello'), SOURCE, { archiveSalt: ARCHIVE_SALT, noncePrefix: NONCE_PREFIX });
}

/** A raw-key header with some bytes changed and a MAC that is valid for the changed bytes. */
async function resealedHeader(change: (header: Buffer) => void): Promise<Buffer> {
  const file = await sample();
  change(file);
  const { headerKey } = deriveArchiveKeys(RAW_KEY, ARCHIVE_SALT);
  headerMac(headerKey, file.subarray(0, 88)).copy(file, 88);
  return file;
}

describe('detecting encryption by content', () => {
  test('isCofferEncrypted is true exactly for the magic bytes', async () => {
    expect(isCofferEncrypted((await sample()).subarray(0, 8))).toBe(true);
    expect(isCofferEncrypted(Buffer.from('PK\x03\x04\x14\x00\x00\x00', 'latin1'))).toBe(false);
    expect(isCofferEncrypted(MAGIC.subarray(0, 7))).toBe(false);
    expect(isCofferEncrypted(Buffer.from('\x89COFFER\r', 'latin1'))).toBe(false);
  });

  test('a zip given to the decryptor is refused as not an encrypted archive', async () => {
    const zip = Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(500)]);
    const { err } = await decryptBuffer(zip, SOURCE);
    expectCode(err, 'E_CRYPT_NOT_COFFER', 'not an encrypted archive: neither coffer format v1 nor age (bad magic)');
  });

  test('the decryptor refuses a wrong magic as soon as it has seen it, without waiting for the end', async () => {
    const decrypt = createDecryptStream(SOURCE);
    decrypt.pipe(new Writable({ write: (_c, _e, cb) => cb() }));
    const failed = new Promise<unknown>((resolve) => decrypt.on('error', resolve));
    decrypt.write(Buffer.from('PK\x03'));
    expectCode(await failed, 'E_CRYPT_NOT_COFFER');
  });
});

describe('header structure, in reading order', () => {
  test.each([
    ['version 2', 8, 2, 'E_CRYPT_UNSUPPORTED', /format version 2/],
    ['cipher 2', 9, 2, 'E_CRYPT_UNSUPPORTED', /cipher 2/],
    ['key source 2', 10, 2, 'E_CRYPT_UNSUPPORTED', /key source 2/],
    ['chunk size 2^20', 11, 20, 'E_CRYPT_UNSUPPORTED', /chunk size 2\^20/],
    ['non-zero reserved bytes', 86, 1, 'E_CRYPT_HEADER', /reserved bytes/],
    ['argon2id memory in a raw-key header', 13, 1, 'E_CRYPT_HEADER', /non-zero argon2id/],
    ['argon2id salt in a raw-key header', 30, 1, 'E_CRYPT_HEADER', /non-zero argon2id/],
  ] as const)('%s is refused even with a valid header MAC', async (_what, offset, value, code, message) => {
    const file = await resealedHeader((h) => {
      h[offset] = value;
    });
    const { out, err } = await decryptBuffer(file, SOURCE);
    expectCode(err, code, message);
    expect(out.length).toBe(0);
  });

  test('version is checked before the reserved bytes, which are checked before the key', async () => {
    const file = await resealedHeader((h) => {
      h[8] = 9;
      h[85] = 1;
    });
    expectCode((await decryptBuffer(file, SOURCE)).err, 'E_CRYPT_UNSUPPORTED');
    const reservedAndWrongKey = await resealedHeader((h) => {
      h[85] = 1;
    });
    const wrongKey = { kind: 'raw', key: Buffer.alloc(32) } as const;
    expectCode((await decryptBuffer(reservedAndWrongKey, wrongKey)).err, 'E_CRYPT_HEADER');
  });

  test('a header whose MAC does not match, with the right key, is reported as a damaged header', async () => {
    const file = await sample();
    file[50] ^= 1; // archive salt: not part of the key id
    expectCode((await decryptBuffer(file, SOURCE)).err, 'E_CRYPT_HEADER', /header failed authentication/);
  });

  test('a short header is truncated, but only if what is there matches the magic', () => {
    expectCode(catchError(() => parseHeaderFields(MAGIC.subarray(0, 5))), 'E_CRYPT_TRUNCATED', /5 of 120 bytes/);
    expectCode(catchError(() => parseHeaderFields(Buffer.from('PK'))), 'E_CRYPT_NOT_COFFER');
  });

  test('encodeHeader and parseHeaderFields agree on every field', async () => {
    const fields = {
      keySource: 'argon2id' as const,
      argon2: { memoryKiB: 1024, iterations: 2, parallelism: 3 },
      argon2Salt: Buffer.alloc(16, 1),
      keyId: Buffer.alloc(8, 2),
      archiveSalt: Buffer.alloc(32, 3),
      noncePrefix: Buffer.alloc(7, 4),
    };
    const header = encodeHeader(fields, Buffer.alloc(32, 5));
    expect(header.length).toBe(HEADER_SIZE);
    expect(parseHeaderFields(header)).toMatchObject(fields);
  });
});

describe('chunk rules', () => {
  test('an authentic but empty final chunk after data is refused and the data before it is not completed', async () => {
    const { payloadKey } = deriveArchiveKeys(RAW_KEY, ARCHIVE_SALT);
    const header = (await sample()).subarray(0, HEADER_SIZE);
    const data = Buffer.alloc(65536, 7);
    const file = Buffer.concat([
      header,
      ...sealChunk(payloadKey, NONCE_PREFIX, 0, false, data),
      ...sealChunk(payloadKey, NONCE_PREFIX, 1, true, Buffer.alloc(0)),
    ]);
    const { out, err } = await decryptBuffer(file, SOURCE);
    expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 1: empty final chunk after data (not allowed)');
    expect(out.equals(data)).toBe(true);
  });

  test('a short final chunk that is not marked final is refused', async () => {
    const { payloadKey } = deriveArchiveKeys(RAW_KEY, ARCHIVE_SALT);
    const header = (await sample()).subarray(0, HEADER_SIZE);
    const file = Buffer.concat([header, ...sealChunk(payloadKey, NONCE_PREFIX, 0, false, Buffer.from('abc'))]);
    const { out, err } = await decryptBuffer(file, SOURCE);
    expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 0: truncated, tampered or data appended');
    expect(out.length).toBe(0);
  });

  test('chunks sealed with the wrong index are refused', async () => {
    const { payloadKey } = deriveArchiveKeys(RAW_KEY, ARCHIVE_SALT);
    const header = (await sample()).subarray(0, HEADER_SIZE);
    const file = Buffer.concat([header, ...sealChunk(payloadKey, NONCE_PREFIX, 1, true, Buffer.from('abc'))]);
    expectCode((await decryptBuffer(file, SOURCE)).err, 'E_CRYPT_CORRUPT');
  });
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}
