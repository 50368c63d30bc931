import { createEncryptStream, generateKey, keyIdOf, parseAesKey, type KeySource } from '../../src/crypto';
import { deriveFromPassphrase } from '../../src/crypto/keys';
import { codeOf, decryptBuffer, encryptBuffer, expectCode, SMALL_ARGON2 } from './helpers';

const KEY_HEX = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';
const KEY = Buffer.from(KEY_HEX, 'hex');

function parseError(text: string): unknown {
  try {
    parseAesKey(text);
  } catch (err) {
    return err;
  }
  throw new Error('parseAesKey accepted the input');
}

describe('parseAesKey', () => {
  test('accepts 64 hex characters in lower, upper and mixed case', () => {
    expect(parseAesKey(KEY_HEX).equals(KEY)).toBe(true);
    expect(parseAesKey(KEY_HEX.toUpperCase()).equals(KEY)).toBe(true);
    expect(parseAesKey('000102030405060708090A0B0C0D0E0F101112131415161718191a1b1c1d1e1f').equals(KEY)).toBe(true);
  });

  test('accepts base64 of exactly 32 bytes', () => {
    expect(parseAesKey(KEY.toString('base64')).equals(KEY)).toBe(true);
    const key = Buffer.alloc(32, 0xfb); // encodes with '+' and '/'
    expect(parseAesKey(key.toString('base64')).equals(key)).toBe(true);
  });

  test('ignores the surrounding whitespace a key file usually carries', () => {
    expect(parseAesKey(`${KEY_HEX}\n`).equals(KEY)).toBe(true);
    expect(parseAesKey(`  ${KEY.toString('base64')}\r\n`).equals(KEY)).toBe(true);
  });

  test('refuses hex of the wrong length, saying how many characters it got', () => {
    expectCode(parseError(KEY_HEX.slice(0, 63)), 'E_AES_KEY_INVALID', /got 63 characters/);
    expectCode(parseError(`${KEY_HEX}00`), 'E_AES_KEY_INVALID', /got 66 characters/);
    expectCode(parseError('abcd'), 'E_AES_KEY_INVALID', /got 4 characters/);
  });

  test('refuses 64 characters containing non-hex characters, naming the position', () => {
    const typo = `${KEY_HEX.slice(0, 10)}g${KEY_HEX.slice(11)}`;
    expectCode(parseError(typo), 'E_AES_KEY_INVALID', /non-hex characters \(first at position 11\)/);
  });

  test('refuses base64 that decodes to another length, saying how many bytes', () => {
    expectCode(parseError(Buffer.alloc(31, 9).toString('base64')), 'E_AES_KEY_INVALID', /decoding to 31 bytes/);
    expectCode(parseError(Buffer.alloc(33, 9).toString('base64')), 'E_AES_KEY_INVALID', /decoding to 33 bytes/);
  });

  test('refuses characters that are neither hex nor base64 and empty input', () => {
    expectCode(parseError('key:1234'), 'E_AES_KEY_INVALID', /position 4/);
    expectCode(parseError('   '), 'E_AES_KEY_INVALID', /empty/);
    expectCode(parseError(`${KEY.toString('base64').slice(0, 43)}`), 'E_AES_KEY_INVALID', /not valid base64/);
  });

  test('never echoes the key in its message', () => {
    const secret = 'Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg!';
    const err = parseError(secret) as Error;
    expect(err.message).not.toContain(secret.slice(0, 8));
  });
});

