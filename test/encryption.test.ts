import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeUser, startTestApp, TEST_BACKUP_KEY, type TestApp, type TestUser } from './support/app';
import { createTestDatabase } from './support/db';
import { fingerprint, restoreFile } from './support/archive';
import { filesBelow, seedDomain, writeUploadFiles } from './support/seed';
import { runCoffer, type CliRun } from './support/cli';
import { keyIdOf } from '../src/crypto';
import type { KeySource } from '../src/crypto';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-enc-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const KEY = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const PASSPHRASE = 'correct horse battery staple, offsite';
const MARKER = 'Top Secret Project Name 7f3a';

function coffer(args: string[], env: Record<string, string>, input?: string | Buffer): Promise<CliRun> {
  return runCoffer(args, { env: { HOME: tmp, DATA_DIR: path.join(tmp, 'cli-data'), ...env }, input, cwd: tmp });
}

describe('encrypted backups over HTTP', () => {
  let app: TestApp;
  let sys: TestUser;
  beforeAll(async () => {
    app = await startTestApp();
    sys = await makeUser(app, 'backup', 'system');
    await seedDomain(app.db.pool);
    await app.db.pool.query(`UPDATE projects SET name = $1`, [MARKER]);
    writeUploadFiles(app.dataDir, 12);
  });
  afterAll(async () => app.close());

  async function encryptedBackup(body: Record<string, string>, name: string): Promise<string> {
    const res = await fetch(`${app.url}/api/v1/utils/backup/`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sys.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ key: TEST_BACKUP_KEY, ...body }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(/filename="backup-\d{8}T\d{6}Z\.zip\.crypt"$/);
    const file = path.join(tmp, name);
    fs.writeFileSync(file, Buffer.from(await res.arrayBuffer()));
    return file;
  }

  async function expectRestores(file: string, key: KeySource) {
    const target = await createTestDatabase();
    const dir = path.join(tmp, `restore-${path.basename(file)}`);
    fs.mkdirSync(dir);
    try {
      await restoreFile(file, target.pool, dir, { key });
      const [restored, live] = [await fingerprint(target.pool, { comparable: true }), await fingerprint(app.db.pool, { comparable: true })];
      // Each API request stamps api_tokens.last_used_at, so the live row moved on after the backup.
      delete restored['table api_tokens'];
      delete live['table api_tokens'];
      expect(restored).toEqual(live);
      // No plaintext copy: DATA_DIR holds only the restored upload folders.
      expect(filesBelow(dir).filter((f) => !/\/uploaded(files|images|assets)\//.test(f))).toEqual([]);
    } finally {
      await target.drop();
    }
  }

  test('aes_key as hex: the archive is encrypted and restores with the key', async () => {
    const file = await encryptedBackup({ aes_key: KEY.toString('hex') }, 'hex.zip.crypt');
    const data = fs.readFileSync(file);
    expect(data.subarray(0, 8)).toEqual(Buffer.from('89434f464645520a', 'hex'));
    expect(data.includes(Buffer.from(MARKER))).toBe(false);
    expect(data.includes(Buffer.from('manifest.json'))).toBe(false);
    await expectRestores(file, { kind: 'raw', key: KEY });
  });

  test('aes_key as base64 works the same', async () => {
    const file = await encryptedBackup({ aes_key: KEY.toString('base64') }, 'b64.zip.crypt');
    await expectRestores(file, { kind: 'raw', key: KEY });
  });

  test('passphrase: restores with the passphrase; a wrong key or passphrase is refused by name', async () => {
    const file = await encryptedBackup({ passphrase: PASSPHRASE }, 'pass.zip.crypt');
    expect(fs.readFileSync(file)[10]).toBe(1);
    await expectRestores(file, { kind: 'passphrase', passphrase: PASSPHRASE });
    await expect(restoreFile(file, undefined, tmp, { key: { kind: 'passphrase', passphrase: 'wrong passphrase, long enough' }, skipDatabase: true })).rejects.toMatchObject({
      code: 'E_CRYPT_WRONG_PASSPHRASE',
    });
  });

  test('coffer restore of an encrypted archive, from a file and from stdin, writes no plaintext to DATA_DIR or TMPDIR', async () => {
    const file = await encryptedBackup({ aes_key: KEY.toString('hex') }, 'cli.zip.crypt');
    const keyFile = path.join(tmp, 'restore.key');
    fs.writeFileSync(keyFile, KEY.toString('hex'));
    for (const fromStdin of [false, true]) {
      const target = await createTestDatabase();
      const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
      const tmpDir = fs.mkdtempSync(path.join(tmp, 'tmpdir-'));
      try {
        const args = ['restore', fromStdin ? '-' : file, '--key-file', keyFile, '--yes'];
        const r = await coffer(args, { DATABASE_URL: target.url, DATA_DIR: dataDir, TMPDIR: tmpDir }, fromStdin ? fs.readFileSync(file) : undefined);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(filesBelow(tmpDir)).toEqual([]);
        expect(filesBelow(dataDir).filter((f) => !/\/uploaded(files|images|assets)\//.test(f))).toEqual([]);
        expect((await target.pool.query(`SELECT name FROM projects`)).rows[0].name).toBe(MARKER);
        // The restore row names the archive by the sha256 the backup_finished row gave it.
        const sent = await app.db.pool.query(`SELECT details->>'sha256' AS s FROM backup_log WHERE event = 'backup_finished' ORDER BY id DESC LIMIT 1`);
        const restored = await target.pool.query(`SELECT details->>'archive_sha256' AS s FROM backup_log WHERE event = 'restore'`);
        expect(restored.rows[0].s).toBe(sent.rows[0].s);
      } finally {
        await target.drop();
      }
    }
  });

  test('a wrong raw key names both key ids and changes nothing', async () => {
    const file = await encryptedBackup({ aes_key: KEY.toString('hex') }, 'wrongkey.zip.crypt');
    const other = Buffer.alloc(32, 7);
    const target = await createTestDatabase({ migrated: true });
    try {
      const before = await fingerprint(target.pool);
      const err = await restoreFile(file, target.pool, tmp, { key: { kind: 'raw', key: other } }).catch((e) => e);
      expect(err.code).toBe('E_CRYPT_KEY_MISMATCH');
      expect(err.message).toBe(`archive needs key id ${keyIdOf(KEY).toString('hex')}, the key given has id ${keyIdOf(other).toString('hex')}`);
      expect(await fingerprint(target.pool)).toEqual(before);
      const none = await restoreFile(file, target.pool, tmp).catch((e) => e);
      expect(none.code).toBe('E_CRYPT_KEY_REQUIRED');
    } finally {
      await target.drop();
    }
  });
});

describe('key commands and the CLI with encryption', () => {
  test('keygen prints a key on stdout and its id on stderr; the key works as a key file', async () => {
    const r = await coffer(['keygen'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const key = Buffer.from(r.stdout.trim(), 'hex');
    expect(r.stderr).toBe(`key id: ${keyIdOf(key).toString('hex')}\n`);
  });

  test('encrypt then decrypt gives the same bytes; decrypt writes OUT only once authenticated', async () => {
    const keyFile = path.join(tmp, 'k.key');
    fs.writeFileSync(keyFile, KEY.toString('hex') + '\n');
    const plain = path.join(tmp, 'plain.bin');
    fs.writeFileSync(plain, Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251)));
    const enc = path.join(tmp, 'plain.bin.crypt');
    expect((await coffer(['encrypt', plain, enc, '--key-file', keyFile], {})).code).toBe(0);
    const out = path.join(tmp, 'plain.out');
    expect((await coffer(['decrypt', enc, out, '--key-file', keyFile], {})).code).toBe(0);
    expect(fs.readFileSync(out).equals(fs.readFileSync(plain))).toBe(true);

    // Truncated: refused, exit 16, and neither OUT nor OUT.partial is left.
    const cut = path.join(tmp, 'cut.crypt');
    fs.writeFileSync(cut, fs.readFileSync(enc).subarray(0, 120 + 65552 + 1000));
    const bad = await coffer(['decrypt', cut, path.join(tmp, 'cut.out'), '--key-file', keyFile], {});
    expect(bad.code).toBe(16);
    expect(bad.stderr).toMatch(/\[E_CRYPT_(TRUNCATED|CORRUPT)\]/);
    expect(fs.existsSync(path.join(tmp, 'cut.out'))).toBe(false);
    expect(fs.existsSync(path.join(tmp, 'cut.out.partial'))).toBe(false);

    // Wrong key: exit 15 with both key ids; COFFER_AES_KEY works as the key source.
    const wrong = await coffer(['decrypt', enc, path.join(tmp, 'w.out')], { COFFER_AES_KEY: 'ff'.repeat(32) });
    expect(wrong.code).toBe(15);
    expect(wrong.stderr).toContain(`archive needs key id ${keyIdOf(KEY).toString('hex')}`);
    expect(wrong.stderr).not.toContain('ff'.repeat(32));
    const viaEnv = await coffer(['decrypt', enc, path.join(tmp, 'env.out')], { COFFER_AES_KEY: KEY.toString('base64') });
    expect(viaEnv.code).toBe(0);
  });

  test('a key given as a command-line value is refused (it would leak into ps and history)', async () => {
    const r = await coffer(['decrypt', 'a', 'b', '--key', KEY.toString('hex')], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--key only takes '-'/);
    expect(r.stderr).not.toContain(KEY.toString('hex'));
  });

  test('coffer backup --passphrase, verify and restore read the passphrase from stdin', async () => {
    const source = await createTestDatabase({ migrated: true });
    const target = await createTestDatabase();
    try {
      await seedDomain(source.pool);
      const archive = path.join(tmp, 'cli.zip.crypt');
      const b = await coffer(['backup', '-o', archive, '--passphrase'], { DATABASE_URL: source.url }, PASSPHRASE + '\n');
      expect(b.stderr).toMatch(/encrypted/);
      expect(b.code).toBe(0);
      const v = await coffer(['verify', archive, '--passphrase'], {}, PASSPHRASE + '\n');
      expect(v.stdout).toMatch(/encrypted, key id [0-9a-f]{16}/);
      expect(v.stdout).toMatch(/archive is restorable/);
      expect(v.code).toBe(0);
      const r = await coffer(['restore', archive, '--passphrase', '--yes'], { DATABASE_URL: target.url, DATA_DIR: path.join(tmp, 'cli-restore') }, PASSPHRASE + '\n');
      expect(r.code).toBe(0);
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
      const wrong = await coffer(['verify', archive, '--passphrase'], {}, 'not the passphrase at all\n');
      expect(wrong.code).toBe(15);
      expect(wrong.stderr).toMatch(/wrong passphrase/);
    } finally {
      await source.drop();
      await target.drop();
    }
  });
});
