import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import type { KeySource } from '../src/crypto';
import { canLoadDirect } from '../src/db/load';
import { knownMigrations } from '../src/db/migrate';
import { schemaForArchive } from '../src/pipeline/archive-plan';
import { openArchive } from '../src/pipeline/open-archive';
import { verifyArchive } from '../src/pipeline/verify';
import { deflated, stored, type HandEntry } from './archive/helpers';
import { createTestDatabase, type TestDatabase } from './support/db';
import { backupToFile, fingerprint, replaceTableEntry, restoreFile, rewriteArchive, sha256, withManifest } from './support/archive';
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

/**
 * The refusal corpus: one bad archive for every refusal restore has, each made from one good archive
 * by a rewrite. For each, verify reports not ok (or, when the archive cannot even be opened, fails
 * opening it with the same error) and restore refuses with a message of the same kind and the same
 * code, leaving the target database and upload folders as they were. What only the database can
 * judge is listed apart: verify passes those and says it did not check them, restore refuses them.
 */
describe('the refusal corpus: verify refuses exactly what restore refuses', () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let good: string;
  let encrypted: string;
  let before: Record<string, string>;
  let filesBefore: string;
  const srcDir = path.join(tmp, 'refusal-src');
  const dstDir = path.join(tmp, 'refusal-dst');
  const upload = 'uploadedfiles/ab/0d6f3d0e-0000-4000-8000-000000000001';
  const key: KeySource = { kind: 'raw', key: Buffer.alloc(32, 7) };
  const wrongKey: KeySource = { kind: 'raw', key: Buffer.alloc(32, 8) };

  /** Every file below dstDir with its content, as one text. */
  const folderText = (dir: string): string => {
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(r);
        else out.push(`${r} ${fs.readFileSync(path.join(dir, r)).toString('base64')}`);
      }
    };
    walk('');
    return out.sort().join('\n');
  };

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    target = await createTestDatabase({ migrated: true });
    for (const [dir, file, content] of <[string, string, string | Buffer][]>[
      [srcDir, upload, 'an upload file\n'.repeat(50)],
      [srcDir, 'uploadedimages/cd/0d6f3d0e-0000-4000-8000-000000000002', 'PNG'.repeat(100)],
      // Incompressible, so that the encrypted archive spans several 64 KiB chunks.
      [srcDir, 'uploadedimages/cd/0d6f3d0e-0000-4000-8000-000000000004', randomBytes(300_000)],
      [dstDir, 'uploadedfiles/ef/0d6f3d0e-0000-4000-8000-000000000003', 'the live upload'],
    ]) {
      fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      fs.writeFileSync(path.join(dir, file), content);
    }
    await seedDomain(source.pool);
    await seedDomain(target.pool, { events: 5 });
    good = path.join(tmp, 'refusal-good.zip');
    await backupToFile(source.pool, srcDir, good);
    encrypted = path.join(tmp, 'refusal-good.zip.crypt');
    await backupToFile(source.pool, srcDir, encrypted, key);
    before = await fingerprint(target.pool);
    filesBefore = folderText(dstDir);
  });
  afterAll(async () => {
    await source.drop();
    await target.drop();
  });

  const entryText = (entries: ReadEntry[], table: string) => entries.find((e) => e.name === `db/public.${table}.jsonl`)!.data.toString();
  /** Changes line `index` of a table entry (0-based) and makes the manifest agree. */
  const editLine = (table: string, index: number, edit: (line: string) => string) => (entries: ReadEntry[]) => {
    const lines = entryText(entries, table).split('\n');
    lines[index] = edit(lines[index]);
    return replaceTableEntry(entries, table, Buffer.from(lines.join('\n')));
  };
  /** Replaces the value of one column in the first row with raw JSON text. */
  const setValue = (table: string, column: string, json: string) =>
    editLine(table, 0, (line) => {
      const row = JSON.parse(line);
      expect(row).toHaveProperty(column);
      row[column] = '\u0001PLACEHOLDER\u0001';
      return JSON.stringify(row).replace(JSON.stringify(row[column]), json);
    });
  const hand = (entries: ReadEntry[]): HandEntry[] => entries.map((e) => (e.compressionMethod === 8 ? deflated(e.name, e.data) : stored(e.name, e.data)));
  const beforeManifest = (entries: ReadEntry[], extra: HandEntry[]): HandEntry[] => {
    const h = hand(entries);
    return [...h.slice(0, -1), ...extra, h[h.length - 1]];
  };

  type Case = [string, (entries: ReadEntry[]) => ReadEntry[] | HandEntry[], string, RegExp];
  /** Replaces the upload's stored bytes with `data(content)`, deflated, keeping what the headers declare. */
  const uploadData = (data: (content: Buffer) => Buffer) => (entries: ReadEntry[]) =>
    hand(entries).map((h, i) => (entries[i].name === upload ? { ...h, method: 8, data: data(entries[i].data), content: entries[i].data } : h));
  const rows: Case[] = [
    ['a column the table does not have', editLine('notes', 2, (l) => l.replace(/}$/, ',"smuggled":1}')), 'E_ARCHIVE_BAD_ROW', /line 3 is not a valid row: unknown column "smuggled"/],
    ['\\u0000 in a string', setValue('notes', 'title', '"a\\u0000b"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: \\u0000 cannot be stored in PostgreSQL text/],
    ['a lone high surrogate', setValue('notes', 'title', '"a\\ud800b"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unpaired surrogate/],
    ['a lone low surrogate', setValue('notes', 'body', '"\\udc00"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unpaired surrogate/],
    ['a line that is not an object', editLine('notes', 1, () => '[1,2,3]'), 'E_ARCHIVE_BAD_ROW', /line 2 is not a valid row: not a JSON object/],
    ['data after the object', editLine('notes', 0, (l) => `${l} {}`), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: data after the object/],
    ['an unterminated string', editLine('notes', 0, (l) => l.slice(0, l.indexOf('"title":"') + 12)), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unterminated string/],
    ['an invalid escape', setValue('notes', 'title', '"a\\qb"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: invalid escape in string/],
    ['an invalid \\u escape', setValue('notes', 'title', '"\\u12g4"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: invalid \\u escape/],
    // JSON refuses a raw control character in a string: in COPY text a raw tab would split the field,
    // and any other would be stored from a line no JSON reader accepts.
    ['a raw tab in a text value', setValue('notes', 'title', '"a\tb"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unescaped control character in a string/],
    ['a raw control character in a text value', setValue('notes', 'body', '"a\u0001b"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unescaped control character in a string/],
    ['a raw tab in a string of a jsonb value', setValue('projects', 'settings', '{"k":"a\tb"}'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unescaped control character in a string/],
    [
      'text that is not UTF-8',
      (entries) => {
        const data = entries.find((e) => e.name === 'db/public.notes.jsonl')!.data;
        const at = data.indexOf('"title":"') + '"title":"'.length;
        return replaceTableEntry(entries, 'notes', Buffer.concat([data.subarray(0, at), Buffer.from([0xff]), data.subarray(at)]));
      },
      'E_ARCHIVE_BAD_ROW',
      /line 1 is not a valid row: not valid UTF-8/,
    ],
    // An array column's elements get the checks a text value gets.
    ['an invalid escape in an array element', setValue('projects', 'tags', '["a\\qb"]'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: invalid escape in string/],
    ['\\u0000 in an array element', setValue('projects', 'tags', '["a\\u0000b"]'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: \\u0000 cannot be stored in PostgreSQL text/],
    ['a lone surrogate in an array element', setValue('projects', 'tags', '["a\\ud800b"]'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: unpaired surrogate/],
    ['an invalid literal', setValue('notes', 'position', 'tru'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: invalid value "tru"/],
    ['an object in a scalar column', setValue('notes', 'body', '{"a":1}'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: column body: unexpected object/],
    ['an array in a scalar column', setValue('notes', 'title', '["a"]'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: column title: unexpected array/],
    ['a scalar where an array is expected', setValue('projects', 'tags', '"web"'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: column tags: expected an array/],
    ['an object inside an array column', setValue('projects', 'tags', '[{"a":1}]'), 'E_ARCHIVE_BAD_ROW', /line 1 is not a valid row: object inside an array column/],
    [
      'a last line without its newline (truncated entry)',
      (entries) => replaceTableEntry(entries, 'notes', Buffer.from(entryText(entries, 'notes').replace(/\n$/, ''))),
      'E_ARCHIVE_BAD_ROW',
      /does not end with a newline \(truncated entry\)/,
    ],
  ];
  const manifestAgreement: Case[] = [
    ['more rows than manifest.json says', (e) => withManifest(e, (m) => (m.tables.find((t: any) => t.name === 'notes').rows += 1)), 'E_ARCHIVE_ROWS', /db\/public\.notes\.jsonl: \d+ rows, manifest\.json says \d+/],
    ['a sha256 other than manifest.json says', (e) => withManifest(e, (m) => (m.tables.find((t: any) => t.name === 'notes').sha256 = '0'.repeat(64))), 'E_ARCHIVE_CHECKSUM', /db\/public\.notes\.jsonl: sha256 .*does not match manifest\.json/],
    ['an entry size other than manifest.json says', (e) => withManifest(e, (m) => (m.tables.find((t: any) => t.name === 'notes').bytes += 1)), 'E_ARCHIVE_CHECKSUM', /entry db\/public\.notes\.jsonl is \d+ bytes, manifest\.json says \d+/],
    [
      'a CRC-32 mismatch in a table entry',
      (e) => hand(e).map((h, i) => (e[i].name === 'db/public.notes.jsonl' ? { ...h, crc32: (crc32(e[i].data) ^ 1) >>> 0 } : h)),
      'E_ARCHIVE_CHECKSUM',
      /zip entry 'db\/public\.notes\.jsonl' CRC-32 mismatch/,
    ],
    ['a CRC-32 mismatch in an upload file', (e) => hand(e).map((h, i) => (e[i].name === upload ? { ...h, crc32: (crc32(e[i].data) ^ 1) >>> 0 } : h)), 'E_ARCHIVE_CHECKSUM', /CRC-32 mismatch/],
    // The upload's data replaced, its declared size and CRC-32 (and so manifest.json) left as they were.
    ['an upload file that inflates past its declared size', uploadData((d) => deflateRawSync(Buffer.concat([d, Buffer.from('more')]))), 'E_ARCHIVE_UNSAFE_ENTRY', /unsafe zip entry '.*': data expands beyond its declared size/],
    ['an upload file shorter than its declared size', uploadData((d) => deflateRawSync(d.subarray(1))), 'E_ARCHIVE_INVALID', /zip entry '.*' has \d+ bytes, fewer than the \d+ declared/],
    [
      'corrupt compressed data in an upload file',
      uploadData((d) => {
        const data = deflateRawSync(d);
        // First block header: BFINAL=1, BTYPE=11, a block type that does not exist.
        data[0] = 0x07;
        return data;
      }),
      'E_ARCHIVE_INVALID',
      /zip entry '.*' has corrupt compressed data \(invalid block type\)/,
    ],
    ['more upload files than manifest.json says', (e) => withManifest(e, (m) => (m.files.uploadedfiles.files += 1)), 'E_ARCHIVE_INVALID', /uploadedfiles: manifest\.json says \d+ files .*, the archive holds/],
    ['an upload file manifest.json does not count', (e) => beforeManifest(e, [stored('uploadedassets/00/extra', 'x')]), 'E_ARCHIVE_INVALID', /uploadedassets: manifest\.json says 0 files/],
    ['a table entry manifest.json does not list', (e) => beforeManifest(e, [stored('db/public.extra.jsonl', '{}\n')]), 'E_ARCHIVE_INVALID', /entry db\/public\.extra\.jsonl is not listed in manifest\.json/],
    ['a listed entry missing from the archive', (e) => e.filter((x) => x.name !== 'db/public.notes.jsonl'), 'E_ARCHIVE_INVALID', /manifest\.json lists db\/public\.notes\.jsonl, missing from the archive/],
    ['a table listed twice', (e) => withManifest(e, (m) => m.tables.push({ ...m.tables.find((t: any) => t.name === 'notes'), entry: 'db/public.notes2.jsonl' })), 'E_ARCHIVE_INVALID', /manifest lists table public\.notes twice/],
    ['one entry for two tables', (e) => withManifest(e, (m) => (m.tables.find((t: any) => t.name === 'events').entry = 'db/public.notes.jsonl')), 'E_ARCHIVE_INVALID', /manifest uses entry db\/public\.notes\.jsonl for two tables/],
  ];
  const structure: Case[] = [
    ['no VERSION entry', (e) => e.filter((x) => x.name !== 'VERSION'), 'E_ARCHIVE_INVALID', /archive has no VERSION entry/],
    ['a VERSION of another format', (e) => e.map((x) => (x.name === 'VERSION' ? { ...x, data: Buffer.from('2\n') } : x)), 'E_ARCHIVE_VERSION', /archive format version "2" is not supported/],
    ['no manifest.json', (e) => e.filter((x) => x.name !== 'manifest.json'), 'E_ARCHIVE_INVALID', /archive has no manifest\.json/],
    ['a manifest.json that is not JSON', (e) => e.map((x) => (x.name === 'manifest.json' ? { ...x, data: x.data.subarray(0, 100) } : x)), 'E_ARCHIVE_INVALID', /manifest\.json is not valid JSON/],
    ['a malformed manifest.json', (e) => withManifest(e, (m) => delete m.tables), 'E_ARCHIVE_INVALID', /manifest\.json is malformed: tables/],
    ['a manifest of another format', (e) => withManifest(e, (m) => (m.format = 2)), 'E_ARCHIVE_VERSION', /manifest format 2 is not supported/],
    ['an entry name with ..', (e) => beforeManifest(e, [stored('uploadedfiles/../../evil', 'x')]), 'E_ARCHIVE_UNSAFE_ENTRY', /unsafe zip entry 'uploadedfiles\/\.\.\/\.\.\/evil'/],
    ['an absolute entry name', (e) => beforeManifest(e, [stored('/etc/evil', 'x')]), 'E_ARCHIVE_UNSAFE_ENTRY', /unsafe zip entry '\/etc\/evil'/],
    ['an entry outside the known top-level folders', (e) => beforeManifest(e, [stored('elsewhere/evil', 'x')]), 'E_ARCHIVE_UNSAFE_ENTRY', /unsafe zip entry 'elsewhere\/evil'/],
    ['the same entry name twice', (e) => beforeManifest(e, [stored(upload, 'again')]), 'E_ARCHIVE_UNSAFE_ENTRY', /unsafe zip entry 'uploadedfiles\/ab\/[\w-]+'/],
  ];
  const plan: Case[] = [
    ['migrations unknown to this build', (e) => withManifest(e, (m) => m.migrations.push('999_from_the_future')), 'E_ARCHIVE_NEWER', /migrations 999_from_the_future are unknown to this build/],
    ['a table missing from the archive', (e) => withManifest(e.filter((x) => x.name !== 'db/public.events.jsonl'), (m) => (m.tables = m.tables.filter((t: any) => t.name !== 'events'))), 'E_ARCHIVE_INVALID', /archive has no data for tables public\.events/],
    [
      'a table the schema does not have',
      (e) =>
        beforeManifest(
          withManifest(e, (m) => m.tables.push({ schema: 'public', name: 'secrets', entry: 'db/public.secrets.jsonl', columns: [{ name: 'id', type: 'bigint' }], rows: 0, bytes: 0, sha256: sha256(Buffer.alloc(0)) })),
          [stored('db/public.secrets.jsonl', '')],
        ),
      'E_ARCHIVE_INVALID',
      /archive has table public\.secrets, which .* does not have/,
    ],
    ['a manifest column the schema does not have', (e) => withManifest(e, (m) => m.tables.find((t: any) => t.name === 'projects').columns.push({ name: 'ghost', type: 'text' })), 'E_ARCHIVE_INVALID', /archive table projects has columns ghost, which .* does not have/],
    ['no migrations at all', (e) => withManifest(e, (m) => (m.migrations = [])), 'E_ARCHIVE_INVALID', /archive lists no migrations/],
  ];

  /** Verify's verdict: its report's problems, or the error that kept it from opening the archive. */
  async function verifyOutcome(file: string, k?: KeySource): Promise<{ ok: boolean; text: string; code?: string; notChecked?: string }> {
    let archive;
    try {
      archive = await openArchive(file, k);
    } catch (err) {
      return { ok: false, text: (err as Error).message, code: (err as { code?: string }).code };
    }
    try {
      const report = await verifyArchive(archive);
      // A table entry's problem carries the code restore gives it.
      const code = report.tables.find((t) => t.code)?.code;
      return { ok: report.ok, text: [...report.problems, ...report.tables.map((t) => t.problem ?? '')].filter(Boolean).join('\n'), code, notChecked: report.notChecked };
    } finally {
      await archive.close();
    }
  }

  async function expectUntouched(): Promise<void> {
    expect(await fingerprint(target.pool)).toEqual(before);
    expect(folderText(dstDir)).toBe(filesBefore);
  }

  test.each([...rows, ...manifestAgreement, ...structure, ...plan])('%s: verify and restore refuse it', async (name, change, code, message) => {
    const file = path.join(tmp, `refusal-${name.replace(/\W+/g, '-')}.zip`);
    await rewriteArchive(good, file, change);
    const verdict = await verifyOutcome(file);
    expect(verdict.ok).toBe(false);
    expect(verdict.text).toMatch(message);
    if (verdict.code) expect(verdict.code).toBe(code);
    // Every refusal of a table entry's content is reported with its code.
    if (rows.some((c) => c[0] === name) || /rows than|sha256|CRC-32 mismatch in a table/.test(name)) expect(verdict.code).toBe(code);
    await expect(restoreFile(file, target.pool, dstDir)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    await expectUntouched();
  });

  test('a truncated archive: verify and restore refuse it', async () => {
    const file = path.join(tmp, 'refusal-truncated.zip');
    const bytes = fs.readFileSync(good);
    fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    const verdict = await verifyOutcome(file);
    expect(verdict).toMatchObject({ ok: false, code: 'E_ARCHIVE_TRUNCATED', text: expect.stringMatching(/zip archive is truncated/) });
    await expect(restoreFile(file, target.pool, dstDir)).rejects.toMatchObject({ code: 'E_ARCHIVE_TRUNCATED' });
    await expectUntouched();
  });

  test('an encrypted archive opened with the wrong key: verify and restore refuse it', async () => {
    const verdict = await verifyOutcome(encrypted, wrongKey);
    expect(verdict.ok).toBe(false);
    expect(verdict.code).toMatch(/^E_CRYPT_/);
    await expect(restoreFile(encrypted, target.pool, dstDir, { key: wrongKey })).rejects.toMatchObject({ code: verdict.code, message: verdict.text });
    await expectUntouched();
    // With the right key, both accept it.
    expect((await verifyOutcome(encrypted, key)).ok).toBe(true);
  });

  test.each([0.02, 0.5, 0.99])('an encrypted archive with a byte flipped at %p of its length: verify and restore refuse it', async (at) => {
    const file = path.join(tmp, `refusal-flipped-${at}.zip.crypt`);
    const bytes = Buffer.from(fs.readFileSync(encrypted));
    bytes[Math.floor(bytes.length * at)] ^= 0x40;
    fs.writeFileSync(file, bytes);
    const verdict = await verifyOutcome(file, key);
    expect(verdict.ok).toBe(false);
    let refused: { code?: string; message: string } | undefined;
    await restoreFile(file, target.pool, dstDir, { key }).catch((err) => (refused = err));
    expect(refused?.code).toMatch(/^E_CRYPT_/);
    // Verify names the entry it was reading (or failed opening the archive with the same error).
    expect(verdict.text).toContain(refused!.message);
    await expectUntouched();
  });

  // Only the database can judge these: verify passes them and says what it did not check.
  const databaseOnly: Case[] = [
    ['an integer out of range', setValue('notes', 'position', '99999999999'), 'E_ARCHIVE_BAD_ROW', /db\/public\.notes\.jsonl: the database refused a row: .*out of range/],
    ['text that is not a uuid', setValue('notes', 'project_id', '"not-a-uuid"'), 'E_ARCHIVE_BAD_ROW', /db\/public\.notes\.jsonl: the database refused a row: invalid input syntax for type uuid/],
    ['a foreign key to nothing', setValue('notes', 'project_id', '"00000000-0000-0000-0000-000000000000"'), 'E_RESTORE_FAILED', /violates foreign key/],
    [
      'a duplicate primary key',
      (e) => {
        // The second row becomes a copy of the first (same id).
        const lines = entryText(e, 'notes').split('\n');
        lines[1] = lines[0];
        return replaceTableEntry(e, 'notes', Buffer.from(lines.join('\n')));
      },
      'E_RESTORE_FAILED',
      /violates/,
    ],
  ];

  test.each(databaseOnly)('%s: restore refuses it, verify says it did not check it', async (name, change, code, message) => {
    const file = path.join(tmp, `refusal-db-${name.replace(/\W+/g, '-')}.zip`);
    await rewriteArchive(good, file, change);
    const verdict = await verifyOutcome(file);
    expect(verdict.text).toBe('');
    expect(verdict.ok).toBe(true);
    expect(verdict.notChecked).toMatch(/not checked against constraints \(foreign keys, unique keys, value ranges and types need the database/);
    await expect(restoreFile(file, target.pool, dstDir)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    await expectUntouched();
  });

  test('the good archive passes both', async () => {
    expect(await verifyOutcome(good)).toMatchObject({ ok: true, text: '' });
    await restoreFile(good, target.pool, dstDir);
    expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
    expect(folderText(dstDir)).toBe(folderText(srcDir));
  });

  test('every table of the schema takes the JSONL-to-COPY path, the converter verify runs', () => {
    // A table with a column the converter cannot write would load through jsonb_populate_record,
    // which judges rows differently (it ignores unknown keys); the schema has none.
    const level = knownMigrations().at(-1)!.name;
    const known = schemaForArchive({ migrations: knownMigrations().map((x) => x.name) } as never);
    expect(known?.level).toBe(level);
    for (const t of known!.schema.tables) expect(canLoadDirect(t) ? t.name : `${t.name} (populate path)`).toBe(t.name);
  });
});
