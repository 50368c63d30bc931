/** Shared helpers for the crypto suites: real encryption and decryption through the public streams. */
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import { isCofferError, type ErrorCode } from '../../src/core/errors';
import { createDecryptStream, createEncryptStream, type EncryptOptions, type KeySource } from '../../src/crypto';

export const VECTORS_DIR = path.join(__dirname, '..', 'fixtures', 'crypto-vectors');

/** The smallest parameters the format allows: tests exercise argon2id without paying for it. */
export const SMALL_ARGON2 = { memoryKiB: 8, iterations: 1, parallelism: 1 };

export const RAW_KEY = Buffer.from('7f'.repeat(16) + '01'.repeat(16), 'hex');

export const KEY_SOURCES: Array<[string, KeySource]> = [
  ['a raw key', { kind: 'raw', key: RAW_KEY }],
  ['an argon2id passphrase', { kind: 'passphrase', passphrase: 'pässwörd with ünïcode ✓', params: SMALL_ARGON2 }],
];

/** Deterministic PRNG (mulberry32) so a failing position or piece size can be reproduced. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomInt(rng: () => number, maxExclusive: number): number {
  return Math.floor(rng() * maxExclusive);
}

export function pseudoRandomBytes(length: number, seed: number): Buffer {
  const rng = seededRandom(seed);
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) {
    const word = Math.floor(rng() * 4294967296);
    for (let j = 0; j < 4 && i + j < length; j += 1) buf[i + j] = (word >>> (8 * j)) & 0xff;
  }
  return buf;
}

/** Cuts a buffer into pieces of random size (1..maxPiece), including single bytes. */
export function randomPieces(buf: Buffer, rng: () => number, maxPiece = 150000): Buffer[] {
  const pieces: Buffer[] = [];
  let off = 0;
  while (off < buf.length) {
    const n = rng() < 0.1 ? 1 + randomInt(rng, 20) : 1 + randomInt(rng, maxPiece);
    pieces.push(buf.subarray(off, off + n));
    off += n;
  }
  return pieces;
}

function collector(out: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      callback();
    },
  });
}

export async function encryptBuffer(
  plaintext: Buffer,
  source: KeySource,
  opts: EncryptOptions = {},
  pieces: Buffer[] = [plaintext],
): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces), await createEncryptStream(source, opts), collector(out));
  return Buffer.concat(out);
}

export interface DecryptResult {
  /** Everything the decryptor emitted, even when it failed afterwards. */
  out: Buffer;
  err: unknown;
}

export async function decryptBuffer(
  input: Buffer,
  source: KeySource | undefined,
  pieces: Buffer[] = [input],
): Promise<DecryptResult> {
  const out: Buffer[] = [];
  let err: unknown = null;
  try {
    await pipeline(Readable.from(pieces), createDecryptStream(source), collector(out));
  } catch (e) {
    err = e;
  }
  return { out: Buffer.concat(out), err };
}

export function expectCode(err: unknown, code: ErrorCode, message?: string | RegExp): void {
  if (!isCofferError(err)) throw new Error(`expected CofferError ${code}, got ${String(err)}`);
  expect(err.code).toBe(code);
  if (message !== undefined) expect(err.message).toMatch(message);
}

export function codeOf(err: unknown): string {
  return isCofferError(err) ? err.code : `not a CofferError: ${String(err)}`;
}

export function flipBit(buf: Buffer, bit: number): Buffer {
  const copy = Buffer.from(buf);
  copy[bit >> 3] ^= 1 << (bit & 7);
  return copy;
}

export function readStream(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.on('end', () => resolve(Buffer.concat(parts)));
    stream.on('error', reject);
  });
}