describe('key ids and key mismatch', () => {
  test('generated keys are 32 random bytes with distinct ids', () => {
    const a = generateKey();
    const b = generateKey();
    expect(a.length).toBe(32);
    expect(a.equals(b)).toBe(false);
    expect(keyIdOf(a).equals(keyIdOf(b))).toBe(false);
  });

  test('a wrong raw key is refused with both key ids, before any output', async () => {
    const file = await encryptBuffer(Buffer.from('secret data'), { kind: 'raw', key: KEY });
    const wrong = generateKey();
    const { out, err } = await decryptBuffer(file, { kind: 'raw', key: wrong });
    expectCode(
      err,
      'E_CRYPT_KEY_MISMATCH',
      `archive needs key id 4373631d2c5f0c19, the key given has id ${keyIdOf(wrong).toString('hex')}`,
    );
    expect((err as Error).message).not.toContain(wrong.toString('hex'));
    expect(out.length).toBe(0);
  });

  test('a raw key that is not 32 bytes is refused for reading and writing', async () => {
    const file = await encryptBuffer(Buffer.from('x'), { kind: 'raw', key: KEY });
    const short = { kind: 'raw', key: KEY.subarray(0, 16) } as const;
    expectCode((await decryptBuffer(file, short)).err, 'E_AES_KEY_INVALID', /16 bytes/);
    await expect(createEncryptStream({ kind: 'raw', key: Buffer.alloc(31) })).rejects.toMatchObject({
      code: 'E_AES_KEY_INVALID',
    });
  });

  test('a wrong passphrase is refused as such, without revealing anything about it', async () => {
    const source: KeySource = { kind: 'passphrase', passphrase: 'right', params: SMALL_ARGON2 };
    const file = await encryptBuffer(Buffer.from('secret data'), source);
    const { out, err } = await decryptBuffer(file, { kind: 'passphrase', passphrase: 'wrong' });
    expectCode(err, 'E_CRYPT_WRONG_PASSPHRASE', 'wrong passphrase');
    expect(out.length).toBe(0);
  });

  test('passphrases are used as given: a differently normalised spelling is a different passphrase', async () => {
    const composed = 'caf\u00e9';
    const decomposed = 'cafe\u0301';
    const source: KeySource = { kind: 'passphrase', passphrase: composed, params: SMALL_ARGON2 };
    const file = await encryptBuffer(Buffer.from('x'), source);
    expect(codeOf((await decryptBuffer(file, { kind: 'passphrase', passphrase: decomposed })).err)).toBe(
      'E_CRYPT_WRONG_PASSPHRASE',
    );
    expect((await decryptBuffer(file, { kind: 'passphrase', passphrase: composed })).out.toString()).toBe('x');
  });

  test('an empty passphrase is refused for writing', async () => {
    const empty: KeySource = { kind: 'passphrase', passphrase: '', params: SMALL_ARGON2 };
    await expect(createEncryptStream(empty)).rejects.toMatchObject({ code: 'E_PASSPHRASE_INVALID' });
  });

  test('a passphrase archive with default parameters records m=65536, t=3, p=4', async () => {
    const file = await encryptBuffer(Buffer.alloc(0), { kind: 'passphrase', passphrase: 'defaults' });
    expect(file.readUInt32BE(12)).toBe(65536);
    expect(file.readUInt32BE(16)).toBe(3);
    expect(file[20]).toBe(4);
  });
});

describe('argon2id parameter limits', () => {
  const tooBig = [
    ['memory above 1 GiB', { memoryKiB: 1048577, iterations: 1, parallelism: 1 }, /memory 1048577 KiB is above/],
    ['iterations above 10', { memoryKiB: 64, iterations: 11, parallelism: 1 }, /iterations 11 is above/],
    ['parallelism above 16', { memoryKiB: 1024, iterations: 1, parallelism: 17 }, /parallelism 17 is above/],
    ['zero iterations', { memoryKiB: 64, iterations: 0, parallelism: 1 }, /iterations 0 is below/],
    ['zero parallelism', { memoryKiB: 64, iterations: 1, parallelism: 0 }, /parallelism 0 is below/],
    ['memory below 8 KiB per lane', { memoryKiB: 31, iterations: 1, parallelism: 4 }, /below 8 KiB per lane/],
  ] as const;

  test.each(tooBig)('writers refuse %s before deriving', async (_what, params, message) => {
    const source: KeySource = { kind: 'passphrase', passphrase: 'p', params: { ...params } };
    await expect(createEncryptStream(source)).rejects.toMatchObject({
      code: 'E_CRYPT_PARAMS',
      message: expect.stringMatching(message),
    });
    await expect(deriveFromPassphrase('p', Buffer.alloc(16), { ...params })).rejects.toMatchObject({
      code: 'E_CRYPT_PARAMS',
    });
  });

  test.each(tooBig)('readers refuse a crafted header with %s before deriving', async (_what, params, message) => {
    const file = await encryptBuffer(Buffer.from('x'), { kind: 'passphrase', passphrase: 'p', params: SMALL_ARGON2 });
    file.writeUInt32BE(params.memoryKiB, 12);
    file.writeUInt32BE(params.iterations, 16);
    file.writeUInt8(params.parallelism, 20);
    // With the right passphrase: if the reader derived first it would report a header MAC or
    // passphrase failure (or spend a second and a GiB on the memory case).
    const { out, err } = await decryptBuffer(file, { kind: 'passphrase', passphrase: 'p' });
    expectCode(err, 'E_CRYPT_PARAMS', message);
    expect(out.length).toBe(0);
  });

  test('iterations at the limit (10) pass the header checks and go on to derivation', async () => {
    const file = await encryptBuffer(Buffer.from('x'), { kind: 'passphrase', passphrase: 'p', params: SMALL_ARGON2 });
    // t=10 and p=1 with 8 KiB is cheap and inside the limits: the reader derives and finds the MAC changed.
    file.writeUInt32BE(10, 16);
    expectCode((await decryptBuffer(file, { kind: 'passphrase', passphrase: 'p' })).err, 'E_CRYPT_WRONG_PASSPHRASE');
  });
});
