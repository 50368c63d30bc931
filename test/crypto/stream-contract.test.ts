/**
 * One contract for every key source and both formats: whatever derived the keys (a raw key, a
 * passphrase, an age identity), the streams must round-trip and must refuse every kind of damage to the
 * chunks without releasing a byte that was not authenticated. Header damage is format-specific: format
 * v1's is here, age's in age.test.ts.
 */
import { type ErrorCode } from '../../src/core/errors';
import { CHUNK_SIZE, generateAgeIdentity, HEADER_SIZE, type KeySource, parseAgeHeader, SEALED_CHUNK_SIZE } from '../../src/crypto';
import {
  codeOf,
  decryptBuffer,
  encryptBuffer,
  expectCode,
  flipBit,
  KEY_SOURCES,
  pseudoRandomBytes,
  randomInt,
  randomPieces,
  seededRandom,
} from './helpers';

/** 3 full chunks and a short final one. */
const TAMPER_LEN = 3 * CHUNK_SIZE + 1000;
const TAG = 16;

const identity = generateAgeIdentity();

/** [name, key that seals, key that opens]: format v1 keys do both; age seals to a recipient. */
const CASES: Array<[string, KeySource, KeySource]> = [
  ...KEY_SOURCES.map(([name, source]): [string, KeySource, KeySource] => [name, source, source]),
  ['an age recipient and its identity', { kind: 'recipients', recipients: [identity.recipient] }, { kind: 'identities', identities: [identity] }],
];

/** Where chunk 0 starts: after format v1's fixed header, or after age's header and nonce. */
function payloadStart(file: Buffer): number {
  if (file[0] !== 0x61) return HEADER_SIZE;
  return parseAgeHeader(file)!.length + 16;
}

function encryptedSize(start: number, plainLen: number): number {
  const chunks = Math.max(1, Math.ceil(plainLen / CHUNK_SIZE));
  return start + plainLen + chunks * TAG;
}

function sealedChunks(file: Buffer): Buffer[] {
  const chunks: Buffer[] = [];
  for (let off = payloadStart(file); off < file.length; off += SEALED_CHUNK_SIZE) {
    chunks.push(file.subarray(off, Math.min(off + SEALED_CHUNK_SIZE, file.length)));
  }
  return chunks;
}

/**
 * The decryptor may only have emitted whole, authenticated chunks from the start of the plaintext,
 * and none from `firstBadChunk` on.
 */
function expectOnlyAuthenticatedPrefix(out: Buffer, plain: Buffer, firstBadChunk: number): void {
  expect(out.length % CHUNK_SIZE).toBe(0);
  expect(out.length).toBeLessThanOrEqual(firstBadChunk * CHUNK_SIZE);
  expect(out.equals(plain.subarray(0, out.length))).toBe(true);
}

type HeaderExpectation = (bitInByte: number, valueBit: number) => ErrorCode | 'skip';

