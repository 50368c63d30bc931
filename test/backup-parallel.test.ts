import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { createUser } from '../src/accounts/users';
import { isCofferError } from '../src/core/errors';
import type { Manifest } from '../src/core/manifest';
import type { KeySource } from '../src/crypto';
import { beginSnapshot, exportSnapshot, joinSnapshot } from '../src/db/dump';
import { lockKey } from '../src/db/locks';
import { generateDemoData } from '../src/domain/demo';
import { createLogger, silentLogger } from '../src/log';
import { startBackup, type BackupProgress, type BackupRequest } from '../src/pipeline/backup';
import { fingerprint, insertExtremeValues, restoreFile } from './support/archive';
import { runCoffer } from './support/cli';
import { createTestDatabase, type TestDatabase } from './support/db';
import { seedDomain } from './support/seed';
import { waitFor } from './support/app';
import { readZip, unzipTest } from './support/zip';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-backup-par-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const APP = 'coffer-backup-par-test';
const KEY: KeySource = { kind: 'raw', key: Buffer.alloc(32, 7) };

/** What is in the spool parent: the backup's private folder while it spools, nothing after. */
function spoolFolders(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('coffer-backup-'));
}

describe('shared snapshot', () => {
  test('a connection that joins the exported snapshot later sees none of the writes committed in between', async () => {
    const db = await createTestDatabase({ migrated: true });
    const pool = new pg.Pool({ connectionString: db.url, max: 3 });
    const [lead, worker] = [await pool.connect(), await pool.connect()];
    try {
      await seedDomain(db.pool);
      await beginSnapshot(lead);
      const id = await exportSnapshot(lead);
      await db.pool.query(`INSERT INTO events (kind) SELECT 'late' FROM generate_series(1, 10)`);
      await db.pool.query(`DELETE FROM notes`);
      await joinSnapshot(worker, id);
      const seen = async (c: pg.PoolClient) => (await c.query(`SELECT (SELECT count(*) FROM events)::int AS events, (SELECT count(*) FROM notes)::int AS notes`)).rows[0];
      expect(await seen(worker)).toEqual({ events: 100, notes: 20 });
      expect(await seen(lead)).toEqual({ events: 100, notes: 20 });
      expect((await db.pool.query(`SELECT count(*)::int AS n FROM events`)).rows[0].n).toBe(110);
      // A worker's snapshot is read only, like the lead's.
      await expect(worker.query(`DELETE FROM events`)).rejects.toThrow(/read-only/);
    } finally {
      lead.release(true);
      worker.release(true);
      await pool.end();
      await db.drop();
    }
  });
});

