/**
 * age v1 files (C2SP age spec) for X25519 recipients: round trips, both directions against the real
 * age binary, a vector age made, and every kind of damage refused without releasing a byte that was
 * not authenticated. The age binary runs a bounded number of times; everything exhaustive runs in process.
 */
import { execFile } from 'node:child_process';
import { hkdfSync, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { bufferSource, fileSource } from '../../src/archive';
import type { ErrorCode } from '../../src/core/errors';
import type { RandomAccessSource } from '../../src/core/types';
import {
  type AgeIdentity,
  CHUNK_SIZE,
  createEncryptStream,
  EncryptedFileReader,
  encryptionOf,
  generateAgeIdentity,
  type KeySource,
  parseAgeHeader,
  parseIdentityFile,
  parseRecipientsFile,
  SEALED_CHUNK_SIZE,
} from '../../src/crypto';
import { AGE_NONCE_SIZE, decodeBase64, encodeAgeHeader, encodeBase64, type Stanza } from '../../src/crypto/age/header';
import { FILE_KEY_SIZE, unwrapFileKey, wrapFileKey } from '../../src/crypto/age/keys';
import { ageCipher } from '../../src/crypto/chunk';
import {
  codeOf,
  decryptBuffer,
  encryptBuffer,
  expectCode,
  flipBit,
  pseudoRandomBytes,
  randomInt,
  randomPieces,
  RAW_KEY,
  readStream,
  seededRandom,
  SMALL_ARGON2,
} from './helpers';

const execFileP = promisify(execFile);
/** 3 full chunks and a short final one. */
const TAMPER_LEN = 3 * CHUNK_SIZE + 1000;
const FIXTURES = path.join(__dirname, '..', 'fixtures', 'age');

const ids = [generateAgeIdentity(), generateAgeIdentity(), generateAgeIdentity()];
const stranger = generateAgeIdentity();
const sealTo = (...list: AgeIdentity[]): KeySource => ({ kind: 'recipients', recipients: list.map((i) => i.recipient) });
const openWith = (...list: AgeIdentity[]): KeySource => ({ kind: 'identities', identities: list });

let dir: string;
/** identityFile[i] holds ids[i], written as age-keygen would (mode 0600). */
const identityFile: string[] = [];
let tempNo = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'coffer-age-'));
  for (const [i, id] of ids.entries()) {
    const file = path.join(dir, `identity-${i}.txt`);
    await writeFile(file, `# test identity ${i}\n# public key: ${id.recipient.text}\n${id.reveal()}\n`, { mode: 0o600 });
    identityFile.push(file);
  }
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function tempPath(name: string): string {
  tempNo += 1;
  return path.join(dir, `${tempNo}-${name}`);
}

/** Runs the real age binary and returns its stdout; its stderr becomes the error message. */
async function age(args: string[]): Promise<Buffer> {
  try {
    return (await execFileP('age', args, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 })).stdout;
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`age ${args.join(' ')} failed: ${e.stderr?.toString() || e.message}`, { cause: err });
  }
}

async function ageEncrypt(plain: Buffer, args: string[]): Promise<Buffer> {
  const input = tempPath('plain');
  await writeFile(input, plain);
  return age([...args, input]);
}

/** To stdout: age -o creates its output file only once there is a byte to write. */
async function ageDecrypt(file: Buffer, identities: string): Promise<Buffer> {
  const input = tempPath('in.age');
  await writeFile(input, file);
  return age(['-d', '-i', identities, input]);
}

/** Where chunk 0 starts: after the header and the 16-byte payload nonce. */
function payloadStartOf(file: Buffer): number {
  return parseAgeHeader(file, true)!.length + AGE_NONCE_SIZE;
}

/** The decryptor may only have emitted whole authenticated chunks from the start, none from `firstBadChunk` on. */
function expectOnlyAuthenticatedPrefix(out: Buffer, plain: Buffer, firstBadChunk: number): void {
  expect(out.length % CHUNK_SIZE).toBe(0);
  expect(out.length).toBeLessThanOrEqual(firstBadChunk * CHUNK_SIZE);
  expect(out.equals(plain.subarray(0, out.length))).toBe(true);
}

function x25519Stanza(fileKey: Buffer, identity: AgeIdentity): Stanza {
  const { share, body } = wrapFileKey(fileKey, identity.recipient);
  return { type: 'X25519', args: [encodeBase64(share)], body };
}

/**
 * An age file with any stanzas, a valid header MAC and valid chunks, for shapes coffer never writes.
 * `emptyFinal` seals the plaintext as non-final chunks followed by an empty final chunk.
 */
function craftAgeFile(stanzas: (fileKey: Buffer) => Stanza[], plain: Buffer, opts: { emptyFinal?: boolean; extraChunk?: boolean } = {}): Buffer {
  const fileKey = randomBytes(FILE_KEY_SIZE);
  const nonce = randomBytes(AGE_NONCE_SIZE);
  const cipher = ageCipher(Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32)));
  const parts = [encodeAgeHeader(stanzas(fileKey), fileKey), nonce];
  const count = Math.max(1, Math.ceil(plain.length / CHUNK_SIZE));
  for (let i = 0; i < count; i += 1) {
    parts.push(...cipher.seal(i, i === count - 1 && opts.emptyFinal !== true, plain.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)));
  }
  if (opts.emptyFinal === true) parts.push(...cipher.seal(count, true, Buffer.alloc(0)));
  if (opts.extraChunk === true) parts.push(...cipher.seal(count, true, Buffer.from('appended, and itself a valid chunk')));
  return Buffer.concat(parts);
}

