import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/db';
import { backupToFile, fingerprint, insertExtremeValues, replaceTableEntry, restoreFile, rewriteArchive, sha256, withManifest } from './support/archive';
import { seedDomain, treeOf, writeUploadFiles } from './support/seed';
import type { ReadEntry } from './support/zip';
import { stored } from './archive/helpers';
import { generateDemoData } from '../src/domain/demo';
import { createUser } from '../src/accounts/users';
import { repairInterruptedRestore, writeJournal } from '../src/storage/restore-files';
import { repairAfterCrash, restoreCommitted } from '../src/pipeline/restore';
import { silentLogger } from '../src/log';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-restore-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function newDataDir(name: string): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

describe('restore round trip', () => {
  let source: TestDatabase;
  let sourceDir: string;
  let archive: string;

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    sourceDir = newDataDir('source');
    await createUser(source.pool, { username: 'admin', password: 'a long password', role: 'system' });
    await generateDemoData(source.pool, sourceDir, 2);
    await insertExtremeValues(source.pool);
    writeUploadFiles(sourceDir, 9);
    archive = path.join(tmp, 'roundtrip.zip');
    await backupToFile(source.pool, sourceDir, archive);
  });
  afterAll(async () => source.drop());

  test('restore into an empty database gives an identical database and identical upload folders', async () => {
    const target = await createTestDatabase();
    const dir = newDataDir('target-empty');
    try {
      const summary = await restoreFile(archive, target.pool, dir);
      expect(summary.tables).toBe(9);
      const [a, b] = [await fingerprint(source.pool, { comparable: true }), await fingerprint(target.pool, { comparable: true })];
      // Sessions and rate limits are not backed up; the source has none here, so everything must match.
      expect(b).toEqual(a);
      expect(treeOf(dir)).toEqual(treeOf(sourceDir));
      const logged = await target.pool.query(`SELECT details FROM backup_log WHERE event = 'restore'`);
      expect(logged.rows).toHaveLength(1);
      expect(logged.rows[0].details.rows).toBe(summary.rows);
      // New rows after the restore get fresh ids: sequences were set exactly.
      const ins = await target.pool.query(`INSERT INTO events (kind) VALUES ('after') RETURNING id`);
      expect(Number(ins.rows[0].id)).toBe(5001);
      const p = await target.pool.query(`SELECT id FROM projects LIMIT 1`);
      await target.pool.query(`INSERT INTO notes (project_id, title) VALUES ($1, 'after restore')`, [p.rows[0].id]);
      await target.pool.query(`INSERT INTO findings (project_id, title) VALUES ($1, 'after restore')`, [p.rows[0].id]);
    } finally {
      await target.drop();
    }
  });

  test('restore over a database with other data replaces it completely', async () => {
    const target = await createTestDatabase({ migrated: true });
    const dir = newDataDir('target-full');
    try {
      await seedDomain(target.pool, { events: 500 });
      await createUser(target.pool, { username: 'intruder', password: 'another long password', role: 'superuser' });
      await target.pool.query(`INSERT INTO sessions (id_hash, user_id, expires_at) SELECT '\\x00', id, now() + interval '1 day' FROM users LIMIT 1`);
      fs.mkdirSync(path.join(dir, 'uploadedfiles', 'old'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'uploadedfiles', 'old', 'stale.txt'), 'must disappear');
      await restoreFile(archive, target.pool, dir);
      const after = await fingerprint(target.pool, { comparable: true });
      expect(after).toEqual(await fingerprint(source.pool, { comparable: true }));
      expect(treeOf(dir)).toEqual(treeOf(sourceDir));
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('.coffer'))).toEqual([]);
    } finally {
      await target.drop();
    }
  });

  test('the schema itself survives: its grants stay, stray objects in it go', async () => {
    const target = await createTestDatabase({ migrated: true });
    try {
      await target.pool.query(`DO $$ BEGIN CREATE ROLE coffer_test_reader NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
      await target.pool.query(`GRANT USAGE ON SCHEMA public TO coffer_test_reader`);
      await target.pool.query(`CREATE FUNCTION public.stray() RETURNS int LANGUAGE sql AS 'SELECT 1'`);
      await target.pool.query(`CREATE VIEW public.stray_view AS SELECT * FROM projects`);
      await restoreFile(archive, target.pool, newDataDir('target-grants'), { skipFiles: true });
      const r = await target.pool.query(
        `SELECT has_schema_privilege('coffer_test_reader', 'public', 'USAGE') AS usage,
                to_regproc('public.stray') AS fn, to_regclass('public.stray_view') AS view`,
      );
      expect(r.rows[0]).toEqual({ usage: true, fn: null, view: null });
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
    } finally {
      await target.drop();
    }
  });

  test('--skip-files restores only the database, --skip-database only the files', async () => {
    const target = await createTestDatabase({ migrated: true });
    const dir = newDataDir('target-skip');
    try {
      fs.mkdirSync(path.join(dir, 'uploadedassets'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'uploadedassets', 'keep.txt'), 'kept');
      await restoreFile(archive, target.pool, dir, { skipFiles: true });
      expect(treeOf(dir)).toEqual({ 'uploadedassets/keep.txt': sha256(Buffer.from('kept')) });
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));

      await target.pool.query(`DELETE FROM events`);
      const before = await fingerprint(target.pool);
      await restoreFile(archive, undefined, dir, { skipDatabase: true });
      expect(treeOf(dir)).toEqual(treeOf(sourceDir));
      expect(await fingerprint(target.pool)).toEqual(before);
    } finally {
      await target.drop();
    }
  });
});

describe('restore refuses bad archives and leaves everything unchanged', () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let sourceDir: string;
  let targetDir: string;
  let good: string;
  let before: Record<string, string>;
  let filesBefore: Record<string, string>;

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    target = await createTestDatabase({ migrated: true });
    sourceDir = newDataDir('bad-source');
    targetDir = newDataDir('bad-target');
    await seedDomain(source.pool);
    writeUploadFiles(sourceDir, 6);
    await seedDomain(target.pool, { events: 7 });
    writeUploadFiles(targetDir, 3);
    good = path.join(tmp, 'good.zip');
    await backupToFile(source.pool, sourceDir, good);
    before = await fingerprint(target.pool);
    filesBefore = treeOf(targetDir);
  });
  afterAll(async () => {
    await source.drop();
    await target.drop();
  });

  async function expectRefused(file: string, code: string, message: RegExp) {
    await expect(restoreFile(file, target.pool, targetDir)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    expect(await fingerprint(target.pool)).toEqual(before);
    expect(treeOf(targetDir)).toEqual(filesBefore);
    expect(fs.readdirSync(targetDir).filter((n) => n.startsWith('.coffer'))).toEqual([]);
  }

  const variant = async (name: string, change: (e: ReadEntry[]) => any[]) => {
    const file = path.join(tmp, name);
    await rewriteArchive(good, file, change);
    return file;
  };

  test('a corrupted JSONL line: the database refuses the row', async () => {
    const file = await variant('corrupt-line.zip', (entries) => {
      const lines = entries.find((e) => e.name === 'db/public.notes.jsonl')!.data.toString().split('\n');
      lines[3] = '{"id": 4, "title": "broken';
      return replaceTableEntry(entries, 'notes', Buffer.from(lines.join('\n')));
    });
    await expectRefused(file, 'E_ARCHIVE_BAD_ROW', /db\/public\.notes\.jsonl: line 4 is not a valid row: unterminated string/);
  });

  test('a row that violates a constraint (database refuses it)', async () => {
    const file = await variant('constraint.zip', (entries) => {
      const e = entries.find((x) => x.name === 'db/public.findings.jsonl')!;
      const text = e.data.toString().replace(/"project_id":"[0-9a-f-]+"/, '"project_id":"00000000-0000-0000-0000-000000000000"');
      return replaceTableEntry(entries, 'findings', Buffer.from(text));
    });
    await expectRefused(file, 'E_RESTORE_FAILED', /foreign key findings_project_id_fkey/);
  });

  test('a wrong row count in the manifest', async () => {
    const file = await variant('rows.zip', (entries) => withManifest(entries, (m) => (m.tables.find((t: any) => t.name === 'events').rows += 1)));
    await expectRefused(file, 'E_ARCHIVE_ROWS', /events\.jsonl: 100 rows, manifest\.json says 101/);
  });

  test('a tampered sha256', async () => {
    const file = await variant('sha.zip', (entries) => withManifest(entries, (m) => (m.tables.find((t: any) => t.name === 'projects').sha256 = '0'.repeat(64))));
    await expectRefused(file, 'E_ARCHIVE_CHECKSUM', /projects\.jsonl: sha256 [0-9a-f]{64} does not match/);
  });

  test('a truncated zip', async () => {
    const file = path.join(tmp, 'truncated.zip');
    const data = fs.readFileSync(good);
    fs.writeFileSync(file, data.subarray(0, Math.floor(data.length * 0.7)));
    await expectRefused(file, 'E_ARCHIVE_TRUNCATED', /truncated|central directory/i);
  });

  test('an archive without manifest.json (backup did not finish)', async () => {
    const file = await variant('no-manifest.zip', (entries) => entries.filter((e) => e.name !== 'manifest.json'));
    await expectRefused(file, 'E_ARCHIVE_INVALID', /no manifest\.json/);
  });

  test('an archive from a newer build (unknown migration)', async () => {
    const file = await variant('newer.zip', (entries) => withManifest(entries, (m) => m.migrations.push('999_future')));
    await expectRefused(file, 'E_ARCHIVE_NEWER', /999_future/);
  });

  test('a hostile entry name', async () => {
    const file = await variant('hostile.zip', (entries) => [...entries.slice(0, -1).map((e) => stored(e.name, e.data)), stored('uploadedfiles/../../evil.sh', 'boom'), stored('manifest.json', entries[entries.length - 1].data)]);
    await expectRefused(file, 'E_ARCHIVE_UNSAFE_ENTRY', /uploadedfiles\/\.\.\/\.\.\/evil\.sh/);
    expect(fs.existsSync(path.join(tmp, 'evil.sh'))).toBe(false);
  });

  test('a file entry that the manifest does not count', async () => {
    const file = await variant('extra-file.zip', (entries) => [...entries.slice(0, -1), { name: 'uploadedimages/extra.png', data: Buffer.from('x'), compressionMethod: 0 }, entries[entries.length - 1]]);
    await expectRefused(file, 'E_ARCHIVE_INVALID', /uploadedimages: manifest\.json says 2 files/);
  });

  test('a source description that fails (the archive could not be hashed) fails the restore before the swap', async () => {
    // As the CLI's hash would: it fails while the restore is under way.
    const failing = new Promise<Record<string, unknown>>((_, reject) => setTimeout(() => reject(new Error('cannot read the archive to hash it: EIO')), 20));
    await expect(restoreFile(good, target.pool, targetDir, { source: failing })).rejects.toThrow('cannot read the archive to hash it: EIO');
    expect(await fingerprint(target.pool)).toEqual(before);
    expect(treeOf(targetDir)).toEqual(filesBefore);
    expect(fs.readdirSync(targetDir).filter((n) => n.startsWith('.coffer'))).toEqual([]);
  });

  test('a source still being computed when the archive is refused is no unhandled rejection', async () => {
    const file = await variant('newer-with-source.zip', (entries) => withManifest(entries, (m) => m.migrations.push('999_future')));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      // No catch of its own, as the CLI passes it: the refusal comes before the source is needed.
      const failing = new Promise<Record<string, unknown>>((_, reject) => setTimeout(() => reject(new Error('hash stopped')), 20));
      await expect(restoreFile(file, target.pool, targetDir, { source: failing })).rejects.toMatchObject({ code: 'E_ARCHIVE_NEWER' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  test('the good archive still restores afterwards', async () => {
    await restoreFile(good, target.pool, targetDir);
    expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
  });
});

describe('restore that is killed or interrupted', () => {
  let source: TestDatabase;
  let big: string;

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    await seedDomain(source.pool, { events: 300_000 });
    await source.pool.query(`UPDATE events SET payload = jsonb_build_object('n', id, 'pad', repeat(md5(id::text), 4))`);
    big = path.join(tmp, 'big.zip');
    await backupToFile(source.pool, newDataDir('kill-source'), big);
  });
  afterAll(async () => source.drop());

  const stagingSchemas = async (pool: pg.Pool) =>
    (await pool.query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE 'coffer\\_restore\\_stage\\_%' ORDER BY 1`)).rows.map((r) => r.n);

  /**
   * Starts `coffer restore --jobs 2`, waits until `until` (run on an admin connection) answers true,
   * kills the process with SIGKILL, and checks that the live database is exactly as it was and that
   * the next restore succeeds and leaves no staging schema behind.
   */
  async function killDuring(name: string, until: (admin: pg.Client, url: string) => Promise<boolean>, afterKill?: () => Promise<void>): Promise<void> {
    const target = await createTestDatabase({ migrated: true });
    const dir = newDataDir(name);
    try {
      await seedDomain(target.pool, { events: 3 });
      const before = await fingerprint(target.pool);

      const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'coffer.js'), 'restore', big, '--yes', '--jobs', '2'], {
        env: { PATH: process.env.PATH, DATABASE_URL: target.url, DATA_DIR: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let errText = '';
      child.stderr.on('data', (d) => (errText += d));
      child.stdout.on('data', (d) => (errText += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal === 'SIGKILL' ? -9 : _code)));
      const admin = new pg.Client({ connectionString: target.url });
      await admin.connect();
      try {
        for (let i = 0; ; i++) {
          if (await until(admin, target.url)) break;
          if (i > 2000) {
            const act = await admin.query(`SELECT pid, state, wait_event_type, left(query, 120) AS q FROM pg_stat_activity WHERE datname = current_database()`);
            const locks = await admin.query(`SELECT pid, locktype, relation::regclass::text, mode, granted FROM pg_locks WHERE NOT granted OR relation IS NOT NULL`);
            throw new Error(`restore never reached the point to kill it (${name}): ${JSON.stringify(act.rows)} ${JSON.stringify(locks.rows)} ${errText}`);
          }
          await new Promise((res) => setTimeout(res, 10));
        }
        child.kill('SIGKILL');
        expect(await exited).toBe(-9);
        await afterKill?.();
      } finally {
        await admin.end();
      }
      // The server notices the dead connections and rolls back; wait for their backends to go.
      for (let i = 0; i < 200; i++) {
        const r = await target.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'coffer'`);
        if (r.rows[0].n === 0) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      expect(await fingerprint(target.pool)).toEqual(before);
      // The killed run left its staging schema (committed before the load); the live schema never saw it.
      expect(await stagingSchemas(target.pool)).toHaveLength(1);

      const summary = await restoreFile(big, target.pool, dir, { jobs: 2 });
      expect(summary.rows).toBeGreaterThan(300_000);
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
      expect(await stagingSchemas(target.pool)).toEqual([]);
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('.coffer'))).toEqual([]);
    } finally {
      await target.drop();
    }
  }

  test('SIGKILL in the middle of the parallel load leaves the database unchanged, and the next restore works', async () => {
    await killDuring('kill-load', async (admin) => {
      // The big table is loading, and two loading connections stand beside the coordinator.
      const r = await admin.query(
        `SELECT count(*) FILTER (WHERE query LIKE 'COPY "coffer\\_restore\\_stage\\_%"."events"%' AND state = 'active')::int AS copying,
                count(*) FILTER (WHERE application_name = 'coffer')::int AS connections
           FROM pg_stat_activity WHERE datname = current_database()`,
      );
      return r.rows[0].copying > 0 && r.rows[0].connections >= 3;
    });
  });

  test('SIGKILL while keys and indexes are built leaves the database unchanged, and the next restore works', async () => {
    // A share lock on the staging events table holds its primary key build (ALTER TABLE wants an
    // exclusive lock): the restore is caught there, whatever the machine's speed. The load itself
    // holds an exclusive lock from its TRUNCATE to its COMMIT (COPY FREEZE), so the lock is asked for
    // while the COPY runs: it queues behind the load and is granted when the load commits, before the
    // key build that follows on the same connection. It is taken on a connection of its own (inside a
    // transaction, pg_stat_activity does not change), and not awaited: it waits for the load.
    let holder: pg.Client | undefined;
    let table = '';
    let asked = false;
    try {
      await killDuring(
        'kill-index',
        async (admin, url) => {
          if (!holder) {
            const t = await admin.query<{ t: string | null }>(
              `SELECT format('%I.events', nspname) AS t FROM pg_namespace WHERE nspname LIKE 'coffer\\_restore\\_stage\\_%' AND to_regclass(format('%I.events', nspname)) IS NOT NULL`,
            );
            if (!t.rows.length || !t.rows[0].t) return false;
            table = t.rows[0].t;
            holder = new pg.Client({ connectionString: url });
            holder.on('error', () => undefined);
            await holder.connect();
            await holder.query('BEGIN');
          }
          if (!asked) {
            const copying = await admin.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'
                  AND query LIKE 'COPY "coffer\\_restore\\_stage\\_%"."events"%'`,
            );
            if (copying.rows[0].n === 0) return false;
            holder.query(`LOCK TABLE ${table} IN ACCESS SHARE MODE`).catch(() => undefined);
            asked = true;
          }
          const r = await admin.query(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE 'ALTER TABLE "coffer\\_restore\\_stage\\_%"."events" ADD CONSTRAINT%'`,
          );
          return r.rows[0].n > 0;
        },
        async () => {
          await holder?.end();
          holder = undefined;
        },
      );
    } finally {
      await holder?.end();
    }
  });

  test('the next restore, and service start, remove staging schemas that killed restores left', async () => {
    const db = await createTestDatabase({ migrated: true });
    const dir = newDataDir('leftover');
    try {
      await seedDomain(db.pool, { events: 5 });
      const before = await fingerprint(db.pool);
      await db.pool.query(`CREATE SCHEMA coffer_restore_stage_000000000001; CREATE TABLE coffer_restore_stage_000000000001.events (id bigint)`);
      await db.pool.query(`CREATE SCHEMA coffer_restore_stage_000000000002`);
      await repairAfterCrash(dir, db.pool, silentLogger());
      expect(await stagingSchemas(db.pool)).toEqual([]);
      expect(await fingerprint(db.pool)).toEqual(before);

      await db.pool.query(`CREATE SCHEMA coffer_restore_stage_000000000003; CREATE TABLE coffer_restore_stage_000000000003.users (id bigint)`);
      await restoreFile(big, db.pool, dir, { jobs: 1 });
      expect(await stagingSchemas(db.pool)).toEqual([]);
      expect(await fingerprint(db.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
    } finally {
      await db.drop();
    }
  });

  test('a crash between COMMIT and the folder swap is finished by the next run; one before COMMIT is undone', async () => {
    const db = await createTestDatabase({ migrated: true });
    const dir = newDataDir('repair');
    try {
      const stage = (id: string, content: string) => {
        const staging = path.join(dir, `.coffer-restore-${id}`);
        fs.mkdirSync(path.join(staging, 'new', 'uploadedfiles'), { recursive: true });
        fs.writeFileSync(path.join(staging, 'new', 'uploadedfiles', 'f.txt'), content);
        return staging;
      };
      fs.mkdirSync(path.join(dir, 'uploadedfiles'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'uploadedfiles', 'f.txt'), 'old');

      // Without a database to ask, a pending database restore is left alone (never guessed).
      writeJournal(dir, { id: 'r0', staging: stage('r0', 'new-r0'), phase: 'prepared', database: true });
      await expect(repairInterruptedRestore(dir, silentLogger(), undefined)).rejects.toMatchObject({ code: 'E_RESTORE_FAILED', message: expect.stringMatching(/interrupted restore \(r0\)/) });
      expect(fs.existsSync(path.join(dir, '.coffer-restore-r0', 'new', 'uploadedfiles', 'f.txt'))).toBe(true);
      // A spool left by a dead process goes; one of a live process (this one) stays.
      fs.writeFileSync(path.join(dir, '.coffer-spool-999999999-abc'), 'stale archive');
      fs.writeFileSync(path.join(dir, `.coffer-spool-${process.pid}-abc`), 'in use');

      // Not committed: no restore row for this id. The staged files go, the live ones stay.
      writeJournal(dir, { id: 'r1', staging: stage('r1', 'new-r1'), phase: 'prepared', database: true });
      expect(await repairInterruptedRestore(dir, silentLogger(), restoreCommitted(db.pool))).toBe('rolled-back');
      expect(fs.readFileSync(path.join(dir, 'uploadedfiles', 'f.txt'), 'utf8')).toBe('old');
      expect(fs.existsSync(path.join(dir, '.coffer-spool-999999999-abc'))).toBe(false);
      expect(fs.existsSync(path.join(dir, `.coffer-spool-${process.pid}-abc`))).toBe(true);
      fs.rmSync(path.join(dir, `.coffer-spool-${process.pid}-abc`));

      // Committed: the restore row exists. The swap is completed.
      await db.pool.query(`INSERT INTO backup_log (event, details) VALUES ('restore', '{"restore_id": "r2"}')`);
      writeJournal(dir, { id: 'r2', staging: stage('r2', 'new-r2'), phase: 'prepared', database: true });
      expect(await repairInterruptedRestore(dir, silentLogger(), restoreCommitted(db.pool))).toBe('completed');
      expect(fs.readFileSync(path.join(dir, 'uploadedfiles', 'f.txt'), 'utf8')).toBe('new-r2');
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('.coffer'))).toEqual([]);
    } finally {
      await db.drop();
    }
  });
});

describe('coffer restore command', () => {
  test('restores from standard input, leaves no spool file, and restores into a database that was never migrated', async () => {
    const source = await createTestDatabase({ migrated: true });
    const target = await createTestDatabase();
    const dir = newDataDir('stdin-target');
    try {
      await seedDomain(source.pool);
      const file = path.join(tmp, 'stdin.zip');
      await backupToFile(source.pool, newDataDir('stdin-source'), file);
      const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'coffer.js'), 'restore', '-', '--yes'], {
          env: { PATH: process.env.PATH, DATABASE_URL: target.url, DATA_DIR: dir },
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (err += d));
        child.on('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
        fs.createReadStream(file).pipe(child.stdin);
      });
      expect(stderr).toBe('');
      expect(stdout).toMatch(/^restored 9 tables, \d+ rows into /);
      expect(code).toBe(0);
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('.coffer'))).toEqual([]);
    } finally {
      await source.drop();
      await target.drop();
    }
  });

  test('a refused restore exits non-zero with the error code and one clear line', async () => {
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const bad = path.join(tmp, 'not-a-zip.zip');
      fs.writeFileSync(bad, 'hello, this is not a zip file at all');
      const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'coffer.js'), 'restore', bad, '--yes'], {
        env: { PATH: process.env.PATH, DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none', DATA_DIR: newDataDir('refused') },
      });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      child.on('close', (c) => resolve({ code: c, stderr: err }));
    });
    expect(code).toBe(10);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/^coffer: .*\[E_ARCHIVE_(TRUNCATED|INVALID)\]$/m);
  });
});