describe('parallel backup', () => {
  let db: TestDatabase;
  /** A pool of its own, large enough for four jobs, named so its connections can be found. */
  let pool: pg.Pool;
  let dataDir: string;
  let spoolDir: string;

  const request = (extra: Partial<BackupRequest>): BackupRequest => ({ pool, dataDir, log: silentLogger(), via: 'cli', spoolDir, ...extra });

  async function backupTo(file: string, extra: Partial<BackupRequest>): Promise<Manifest> {
    const b = await startBackup(request(extra));
    const [, result] = await Promise.all([pipeline(b.output, fs.createWriteStream(file)), b.result]);
    return result.manifest;
  }

  /** Connections of the backup other than the one holding the backup lock, inside their transaction. */
  async function workerPids(): Promise<number[]> {
    const res = await db.pool.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
        WHERE application_name = $1 AND datname = current_database() AND xact_start IS NOT NULL
          AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)`,
      [APP],
    );
    return res.rows.map((r) => r.pid);
  }

  async function expectCleanAfterFailure(): Promise<void> {
    expect(spoolFolders(spoolDir)).toEqual([]);
    // No connection of the backup is left in a transaction, and the lock is free again.
    await waitFor(async () => {
      const r = await db.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL`, [APP]);
      return r.rows[0].n === 0 ? true : undefined;
    }, 'backup connections to leave their transactions');
    const c = await db.pool.connect();
    try {
      expect((await c.query('SELECT pg_try_advisory_lock($1) AS ok', [lockKey('backup')])).rows[0].ok).toBe(true);
      await c.query('SELECT pg_advisory_unlock($1)', [lockKey('backup')]);
    } finally {
      c.release();
    }
    const failed = await db.pool.query(`SELECT details FROM backup_log WHERE event = 'backup_failed' ORDER BY id DESC LIMIT 1`);
    expect(failed.rows).toHaveLength(1);
  }

  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
    pool = new pg.Pool({ connectionString: db.url, max: 8, application_name: APP });
    pool.on('error', () => undefined);
    dataDir = path.join(tmp, 'data');
    spoolDir = path.join(tmp, 'spool');
    fs.mkdirSync(dataDir);
    fs.mkdirSync(spoolDir);
    await createUser(db.pool, { username: 'admin', password: 'a long password', role: 'system' });
    await generateDemoData(db.pool, dataDir, 3);
    // Enough events that the zip's back-pressure holds a table mid-COPY while the output is not read.
    await seedDomain(db.pool, { events: 150_000 });
    await insertExtremeValues(db.pool);
    await db.pool.query(`SELECT setval('events_id_seq', (SELECT max(id) FROM events))`);
    await db.pool.query('ANALYZE');
  }, 120_000);
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  test('--jobs 1 and --jobs 4 archives hold the same entries with the same contents and the same manifest table list, and restore to an identical database', async () => {
    const one = path.join(tmp, 'one.zip');
    const four = path.join(tmp, 'four.zip');
    const m1 = await backupTo(one, { jobs: 1 });
    const m4 = await backupTo(four, { jobs: 4 });
    expect(unzipTest(four)).toMatch(/No errors detected/);
    const [e1, e4] = [await readZip(one), await readZip(four)];
    const names1 = e1.map((e) => e.name);
    const names4 = e4.map((e) => e.name);
    // --jobs 1 writes the tables in name order; with more jobs they are in the order the zip took them.
    const tables1 = names1.filter((n) => n.startsWith('db/'));
    expect(tables1).toEqual([...tables1].sort());
    expect([...names4].sort()).toEqual([...names1].sort());
    // Only the order inside the db/ group may differ: VERSION first, then the tables, the uploads as before, manifest last.
    const db4 = names4.filter((n) => n.startsWith('db/'));
    expect(names4).toEqual(['VERSION', ...db4, ...names1.filter((n) => n !== 'VERSION' && !n.startsWith('db/'))]);
    // The manifest lists the tables in name order whatever the number of jobs.
    expect(m4.tables.map((t) => t.entry)).toEqual(m1.tables.map((t) => t.entry));
    for (const t of m4.tables.filter((x) => x.name !== 'backup_log')) {
      const o = m1.tables.find((x) => x.name === t.name)!;
      expect([t.name, t.rows, t.bytes, t.sha256]).toEqual([o.name, o.rows, o.bytes, o.sha256]);
      const entry = e4.find((e) => e.name === t.entry)!;
      expect(entry.compressionMethod).toBe(8);
      expect(entry.data.equals(e1.find((e) => e.name === t.entry)!.data)).toBe(true);
    }
    expect(spoolFolders(spoolDir)).toEqual([]);

    const target = await createTestDatabase();
    try {
      await restoreFile(four, target.pool, path.join(tmp, 'restored'));
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(db.pool, { comparable: true }));
    } finally {
      await target.drop();
    }
  }, 120_000);

  test('the biggest table streams straight into the zip, first, and never goes through a spool file', async () => {
    const lines: string[] = [];
    const log = createLogger('debug', { write: (line: string) => void lines.push(line) });
    const file = path.join(tmp, 'order.zip');
    const m = await backupTo(file, { jobs: 4, log });
    const dumped = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'backup: table dumped');
    expect(dumped.map((l) => l.table).sort()).toEqual(m.tables.map((t) => t.name).sort());
    const events = dumped.find((l) => l.table === 'events');
    expect(events).toMatchObject({ spooled: false, spooledBytes: 0 });
    const names = (await readZip(file)).map((e) => e.name);
    expect(names.slice(0, 2)).toEqual(['VERSION', 'db/public.events.jsonl']);
  }, 120_000);

  test('rows written in any table after the backup started are in none of them: all jobs share one snapshot', async () => {
    const before = path.join(tmp, 'before.zip');
    const reference = await backupTo(before, { jobs: 1 });
    let writes: Promise<unknown> | undefined;
    let sawParallel = false;
    const onProgress = (p: BackupProgress) => {
      if ((p.active?.length ?? 0) > 1) sawParallel = true;
      // Once the first table is being dumped, the other tables change under the backup.
      writes ??= (async () => {
        await db.pool.query(`INSERT INTO events (kind) SELECT 'late' FROM generate_series(1, 500)`);
        await db.pool.query(`UPDATE findings SET title = 'changed late'`);
        await db.pool.query(`DELETE FROM notes WHERE id IN (SELECT id FROM notes ORDER BY id DESC LIMIT 3)`);
        await db.pool.query(`INSERT INTO projects (name, tags, settings, status) VALUES ('late project', '{}', '{}', 'draft')`);
        await db.pool.query(`UPDATE users SET is_active = NOT is_active WHERE username = 'admin'`);
      })();
    };
    const b = await startBackup(request({ jobs: 4, onProgress }));
    try {
      // The output is not read until the writes have committed: tables are mid-dump or spooled meanwhile.
      await waitFor(async () => (writes ? true : undefined), 'the first table to start');
      await writes;
      const file = path.join(tmp, 'during.zip');
      const [, result] = await Promise.all([pipeline(b.output, fs.createWriteStream(file)), b.result]);
      expect(sawParallel).toBe(true);
      for (const t of result.manifest.tables.filter((x) => x.name !== 'backup_log')) {
        const r = reference.tables.find((x) => x.name === t.name)!;
        expect([t.name, t.rows, t.sha256]).toEqual([r.name, r.rows, r.sha256]);
      }
      const live = await db.pool.query(`SELECT count(*)::int AS n FROM events`);
      expect(live.rows[0].n).toBe(reference.tables.find((t) => t.name === 'events')!.rows + 500);
    } finally {
      b.output.destroy();
      await b.result.catch(() => undefined);
    }
  }, 120_000);

  test('an encrypted parallel backup restores to an identical database', async () => {
    const file = path.join(tmp, 'par.zip.crypt');
    await backupTo(file, { jobs: 3, encryption: KEY });
    const target = await createTestDatabase();
    try {
      await restoreFile(file, target.pool, path.join(tmp, 'restored-enc'), { key: KEY });
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(db.pool, { comparable: true }));
    } finally {
      await target.drop();
    }
  }, 120_000);

  test('a worker connection killed during the dump fails the backup cleanly: no spool files, no open transaction, the lock free', async () => {
    const b = await startBackup(request({ jobs: 3 }));
    // Nothing reads the output yet: the table streaming into the zip waits on back-pressure.
    const pids = await waitFor(async () => {
      const p = await workerPids();
      return p.length === 2 ? p : undefined;
    }, 'two worker connections');
    await waitFor(async () => (spoolFolders(spoolDir).length === 1 ? true : undefined), 'a spool folder');
    await db.pool.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid', [pids]);
    const reading = pipeline(b.output, fs.createWriteStream(path.join(tmp, 'killed.zip'))).catch((e) => e);
    const err = await b.result.catch((e) => e);
    expect(isCofferError(err, 'E_BACKUP_FAILED')).toBe(true);
    expect(err.message).toMatch(/terminat|connection/i);
    expect(await reading).toBeInstanceOf(Error);
    await expectCleanAfterFailure();
  }, 60_000);

  test('destroying the output stream mid-dump stops every job and cleans up', async () => {
    const b = await startBackup(request({ jobs: 3 }));
    await waitFor(async () => ((await workerPids()).length === 2 ? true : undefined), 'two worker connections');
    await waitFor(async () => (spoolFolders(spoolDir).length === 1 ? true : undefined), 'a spool folder');
    for await (const chunk of b.output) {
      expect(chunk.length).toBeGreaterThan(0);
      break; // leaving the loop destroys the stream, as a client going away does
    }
    const err = await b.result.catch((e) => e);
    expect(isCofferError(err)).toBe(true);
    expect(err.message).toMatch(/abort|premature|closed/i);
    await expectCleanAfterFailure();
  }, 60_000);

  test('coffer backup --jobs is validated (E_USAGE) and --jobs 3 writes an archive unzip -t accepts', async () => {
    const env = { DATABASE_URL: db.url, DATA_DIR: dataDir, TMPDIR: spoolDir };
    for (const bad of ['0', '17', 'x', '1.5', '-1']) {
      const r = await runCoffer(['backup', '-o', path.join(tmp, `bad-${bad}.zip`), `--jobs=${bad}`], { env, cwd: tmp });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/--jobs must be a whole number from 1 to 16/);
    }
    const out = path.join(tmp, 'cli-jobs3.zip');
    const ok = await runCoffer(['backup', '-o', out, '--jobs', '3'], { env, cwd: tmp });
    expect(ok.stderr).toMatch(/backup written to/);
    expect(ok.code).toBe(0);
    expect(unzipTest(out)).toMatch(/No errors detected/);
    expect(spoolFolders(spoolDir)).toEqual([]);
  }, 60_000);
});
