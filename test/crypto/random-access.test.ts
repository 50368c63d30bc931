import { bufferSource, fileSource } from '../../src/archive';
import type { RandomAccessSource } from '../../src/core/types';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  CHUNK_SIZE,
  EncryptedFileReader,
  encryptFile,
  HEADER_SIZE,
  type KeySource,
  SEALED_CHUNK_SIZE,
} from '../../src/crypto';
import { RANGE_PIECE_SIZE } from '../../src/crypto/random-access';
import {
  codeOf,
  decryptBuffer,
  encryptBuffer,
  expectCode,
  KEY_SOURCES,
  pseudoRandomBytes,
  randomInt,
  readStream,
  seededRandom,
} from './helpers';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'coffer-crypto-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileNo = 0;
async function writeTemp(content: Buffer): Promise<string> {
  fileNo += 1;
  const file = path.join(dir, `f${fileNo}.zip.crypt`);
  await writeFile(file, content);
  return file;
}

async function openError(file: string, source: KeySource): Promise<unknown> {
  try {
    const reader = await EncryptedFileReader.open(await fileSource(file), source);
    await reader.close();
  } catch (err) {
    return err;
  }
  throw new Error('open succeeded');
}

describe.each(KEY_SOURCES)('random access with %s', (_name, source: KeySource) => {
  // 17 full chunks and a short one: enough boundaries for ranges to cross.
  const plain = pseudoRandomBytes(17 * CHUNK_SIZE + 4321, 3);
  let encrypted: Buffer;
  let file: string;
  let reader: EncryptedFileReader;

  beforeAll(async () => {
    encrypted = await encryptBuffer(plain, source);
    file = await writeTemp(encrypted);
    reader = await EncryptedFileReader.open(await fileSource(file), source);
  });
  afterAll(async () => {
    await reader.close();
  });

  test('size is the plaintext size', () => {
    expect(reader.size).toBe(plain.length);
  });

  test('100 random ranges, across chunk boundaries and empty, equal the sequential plaintext', async () => {
    const rng = seededRandom(99);
    const ranges: Array<[number, number]> = [
      [0, 0],
      [plain.length, plain.length],
      [CHUNK_SIZE, CHUNK_SIZE],
      [0, plain.length],
      [plain.length - 1, plain.length],
      [CHUNK_SIZE - 1, CHUNK_SIZE + 1],
      [5 * CHUNK_SIZE, 6 * CHUNK_SIZE],
      [16 * CHUNK_SIZE + 10, plain.length],
    ];
    while (ranges.length < 100) {
      const start = randomInt(rng, plain.length + 1);
      const length = rng() < 0.5 ? randomInt(rng, 3 * CHUNK_SIZE) : randomInt(rng, 300);
      ranges.push([start, Math.min(plain.length, start + length)]);
    }
    for (const [start, end] of ranges) {
      const got = await readStream(reader.createReadStream(start, end));
      if (!got.equals(plain.subarray(start, end))) throw new Error(`range [${start}, ${end}) differs`);
    }
  });

  test('concurrent streams over overlapping ranges each get their own bytes', async () => {
    const ranges: Array<[number, number]> = [
      [0, 5 * CHUNK_SIZE],
      [3 * CHUNK_SIZE - 7, 9 * CHUNK_SIZE + 7],
      [plain.length - 2 * CHUNK_SIZE, plain.length],
      [100, 200],
    ];
    const results = await Promise.all(ranges.map(([s, e]) => readStream(reader.createReadStream(s, e))));
    results.forEach((got, i) => expect(got.equals(plain.subarray(...ranges[i]))).toBe(true));
  });

  test('ranges outside the plaintext are refused', () => {
    expect(() => reader.createReadStream(-1, 10)).toThrow(RangeError);
    expect(() => reader.createReadStream(10, 5)).toThrow(RangeError);
    expect(() => reader.createReadStream(0, plain.length + 1)).toThrow(RangeError);
  });

  test('a stream nobody reads does not decrypt ahead of its consumer', async () => {
    const stream = reader.createReadStream(0, plain.length);
    stream.read(0); // start reading without consuming anything
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stream.readableLength).toBeGreaterThan(0);
    expect(stream.readableLength).toBeLessThanOrEqual(2 * RANGE_PIECE_SIZE);
    expect(stream.readableLength).toBeLessThan(plain.length / 2);
    stream.destroy();
  });

  const firstChunk = (f: Buffer): Buffer => f.subarray(HEADER_SIZE, HEADER_SIZE + SEALED_CHUNK_SIZE);
  const cutAt =
    (length: number) =>
    (f: Buffer): Buffer =>
      f.subarray(0, length);
  test.each([
    ['cut inside the header', cutAt(60), 'E_CRYPT_TRUNCATED'],
    ['header only', cutAt(HEADER_SIZE), 'E_CRYPT_TRUNCATED'],
    ['cut at a chunk boundary', cutAt(HEADER_SIZE + 5 * SEALED_CHUNK_SIZE), 'E_CRYPT_TRUNCATED'],
    ['cut 5 bytes after a chunk boundary', cutAt(HEADER_SIZE + 5 * SEALED_CHUNK_SIZE + 5), 'E_CRYPT_TRUNCATED'],
    ['cut inside a chunk', cutAt(HEADER_SIZE + 5 * SEALED_CHUNK_SIZE + 999), 'E_CRYPT_CORRUPT'],
    ['final chunk missing one byte', (f: Buffer) => f.subarray(0, f.length - 1), 'E_CRYPT_CORRUPT'],
    ['one byte appended', (f: Buffer) => Buffer.concat([f, Buffer.from([1])]), 'E_CRYPT_CORRUPT'],
    ['a full chunk appended', (f: Buffer) => Buffer.concat([f, firstChunk(f)]), 'E_CRYPT_CORRUPT'],
  ] as const)('open refuses a file with %s', async (_what, damage, code) => {
    expectCode(await openError(await writeTemp(damage(encrypted)), source), code);
  });

  test('open refuses a wrong key and a missing key', async () => {
    const wrong: KeySource =
      source.kind === 'raw' ? { kind: 'raw', key: Buffer.alloc(32, 9) } : { kind: 'passphrase', passphrase: 'nope' };
    expect(codeOf(await openError(file, wrong))).toBe(
      source.kind === 'raw' ? 'E_CRYPT_KEY_MISMATCH' : 'E_CRYPT_WRONG_PASSPHRASE',
    );
    expectCode(await openError(file, undefined as unknown as KeySource), 'E_CRYPT_KEY_REQUIRED');
  });
});

