import { Readable } from 'node:stream';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/db';
import { copyOutTable } from '../src/db/dump';
import { listTables, type TableInfo } from '../src/db/introspect';
import { attachKeys, buildIndex, canLoadDirect, createStage, dropForLoad, indexBuilds, loadTable, loadTableDirect } from '../src/db/load';
import { JsonlToCopy } from '../src/db/jsonl-to-copy';

async function dump(client: pg.PoolClient, table: TableInfo): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of copyOutTable(client, table)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Rows as text; `jsonNormalised` compares json values by content (jsonb), not formatting. */
async function rows(pool: pg.Pool, schema: string, table: string, jsonNormalised = false): Promise<string[]> {
  const expr = jsonNormalised ? `(row_to_json(t)::jsonb || jsonb_build_object('j', t.j::jsonb))::text` : 'row_to_json(t)::text';
  const r = await pool.query(`SELECT ${expr} AS r FROM ${schema}.${table} t ORDER BY id`);
  return r.rows.map((x) => x.r);
}

describe('loading JSONL rows', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
    for (const schema of ['src', 'direct', 'populate']) {
      await db.pool.query(`CREATE SCHEMA ${schema}`);
      await db.pool.query(`CREATE TYPE ${schema}.mood AS ENUM ('ok', 'sad')`);
      await db.pool.query(`CREATE TABLE ${schema}.t (
        id int PRIMARY KEY, txt text, num numeric, f8 float8, f4 real, i8 bigint, b boolean, by bytea, j json, jb jsonb NOT NULL DEFAULT '{}',
        jbn jsonb, ta text[], ia int[][], na numeric[], ba boolean[], ts timestamptz, d date, iv interval, u uuid, m ${schema}.mood,
        r int4range, ma ${schema}.mood[], ch char(3), vc varchar(10), pt point, ip inet)`);
    }
    await db.pool.query(`INSERT INTO src.t VALUES
      (1, E'tab\\there\\nnew \\\\ back "q" \\x01 \\u00e9 😀 \\b\\f', '123456789012345678901234567890.000000000000000000001', 'NaN', '-Infinity', 9223372036854775807, true,
       '\\x00ff10', '{"b": 1,   "a": [1, 2.50, "x\\ty"]}', 'null', '{"deep": {"x": [null, true, "\\"\\\\"]}}',
       ARRAY['a', NULL, '', 'b"c', 'd\\e', '{x}', 'NULL', ' sp ', E'nl\\nx'], '{{1,2},{3,NULL}}', ARRAY[1.5, NULL, 'NaN']::numeric[], '{t,f,NULL}',
       'infinity', '0001-01-01 BC', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'sad',
       '[1,10)', '{ok,sad}', 'ab', 'x', '(1.5,2)', '::1'),
      (2, '', 0, 1.7976931348623157e308, 1e-38, -1, false, '', '[]', '[]', NULL, '{}', '{}', '{}', '{}', '2026-11-27 10:00:00+05:30', '2026-02-28', '-1 day', NULL, 'ok', 'empty', '{}', NULL, '', NULL, NULL),
      (3, NULL, NULL, '-0', NULL, NULL, NULL, NULL, NULL, '"just a string"', '123.456e10', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`);
  });
  afterAll(async () => db.drop());

  test('the direct COPY path and the jsonb_populate_record path both reproduce every row exactly', async () => {
    const client = await db.pool.connect();
    try {
      const [src] = (await listTables(client, 'src')).filter((t) => t.name === 't');
      expect(canLoadDirect(src)).toBe(true);
      const jsonl = await dump(client, src);
      const [direct] = await listTables(client, 'direct');
      const [populate] = await listTables(client, 'populate');
      await client.query('BEGIN');
      await createStage(client);
      expect(await loadTableDirect(client, direct, 'db/direct.t.jsonl', Readable.from([jsonl]))).toBe(3);
      expect(await loadTable(client, populate, 'db/populate.t.jsonl', Readable.from([jsonl]))).toBe(3);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const original = await rows(db.pool, 'src', 't');
    expect(await rows(db.pool, 'direct', 't')).toEqual(original);
    // The populate path goes through jsonb, so json columns keep their content but not their formatting.
    expect(await rows(db.pool, 'populate', 't', true)).toEqual(await rows(db.pool, 'src', 't', true));
  });

  test('rows split across chunks at every byte still convert the same', async () => {
    const line = Buffer.from('{"id":1,"txt":"a\\u00e9\\ud83d\\ude00\\\\\\"b","ta":["x\\"y",null,"\\\\"],"jb":{"k":\t[1,"\\n"]}}\n');
    const columns = [
      { name: 'id', kind: 'scalar' as const },
      { name: 'txt', kind: 'scalar' as const },
      { name: 'ta', kind: 'array' as const },
      { name: 'jb', kind: 'json' as const },
    ];
    const convert = async (pieces: Buffer[]) => {
      const out: Buffer[] = [];
      const t = new JsonlToCopy(columns, 'e');
      t.on('data', (d: Buffer) => out.push(d));
      for (const p of pieces) t.write(p);
      t.end();
      await new Promise((r) => t.on('end', r));
      return Buffer.concat(out).toString('utf8');
    };
    const whole = await convert([line]);
    expect(whole).toBe('1\taé😀\\\\"b\t{"x\\\\"y",NULL,"\\\\\\\\"}\t{"k":\\t[1,"\\\\n"]}\n');
    for (let cut = 1; cut < line.length; cut++) expect(await convert([line.subarray(0, cut), line.subarray(cut)])).toBe(whole);
  });

  test('a \\u-escaped backslash stays one character and cannot join two fields', async () => {
    const client = await db.pool.connect();
    try {
      await client.query('CREATE TEMP TABLE esc (id int, txt text, other text)');
      const tableInfo: TableInfo = {
        schema: 'pg_temp',
        name: 'esc',
        primaryKey: [],
        hasAlwaysIdentity: false,
        columns: ['id', 'txt', 'other'].map((name) => ({ name, type: 'text', notNull: false, kind: 'scalar' as const })),
      };
      const line = '{"id":1,"txt":"x\\u005c","other":"y"}\n{"id":2,"txt":"x\\u005cn\\u005c\\u005c","other":"z"}\n';
      expect(await loadTableDirect(client, tableInfo, 'db/esc.jsonl', Readable.from([Buffer.from(line)]))).toBe(2);
      const r = await client.query('SELECT txt, other FROM esc ORDER BY id');
      expect(r.rows).toEqual([
        { txt: 'x\\', other: 'y' },
        { txt: 'x\\n\\\\', other: 'z' },
      ]);
    } finally {
      client.release();
    }
  });

  test('with freeze, the table is emptied and its rows are written frozen, visible even to an older snapshot', async () => {
    await db.pool.query('CREATE TABLE direct.frozen (id int, txt text)');
    await db.pool.query(`INSERT INTO direct.frozen VALUES (0, 'seeded by a migration')`);
    const tableInfo: TableInfo = {
      schema: 'direct',
      name: 'frozen',
      primaryKey: [],
      hasAlwaysIdentity: false,
      columns: ['id', 'txt'].map((name) => ({ name, type: 'text', notNull: false, kind: 'scalar' as const })),
    };
    const jsonl = Buffer.from('{"id":1,"txt":"a"}\n{"id":2,"txt":"b"}\n');
    const older = await db.pool.connect();
    const loader = await db.pool.connect();
    try {
      // A snapshot taken before the load: ordinary rows committed later are invisible to it, frozen ones are not.
      await older.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await older.query('SELECT 1');
      await loader.query('BEGIN');
      expect(await loadTableDirect(loader, tableInfo, 'db/direct.frozen.jsonl', Readable.from([jsonl]), { freeze: true })).toBe(2);
      await loader.query('COMMIT');
      expect((await older.query('SELECT id FROM direct.frozen ORDER BY id')).rows).toEqual([{ id: 1 }, { id: 2 }]);
      await older.query('COMMIT');
      // COPY FREEZE refuses a table this transaction did not create or empty: the option cannot silently do nothing.
      await loader.query('BEGIN');
      await loader.query('SELECT 1');
      await expect(loader.query('COPY direct.frozen (id, txt) FROM STDIN WITH (FREEZE)')).rejects.toThrow(/COPY FREEZE/);
      await loader.query('ROLLBACK');
    } finally {
      older.release();
      loader.release();
    }
  });

  test.each([
    ['{"id":1,"txt":"unterminated}\n', /line 1 is not a valid row: unterminated string/],
    ['[1,2]\n', /line 1 is not a valid row: not a JSON object/],
    ['{"id":1,"nope":2}\n', /unknown column "nope"/],
    ['{"id":1}{"id":2}\n', /data after the object/],
    ['{"id":1,"txt":tru}\n', /invalid value "tru"/],
    ['{"id":1}\n{"id":2', /line 2 does not end with a newline/],
    ['{"id":1,"txt":"\\ud800"}\n', /unpaired surrogate/],
    ['{"id":1,"txt":"\\udc00x"}\n', /unpaired surrogate/],
    ['{"id":1,"txt":"\\u12"}\n', /invalid \\u escape/],
  ])('malformed input %j is refused with its line', async (input, message) => {
    const t = new JsonlToCopy([{ name: 'id', kind: 'scalar' }, { name: 'txt', kind: 'scalar' }], 'db/x.jsonl');
    t.resume();
    const failed = new Promise((_r, reject) => t.on('error', reject));
    t.end(Buffer.from(input));
    await expect(failed).rejects.toMatchObject({ code: 'E_ARCHIVE_BAD_ROW', message: expect.stringMatching(message) });
  });
});

