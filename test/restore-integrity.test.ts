import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openArchive } from '../src/pipeline/open-archive';
import { verifyArchive } from '../src/pipeline/verify';
import { createTestDatabase, type TestDatabase } from './support/db';
import { backupToFile, fingerprint, replaceTableEntry, restoreFile, rewriteArchive, withManifest } from './support/archive';
import { seedDomain } from './support/seed';
import type { ReadEntry } from './support/zip';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-integrity-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function verifyFile(file: string) {
  const archive = await openArchive(file, undefined);
  try {
    return await verifyArchive(archive);
  } finally {
    await archive.close();
  }
}

describe('restore never changes what its rollback cannot undo', () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let good: string;
  const dataDir = path.join(tmp, 'seq');

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    target = await createTestDatabase({ migrated: true });
    fs.mkdirSync(dataDir);
    await seedDomain(source.pool);
    await seedDomain(target.pool, { events: 3 });
    good = path.join(tmp, 'seq-good.zip');
    await backupToFile(source.pool, dataDir, good);
    await target.pool.query(`CREATE SCHEMA other; CREATE SEQUENCE other.victim_seq; SELECT setval('other.victim_seq', 42)`);
  });
  afterAll(async () => {
    await source.drop();
    await target.drop();
  });

  const victim = async () => (await target.pool.query(`SELECT last_value::text AS v FROM other.victim_seq`)).rows[0].v;

  test('a sequence outside the application schema, in an archive that then fails on a foreign key, is refused before anything is touched', async () => {
    const file = path.join(tmp, 'victim.zip');
    await rewriteArchive(good, file, (entries) => {
      const broken = entries.find((x) => x.name === 'db/public.findings.jsonl')!.data.toString().replace(/"project_id":"[0-9a-f-]+"/, '"project_id":"00000000-0000-0000-0000-000000000000"');
      return withManifest(replaceTableEntry(entries, 'findings', Buffer.from(broken)), (m) => m.sequences.push({ schema: 'other', name: 'victim_seq', last_value: 777777, is_called: true }));
    });
    const before = await fingerprint(target.pool);
    await expect(restoreFile(file, target.pool, dataDir)).rejects.toMatchObject({ code: 'E_ARCHIVE_INVALID', message: expect.stringMatching(/sequence other\.victim_seq, outside the application schema public/) });
    expect(await victim()).toBe('42');
    expect(await fingerprint(target.pool)).toEqual(before);
    expect((await verifyFile(file)).problems).toContainEqual(expect.stringMatching(/other\.victim_seq, outside the application schema/));
  });

  test.each([
    ['an unknown sequence of the application schema', { schema: 'public', name: 'no_such_seq', last_value: 5, is_called: true }, /sequence public\.no_such_seq, which the schema at migration \d{3}_\w+ does not have/],
    ['a value beyond the sequence range', { schema: 'public', name: 'events_id_seq', last_value: '9223372036854775808', is_called: true }, /events_id_seq to 9223372036854775808, outside its range 1\.\.9223372036854775807/],
  ])('%s is refused by restore and by verify', async (_what, seq, message) => {
    const file = path.join(tmp, `seq-${seq.name}.zip`);
    await rewriteArchive(good, file, (entries) =>
      withManifest(entries, (m) => {
        m.sequences = m.sequences.filter((s: any) => s.name !== seq.name);
        m.sequences.push(seq);
      }),
    );
    const before = await fingerprint(target.pool);
    await expect(restoreFile(file, target.pool, dataDir)).rejects.toMatchObject({ code: 'E_ARCHIVE_INVALID', message: expect.stringMatching(message) });
    expect(await fingerprint(target.pool)).toEqual(before);
    const report = await verifyFile(file);
    expect(report.ok).toBe(false);
    expect(report.problems).toContainEqual(expect.stringMatching(message));
  });
});

describe('the audit log survives a restore', () => {
  test('three backups, then a restore of the first: all seven events stay and the restore adds its own', async () => {
    const db = await createTestDatabase({ migrated: true });
    const dir = path.join(tmp, 'audit');
    fs.mkdirSync(dir);
    try {
      await seedDomain(db.pool);
      const files = [1, 2, 3].map((i) => path.join(tmp, `audit-${i}.zip`));
      for (const f of files) await backupToFile(db.pool, dir, f);
      const live = (await db.pool.query(`SELECT id, event, created_at FROM backup_log ORDER BY id`)).rows;
      expect(live.map((r) => r.event)).toEqual(['setup', 'backup_started', 'backup_finished', 'backup_started', 'backup_finished', 'backup_started', 'backup_finished']);

      await db.pool.query(`DELETE FROM events`);
      await restoreFile(files[0], db.pool, dir);
      const after = (await db.pool.query(`SELECT id, event, created_at FROM backup_log ORDER BY id`)).rows;
      expect(after.slice(0, 7)).toEqual(live);
      expect(after.map((r) => r.event)).toEqual([...live.map((r) => r.event), 'restore']);
      expect(Number(after[7].id)).toBeGreaterThan(Number(live[6].id));
      // The data itself did come back from the archive.
      expect((await db.pool.query(`SELECT count(*)::int AS n FROM events`)).rows[0].n).toBe(100);
      // New audit rows continue after the live ones.
      await backupToFile(db.pool, dir, path.join(tmp, 'audit-4.zip'));
      const ids = (await db.pool.query(`SELECT id FROM backup_log ORDER BY id`)).rows.map((r) => Number(r.id));
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toHaveLength(10);
    } finally {
      await db.drop();
    }
  });

  test('an audit row keeps its user only where the restored users table has that user under the same name', async () => {
    const db = await createTestDatabase({ migrated: true });
    const dir = path.join(tmp, 'audit-users');
    fs.mkdirSync(dir);
    try {
      const alice = (await db.pool.query(`INSERT INTO users (username, password_hash) VALUES ('alice', 'x') RETURNING id`)).rows[0].id;
      const file = path.join(tmp, 'audit-users.zip');
      await backupToFile(db.pool, dir, file);
      // After the backup: a user that the archive does not have, and who leaves audit rows.
      const bob = (await db.pool.query(`INSERT INTO users (username, password_hash) VALUES ('bob', 'x') RETURNING id`)).rows[0].id;
      await db.pool.query(`INSERT INTO backup_log (event, user_id, username) VALUES ('backup_denied', $1, 'bob'), ('backup_denied', $2, 'alice')`, [bob, alice]);
      await restoreFile(file, db.pool, dir);
      const rows = (await db.pool.query(`SELECT user_id, username FROM backup_log WHERE event = 'backup_denied' ORDER BY id`)).rows;
      expect(rows).toEqual([
        { user_id: null, username: 'bob' },
        { user_id: alice, username: 'alice' },
      ]);
    } finally {
      await db.drop();
    }
  });
});