describe('random access to a full final chunk', () => {
  const source: KeySource = { kind: 'raw', key: Buffer.alloc(32, 4) };
  const plain = pseudoRandomBytes(3 * CHUNK_SIZE, 4);

  test('appended bytes after a full final chunk are reported as trailing data at open', async () => {
    const encrypted = await encryptBuffer(plain, source);
    const firstChunk = encrypted.subarray(HEADER_SIZE, HEADER_SIZE + SEALED_CHUNK_SIZE);
    for (const extra of [Buffer.from([0]), Buffer.alloc(15), Buffer.alloc(16), firstChunk]) {
      expectCode(await openError(await writeTemp(Buffer.concat([encrypted, extra])), source), 'E_CRYPT_TRAILING_DATA');
    }
  });

  test('dropping the final chunk is reported as truncation at open', async () => {
    const encrypted = await encryptBuffer(plain, source);
    const cut = encrypted.subarray(0, encrypted.length - SEALED_CHUNK_SIZE);
    expectCode(await openError(await writeTemp(cut), source), 'E_CRYPT_TRUNCATED', /ends after chunk 1/);
  });
});

describe('random access and the stream decryptor', () => {
  test('refuse every damage at the end of a file with the same code and message', async () => {
    const source: KeySource = { kind: 'raw', key: Buffer.alloc(32, 7) };
    let compared = 0;
    for (const plainLength of [2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 500]) {
      const encrypted = await encryptBuffer(pseudoRandomBytes(plainLength, 7), source);
      const variants: Buffer[] = [];
      for (let cut = 1; cut <= SEALED_CHUNK_SIZE + 600; cut += cut < 40 ? 1 : 97) {
        variants.push(encrypted.subarray(0, encrypted.length - cut));
      }
      // Up to one sealed chunk appended: open inspects the last two chunk positions, where the stream
      // also notices it. (Longer appendages are still refused at open, by the chunk they misalign.)
      for (const extra of [1, 15, 16, 17, 500, SEALED_CHUNK_SIZE - 1, SEALED_CHUNK_SIZE]) {
        variants.push(Buffer.concat([encrypted, encrypted.subarray(HEADER_SIZE, HEADER_SIZE + extra)]));
      }
      for (const variant of variants) {
        const streamErr = (await decryptBuffer(variant, source)).err as Error;
        const openErr = (await openError(await writeTemp(variant), source)) as Error;
        expect(codeOf(streamErr)).toMatch(/^E_CRYPT_/);
        expect([codeOf(openErr), openErr.message]).toEqual([codeOf(streamErr), streamErr.message]);
        compared += 1;
      }
    }
    expect(compared).toBeGreaterThan(100);
  });
});

