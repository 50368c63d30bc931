import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadConfig } from '../src/config';
import { ERROR_CODES } from '../src/core/errors';
import { Jobs } from '../src/jobs';
import { silentLogger } from '../src/log';
import { fingerprint } from './support/archive';
import { COFFER_BIN, runCoffer, type CliRun } from './support/cli';
import { createTestDatabase, type TestDatabase } from './support/db';
import { seedDomain, writeUploadFiles } from './support/seed';

jest.setTimeout(60_000);

const BACKUP_KEY = 'test-backup-key-0123456789abcdef';
const PASSPHRASE = 'correct horse battery staple, offsite';
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-cli-backups-test-'));
const dataDir = path.join(tmp, 'data');
const backupDir = path.join(dataDir, 'backups');
let db: TestDatabase;

function env(extra: Record<string, string> = {}): Record<string, string> {
  return { HOME: tmp, USER: 'tester', DATA_DIR: dataDir, DATABASE_URL: db.url, BACKUP_KEY, ...extra };
}

function coffer(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<CliRun> {
  return runCoffer(['backups', ...args], { env: env(opts.env), input: opts.input, cwd: tmp });
}

async function ok(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<CliRun> {
  const run = await coffer(args, opts);
  if (run.code !== 0) throw new Error(`coffer backups ${args.join(' ')} exited ${run.code}: ${run.stderr}`);
  return run;
}

async function showJson(id: string): Promise<any> {
  return JSON.parse((await ok(['show', id, '--json'])).stdout);
}

/** Runs `create` and returns the id from its summary line. */
async function createBackup(args: string[] = [], opts: { input?: string } = {}): Promise<string> {
  const run = await ok(['create', ...args], opts);
  const m = new RegExp(`^backup (${UUID}) .* finished: `).exec(run.stdout);
  if (!m) throw new Error(`no backup id in: ${run.stdout}`);
  return m[1];
}

/** The database as a restore gives it back (sessions, rate limits and backup_log are not restored). */
const state = () => fingerprint(db.pool, { comparable: true });
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  db = await createTestDatabase({ migrated: true });
  await seedDomain(db.pool, { events: 300 });
  writeUploadFiles(dataDir, 6);
});

