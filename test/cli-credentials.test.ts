import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCoffer } from './support/cli';
import { createTestDatabase, type TestDatabase } from './support/db';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-cli-cred-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('coffer keygen -o FILE', () => {
  test('writes the key to a new 0600 file under umask 0, prints no key, and the key works', async () => {
    const keyFile = path.join(tmp, 'backup.key');
    const r = await runCoffer(['keygen', '-o', keyFile], { umask: 0, cwd: tmp });
    expect(r.code).toBe(0);
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    const key = fs.readFileSync(keyFile, 'utf8');
    expect(key).toMatch(/^[0-9a-f]{64}\n$/);
    expect(r.stdout).toBe('');
    expect(r.stdout + r.stderr).not.toContain(key.trim());
    expect(r.stderr).toMatch(/key id: [0-9a-f]{16}/);
    const plain = path.join(tmp, 'plain');
    fs.writeFileSync(plain, 'data');
    expect((await runCoffer(['encrypt', plain, path.join(tmp, 'plain.crypt'), '--key-file', keyFile], { cwd: tmp })).code).toBe(0);
  });

  test('never overwrites an existing key file and refuses an existing FILE.partial', async () => {
    const keyFile = path.join(tmp, 'kept.key');
    fs.writeFileSync(keyFile, 'the old key\n');
    const again = await runCoffer(['keygen', '-o', keyFile], { cwd: tmp });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('[E_OUTPUT]');
    expect(fs.readFileSync(keyFile, 'utf8')).toBe('the old key\n');
    const fresh = path.join(tmp, 'fresh.key');
    fs.writeFileSync(`${fresh}.partial`, 'planted', { mode: 0o666 });
    const refused = await runCoffer(['keygen', '-o', fresh], { cwd: tmp });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${fresh}.partial`);
    expect(fs.existsSync(fresh)).toBe(false);
  });
});

describe('--database-url-file and passwords on the command line', () => {
  let db: TestDatabase;
  let password: string;
  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
    password = decodeURIComponent(new URL(db.url).password);
  });
  afterAll(async () => db.drop());

  const env = () => ({ DATA_DIR: path.join(tmp, 'data') });

  test('every command that takes --database-url also takes --database-url-file', async () => {
    const urlFile = path.join(tmp, 'db.url');
    fs.writeFileSync(urlFile, db.url + '\n', { mode: 0o600 });
    const status = await runCoffer(['migrate', 'status', '--database-url-file', urlFile], { env: env(), cwd: tmp });
    expect({ code: status.code, stderr: status.stderr }).toEqual({ code: 0, stderr: '' });
    expect(status.stdout).toMatch(/applied {2}001_init/);
    expect((await runCoffer(['migrate', '--database-url-file', urlFile], { env: env(), cwd: tmp })).code).toBe(0);
    const archive = path.join(tmp, 'via-file.zip');
    const backup = await runCoffer(['backup', '-o', archive, '--database-url-file', urlFile], { env: env(), cwd: tmp });
    expect(backup.code).toBe(0);
    expect(backup.stderr).not.toMatch(/warning/);
    const restore = await runCoffer(['restore', archive, '--yes', '--skip-files', '--database-url-file', urlFile], { env: env(), cwd: tmp });
    expect({ code: restore.code, stderr: restore.stderr }).toEqual({ code: 0, stderr: '' });
    for (const r of [status, backup, restore]) expect(r.stdout + r.stderr).not.toContain(password);
  });

  test('both options at once are a usage error; a file without a URL is refused without showing it', async () => {
    const urlFile = path.join(tmp, 'both.url');
    fs.writeFileSync(urlFile, db.url);
    const both = await runCoffer(['migrate', 'status', '--database-url', db.url, '--database-url-file', urlFile], { env: env(), cwd: tmp });
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('[E_USAGE]');
    const junk = path.join(tmp, 'junk.url');
    fs.writeFileSync(junk, 'hunter2-not-a-url\n');
    const bad = await runCoffer(['migrate', 'status', '--database-url-file', junk], { env: env(), cwd: tmp });
    expect(bad.code).toBe(2);
    expect(bad.stderr).not.toContain('hunter2');
  });

  test('a password in --database-url works but warns on stderr, without repeating it', async () => {
    const r = await runCoffer(['migrate', 'status', '--database-url', db.url], { env: env(), cwd: tmp });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/applied {2}001_init/);
    expect(r.stderr).toMatch(/warning: .*password.*DATABASE_URL.*--database-url-file/);
    expect(r.stdout + r.stderr).not.toContain(password);
    const u = new URL(db.url);
    u.password = '';
    // Without a password (it would come from ~/.pgpass or PGPASSWORD) there is nothing to warn about.
    const noPw = await runCoffer(['migrate', 'status', '--database-url', u.toString()], { env: { ...env(), PGPASSWORD: password }, cwd: tmp });
    expect(noPw.code).toBe(0);
    expect(noPw.stderr).toBe('');
  });
});