/** A source that records every read of the encrypted file, as [position, length]; readInto only if asked. */
function countingSource(inner: RandomAccessSource, reads: Array<[number, number]>, readInto: boolean): RandomAccessSource {
  return {
    size: inner.size,
    createReadStream: (start, end) => inner.createReadStream(start, end),
    read(position, length) {
      reads.push([position, length]);
      return inner.read(position, length);
    },
    ...(readInto && {
      readInto(buffer: Buffer, position: number) {
        reads.push([position, buffer.length]);
        return inner.readInto!(buffer, position);
      },
    }),
    close: () => inner.close(),
  };
}

describe.each([
  ['a source that reads into given buffers', true],
  ['a source that only returns new buffers', false],
])('random access through %s: how the file is read', (_name, readInto) => {
  const source: KeySource = { kind: 'raw', key: Buffer.alloc(32, 8) };
  const plain = pseudoRandomBytes(40 * CHUNK_SIZE + 777, 8);
  let encrypted: Buffer;
  beforeAll(async () => {
    encrypted = await encryptBuffer(plain, source);
  });

  async function withReader(run: (reader: EncryptedFileReader, reads: Array<[number, number]>) => Promise<void>): Promise<void> {
    const reads: Array<[number, number]> = [];
    const reader = await EncryptedFileReader.open(countingSource(bufferSource(encrypted), reads, readInto), source);
    reads.length = 0; // the header and the last two chunks, read by open
    try {
      await run(reader, reads);
    } finally {
      await reader.close();
    }
  }

  test('a long range is read in a few large reads, not one read per chunk', async () => {
    await withReader(async (reader, reads) => {
      const got = await readStream(reader.createReadStream(100, 38 * CHUNK_SIZE + 5));
      expect(got.equals(plain.subarray(100, 38 * CHUNK_SIZE + 5))).toBe(true);
      expect(reads.length).toBeLessThanOrEqual(6);
      expect(Math.max(...reads.map(([, length]) => length))).toBe(16 * SEALED_CHUNK_SIZE);
    });
  });

  test('neighbouring ranges that share a chunk read it from the file once', async () => {
    await withReader(async (reader, reads) => {
      const cut = 5 * CHUNK_SIZE + 1000;
      const first = await readStream(reader.createReadStream(0, cut));
      const second = await readStream(reader.createReadStream(cut, 9 * CHUNK_SIZE));
      expect(Buffer.concat([first, second]).equals(plain.subarray(0, 9 * CHUNK_SIZE))).toBe(true);
      const sharedAt = HEADER_SIZE + 5 * SEALED_CHUNK_SIZE;
      expect(reads.filter(([position, length]) => position <= sharedAt && sharedAt < position + length)).toHaveLength(1);
    });
  });

  test('the whole plaintext, the last chunks included, streams back exactly', async () => {
    await withReader(async (reader) => {
      expect((await readStream(reader.createReadStream(0, reader.size))).equals(plain)).toBe(true);
      expect((await readStream(reader.createReadStream(CHUNK_SIZE, reader.size))).equals(plain.subarray(CHUNK_SIZE))).toBe(true);
    });
  });

  test('streams side by side, and streams destroyed halfway, never see each other\'s bytes', async () => {
    await withReader(async (reader) => {
      const rng = seededRandom(41);
      for (let round = 0; round < 10; round++) {
        const ranges = Array.from({ length: 4 }, (): [number, number] => {
          const start = randomInt(rng, plain.length);
          return [start, Math.min(plain.length, start + randomInt(rng, 30 * CHUNK_SIZE))];
        });
        // One stream read only in part and then destroyed, its read-ahead possibly still in flight.
        const abandoned = reader.createReadStream(0, plain.length);
        await new Promise((resolve) => abandoned.once('data', resolve));
        abandoned.destroy();
        const results = await Promise.all(ranges.map(([s, e]) => readStream(reader.createReadStream(s, e))));
        results.forEach((got, i) => {
          if (!got.equals(plain.subarray(...ranges[i]))) throw new Error(`round ${round}: range [${ranges[i].join(', ')}) differs`);
        });
      }
    });
  });
});