afterAll(async () => {
  await db.drop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('coffer backups without a running service', () => {
  let first: string;

  test('create runs the job itself; list and show --json give the finished backup', async () => {
    first = await createBackup(['--name', 'first']);
    const shown = await showJson(first);
    expect(shown).toMatchObject({ id: first, name: 'first', status: 'finished', created_by: 'cli:tester', encrypted: false, files: 6, error: null });
    const bytes = fs.readFileSync(path.join(backupDir, `${first}.zip`));
    expect(shown.size).toBe(bytes.length);
    expect(shown.sha256).toBe(sha256(bytes));

    const list = JSON.parse((await ok(['list', '--json'])).stdout);
    expect(list.backups).toEqual([shown]);
    const table = (await ok(['list'])).stdout.split('\n');
    expect(table[0]).toMatch(/^ID +NAME +STATUS +CREATED_AT +SIZE +ENCRYPTED$/);
    expect(table[1]).toMatch(new RegExp(`^${first} +first +finished +\\S+ +[\\d.]+ \\w?i?B +no$`));
    // Nothing is left queued: the command stopped taking jobs once its own had ended.
    const left = await db.pool.query(`SELECT count(*)::int AS n FROM coffer_jobs.job WHERE name = 'coffer-work'`);
    expect(left.rows[0].n).toBe(0);
  });

  test('download -o FILE writes the stored archive byte for byte; the default name is <id>.zip', async () => {
    const stored = fs.readFileSync(path.join(backupDir, `${first}.zip`));
    const out = path.join(tmp, 'copy.zip');
    const run = await ok(['download', first, '-o', out]);
    expect(run.stdout).toContain(`sha256 ${sha256(stored)}`);
    expect(Buffer.compare(fs.readFileSync(out), stored)).toBe(0);
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
    await ok(['download', first]);
    expect(Buffer.compare(fs.readFileSync(path.join(tmp, `${first}.zip`)), stored)).toBe(0);
  });

  test('download of a stored file that no longer matches its sha256 fails and leaves no file', async () => {
    const file = path.join(backupDir, `${first}.zip`);
    const original = fs.readFileSync(file);
    const changed = Buffer.from(original);
    changed[100] ^= 0xff;
    fs.writeFileSync(file, changed);
    try {
      const out = path.join(tmp, 'bad.zip');
      const run = await coffer(['download', first, '-o', out]);
      expect(run.code).toBe(ERROR_CODES.E_ARCHIVE_CHECKSUM.exit);
      expect(run.stderr).toMatch(/^coffer: .* has sha256 .*the catalog says .* \[E_ARCHIVE_CHECKSUM\]\n$/);
      expect(fs.existsSync(out)).toBe(false);
      expect(fs.existsSync(`${out}.partial`)).toBe(false);
    } finally {
      fs.writeFileSync(file, original);
    }
  });

  test('restore ID --yes --no-safety-backup gives back the database of the backup', async () => {
    const before = await state();
    await db.pool.query(`DELETE FROM events WHERE id % 2 = 0`);
    expect(await state()).not.toEqual(before);
    const run = await ok(['restore', first, '--yes', '--no-safety-backup']);
    expect(run.stdout).toMatch(new RegExp(`^restore ${UUID} finished: backup ${first} \\(first\\) restored`));
    expect(run.stdout).not.toContain('safety backup');
    expect(await state()).toEqual(before);
    expect((JSON.parse((await ok(['list', '--json'])).stdout).backups as any[]).map((b) => b.id)).toEqual([first]);
  });

  test('restore with a safety backup first stores a pre-restore backup of what it replaces', async () => {
    await db.pool.query(`DELETE FROM events WHERE id % 3 = 0`);
    const changed = await state();
    const run = await ok(['restore', first, '--yes']);
    const safetyId = new RegExp(`safety backup of what was replaced: (${UUID})`).exec(run.stdout)?.[1];
    expect(safetyId).toBeDefined();
    const safety = await showJson(safetyId!);
    expect(safety).toMatchObject({ status: 'finished', created_by: 'cli:tester' });
    expect(safety.name).toMatch(/^pre-restore-/);
    // Restoring the safety backup gives back the database from before the restore.
    await ok(['restore', safetyId!, '--yes', '--no-safety-backup']);
    expect(await state()).toEqual(changed);
    await ok(['delete', safetyId!]);
  });

  test('create --passphrase encrypts; restore with a wrong passphrase fails with its code and changes nothing; with the right one it restores', async () => {
    const id = await createBackup(['--passphrase'], { input: PASSPHRASE + '\n' });
    expect(await showJson(id)).toMatchObject({ encrypted: true, status: 'finished' });
    expect(fs.existsSync(path.join(backupDir, `${id}.zip.crypt`))).toBe(true);
    const before = await state();
    await db.pool.query(`DELETE FROM events WHERE id % 5 = 0`);
    const changed = await state();

    const wrong = await coffer(['restore', id, '--passphrase', '--yes', '--no-safety-backup'], { input: 'not the passphrase at all\n' });
    expect(wrong.code).toBe(ERROR_CODES.E_CRYPT_WRONG_PASSPHRASE.exit);
    expect(wrong.stderr).toMatch(/^coffer: .+ \[E_CRYPT_WRONG_PASSPHRASE\]\n$/);
    expect(wrong.stdout).toBe('');
    expect(await state()).toEqual(changed);

    const none = await coffer(['restore', id, '--yes']);
    expect(none.code).toBe(ERROR_CODES.E_CRYPT_KEY_REQUIRED.exit);

    await ok(['restore', id, '--passphrase', '--yes', '--no-safety-backup'], { input: PASSPHRASE + '\n' });
    expect(await state()).toEqual(before);
    await ok(['delete', id]);
  });

  test('rescan after the catalog was emptied brings the backups back', async () => {
    const before = await showJson(first);
    await db.pool.query(`TRUNCATE coffer_ops.stored_backups`);
    expect((await coffer(['show', first])).code).toBe(ERROR_CODES.E_NOT_FOUND.exit);
    const run = await ok(['rescan']);
    expect(run.stdout).toMatch(/^rescanned .*: 1 backups found, 1 added to the catalog, 0 removed from it\n$/);
    const after = await showJson(first);
    expect(after).toMatchObject({ id: first, name: 'first', status: 'finished', size: before.size, sha256: before.sha256, created_at: before.created_at });
  });

  test('rescan reports a record whose archive is gone', async () => {
    const id = await createBackup(['--name', 'lost']);
    fs.rmSync(path.join(backupDir, `${id}.zip`));
    const run = await ok(['rescan']);
    expect(run.stdout).toContain('1 removed from it');
    expect(run.stdout).toMatch(new RegExp(`1 problem:\\n  ${id}\\.json: its archive ${id}\\.zip is missing`));
    fs.rmSync(path.join(backupDir, `${id}.json`));
  });

  test('delete removes the archive and its record; show of an unknown id exits with E_NOT_FOUND', async () => {
    const id = await createBackup(['--name', 'doomed']);
    expect(fs.existsSync(path.join(backupDir, `${id}.zip`))).toBe(true);
    const run = await ok(['delete', id]);
    expect(run.stdout).toContain(`deleted backup ${id} (doomed)`);
    expect(fs.existsSync(path.join(backupDir, `${id}.zip`))).toBe(false);
    expect(fs.existsSync(path.join(backupDir, `${id}.json`))).toBe(false);
    const gone = await coffer(['show', id]);
    expect(gone.code).toBe(4);
    expect(gone.stderr).toBe(`coffer: no stored backup "${id}" [E_NOT_FOUND]\n`);
    expect((await coffer(['show', 'no-such-id', '--json'])).code).toBe(4);
  });
});

describe('coffer backups with a worker up in another process', () => {
  let jobs: Jobs;

  beforeAll(async () => {
    const config = loadConfig({}, { DATA_DIR: dataDir, DATABASE_URL: db.url, BACKUP_KEY, LOG_LEVEL: 'silent' });
    jobs = await Jobs.open({ pool: db.pool, url: db.url, config, log: silentLogger() });
    await jobs.startWorker();
  });
  afterAll(async () => jobs.close());

  test('create without --wait prints the queued id and leaves the job to the worker', async () => {
    const run = await ok(['create', '--name', 'handed-over']);
    expect(run.stdout).toMatch(new RegExp(`^${UUID}\\n$`));
    const done = await jobs.waitFor('backup', run.stdout.trim(), { timeoutMs: 30_000 });
    expect(done).toMatchObject({ status: 'finished', name: 'handed-over', created_by: 'cli:tester' });
  });

  test('create --wait and restore --wait follow the job to its end', async () => {
    const id = await createBackup(['--name', 'waited', '--passphrase', '--wait'], { input: PASSPHRASE + '\n' });
    expect(await jobs.getBackup(id)).toMatchObject({ status: 'finished', encrypted: true });
    const wrong = await coffer(['restore', id, '--passphrase', '--yes', '--no-safety-backup', '--wait'], { input: 'not the passphrase at all\n' });
    expect(wrong.code).toBe(ERROR_CODES.E_CRYPT_WRONG_PASSPHRASE.exit);
    expect(wrong.stderr).toMatch(/\[E_CRYPT_WRONG_PASSPHRASE\]\n$/);
  });

  test('a key cannot be handed to the worker without BACKUP_KEY, which seals it', async () => {
    const run = await coffer(['create', '--passphrase'], { input: PASSPHRASE + '\n', env: { BACKUP_KEY: '' } });
    expect(run.code).toBe(ERROR_CODES.E_CONFIG.exit);
    expect(run.stderr).toMatch(/set BACKUP_KEY \[E_CONFIG\]\n$/);
  });
});

describe('a CLI command killed while it runs its job', () => {
  test('kill -9 mid-backup: the next command that looks shows it failed (E_INTERRUPTED), with no partial file', async () => {
    await ok(['list']); // the catalog exists before it is polled below
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    await locker.query(`SET lock_timeout = '20s'`);
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE projects IN ACCESS EXCLUSIVE MODE');
    const child = spawn(process.execPath, [COFFER_BIN, 'backups', 'create', '--name', 'doomed'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env() }, cwd: tmp, stdio: 'ignore' });
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await db.pool.query(`SELECT status FROM coffer_ops.stored_backups WHERE name = 'doomed'`);
        const partial = fs.existsSync(backupDir) && fs.readdirSync(backupDir).some((n) => n.endsWith('.partial'));
        if (r.rows[0]?.status === 'running' && partial) break;
        if (Date.now() > deadline) throw new Error('the command did not start its backup');
        await new Promise((res) => setTimeout(res, 100));
      }
      child.kill('SIGKILL');
      await new Promise((res) => child.once('exit', res));
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    const list = JSON.parse((await ok(['list', '--json'])).stdout) as { backups: any[] };
    expect(list.backups.find((b) => b.name === 'doomed')).toMatchObject({ status: 'failed', error: { code: 'E_INTERRUPTED' } });
    expect(fs.readdirSync(backupDir).filter((n) => n.endsWith('.partial'))).toEqual([]);
  });
});