describe('verify refuses what restore refuses, without a database', () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let good: string;
  let before: Record<string, string>;
  const dataDir = path.join(tmp, 'corpus');

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    target = await createTestDatabase({ migrated: true });
    fs.mkdirSync(dataDir);
    await seedDomain(source.pool);
    await seedDomain(target.pool, { events: 5 });
    good = path.join(tmp, 'corpus-good.zip');
    await backupToFile(source.pool, dataDir, good);
    before = await fingerprint(target.pool);
  });
  afterAll(async () => {
    await source.drop();
    await target.drop();
  });

  const addTable = (entries: ReadEntry[], name: string, content: string, columns: { name: string; type: string }[]) => {
    const entry = `db/public.${name}.jsonl`;
    const manifest = entries[entries.length - 1];
    const withEntry = [...entries.slice(0, -1), { name: entry, data: Buffer.from(''), compressionMethod: 0 }, manifest];
    const listed = withManifest(withEntry, (m) => m.tables.push({ schema: 'public', name, entry, columns, rows: 0, bytes: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' }));
    return replaceTableEntry(listed, name, Buffer.from(content));
  };

  const cases: [string, (e: ReadEntry[]) => ReadEntry[], RegExp][] = [
    [
      'a JSONL row with a column the table does not have',
      (entries) => {
        const lines = entries.find((e) => e.name === 'db/public.notes.jsonl')!.data.toString().split('\n');
        lines[2] = lines[2].replace(/}$/, ',"smuggled":1}');
        return replaceTableEntry(entries, 'notes', Buffer.from(lines.join('\n')));
      },
      /line 3 is not a valid row: unknown column "smuggled"/,
    ],
    ['a table the schema does not have', (entries) => addTable(entries, 'secrets', '{"id":1}\n', [{ name: 'id', type: 'bigint' }]), /archive has table public\.secrets, which .* does not have/],
    [
      'a table that is never backed up (sessions)',
      (entries) => addTable(entries, 'sessions', '{"id_hash":"\\\\x00","user_id":1}\n', [{ name: 'id_hash', type: 'bytea' }]),
      /archive has table public\.sessions, which .* does not have/,
    ],
    [
      'a table missing from the archive',
      (entries) => withManifest(entries.filter((e) => e.name !== 'db/public.events.jsonl'), (m) => (m.tables = m.tables.filter((t: any) => t.name !== 'events'))),
      /archive has no data for tables public\.events/,
    ],
    [
      'a manifest column the schema does not have',
      (entries) => withManifest(entries, (m) => m.tables.find((t: any) => t.name === 'projects').columns.push({ name: 'ghost', type: 'text' })),
      /archive table projects has columns ghost, which .* does not have/,
    ],
    [
      'an archive with no tables and no migrations',
      (entries) =>
        withManifest(entries.filter((e) => !e.name.startsWith('db/')), (m) => {
          m.tables = [];
          m.migrations = [];
          m.sequences = [];
        }),
      /archive lists no migrations/,
    ],
  ];

  test.each(cases)('%s', async (name, change, message) => {
    const file = path.join(tmp, `corpus-${name.replace(/\W+/g, '-')}.zip`);
    await rewriteArchive(good, file, change);
    const report = await verifyFile(file);
    expect(report.ok).toBe(false);
    expect([...report.problems, ...report.tables.map((t) => t.problem ?? '')].join('\n')).toMatch(message);
    await expect(restoreFile(file, target.pool, dataDir)).rejects.toMatchObject({ message: expect.stringMatching(message) });
    expect(await fingerprint(target.pool)).toEqual(before);
  });

  test('the good archive verifies, says what it cannot check, and restores', async () => {
    const report = await verifyFile(good);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.notChecked).toMatch(/rows not checked against constraints/);
    await restoreFile(good, target.pool, dataDir);
    expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
  });

  test('--force restores an archive with no migrations (the operator asked for it)', async () => {
    const file = path.join(tmp, 'corpus-forced.zip');
    await rewriteArchive(good, file, (entries) => withManifest(entries, (m) => (m.migrations = [])));
    await expect(restoreFile(file, target.pool, dataDir)).rejects.toMatchObject({ code: 'E_ARCHIVE_INVALID' });
    const forced = restoreFile(file, target.pool, dataDir, { force: true });
    // Forced, nothing is known of the schema: the archive's tables do not exist without migrations.
    await expect(forced).rejects.toMatchObject({ code: 'E_ARCHIVE_INVALID', message: expect.stringMatching(/archive has table public\.\w+, which this database schema does not have/) });
  });
});
