import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileSource } from '../../src/archive';
import { EncryptedFileReader, keyIdOf, type KeySource } from '../../src/crypto';
import { deriveFromPassphrase } from '../../src/crypto/keys';
import { decryptBuffer, encryptBuffer, readStream, VECTORS_DIR } from './helpers';

interface Vector {
  name: string;
  key_source: 'raw' | 'argon2id';
  key_hex: string;
  key_id_hex: string;
  passphrase?: string;
  argon2id_salt_hex?: string;
  m?: number;
  t?: number;
  p?: number;
  archive_salt_hex: string;
  nonce_prefix_hex: string;
  plaintext_len: number;
  plaintext_sha256: string;
  header_hex: string;
  ciphertext_len: number;
  ciphertext_sha256: string;
}

const { vectors } = JSON.parse(readFileSync(path.join(VECTORS_DIR, 'vectors.json'), 'utf8')) as { vectors: Vector[] };

const sha256 = (buf: Buffer): string => createHash('sha256').update(buf).digest('hex');

function sourceOf(v: Vector): KeySource {
  if (v.key_source === 'raw') return { kind: 'raw', key: Buffer.from(v.key_hex, 'hex') };
  return {
    kind: 'passphrase',
    passphrase: v.passphrase!,
    params: { memoryKiB: v.m!, iterations: v.t!, parallelism: v.p! },
  };
}

function load(v: Vector): { plain: Buffer; crypt: Buffer } {
  return {
    plain: readFileSync(path.join(VECTORS_DIR, `${v.name}.plain`)),
    crypt: readFileSync(path.join(VECTORS_DIR, `${v.name}.crypt`)),
  };
}

test('the fixture set holds raw-key vectors around the chunk size and an argon2id vector', () => {
  expect(vectors.map((v) => v.name).sort()).toEqual(
    ['0', '1', '200000', '65535', '65536', '65537', 'argon2id-1000'].sort(),
  );
});

describe.each(vectors.map((v) => [v.name, v] as const))('known-answer vector %s', (_name, v) => {
  test('fixture files match the lengths and hashes in vectors.json and the plaintext rule', () => {
    const { plain, crypt } = load(v);
    expect(plain.length).toBe(v.plaintext_len);
    expect(sha256(plain)).toBe(v.plaintext_sha256);
    plain.forEach((byte, i) => {
      if (byte !== (i * 31 + 7) % 256) throw new Error(`plaintext byte ${i} breaks the rule`);
    });
    expect(crypt.length).toBe(v.ciphertext_len);
    expect(sha256(crypt)).toBe(v.ciphertext_sha256);
    expect(crypt.subarray(0, 120).toString('hex')).toBe(v.header_hex);
  });

  test('master key and key id derive to the published values', async () => {
    const masterKey =
      v.key_source === 'raw'
        ? Buffer.from(v.key_hex, 'hex')
        : await deriveFromPassphrase(v.passphrase!, Buffer.from(v.argon2id_salt_hex!, 'hex'), {
            memoryKiB: v.m!,
            iterations: v.t!,
            parallelism: v.p!,
          });
    expect(masterKey.toString('hex')).toBe(v.key_hex);
    expect(keyIdOf(masterKey).toString('hex')).toBe(v.key_id_hex);
  });

  test('decrypts to its plaintext', async () => {
    const { plain, crypt } = load(v);
    const { out, err } = await decryptBuffer(crypt, sourceOf(v));
    expect(err).toBeNull();
    expect(sha256(out)).toBe(v.plaintext_sha256);
    expect(out.equals(plain)).toBe(true);
  });

  test('our encryption with the vector salts and nonce prefix reproduces the ciphertext byte for byte', async () => {
    const { plain, crypt } = load(v);
    const ours = await encryptBuffer(plain, sourceOf(v), {
      archiveSalt: Buffer.from(v.archive_salt_hex, 'hex'),
      noncePrefix: Buffer.from(v.nonce_prefix_hex, 'hex'),
      argon2Salt: v.argon2id_salt_hex === undefined ? undefined : Buffer.from(v.argon2id_salt_hex, 'hex'),
    });
    expect(sha256(ours)).toBe(v.ciphertext_sha256);
    expect(ours.length).toBe(crypt.length);
    expect(ours.equals(crypt)).toBe(true);
  });

  test('the random-access reader serves the whole plaintext', async () => {
    const { plain } = load(v);
    const reader = await EncryptedFileReader.open(await fileSource(path.join(VECTORS_DIR, `${v.name}.crypt`)), sourceOf(v));
    try {
      expect(reader.size).toBe(v.plaintext_len);
      expect((await readStream(reader.createReadStream(0, reader.size))).equals(plain)).toBe(true);
    } finally {
      await reader.close();
    }
  });
});
