import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/db';
import { backupToFile, fingerprint, insertExtremeValues, replaceTableEntry, restoreFile, rewriteArchive } from './support/archive';
import { runCoffer } from './support/cli';
import { seedDomain, writeUploadFiles } from './support/seed';
import type { ReadEntry } from './support/zip';
import { generateDemoData } from '../src/domain/demo';
import { createUser } from '../src/accounts/users';
import { lockKey } from '../src/db/locks';
import type { RestoreProgress } from '../src/pipeline/restore';

const KEY = Buffer.from('8899aabbccddeeff00112233445566778899aabbccddeeff0011223344556677', 'hex');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-restore-par-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function newDataDir(name: string): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

async function stagingSchemas(pool: pg.Pool): Promise<string[]> {
  const res = await pool.query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE starts_with(nspname, 'coffer_restore_stage_') ORDER BY 1`);
  return res.rows.map((r) => r.n);
}

async function constraintsAndIndexes(pool: pg.Pool): Promise<string[]> {
  const res = await pool.query<{ d: string }>(
    `SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE connamespace = 'public'::regnamespace
     UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`,
  );
  return res.rows.map((r) => r.d);
}

let source: TestDatabase;
let sourceDir: string;
let plain: string;
let encrypted: string;

beforeAll(async () => {
  source = await createTestDatabase({ migrated: true });
  sourceDir = newDataDir('source');
  await createUser(source.pool, { username: 'admin', password: 'a long password', role: 'system' });
  await generateDemoData(source.pool, sourceDir, 2);
  await insertExtremeValues(source.pool);
  // One table clearly bigger than the others, so loads overlap.
  await source.pool.query(
    `INSERT INTO events (project_id, kind, payload) SELECT (SELECT id FROM projects LIMIT 1), 'bulk', jsonb_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, 40000) g`,
  );
  writeUploadFiles(sourceDir, 5);
  plain = path.join(tmp, 'plain.zip');
  encrypted = path.join(tmp, 'encrypted.zip.crypt');
  await backupToFile(source.pool, sourceDir, plain);
  await backupToFile(source.pool, sourceDir, encrypted, { kind: 'raw', key: KEY });
});
afterAll(async () => source.drop());

describe('parallel restore fidelity', () => {
  test.each([
    ['one job', 1, false],
    ['three jobs', 3, false],
    ['three jobs, encrypted archive (entries read side by side)', 3, true],
  ])('%s: the restored database equals the source, and no staging schema is left', async (_name, jobs, isEncrypted) => {
    const target = await createTestDatabase();
    const dir = newDataDir(`fidelity-${jobs}-${isEncrypted}`);
    const seen: RestoreProgress[] = [];
    try {
      const summary = await restoreFile(isEncrypted ? encrypted : plain, target.pool, dir, {
        jobs,
        key: isEncrypted ? { kind: 'raw', key: KEY } : undefined,
        onProgress: (p) => seen.push(p),
      });
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
      // Every key, index and foreign key is back (foreign keys are added side by side as tables finish).
      expect(await constraintsAndIndexes(target.pool)).toEqual(await constraintsAndIndexes(source.pool));
      expect(await stagingSchemas(target.pool)).toEqual([]);
      const logged = await target.pool.query(`SELECT details FROM backup_log WHERE event = 'restore'`);
      expect(logged.rows).toHaveLength(1);
      expect(logged.rows[0].details.rows).toBe(summary.rows);

      // Progress: tables are counted as they finish, rows add up across the tables loading side by side.
      const loading = seen.filter((p) => p.phase === 'database');
      expect(loading.length).toBeGreaterThan(0);
      for (let i = 1; i < loading.length; i++) {
        expect(loading[i].rows).toBeGreaterThanOrEqual(loading[i - 1].rows);
        expect(loading[i].tablesDone).toBeGreaterThanOrEqual(loading[i - 1].tablesDone);
      }
      const last = loading[loading.length - 1];
      expect(last.tablesDone).toBe(summary.tables);
      expect(last.rows).toBe(summary.rows);
      expect(seen.some((p) => p.phase === 'constraints')).toBe(true);
      // The biggest table starts first.
      expect(loading.find((p) => p.table)?.table).toBe('public.events');
    } finally {
      await target.drop();
    }
  });

  test('a restore over live data replaces it, keeps the live audit log and adds its own row', async () => {
    const target = await createTestDatabase({ migrated: true });
    const dir = newDataDir('over-live');
    try {
      await seedDomain(target.pool, { events: 50 });
      await target.pool.query(`INSERT INTO backup_log (event, details) VALUES ('backup_finished', '{"live": true}')`);
      const liveLog = (await target.pool.query(`SELECT id, event, details FROM backup_log ORDER BY id`)).rows;
      await restoreFile(plain, target.pool, dir, { jobs: 4 });
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
      const log = (await target.pool.query(`SELECT id, event, details FROM backup_log ORDER BY id`)).rows;
      expect(log.slice(0, liveLog.length)).toEqual(liveLog);
      expect(log.slice(liveLog.length).map((r) => r.event)).toEqual(['restore']);
      expect(await stagingSchemas(target.pool)).toEqual([]);
    } finally {
      await target.drop();
    }
  });

  test('more jobs than the pool can give beside the coordinator: the restore uses what there is', async () => {
    const target = await createTestDatabase();
    const small = new pg.Pool({ connectionString: target.url, max: 2 });
    try {
      await restoreFile(plain, small, newDataDir('small-pool'), { jobs: 8, skipFiles: true });
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
    } finally {
      await small.end();
      await target.drop();
    }
  });
});

describe('a failure in one parallel load leaves the live database unchanged and no staging schema', () => {
  let target: TestDatabase;
  let targetDir: string;
  let before: Record<string, string>;

  beforeAll(async () => {
    target = await createTestDatabase({ migrated: true });
    targetDir = newDataDir('failing-target');
    await seedDomain(target.pool, { events: 9 });
    before = await fingerprint(target.pool);
  });
  afterAll(async () => target.drop());

  const variant = async (name: string, change: (e: ReadEntry[]) => ReadEntry[]) => {
    const file = path.join(tmp, name);
    await rewriteArchive(plain, file, change);
    return file;
  };
  const lineChange = (table: string, change: (lines: string[]) => void) => (entries: ReadEntry[]) => {
    const lines = entries.find((e) => e.name === `db/public.${table}.jsonl`)!.data.toString().split('\n');
    change(lines);
    return replaceTableEntry(entries, table, Buffer.from(lines.join('\n')));
  };

  async function expectRefused(file: string, code: string, message: RegExp) {
    await expect(restoreFile(file, target.pool, targetDir, { jobs: 3 })).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    expect(await fingerprint(target.pool)).toEqual(before);
    expect(await stagingSchemas(target.pool)).toEqual([]);
    // Every loading connection went back (or was closed): nothing holds a transaction open.
    const open = await target.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`);
    expect(open.rows[0].n).toBe(0);
  }

  test('a bad row at the end of the big table, while the others load beside it', async () => {
    const file = await variant('bad-events.zip', lineChange('events', (l) => (l[l.length - 2] = '{"id": 1, "kind": "broken')));
    await expectRefused(file, 'E_ARCHIVE_BAD_ROW', /db\/public\.events\.jsonl: line \d+ is not a valid row/);
  });

  test('a bad row in a small table, while the big one is still loading', async () => {
    const file = await variant('bad-notes.zip', lineChange('notes', (l) => (l[1] = '{"id": 2, "title": "broken')));
    await expectRefused(file, 'E_ARCHIVE_BAD_ROW', /db\/public\.notes\.jsonl: line 2 is not a valid row/);
  });

  test('a duplicate key found while keys are built side by side', async () => {
    const file = await variant('duplicate-key.zip', lineChange('events', (l) => (l[1] = l[0])));
    await expectRefused(file, 'E_RESTORE_FAILED', /violates events_pkey on events/);
  });

  test('a foreign key violation found while the other foreign keys are added side by side', async () => {
    const file = await variant('bad-reference.zip', lineChange('notes', (l) => (l[0] = l[0].replace(/"project_id":\s*"[^"]+"/, '"project_id":"00000000-0000-0000-0000-000000000000"'))));
    await expectRefused(file, 'E_RESTORE_FAILED', /violates foreign key notes_project_id_fkey on notes/);
  });

  test('another restore holds the database: refused before anything is touched', async () => {
    const holder = new pg.Client({ connectionString: target.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [lockKey('restore')]);
      await expect(restoreFile(plain, target.pool, targetDir, { jobs: 2 })).rejects.toMatchObject({ code: 'E_RESTORE_RUNNING' });
      expect(await fingerprint(target.pool)).toEqual(before);
    } finally {
      await holder.end();
    }
  });

  test('the good archive still restores afterwards', async () => {
    await restoreFile(plain, target.pool, targetDir, { jobs: 3 });
    expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
    expect(await stagingSchemas(target.pool)).toEqual([]);
  });
});

describe('--jobs', () => {
  test.each([['0'], ['-1'], ['1.5'], ['two'], ['65'], ['']])('coffer restore --jobs %p is a usage error', async (value) => {
    const run = await runCoffer(['restore', plain, '--yes', '--skip-files', '--jobs', value], {
      env: { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none', DATA_DIR: newDataDir(`jobs-${value || 'empty'}`) },
    });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--jobs must be a whole number from 1 to 64.*\[E_USAGE\]/);
  });

  test('the pipeline refuses a bad job count before it touches anything', async () => {
    for (const jobs of [0, 2.5, Number.NaN]) {
      await expect(restoreFile(plain, source.pool, newDataDir('jobs-pipeline'), { jobs })).rejects.toMatchObject({ code: 'E_USAGE' });
    }
  });

  test('coffer restore --jobs 2 restores', async () => {
    const target = await createTestDatabase();
    try {
      const run = await runCoffer(['restore', plain, '--yes', '--jobs', '2'], { env: { DATABASE_URL: target.url, DATA_DIR: newDataDir('jobs-cli') } });
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
    } finally {
      await target.drop();
    }
  });
});