describe('random access to a damaged middle chunk', () => {
  const source: KeySource = { kind: 'raw', key: Buffer.alloc(32, 5) };
  const plain = pseudoRandomBytes(6 * CHUNK_SIZE + 10, 5);

  test('ranges before it read fine and ranges touching it fail without releasing its bytes', async () => {
    const encrypted = await encryptBuffer(plain, source);
    encrypted[HEADER_SIZE + 3 * SEALED_CHUNK_SIZE + 100] ^= 0x40;
    const reader = await EncryptedFileReader.open(await fileSource(await writeTemp(encrypted)), source);
    try {
      const before = await readStream(reader.createReadStream(10, 3 * CHUNK_SIZE));
      expect(before.equals(plain.subarray(10, 3 * CHUNK_SIZE))).toBe(true);
      const received: Buffer[] = [];
      const stream = reader.createReadStream(2 * CHUNK_SIZE, 5 * CHUNK_SIZE);
      stream.on('data', (d: Buffer) => received.push(d));
      const err = await new Promise((resolve) => stream.on('error', resolve));
      expectCode(err, 'E_CRYPT_CORRUPT', 'chunk 3 failed authentication (corrupted or tampered)');
      expect(Buffer.concat(received).equals(plain.subarray(2 * CHUNK_SIZE, 3 * CHUNK_SIZE))).toBe(true);
      // The cache must not keep the failure or a half result: a later read after it still works.
      expect((await readStream(reader.createReadStream(4 * CHUNK_SIZE, 4 * CHUNK_SIZE + 5))).length).toBe(5);
    } finally {
      await reader.close();
    }
  });

  test('a closed reader refuses to read', async () => {
    const reader = await EncryptedFileReader.open(await fileSource(await writeTemp(await encryptBuffer(plain, source))), source);
    await reader.close();
    await expect(readStream(reader.createReadStream(0, 10))).rejects.toMatchObject({ code: 'E_INTERNAL' });
  });
});

describe('encryptFile', () => {
  test('writes a file the stream decryptor and the random-access reader both read back', async () => {
    const source: KeySource = { kind: 'raw', key: Buffer.alloc(32, 6) };
    const plain = pseudoRandomBytes(200000, 6);
    const input = await writeTemp(plain);
    const output = path.join(dir, 'out.zip.crypt');
    await encryptFile(input, output, source);
    const encrypted = await readFile(output);
    expect((await decryptBuffer(encrypted, source)).out.equals(plain)).toBe(true);
    const reader = await EncryptedFileReader.open(await fileSource(output), source);
    expect((await readStream(reader.createReadStream(0, reader.size))).equals(plain)).toBe(true);
    await reader.close();
    await expect(access(`${output}.partial`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('leaves nothing behind when the input cannot be read', async () => {
    const output = path.join(dir, 'never.zip.crypt');
    const source: KeySource = { kind: 'raw', key: Buffer.alloc(32) };
    await expect(encryptFile(path.join(dir, 'missing'), output, source)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(access(output)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(access(`${output}.partial`)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