async function openError(src: RandomAccessSource, key: KeySource | undefined): Promise<unknown> {
  try {
    const reader = await EncryptedFileReader.open(src, key);
    await reader.close();
  } catch (err) {
    return err;
  }
  throw new Error('open succeeded');
}

describe('age round trips in process', () => {
  test('one X25519 stanza per distinct recipient: a 168-byte header for one, 98 bytes more for each other', async () => {
    const one = await encryptBuffer(Buffer.from('x'), sealTo(ids[0], ids[0]));
    expect(parseAgeHeader(one, true)!.length).toBe(168);
    const three = await encryptBuffer(Buffer.from('x'), sealTo(ids[0], ids[1], ids[0], ids[2]));
    const header = parseAgeHeader(three, true)!;
    expect(header.stanzas).toHaveLength(3);
    expect(header.length).toBe(168 + 2 * 98);
    expect(three.subarray(0, 22).toString('latin1')).toBe('age-encryption.org/v1\n');
  });

  test('the same plaintext encrypts differently each time (fresh file key, shares and nonce)', async () => {
    const plain = Buffer.alloc(1000, 7);
    const [a, b] = [await encryptBuffer(plain, sealTo(ids[0])), await encryptBuffer(plain, sealTo(ids[0]))];
    expect(a.length).toBe(b.length);
    expect(a.subarray(22, 168).equals(b.subarray(22, 168))).toBe(false);
    expect(a.subarray(168, 184).equals(b.subarray(168, 184))).toBe(false);
    expect(a.subarray(184, 248).equals(b.subarray(184, 248))).toBe(false);
  });

  test('sealing needs recipients, not identities, and at least one', async () => {
    await expect(createEncryptStream(openWith(ids[0]))).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(createEncryptStream({ kind: 'recipients', recipients: [] })).rejects.toMatchObject({ code: 'E_AGE_RECIPIENT_INVALID' });
  });

  test('the first bytes tell the formats apart', async () => {
    expect(encryptionOf(await encryptBuffer(Buffer.from('x'), sealTo(ids[0])))).toBe('age');
    expect(encryptionOf(await encryptBuffer(Buffer.from('x'), { kind: 'raw', key: RAW_KEY }))).toBe('aes-256-gcm');
    expect(encryptionOf(Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----\nYWdl'))).toBe('age');
    expect(encryptionOf(Buffer.from('PK\x03\x04 a plain zip'))).toBe('none');
  });
});

describe('the real age binary', () => {
  test('identity files written for age are private (mode 0600)', async () => {
    for (const file of identityFile) expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  test.each([0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 5])('%i bytes encrypted by coffer decrypt with age -d -i', async (length) => {
    const plain = pseudoRandomBytes(length, length + 2);
    const encrypted = await encryptBuffer(plain, sealTo(ids[0]), {}, randomPieces(plain, seededRandom(length)));
    expect((await ageDecrypt(encrypted, identityFile[0])).equals(plain)).toBe(true);
  });

  test.each([0, 1, 65536, 65537, 3 * 1024 * 1024 + 5])('%i bytes encrypted by age -r decrypt with coffer', async (length) => {
    const plain = pseudoRandomBytes(length, length + 3);
    const encrypted = await ageEncrypt(plain, ['-r', ids[1].recipient.text]);
    expect(parseAgeHeader(encrypted, true)!.stanzas).toHaveLength(1);
    const rng = seededRandom(length + 4);
    const { out, err } = await decryptBuffer(encrypted, openWith(ids[1]), randomPieces(encrypted, rng));
    expect(err).toBeNull();
    expect(out.equals(plain)).toBe(true);
  });

  test('a file age seals to three recipients opens with each identity alone, and not with a fourth', async () => {
    const plain = pseudoRandomBytes(2 * CHUNK_SIZE + 3, 5);
    const encrypted = await ageEncrypt(plain, ids.flatMap((id) => ['-r', id.recipient.text]));
    expect(parseAgeHeader(encrypted, true)!.stanzas).toHaveLength(3);
    for (const id of ids) {
      const { out, err } = await decryptBuffer(encrypted, openWith(id));
      expect(err).toBeNull();
      expect(out.equals(plain)).toBe(true);
    }
    const { out, err } = await decryptBuffer(encrypted, openWith(stranger));
    expectCode(err, 'E_AGE_NO_MATCH');
    expect((err as Error).message).toBe('archive is sealed to 3 recipients; none of the 1 identities given matches');
    expect(out.length).toBe(0);
  });

  test('age -R and coffer read the same recipients file (comments, blank lines) and open each other’s files', async () => {
    const keygenFile = tempPath('keygen.txt');
    await execFileP('age-keygen', ['-o', keygenFile]);
    const keygen = parseIdentityFile(await readFile(keygenFile, 'utf8'), keygenFile);
    expect(keygen).toHaveLength(1);
    const recipientsFile = tempPath('recipients.txt');
    await writeFile(recipientsFile, `# backup recipients\n\n${keygen[0].recipient.text}\n\n# the second operator\n${ids[2].recipient.text}\n`);
    const plain = pseudoRandomBytes(CHUNK_SIZE + 99, 6);

    const byAge = await ageEncrypt(plain, ['-R', recipientsFile]);
    for (const id of [keygen[0], ids[2]]) expect((await decryptBuffer(byAge, openWith(id))).out.equals(plain)).toBe(true);

    const recipients = parseRecipientsFile(await readFile(recipientsFile, 'utf8'), recipientsFile);
    expect(recipients.map((r) => r.text)).toEqual([keygen[0].recipient.text, ids[2].recipient.text]);
    const byCoffer = await encryptBuffer(plain, { kind: 'recipients', recipients });
    expect((await ageDecrypt(byCoffer, keygenFile)).equals(plain)).toBe(true);
  });

  test('a file coffer seals to three recipients opens with each identity alone, in coffer and in age', async () => {
    const plain = pseudoRandomBytes(CHUNK_SIZE + 5, 7);
    const encrypted = await encryptBuffer(plain, sealTo(...ids));
    for (const [i, id] of ids.entries()) {
      const { out, err } = await decryptBuffer(encrypted, openWith(id));
      expect(err).toBeNull();
      expect(out.equals(plain)).toBe(true);
      expect((await ageDecrypt(encrypted, identityFile[i])).equals(plain)).toBe(true);
    }
  });

  test('an identity file whose first identity does not match still opens the file, in coffer and in age', async () => {
    const plain = Buffer.from('two identities, the second one matches');
    const encrypted = await encryptBuffer(plain, sealTo(ids[1]));
    const file = tempPath('two-identities.txt');
    await writeFile(file, `${stranger.reveal()}\n${ids[1].reveal()}\n`, { mode: 0o600 });
    const identities = parseIdentityFile(await readFile(file, 'utf8'), file);
    expect((await decryptBuffer(encrypted, { kind: 'identities', identities })).out.equals(plain)).toBe(true);
    expect((await ageDecrypt(encrypted, file)).equals(plain)).toBe(true);
  });

  test('stanzas of unknown types beside an X25519 one are skipped, by coffer and by age', async () => {
    const plain = Buffer.from('unknown stanza types are skipped');
    // A 48-byte body is exactly one 64-column line, so the body ends with an empty line.
    const file = craftAgeFile(
      (fileKey) => [{ type: 'example.com/other', args: ['arg1', 'arg2'], body: randomBytes(48) }, x25519Stanza(fileKey, ids[0])],
      plain,
    );
    expect(file.toString('latin1')).toMatch(/^age-encryption\.org\/v1\n-> example\.com\/other arg1 arg2\n[A-Za-z0-9+/]{64}\n\n-> X25519 /);
    expect((await decryptBuffer(file, openWith(ids[0]))).out.equals(plain)).toBe(true);
    expect((await ageDecrypt(file, identityFile[0])).equals(plain)).toBe(true);
  });

  test('an empty final chunk after data is refused, by coffer and by age', async () => {
    const plain = pseudoRandomBytes(CHUNK_SIZE, 8);
    const file = craftAgeFile((fileKey) => [x25519Stanza(fileKey, ids[0])], plain, { emptyFinal: true });
    const { out, err } = await decryptBuffer(file, openWith(ids[0]));
    expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 1: empty final chunk after data (not allowed)');
    expectOnlyAuthenticatedPrefix(out, plain, 1);
    await expect(ageDecrypt(file, identityFile[0])).rejects.toThrow(/failed/);
  });

  test('armored output of age -a is refused as armor, whole or in small pieces, streaming and at random access', async () => {
    const armored = await ageEncrypt(Buffer.from('armored'), ['-a', '-r', ids[0].recipient.text]);
    expect(armored.toString('latin1').startsWith('-----BEGIN AGE ENCRYPTED FILE-----\n')).toBe(true);
    expect(encryptionOf(armored)).toBe('age');
    const pieces: Buffer[] = [];
    for (let off = 0; off < armored.length; off += 5) pieces.push(armored.subarray(off, off + 5));
    for (const split of [[armored], pieces]) {
      const { out, err } = await decryptBuffer(armored, openWith(ids[0]), split);
      expectCode(err, 'E_AGE_UNSUPPORTED', /ASCII-armored age file \(age -a\); coffer reads binary age files/);
      expect(out.length).toBe(0);
    }
    expectCode(await openError(bufferSource(armored), openWith(ids[0])), 'E_AGE_UNSUPPORTED', /armored/);
  });

  describe('the checked-in vector made by age 1.1.1', () => {
    let vector: Buffer;
    let expected: Buffer;
    let identities: AgeIdentity[];
    beforeAll(async () => {
      vector = await readFile(path.join(FIXTURES, 'vector.age'));
      expected = await readFile(path.join(FIXTURES, 'vector.txt'));
      const identityText = await readFile(path.join(FIXTURES, 'vector-identity.txt'), 'utf8');
      identities = parseIdentityFile(identityText, 'vector-identity.txt');
      // The file is what the README says: age-keygen output, one X25519 stanza for its recipient.
      expect(identities).toHaveLength(1);
      expect(identityText).toContain(`# public key: ${identities[0].recipient.text}\n`);
    });

    test('coffer decrypts it to the expected plaintext, streaming and at random access', async () => {
      const header = parseAgeHeader(vector, true)!;
      expect(header.stanzas.map((s) => s.type)).toEqual(['X25519']);
      const { out, err } = await decryptBuffer(vector, openWith(...identities));
      expect(err).toBeNull();
      expect(out.toString('utf8')).toBe(expected.toString('utf8'));
      const reader = await EncryptedFileReader.open(await fileSource(path.join(FIXTURES, 'vector.age')), openWith(...identities));
      try {
        expect(reader.envelope.encryption).toBe('age');
        expect((await reader.read(0, reader.size)).equals(expected)).toBe(true);
      } finally {
        await reader.close();
      }
    });

    test('a wrong identity does not open it; age itself still does', async () => {
      const { err } = await decryptBuffer(vector, openWith(ids[0]));
      expectCode(err, 'E_AGE_NO_MATCH', 'archive is sealed to 1 recipient; none of the 1 identities given matches');
      expect((await ageDecrypt(vector, path.join(FIXTURES, 'vector-identity.txt'))).equals(expected)).toBe(true);
    });
  });
});

describe('damaged age files', () => {
  const plain = pseudoRandomBytes(TAMPER_LEN, 9);
  let file: Buffer;
  let start: number;
  const key = openWith(ids[0]);

  beforeAll(async () => {
    file = await encryptBuffer(plain, sealTo(ids[0], ids[1]));
    start = payloadStartOf(file);
  });

  describe('truncation', () => {
    test('a cut at every byte of the header and the nonce is refused as truncated and emits nothing', async () => {
      expect(start).toBe(168 + 98 + 16);
      for (let len = 0; len <= start; len += 1) {
        const { out, err } = await decryptBuffer(file.subarray(0, len), key);
        if (codeOf(err) !== 'E_CRYPT_TRUNCATED') throw new Error(`cut at ${len}: ${codeOf(err)}: ${(err as Error).message}`);
        expect(out.length).toBe(0);
      }
    });

    test('the same cuts in small pieces, and at random access, are refused as truncated', async () => {
      for (let len = 0; len <= start; len += 1) {
        const cut = file.subarray(0, len);
        const pieces: Buffer[] = [];
        for (let off = 0; off < len; off += 7) pieces.push(cut.subarray(off, off + 7));
        const { out, err } = await decryptBuffer(cut, key, pieces);
        if (codeOf(err) !== 'E_CRYPT_TRUNCATED') throw new Error(`cut at ${len} in pieces: ${codeOf(err)}`);
        expect(out.length).toBe(0);
        const openErr = await openError(bufferSource(cut), key);
        if (codeOf(openErr) !== 'E_CRYPT_TRUNCATED') throw new Error(`cut at ${len}, random access: ${codeOf(openErr)}`);
      }
    });
  });

  describe('bit flips', () => {
    /** [first byte, end byte) of each header line, its newline included. */
    function headerLines(): Array<[number, number]> {
      const header = parseAgeHeader(file, true)!;
      const lines: Array<[number, number]> = [];
      let pos = 0;
      for (const line of file.subarray(0, header.length).toString('latin1').split('\n').slice(0, -1)) {
        lines.push([pos, pos + line.length + 1]);
        pos += line.length + 1;
      }
      return lines;
    }

    test('the file is laid out as expected: version, two stanzas of two lines, MAC line; stanza 1 is for ids[0]', () => {
      const lines = headerLines();
      expect(lines.map(([a, b]) => b - a)).toEqual([22, 54, 44, 54, 44, 48]);
      const [first, second] = parseAgeHeader(file, true)!.stanzas;
      expect(unwrapFileKey(ids[0], decodeBase64(first.args[0])!, first.body, 1)).not.toBeNull();
      expect(unwrapFileKey(ids[0], decodeBase64(second.args[0])!, second.body, 2)).toBeNull();
    });

    /**
     * Every bit of every header region. The stanza for the identity used, once damaged, no longer
     * unwraps (no match) or no longer parses; damage anywhere else the MAC covers fails the MAC.
     */
    const regions: Array<[string, (lines: Array<[number, number]>) => [number, number], ErrorCode[]]> = [
      ['the "age-encryption.org/" prefix', () => [0, 19], ['E_AGE_NOT_AGE']],
      ['the version "v1" and its newline', () => [19, 22], ['E_AGE_UNSUPPORTED']],
      ['the stanza the identity matches', (l) => [l[1][0], l[2][1]], ['E_AGE_HEADER', 'E_AGE_NO_MATCH']],
      ['the other recipient’s stanza', (l) => [l[3][0], l[4][1]], ['E_AGE_HEADER', 'E_AGE_HEADER_MAC']],
      ['the MAC line', (l) => [l[5][0], l[5][1]], ['E_AGE_HEADER', 'E_AGE_HEADER_MAC']],
    ];

    test.each(regions)('every bit of %s is checked and nothing is emitted', async (_region, range, allowed) => {
      const [from, to] = range(headerLines());
      const seen = new Map<string, number>();
      for (let byte = from; byte < to; byte += 1) {
        for (let bit = 0; bit < 8; bit += 1) {
          const { out, err } = await decryptBuffer(flipBit(file, byte * 8 + bit), key);
          const code = codeOf(err);
          if (!allowed.includes(code as ErrorCode)) throw new Error(`byte ${byte} bit ${bit}: ${code} ${(err as Error)?.message}`);
          expect(out.length).toBe(0);
          seen.set(code, (seen.get(code) ?? 0) + 1);
        }
      }
      // Each expected outcome actually happens: the regions are what the test thinks they are.
      expect([...seen.keys()].sort()).toEqual([...allowed].sort());
    });

    test('every bit of the payload nonce fails chunk 0 and emits nothing', async () => {
      for (let byte = start - AGE_NONCE_SIZE; byte < start; byte += 1) {
        for (let bit = 0; bit < 8; bit += 1) {
          const { out, err } = await decryptBuffer(flipBit(file, byte * 8 + bit), key);
          expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 0 failed authentication (corrupted or tampered)');
          expect(out.length).toBe(0);
        }
      }
    });
  });

  // Reordered, dropped and duplicated chunks, flips in chunks, cuts around chunk boundaries and appended
  // data are in the stream contract (stream-contract.test.ts), which age passes like format v1.
  describe('spliced headers', () => {
    test('another file’s header and nonce in front of these chunks (same recipients) fails chunk 0', async () => {
      const other = await encryptBuffer(plain, sealTo(ids[0], ids[1]));
      const spliced = Buffer.concat([other.subarray(0, start), file.subarray(start)]);
      const { out, err } = await decryptBuffer(spliced, key);
      expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 0 failed authentication (corrupted or tampered)');
      expect(out.length).toBe(0);
    });
  });

  describe('appended data', () => {
    const fullPlain = pseudoRandomBytes(2 * CHUNK_SIZE, 10);

    test('a validly sealed chunk 2 after a full final chunk 1 is trailing data too', async () => {
      const crafted = craftAgeFile((fileKey) => [x25519Stanza(fileKey, ids[0])], fullPlain, { extraChunk: true });
      const { out, err } = await decryptBuffer(crafted, key);
      expectCode(err, 'E_CRYPT_TRAILING_DATA', /chunk 1/);
      expectOnlyAuthenticatedPrefix(out, fullPlain, 1);
    });
  });
});

describe('age keys, stanza types and versions', () => {
  const plain = Buffer.from('sealed to two recipients');
  let two: Buffer;
  beforeAll(async () => {
    two = await encryptBuffer(plain, sealTo(ids[0], ids[1]));
  });

  test('no identity matching: the exact message', async () => {
    const { out, err } = await decryptBuffer(two, openWith(ids[2]));
    expectCode(err, 'E_AGE_NO_MATCH');
    expect((err as Error).message).toBe('archive is sealed to 2 recipients; none of the 1 identities given matches');
    expect(out.length).toBe(0);
  });

  test('several identities given: any one matching opens the file, none matching says how many were tried', async () => {
    expect((await decryptBuffer(two, openWith(ids[2], stranger, ids[1]))).out.equals(plain)).toBe(true);
    const { err } = await decryptBuffer(two, openWith(ids[2], stranger));
    expectCode(err, 'E_AGE_NO_MATCH', 'archive is sealed to 2 recipients; none of the 2 identities given matches');
  });

  test('no key, or a key of another kind, for an age file: E_CRYPT_KEY_REQUIRED naming what it needs', async () => {
    const cases: Array<[KeySource | undefined, RegExp]> = [
      [undefined, /^archive is an age file sealed to 2 recipients, but no identity was given \(--identity FILE\)$/],
      [{ kind: 'raw', key: RAW_KEY }, /sealed to 2 recipients, but a raw key was given: it opens with an age identity/],
      [{ kind: 'passphrase', passphrase: 'x' }, /but a passphrase was given: it opens with an age identity/],
      [sealTo(ids[0]), /but recipients were given: it opens with an age identity/],
    ];
    for (const [source, message] of cases) {
      const { out, err } = await decryptBuffer(two, source);
      expectCode(err, 'E_CRYPT_KEY_REQUIRED', message);
      expect(out.length).toBe(0);
      expectCode(await openError(bufferSource(two), source), 'E_CRYPT_KEY_REQUIRED', message);
    }
  });

  test('identities for a format v1 file: E_CRYPT_KEY_REQUIRED naming the key it needs', async () => {
    const raw = await encryptBuffer(plain, { kind: 'raw', key: RAW_KEY });
    const pass = await encryptBuffer(plain, { kind: 'passphrase', passphrase: 'p', params: SMALL_ARGON2 });
    for (const [encrypted, needed] of [
      [raw, /^archive is encrypted with a raw 32-byte key \(key id [0-9a-f]{16}\) \(format v1\), but age identities were given$/],
      [pass, /^archive is encrypted with an argon2id passphrase \(format v1\), but age identities were given$/],
    ] as const) {
      const { out, err } = await decryptBuffer(encrypted, openWith(ids[0]));
      expectCode(err, 'E_CRYPT_KEY_REQUIRED', needed);
      expect(out.length).toBe(0);
      expectCode(await openError(bufferSource(encrypted), openWith(ids[0])), 'E_CRYPT_KEY_REQUIRED', needed);
    }
  });

  test('a file that is neither format, with identities: E_AGE_NOT_AGE', async () => {
    const { err } = await decryptBuffer(Buffer.from('PK\x03\x04 not encrypted at all'), openWith(ids[0]));
    expectCode(err, 'E_AGE_NOT_AGE', 'not an age file (it does not start with "age-encryption.org/")');
  });

  test('a passphrase (scrypt) file: E_AGE_UNSUPPORTED mentioning scrypt', async () => {
    // What age -p writes: one scrypt stanza (salt, log2 work factor 10) wrapping the file key.
    const file = craftAgeFile(() => [{ type: 'scrypt', args: [encodeBase64(randomBytes(16)), '10'], body: randomBytes(32) }], plain);
    expect(file.toString('latin1')).toMatch(/^age-encryption\.org\/v1\n-> scrypt [A-Za-z0-9+/]{22} 10\n[A-Za-z0-9+/]{43}\n--- /);
    for (const source of [openWith(ids[0]), undefined]) {
      const { out, err } = await decryptBuffer(file, source);
      expectCode(err, 'E_AGE_UNSUPPORTED', /encrypted with a passphrase \(stanza type scrypt\), which coffer does not read/);
      expect(out.length).toBe(0);
    }
    expectCode(await openError(bufferSource(file), openWith(ids[0])), 'E_AGE_UNSUPPORTED', /scrypt/);
  });

  test('an scrypt stanza beside another stanza is an invalid header', async () => {
    const file = craftAgeFile(
      (fileKey) => [x25519Stanza(fileKey, ids[0]), { type: 'scrypt', args: [encodeBase64(randomBytes(16)), '10'], body: randomBytes(32) }],
      plain,
    );
    expectCode((await decryptBuffer(file, openWith(ids[0]))).err, 'E_AGE_HEADER', 'invalid age header: an scrypt stanza must be the only stanza, this header has 2');
  });

  test('a stanza of an unknown type alone: E_AGE_UNSUPPORTED naming the type', async () => {
    const file = craftAgeFile(() => [{ type: 'piv-p256', args: ['Zm9v'], body: randomBytes(32) }], plain);
    const { out, err } = await decryptBuffer(file, openWith(ids[0]));
    expectCode(err, 'E_AGE_UNSUPPORTED', /sealed only to recipient types coffer does not read \(stanza type "piv-p256"\); coffer reads X25519 recipients/);
    expect(out.length).toBe(0);
  });

  test('an unknown stanza beside an X25519 stanza for someone else: no match, naming the unread type', async () => {
    const file = craftAgeFile((fileKey) => [x25519Stanza(fileKey, stranger), { type: 'piv-p256', args: ['Zm9v'], body: randomBytes(32) }], plain);
    expectCode(
      (await decryptBuffer(file, openWith(ids[0]))).err,
      'E_AGE_NO_MATCH',
      'archive is sealed to 2 recipients; none of the 1 identities given matches (stanza types coffer does not read: piv-p256)',
    );
    expect((await decryptBuffer(file, openWith(stranger))).out.equals(plain)).toBe(true);
  });

  test.each([
    ['a low-order share (all zero)', Buffer.alloc(32), 32, /stanza 1 \(X25519\) has an invalid ephemeral share \(a low-order point\)/],
    ['a 31-byte share', randomBytes(31), 32, /stanza 1 \(X25519\) must have one argument, the base64 of a 32-byte share/],
    ['a 33-byte body', null, 33, /stanza 1 \(X25519\) has a 33-byte body, not 32/],
  ] as const)('an X25519 stanza with %s is an invalid header', async (_what, share, bodyLength, message) => {
    const file = craftAgeFile(
      (fileKey) => {
        const good = x25519Stanza(fileKey, ids[0]);
        return [{ type: 'X25519', args: [share === null ? good.args[0] : encodeBase64(share)], body: randomBytes(bodyLength) }];
      },
      plain,
    );
    const { out, err } = await decryptBuffer(file, openWith(ids[0]));
    expectCode(err, 'E_AGE_HEADER', message);
    expect(out.length).toBe(0);
  });

  test('a version line age-encryption.org/v2: E_AGE_UNSUPPORTED naming the version', async () => {
    const v2 = Buffer.from(two);
    v2.write('v2', 19, 'latin1');
    expect(v2.subarray(0, 22).toString('latin1')).toBe('age-encryption.org/v2\n');
    const { out, err } = await decryptBuffer(v2, openWith(ids[0]));
    expectCode(err, 'E_AGE_UNSUPPORTED', 'unsupported age format version "v2" (coffer reads age-encryption.org/v1)');
    expect(out.length).toBe(0);
    expectCode(await openError(bufferSource(v2), openWith(ids[0])), 'E_AGE_UNSUPPORTED', /"v2"/);
  });

  test.each([
    ['no stanzas', (h: string) => h.replace(/-> [^]*?(?=--- )/, ''), 'E_AGE_HEADER', /it has no recipient stanzas/],
    ['no space after ---', (h: string) => h.replace('--- ', '---'), 'E_AGE_HEADER', /the MAC line must be "--- " and 43 base64 characters/],
    ['a 42-character MAC', (h: string) => h.replace(/(--- [A-Za-z0-9+/]{42})[A-Za-z0-9+/]/, '$1'), 'E_AGE_HEADER', /the MAC line/],
    ['a padded stanza body', (h: string) => h.replace(/\n([A-Za-z0-9+/]{43})\n--- /, '\n$1=\n--- '), 'E_AGE_HEADER', /line 3: a stanza body line/],
    ['CRLF line ends', (h: string) => h.replace(/\n/g, '\r\n'), 'E_AGE_UNSUPPORTED', /version "\(not printable\)"/],
    ['a line that is neither stanza nor MAC', (h: string) => h.replace('--- ', 'xx\n--- '), 'E_AGE_HEADER', /line 4 is neither a stanza/],
    ['a stanza without arguments', (h: string) => h.replace(/-> X25519 [A-Za-z0-9+/]{43}/, '-> '), 'E_AGE_HEADER', /line 2: stanza arguments must be non-empty/],
  ])('a header with %s is refused', async (_what, edit, code, message) => {
    const one = await encryptBuffer(plain, sealTo(ids[0]));
    const headerLength = parseAgeHeader(one, true)!.length;
    const damaged = Buffer.concat([Buffer.from(edit(one.subarray(0, headerLength).toString('latin1')), 'latin1'), one.subarray(headerLength)]);
    const { out, err } = await decryptBuffer(damaged, openWith(ids[0]));
    expectCode(err, code as ErrorCode, message);
    expect(out.length).toBe(0);
  });
});

describe('random access to age files', () => {
  async function checkRanges(reader: EncryptedFileReader, plain: Buffer, seed: number): Promise<void> {
    expect(reader.size).toBe(plain.length);
    const rng = seededRandom(seed);
    const ranges: Array<[number, number]> = [
      [0, 0],
      [0, plain.length],
      [plain.length, plain.length],
      [plain.length - 1, plain.length],
      [CHUNK_SIZE - 1, CHUNK_SIZE + 1],
      [CHUNK_SIZE, 2 * CHUNK_SIZE],
    ];
    while (ranges.length < 80) {
      const s = randomInt(rng, plain.length + 1);
      const length = rng() < 0.5 ? randomInt(rng, 2 * CHUNK_SIZE + 100) : randomInt(rng, 300);
      ranges.push([s, Math.min(plain.length, s + length)]);
    }
    for (const [s, e] of ranges) {
      const got = await readStream(reader.createReadStream(s, e));
      if (!got.equals(plain.subarray(s, e))) throw new Error(`range [${s}, ${e}) differs`);
    }
    const reads: Array<[number, number]> = [
      [0, 1],
      [plain.length - 10, 100],
      [plain.length, 5],
    ];
    while (reads.length < 80) reads.push([randomInt(rng, plain.length + 1), randomInt(rng, 3 * CHUNK_SIZE)]);
    for (const [position, length] of reads) {
      const got = await reader.read(position, length);
      if (!got.equals(plain.subarray(position, position + length))) throw new Error(`read(${position}, ${length}) differs`);
    }
  }

  test('a file coffer made (in memory): random ranges and reads equal the plaintext', async () => {
    const plain = pseudoRandomBytes(5 * CHUNK_SIZE + 777, 12);
    const encrypted = await encryptBuffer(plain, sealTo(ids[0], ids[1]));
    const reader = await EncryptedFileReader.open(bufferSource(encrypted), openWith(ids[1]));
    try {
      expect(reader.envelope).toEqual({ encryption: 'age', payloadOffset: payloadStartOf(encrypted), keyIdHex: undefined, recipients: 2 });
      await checkRanges(reader, plain, 13);
    } finally {
      await reader.close();
    }
  });

  test('a file age made (on disk, full final chunk): random ranges and reads equal the plaintext', async () => {
    const plain = pseudoRandomBytes(4 * CHUNK_SIZE, 14);
    const encrypted = await ageEncrypt(plain, ['-r', ids[2].recipient.text, '-r', ids[0].recipient.text]);
    const file = tempPath('random-access.age');
    await writeFile(file, encrypted);
    const reader = await EncryptedFileReader.open(await fileSource(file), openWith(ids[2]));
    try {
      expect(reader.envelope.encryption).toBe('age');
      expect(reader.envelope.recipients).toBe(2);
      await checkRanges(reader, plain, 15);
    } finally {
      await reader.close();
    }
  });

  test('a header longer than the first 16 KiB read (200 recipients) opens, in coffer and in age', async () => {
    const many = [...Array.from({ length: 199 }, () => generateAgeIdentity()), ids[1]];
    const plain = pseudoRandomBytes(CHUNK_SIZE + 1, 17);
    const encrypted = await encryptBuffer(plain, sealTo(...many));
    expect(payloadStartOf(encrypted)).toBeGreaterThan(16 * 1024);
    const reader = await EncryptedFileReader.open(bufferSource(encrypted), openWith(ids[1]));
    try {
      expect(reader.envelope.recipients).toBe(200);
      expect((await reader.read(0, reader.size)).equals(plain)).toBe(true);
    } finally {
      await reader.close();
    }
    expect((await ageDecrypt(encrypted, identityFile[1])).equals(plain)).toBe(true);
  });

  /** A source that records its reads and whether it was closed. */
  function recording(buf: Buffer): RandomAccessSource & { reads: Array<[number, number]>; closed: boolean } {
    const inner = bufferSource(buf);
    const src = {
      size: inner.size,
      reads: [] as Array<[number, number]>,
      closed: false,
      createReadStream: (s: number, e: number) => inner.createReadStream(s, e),
      read: (position: number, length: number) => {
        src.reads.push([position, length]);
        return inner.read(position, length);
      },
      close: async () => {
        src.closed = true;
      },
    };
    return src;
  }

  describe('open', () => {
    const plain = pseudoRandomBytes(6 * CHUNK_SIZE + 10, 16);
    let encrypted: Buffer;
    let start: number;
    const chunkAt = (i: number): number => start + i * SEALED_CHUNK_SIZE;
    beforeAll(async () => {
      encrypted = await encryptBuffer(plain, sealTo(ids[0]));
      start = payloadStartOf(encrypted);
    });

    test('reads the header, then authenticates the final chunk (and the one before it), nothing else', async () => {
      const src = recording(encrypted);
      const reader = await EncryptedFileReader.open(src, openWith(ids[0]));
      const [headerRead, ...chunkReads] = src.reads;
      expect(headerRead[0]).toBe(0);
      expect(chunkReads.sort((a, b) => a[0] - b[0])).toEqual([
        [chunkAt(5), SEALED_CHUNK_SIZE],
        [chunkAt(6), encrypted.length - chunkAt(6)],
      ]);
      await reader.close();
      expect(src.closed).toBe(true);
    });

    test('a corrupted final chunk fails at open, before any range is asked for, and closes the source', async () => {
      const damaged = Buffer.from(encrypted);
      damaged[encrypted.length - 3] ^= 0x10;
      const src = recording(damaged);
      expectCode(await openError(src, openWith(ids[0])), 'E_CRYPT_CORRUPT', 'chunk 6: truncated, tampered or data appended');
      expect(src.closed).toBe(true);
    });

    test('a corrupted middle chunk opens; ranges before it read, ranges touching it fail naming it', async () => {
      const damaged = Buffer.from(encrypted);
      damaged[chunkAt(2) + 500] ^= 0x01;
      const reader = await EncryptedFileReader.open(bufferSource(damaged), openWith(ids[0]));
      try {
        expect((await readStream(reader.createReadStream(5, 2 * CHUNK_SIZE))).equals(plain.subarray(5, 2 * CHUNK_SIZE))).toBe(true);
        await expect(readStream(reader.createReadStream(2 * CHUNK_SIZE - 1, 2 * CHUNK_SIZE + 1))).rejects.toMatchObject({
          code: 'E_CRYPT_CORRUPT',
          message: 'chunk 2 failed authentication (corrupted or tampered)',
        });
        await expect(reader.read(2 * CHUNK_SIZE + 7, 1)).rejects.toMatchObject({ code: 'E_CRYPT_CORRUPT' });
        expect((await reader.read(3 * CHUNK_SIZE, 10)).equals(plain.subarray(3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 10))).toBe(true);
      } finally {
        await reader.close();
      }
    });

    test('a wrong identity, or none, fails at open', async () => {
      expectCode(await openError(bufferSource(encrypted), openWith(stranger)), 'E_AGE_NO_MATCH', 'archive is sealed to 1 recipient; none of the 1 identities given matches');
      expectCode(await openError(bufferSource(encrypted), undefined), 'E_CRYPT_KEY_REQUIRED');
    });

    test('damage at the end of the file: open and the stream decryptor agree on code and message', async () => {
      let compared = 0;
      for (const variant of [
        ...[1, 15, 16, 17, 500, SEALED_CHUNK_SIZE - 1, SEALED_CHUNK_SIZE, SEALED_CHUNK_SIZE + 10].map((cut) => encrypted.subarray(0, encrypted.length - cut)),
        ...[1, 16, 500, SEALED_CHUNK_SIZE].map((extra) => Buffer.concat([encrypted, encrypted.subarray(start, start + extra)])),
      ]) {
        const streamErr = (await decryptBuffer(variant, openWith(ids[0]))).err as Error;
        const openErr = (await openError(bufferSource(variant), openWith(ids[0]))) as Error;
        expect(codeOf(streamErr)).toMatch(/^E_CRYPT_(TRUNCATED|CORRUPT|TRAILING_DATA)$/);
        expect([codeOf(openErr), openErr.message]).toEqual([codeOf(streamErr), streamErr.message]);
        compared += 1;
      }
      expect(compared).toBe(12);
    });
  });
});