describe('rebuilding keys and indexes after a load', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => db.drop());

  /** Everything the rebuild must bring back as it was: constraints, their flags, and every index. */
  async function catalog(schema: string): Promise<string[]> {
    const res = await db.pool.query<{ d: string }>(
      `SELECT conrelid::regclass::text || ' ' || conname || ' ' || contype::text || ' ' || pg_get_constraintdef(oid) || ' ' || condeferrable::text || condeferred::text || ' index ' || conindid::regclass::text AS d
         FROM pg_constraint WHERE connamespace = $1::regnamespace AND contype <> 'n'
       UNION ALL
       SELECT pg_get_indexdef(x.indexrelid) || ' primary ' || x.indisprimary::text || ' immediate ' || x.indimmediate::text
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE i.relnamespace = $1::regnamespace
       UNION ALL
       SELECT attrelid::regclass::text || '.' || attname || ' not null ' || attnotnull::text FROM pg_attribute
        WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'p')) AND attnum > 0
       ORDER BY 1`,
      [schema],
    );
    return res.rows.map((r) => r.d);
  }

  test('every kind of key comes back as it was, with the index builds of a table run side by side on two connections', async () => {
    await db.pool.query(`CREATE SCHEMA keys`);
    await db.pool.query(`CREATE TABLE keys.t (
      id int PRIMARY KEY WITH (fillfactor = 70), b int, c int, r int4range,
      CONSTRAINT t_b_uniq UNIQUE NULLS NOT DISTINCT (b) INCLUDE (c),
      CONSTRAINT t_c_uniq UNIQUE (c) DEFERRABLE INITIALLY DEFERRED,
      CONSTRAINT t_c_later UNIQUE (c, b) DEFERRABLE,
      CONSTRAINT t_r_excl EXCLUDE USING gist (r WITH &&))`);
    await db.pool.query(`CREATE INDEX t_b_idx ON keys.t (b DESC) WHERE b > 10`);
    await db.pool.query(`CREATE TABLE keys.u (id int, t_id int REFERENCES keys.t (id), PRIMARY KEY (id))`);
    await db.pool.query(`CREATE TABLE keys.parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)`);
    await db.pool.query(`CREATE TABLE keys.parted_2026 PARTITION OF keys.parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`);
    await db.pool.query(`CREATE INDEX parted_at_idx ON keys.parted (at)`);
    await db.pool.query(`INSERT INTO keys.t SELECT g, g, g, int4range(g, g + 1) FROM generate_series(1, 5000) g`);
    await db.pool.query(`INSERT INTO keys.u SELECT g, g FROM generate_series(1, 100) g`);
    await db.pool.query(`INSERT INTO keys.parted SELECT g, '2026-06-01' FROM generate_series(1, 100) g`);
    const before = await catalog('keys');

    const client = await db.pool.connect();
    const other = await db.pool.connect();
    try {
      const dropped = await dropForLoad(client, 'keys');
      // Primary keys and unique constraints of plain tables build as plain indexes; the rest are added whole.
      expect(Object.fromEntries(dropped.keys.map((k) => [k.name, k.index !== null]))).toEqual({
        t_pkey: true,
        t_b_uniq: true,
        t_c_uniq: true,
        t_c_later: true,
        t_r_excl: false,
        u_pkey: true,
        parted_pkey: false,
      });
      expect(await catalog('keys')).not.toEqual(before);
      for (const table of ['t', 'u', 'parted']) {
        const builds = indexBuilds(
          dropped.keys.filter((k) => k.table === table),
          dropped.indexes.filter((i) => i.table === table),
        );
        // Two connections, each in its own transaction, as restore runs them.
        const queue = [...builds];
        await Promise.all(
          [client, other].map(async (c) => {
            for (let b = queue.shift(); b; b = queue.shift()) {
              await c.query('BEGIN');
              await buildIndex(c, b);
              await c.query('COMMIT');
            }
          }),
        );
        await attachKeys(client, dropped.keys.filter((k) => k.table === table));
      }
      for (const fk of dropped.foreignKeys) await client.query(`ALTER TABLE keys.${fk.table} ADD CONSTRAINT ${fk.name} ${fk.definition}`);
    } finally {
      client.release();
      other.release();
    }
    expect(await catalog('keys')).toEqual(before);
  });

  test("a duplicate found by a key's index build is that key's violation, and so is one under a key added whole", async () => {
    await db.pool.query(`CREATE SCHEMA dup`);
    await db.pool.query(`CREATE TABLE dup.t (id int PRIMARY KEY, r int4range, EXCLUDE USING gist (r WITH &&))`);
    const client = await db.pool.connect();
    try {
      const dropped = await dropForLoad(client, 'dup');
      await client.query(`INSERT INTO dup.t VALUES (1, '[1,5)'), (1, '[3,8)')`);
      const [build] = indexBuilds(dropped.keys, dropped.indexes);
      await expect(buildIndex(client, build)).rejects.toMatchObject({
        code: 'E_RESTORE_FAILED',
        message: expect.stringMatching(/the restored data violates t_pkey on t: could not create unique index "t_pkey"/),
      });
      await expect(attachKeys(client, dropped.keys.filter((k) => k.index === null))).rejects.toMatchObject({
        code: 'E_RESTORE_FAILED',
        message: expect.stringMatching(/the restored data violates t_r_excl on t: could not create exclusion constraint/),
      });
    } finally {
      client.release();
    }
  });
});