describe.each(CASES)('encryption stream contract with %s', (_name, seal: KeySource, source: KeySource) => {
  const plain = pseudoRandomBytes(TAMPER_LEN, 1);
  const v1 = seal.kind !== 'recipients';
  let file: Buffer;
  /** Where chunk 0 starts in `file`. */
  let start: number;

  beforeAll(async () => {
    file = await encryptBuffer(plain, seal);
    start = payloadStart(file);
  });

  describe('round trip', () => {
    test.each([0, 1, 65535, 65536, 65537, 2 * 65536, 3 * 1024 * 1024 + 17])(
      '%i bytes written and read in random-sized pieces come back unchanged',
      async (length) => {
        const rng = seededRandom(length + 7);
        const data = pseudoRandomBytes(length, length);
        const encrypted = await encryptBuffer(data, seal, {}, randomPieces(data, rng));
        expect(encrypted.length).toBe(encryptedSize(payloadStart(encrypted), length));
        const { out, err } = await decryptBuffer(encrypted, source, randomPieces(encrypted, rng));
        expect(err).toBeNull();
        expect(out.length).toBe(length);
        expect(out.equals(data)).toBe(true);
      },
    );

    test('empty plaintext is exactly one empty final chunk (a 16-byte tag after the header)', async () => {
      const empty = await encryptBuffer(Buffer.alloc(0), seal, {}, []);
      expect(empty.length).toBe(payloadStart(empty) + 16);
      if (v1) expect(empty.length).toBe(136);
    });

    test('the same plaintext encrypts differently each time (fresh salts, nonces, file keys)', async () => {
      const again = await encryptBuffer(plain, seal);
      // Format v1: archive salt and nonce prefix; age: the stanzas' shares and bodies.
      const [from, to] = v1 ? [45, 84] : [22, start - 16];
      expect(again.subarray(from, to).equals(file.subarray(from, to))).toBe(false);
      expect(again.subarray(start, start + 64).equals(file.subarray(start, start + 64))).toBe(false);
    });
  });

  describe('truncation', () => {
    test('a cut at every byte of the header is refused as truncated and emits nothing', async () => {
      for (let len = 0; len <= start; len += 1) {
        const { out, err } = await decryptBuffer(file.subarray(0, len), source);
        if (codeOf(err) !== 'E_CRYPT_TRUNCATED') throw new Error(`cut at ${len}: ${codeOf(err)}`);
        expect(out.length).toBe(0);
      }
    });

    test('cuts around every chunk boundary are refused and emit only the chunks before the cut', async () => {
      const lengths = new Set<number>();
      for (let i = 0; i < 4; i += 1) {
        const boundary = start + i * SEALED_CHUNK_SIZE;
        for (let d = -20; d <= 20; d += 1) lengths.add(boundary + d);
        lengths.add(boundary + 1000);
      }
      for (let d = 1; d <= 20; d += 1) lengths.add(file.length - d);
      for (const len of [...lengths].filter((l) => l > start && l < file.length)) {
        const rel = len - start;
        const complete = Math.floor(rel / SEALED_CHUNK_SIZE);
        const rest = rel % SEALED_CHUNK_SIZE;
        // A cut at a boundary or inside a tag-sized stub is provably truncation; a cut inside a chunk
        // leaves a final chunk that cannot authenticate.
        const expected: ErrorCode = rest < TAG ? 'E_CRYPT_TRUNCATED' : 'E_CRYPT_CORRUPT';
        const released = rest === 0 ? complete - 1 : complete;
        const { out, err } = await decryptBuffer(file.subarray(0, len), source);
        if (codeOf(err) !== expected) throw new Error(`cut at ${len}: expected ${expected}, got ${codeOf(err)}`);
        if (expected === 'E_CRYPT_CORRUPT') {
          expect((err as Error).message).toBe(`chunk ${complete}: truncated, tampered or data appended`);
        }
        expect(out.length).toBe(released * CHUNK_SIZE);
        expect(out.equals(plain.subarray(0, out.length))).toBe(true);
      }
    });
  });

  describe('bit flips', () => {
    const headerRule: Record<string, [number, number, HeaderExpectation]> =
      !v1
        ? {}
        : seal.kind === 'raw'
        ? {
            magic: [0, 8, () => 'E_CRYPT_NOT_COFFER'],
            version: [8, 9, () => 'E_CRYPT_UNSUPPORTED'],
            cipher: [9, 10, () => 'E_CRYPT_UNSUPPORTED'],
            // 0 -> 1 turns it into a passphrase header whose zero argon2id parameters are out of range.
            'key source': [10, 11, (bit) => (bit === 0 ? 'E_CRYPT_PARAMS' : 'E_CRYPT_UNSUPPORTED')],
            'chunk size': [11, 12, () => 'E_CRYPT_UNSUPPORTED'],
            'argon2id fields': [12, 37, () => 'E_CRYPT_HEADER'],
            'key id': [37, 45, () => 'E_CRYPT_KEY_MISMATCH'],
            'archive salt': [45, 77, () => 'E_CRYPT_HEADER'],
            'nonce prefix': [77, 84, () => 'E_CRYPT_HEADER'],
            reserved: [84, 88, () => 'E_CRYPT_HEADER'],
            mac: [88, 120, () => 'E_CRYPT_HEADER'],
          }
        : {
            magic: [0, 8, () => 'E_CRYPT_NOT_COFFER'],
            version: [8, 9, () => 'E_CRYPT_UNSUPPORTED'],
            cipher: [9, 10, () => 'E_CRYPT_UNSUPPORTED'],
            'key source': [10, 11, (bit) => (bit === 0 ? 'E_CRYPT_HEADER' : 'E_CRYPT_UNSUPPORTED')],
            'chunk size': [11, 12, () => 'E_CRYPT_UNSUPPORTED'],
            // m = 8 KiB: flipping bit 3 gives 0, bits 20 and up exceed the limit; bits 14-19 would be a
            // legal but 16 MiB-1 GiB derivation, which a unit test should not pay for.
            'argon2id memory': [
              12,
              16,
              (_bit, k) => (k === 3 || k >= 20 ? 'E_CRYPT_PARAMS' : k >= 14 ? 'skip' : 'E_CRYPT_WRONG_PASSPHRASE'),
            ],
            // t = 1: bit 0 gives 0, bits 4 and up exceed 10.
            'argon2id iterations': [
              16,
              20,
              (_bit, k) => (k === 0 || k >= 4 ? 'E_CRYPT_PARAMS' : 'E_CRYPT_WRONG_PASSPHRASE'),
            ],
            // p = 1: any flip gives 0 or p > 1 with only 8 KiB of memory.
            'argon2id parallelism': [20, 21, () => 'E_CRYPT_PARAMS'],
            'argon2id salt': [21, 37, () => 'E_CRYPT_WRONG_PASSPHRASE'],
            'key id': [37, 45, () => 'E_CRYPT_WRONG_PASSPHRASE'],
            'archive salt': [45, 77, () => 'E_CRYPT_HEADER'],
            'nonce prefix': [77, 84, () => 'E_CRYPT_HEADER'],
            reserved: [84, 88, () => 'E_CRYPT_HEADER'],
            mac: [88, 120, () => 'E_CRYPT_HEADER'],
          };

    // age headers have their own rules (test/crypto/age.test.ts).
    if (v1) test.each(Object.entries(headerRule))(
      'every bit of the header field "%s" is checked and nothing is emitted',
      async (_field, [from, to, rule]) => {
        let checked = 0;
        for (let byte = from; byte < to; byte += 1) {
          for (let bit = 0; bit < 8; bit += 1) {
            // Bit number inside the big-endian integer field, for fields where the value matters.
            const valueBit = (to - 1 - byte) * 8 + bit;
            const expected = rule(bit, valueBit);
            if (expected === 'skip') continue;
            const { out, err } = await decryptBuffer(flipBit(file, byte * 8 + bit), source);
            if (codeOf(err) !== expected) {
              throw new Error(`byte ${byte} bit ${bit}: expected ${expected}, got ${codeOf(err)}`);
            }
            expect(out.length).toBe(0);
            checked += 1;
          }
        }
        expect(checked).toBeGreaterThan(0);
      },
    );

    test('flips in chunk bodies and tags fail that chunk and emit only the chunks before it', async () => {
      const rng = seededRandom(42);
      const positions = new Set<number>();
      for (const chunkStart of [0, 1, 2, 3].map((i) => start + i * SEALED_CHUNK_SIZE)) {
        const chunkEnd = Math.min(chunkStart + SEALED_CHUNK_SIZE, file.length);
        // first and last body byte, every tag byte
        positions.add(chunkStart);
        positions.add(chunkEnd - TAG - 1);
        for (let t = chunkEnd - TAG; t < chunkEnd; t += 1) positions.add(t);
      }
      while (positions.size < 64 + 200) positions.add(start + randomInt(rng, file.length - start));
      const lastChunk = sealedChunks(file).length - 1;
      for (const pos of positions) {
        const chunk = Math.floor((pos - start) / SEALED_CHUNK_SIZE);
        const { out, err } = await decryptBuffer(flipBit(file, pos * 8 + randomInt(rng, 8)), source);
        expectCode(
          err,
          'E_CRYPT_CORRUPT',
          chunk === lastChunk
            ? `chunk ${chunk}: truncated, tampered or data appended`
            : `chunk ${chunk} failed authentication (corrupted or tampered)`,
        );
        expectOnlyAuthenticatedPrefix(out, plain, chunk);
      }
    });
  });

  describe('reordered, dropped, duplicated and spliced chunks', () => {
    const cases: Array<[string, (c: Buffer[]) => Buffer[], ErrorCode, number]> = [
      ['first chunk dropped', (c) => [c[1], c[2], c[3]], 'E_CRYPT_CORRUPT', 0],
      ['middle chunk dropped', (c) => [c[0], c[2], c[3]], 'E_CRYPT_CORRUPT', 1],
      ['final chunk dropped', (c) => [c[0], c[1], c[2]], 'E_CRYPT_TRUNCATED', 3],
      ['middle chunk duplicated', (c) => [c[0], c[1], c[1], c[2], c[3]], 'E_CRYPT_CORRUPT', 2],
      ['final chunk duplicated', (c) => [c[0], c[1], c[2], c[3], c[3]], 'E_CRYPT_CORRUPT', 3],
      ['two middle chunks swapped', (c) => [c[0], c[2], c[1], c[3]], 'E_CRYPT_CORRUPT', 1],
      ['final chunk moved before a full one', (c) => [c[0], c[1], c[3], c[2]], 'E_CRYPT_CORRUPT', 2],
      ['all chunks dropped', () => [], 'E_CRYPT_TRUNCATED', 0],
    ];

    test.each(cases)('%s is refused', async (_case, rearrange, code, firstBad) => {
      const damaged = Buffer.concat([file.subarray(0, start), ...rearrange(sealedChunks(file))]);
      const { out, err } = await decryptBuffer(damaged, source);
      expectCode(err, code);
      expectOnlyAuthenticatedPrefix(out, plain, firstBad);
    });

    test('chunks of another archive under the same key are refused after the header', async () => {
      const other = await encryptBuffer(plain, seal);
      const spliced = Buffer.concat([file.subarray(0, start), other.subarray(payloadStart(other))]);
      const { out, err } = await decryptBuffer(spliced, source);
      expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 0 failed authentication (corrupted or tampered)');
      expect(out.length).toBe(0);
    });
  });

  describe('appended data', () => {
    const fullFinal = pseudoRandomBytes(2 * CHUNK_SIZE, 2);
    let fullFile: Buffer;
    beforeAll(async () => {
      fullFile = await encryptBuffer(fullFinal, seal);
    });

    test('one byte after a short final chunk makes the final chunk fail', async () => {
      const { out, err } = await decryptBuffer(Buffer.concat([file, Buffer.from([0])]), source);
      expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 3: truncated, tampered or data appended');
      expectOnlyAuthenticatedPrefix(out, plain, 3);
    });

    test('one byte after a full final chunk is reported as trailing data', async () => {
      const { out, err } = await decryptBuffer(Buffer.concat([fullFile, Buffer.from([0])]), source);
      expectCode(err, 'E_CRYPT_TRAILING_DATA', /after its final chunk \(chunk 1\)/);
      expectOnlyAuthenticatedPrefix(out, fullFinal, 1);
    });

    test('a whole chunk appended after a full final chunk is reported as trailing data', async () => {
      const chunks = sealedChunks(fullFile);
      const { out, err } = await decryptBuffer(Buffer.concat([fullFile, chunks[0]]), source);
      expectCode(err, 'E_CRYPT_TRAILING_DATA');
      expectOnlyAuthenticatedPrefix(out, fullFinal, 1);
    });

    test('a whole chunk appended after a short final chunk is refused at that chunk', async () => {
      const { out, err } = await decryptBuffer(Buffer.concat([file, sealedChunks(file)[0]]), source);
      expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 3 failed authentication (corrupted or tampered)');
      expectOnlyAuthenticatedPrefix(out, plain, 3);
    });
  });

  // age keys have their own tests (test/crypto/age.test.ts).
  if (v1) describe('keys', () => {
    test('decrypting without a key says which kind of key the archive needs', async () => {
      const { out, err } = await decryptBuffer(file, undefined);
      const needed = source.kind === 'raw' ? /raw 32-byte key \(key id [0-9a-f]{16}\)/ : /passphrase/;
      expectCode(err, 'E_CRYPT_KEY_REQUIRED', needed);
      expect(out.length).toBe(0);
    });

    test('the other kind of key is refused with a message naming the kind needed', async () => {
      const other: KeySource =
        source.kind === 'raw' ? { kind: 'passphrase', passphrase: 'x' } : { kind: 'raw', key: Buffer.alloc(32, 1) };
      const { out, err } = await decryptBuffer(file, other);
      expectCode(
        err,
        'E_CRYPT_KEY_REQUIRED',
        source.kind === 'raw' ? /raw 32-byte key .* but a passphrase was given/ : /passphrase, but a raw key was given/,
      );
      expect(out.length).toBe(0);
    });
  });
});
