import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { ident, qualified } from './sql';
import { copyColumns, JsonlToCopy } from './jsonl-to-copy';
import type { TableInfo } from './introspect';

/**
 * SQL and mechanisms for loading an archive into the database. Restore runs them against its staging
 * schema (src/db/staging.ts), on several connections: nothing reaches the live schema until the swap
 * transaction commits.
 */

const NOT_FROM_EXTENSION = (catalog: string, oid: string) =>
  `NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '${catalog}'::regclass AND d.objid = ${oid} AND d.deptype = 'e')`;

/**
 * Drops everything the application put in the schema (tables, views, sequences, types, functions)
 * but keeps the schema itself, so its owner and grants, and objects of extensions installed there,
 * survive a restore.
 */
export async function flushSchema(client: pg.ClientBase, schema: string): Promise<void> {
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`);
  const rels = await client.query<{ kind: string; name: string }>(
    `SELECT c.relkind AS kind, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND NOT c.relispartition AND ${NOT_FROM_EXTENSION('pg_class', 'c.oid')}`,
    [schema],
  );
  const dropKinds: [string[], string][] = [
    [['r', 'p', 'f'], 'TABLE'],
    [['v'], 'VIEW'],
    [['m'], 'MATERIALIZED VIEW'],
    [['S'], 'SEQUENCE'],
  ];
  for (const [kinds, what] of dropKinds) {
    const names = rels.rows.filter((r) => kinds.includes(r.kind)).map((r) => qualified(schema, r.name));
    if (names.length) await client.query(`DROP ${what} IF EXISTS ${names.join(', ')} CASCADE`);
  }
  const routines = await client.query<{ sig: string }>(
    `SELECT p.oid::regprocedure::text AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1 AND ${NOT_FROM_EXTENSION('pg_proc', 'p.oid')}`,
    [schema],
  );
  for (const r of routines.rows) await client.query(`DROP ROUTINE IF EXISTS ${r.sig} CASCADE`);
  const types = await client.query<{ name: string; domain: boolean }>(
    `SELECT t.typname AS name, t.typtype = 'd' AS domain FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = $1 AND t.typtype IN ('e', 'd', 'r', 'c') AND t.typcategory <> 'A'
        AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        AND ${NOT_FROM_EXTENSION('pg_type', 't.oid')}`,
    [schema],
  );
  for (const t of types.rows) await client.query(`DROP ${t.domain ? 'DOMAIN' : 'TYPE'} IF EXISTS ${qualified(schema, t.name)} CASCADE`);
}

/** Empties the tables and resets their identities (rows seeded by migrations go too). */
export async function truncateTables(client: pg.ClientBase, tables: { schema: string; name: string }[]): Promise<void> {
  if (tables.length === 0) return;
  await client.query(`TRUNCATE ${tables.map((t) => qualified(t.schema, t.name)).join(', ')} RESTART IDENTITY CASCADE`);
}

export interface DeferredConstraint {
  table: string;
  schema: string;
  name: string;
  definition: string;
  /** A foreign key's referenced table (null for other constraints). */
  refSchema: string | null;
  refTable: string | null;
}

export interface DeferredIndex {
  /** The table the index is on (its schema is the one dropForLoad was given). */
  table: string;
  name: string;
  definition: string;
}

/**
 * A primary key, unique or exclusion constraint dropped for the load. A primary key or unique
 * constraint of a plain table comes back in two steps, so that a table's index builds can run side by
 * side on several connections, as pg_restore -j builds them: its index alone (`index`, CREATE UNIQUE
 * INDEX, which locks the table SHARE like any other index build), then the constraint put on that index
 * (attachKeys: ADD CONSTRAINT … USING INDEX, a change of the catalog only). The others (exclusion
 * constraints, keys of partitioned tables and of partitions, where USING INDEX is not allowed, and
 * keys whose index has a tablespace of its own) have no `index` and are added whole by attachKeys.
 */
export interface DeferredKey extends DeferredConstraint {
  index: string | null;
  indexName: string;
  /** pg_constraint.contype: p, u or x. */
  kind: string;
  deferrable: boolean;
  deferred: boolean;
}

export interface DroppedForLoad {
  /** Primary keys, unique and exclusion constraints. */
  keys: DeferredKey[];
  indexes: DeferredIndex[];
  /** Foreign keys: re-added last, which checks every row. */
  foreignKeys: DeferredConstraint[];
}

async function constraintsOf(client: pg.ClientBase, schema: string, types: string[]): Promise<DeferredKey[]> {
  const res = await client.query<DeferredKey>(
    `SELECT c.conname AS name, t.relname AS table, n.nspname AS schema, pg_get_constraintdef(c.oid) AS definition,
            rn.nspname AS "refSchema", r.relname AS "refTable", c.contype AS kind, c.condeferrable AS deferrable, c.condeferred AS deferred,
            i.relname AS "indexName",
            CASE WHEN c.contype IN ('p', 'u') AND t.relkind = 'r' AND NOT t.relispartition AND i.reltablespace = 0
                 THEN pg_get_indexdef(c.conindid) END AS index
       FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
       LEFT JOIN pg_class r ON r.oid = c.confrelid LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
       LEFT JOIN pg_class i ON i.oid = c.conindid
      WHERE n.nspname = $1 AND c.contype = ANY($2) AND c.conparentid = 0
      ORDER BY t.relname, c.conname`,
    [schema, types],
  );
  return res.rows;
}

/**
 * Removes foreign keys, keys and secondary indexes before a bulk load, as pg_restore does: rows then
 * load in any order (cycles, self-references) into bare tables, and every index is built once, by a
 * sort, instead of row by row. Check and NOT NULL constraints stay, so bad values fail during the load.
 * The keys, indexes and foreign keys that partitions inherit go with their partitioned table's and
 * come back with it.
 */
export async function dropForLoad(client: pg.ClientBase, schema: string): Promise<DroppedForLoad> {
  const foreignKeys = await constraintsOf(client, schema, ['f']);
  for (const fk of foreignKeys) await client.query(`ALTER TABLE ${qualified(fk.schema, fk.table)} DROP CONSTRAINT ${ident(fk.name)}`);
  const keys = await constraintsOf(client, schema, ['p', 'u', 'x']);
  for (const k of keys) await client.query(`ALTER TABLE ${qualified(k.schema, k.table)} DROP CONSTRAINT ${ident(k.name)}`);
  const idx = await client.query<DeferredIndex>(
    // A partitioned table's index is shown ON ONLY the table; built without ONLY, it builds its partitions' too.
    `SELECT t.relname AS table, i.relname AS name,
            CASE WHEN t.relkind = 'p' THEN regexp_replace(pg_get_indexdef(i.oid), ' ON ONLY ', ' ON ') ELSE pg_get_indexdef(i.oid) END AS definition
       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = i.relnamespace
      WHERE n.nspname = $1 AND NOT i.relispartition AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
      ORDER BY i.relname`,
    [schema],
  );
  for (const i of idx.rows) await client.query(`DROP INDEX ${qualified(schema, i.name)}`);
  return { keys, indexes: idx.rows, foreignKeys };
}

/** One index build of a table: a key's index or a secondary index. */
export interface IndexBuild {
  table: string;
  name: string;
  statement: string;
  /** A key's index: a failure is that key's violation. */
  key: boolean;
}

/**
 * The index builds that bring back a table's keys and indexes (what dropForLoad removed;
 * addForeignKeys does the rest), keys' first. Each locks the table SHARE, so they can run side by side
 * on different connections; once all have, attachKeys finishes the table. Building a primary key or
 * unique index checks uniqueness and adding a foreign key checks every row against it: this is where
 * a restore proves the constraints hold.
 */
export function indexBuilds(keys: DeferredKey[], indexes: DeferredIndex[]): IndexBuild[] {
  return [
    ...keys.filter((k) => k.index !== null).map((k) => ({ table: k.table, name: k.name, statement: k.index!, key: true })),
    ...indexes.map((i) => ({ table: i.table, name: i.name, statement: i.definition, key: false })),
  ];
}

export async function buildIndex(client: pg.ClientBase, build: IndexBuild): Promise<void> {
  try {
    await client.query(build.statement);
  } catch (err) {
    const what = build.key ? `${build.name} on ${build.table}` : `index ${build.name}`;
    throw new CofferError('E_RESTORE_FAILED', `the restored data violates ${what}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Puts a table's keys back once every one of its index builds is done: each primary key or unique
 * constraint on the index built for it, each of the others whole. ADD CONSTRAINT locks the table
 * ACCESS EXCLUSIVE, so nothing else may be working on the table then.
 */
export async function attachKeys(client: pg.ClientBase, keys: DeferredKey[]): Promise<void> {
  for (const k of keys) {
    const clause =
      k.index === null
        ? k.definition
        : `${k.kind === 'p' ? 'PRIMARY KEY' : 'UNIQUE'} USING INDEX ${ident(k.indexName)}${k.deferrable ? ' DEFERRABLE' : ''}${k.deferred ? ' INITIALLY DEFERRED' : ''}`;
    try {
      await client.query(`ALTER TABLE ${qualified(k.schema, k.table)} ADD CONSTRAINT ${ident(k.name)} ${clause}`);
    } catch (err) {
      throw new CofferError('E_RESTORE_FAILED', `the restored data violates ${k.name} on ${k.table}: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/**
 * Re-adds foreign keys, one after the other. Side by side, two foreign keys that share a table wait
 * for each other (each locks both of its tables SHARE ROW EXCLUSIVE) and can deadlock; restore runs
 * only foreign keys without a table in common at the same time.
 */
export async function addForeignKeys(client: pg.ClientBase, foreignKeys: DeferredConstraint[]): Promise<void> {
  for (const fk of foreignKeys) {
    try {
      await client.query(`ALTER TABLE ${qualified(fk.schema, fk.table)} ADD CONSTRAINT ${ident(fk.name)} ${fk.definition}`);
    } catch (err) {
      throw new CofferError('E_RESTORE_FAILED', `the restored data violates foreign key ${fk.name} on ${fk.table}: ${errorMessage(err)}`, { cause: err });
    }
  }
}

const STAGE = 'coffer_restore_stage';

export async function createStage(client: pg.ClientBase): Promise<void> {
  await client.query(`CREATE TEMP TABLE ${STAGE} (line text NOT NULL) ON COMMIT DROP`);
}

/**
 * Loads one table from a JSONL stream: COPY the lines verbatim into a staging table (the same \x01/\x02
 * CSV trick as the dump, so JSON text passes untouched), then let PostgreSQL turn each line into a row
 * with jsonb_populate_record. Node never parses a row. Returns the number of rows inserted.
 */
export async function loadTable(client: pg.PoolClient, table: TableInfo, entry: string, lines: Readable): Promise<number> {
  await client.query(`TRUNCATE ${STAGE}`);
  try {
    await pipeline(lines, client.query(copyFrom(`COPY ${STAGE} (line) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')`)));
  } catch (err) {
    if (isCofferError(err)) throw err;
    throw new CofferError('E_ARCHIVE_BAD_ROW', `${entry}: cannot be loaded: ${errorMessage(err)}`, { cause: err });
  }
  const cols = table.columns.map((c) => ident(c.name)).join(', ');
  const overriding = table.hasAlwaysIdentity ? ' OVERRIDING SYSTEM VALUE' : '';
  try {
    const res = await client.query(
      `INSERT INTO ${qualified(table.schema, table.name)} (${cols})${overriding}
       SELECT ${table.columns.map(selectColumn).join(', ')}
         FROM ${STAGE} s, jsonb_populate_record(NULL::${qualified(table.schema, table.name)}, s.line::jsonb) r`,
    );
    return res.rowCount ?? 0;
  } catch (err) {
    const pgErr = err as { code?: string; message?: string };
    // 22P02 / 22023 / 22030: malformed JSON or a value that does not fit its column.
    const code = pgErr.code && pgErr.code.startsWith('22') ? 'E_ARCHIVE_BAD_ROW' : 'E_RESTORE_FAILED';
    throw new CofferError(code, `${entry}: the database refused a row: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * row_to_json writes a jsonb 'null' and an SQL NULL alike, and jsonb_populate_record reads both as SQL
 * NULL. In a NOT NULL json/jsonb column only the jsonb 'null' can have been there, so it is put back.
 * (In a nullable column the two cannot be told apart; they restore as SQL NULL.)
 */
function selectColumn(c: TableInfo['columns'][number]): string {
  const col = `r.${ident(c.name)}`;
  if (c.notNull && (c.type === 'jsonb' || c.type === 'json')) return `COALESCE(${col}, 'null'::${c.type})`;
  return col;
}

/** Whether every column of the table can take the direct JSONL-to-COPY path. */
export function canLoadDirect(table: TableInfo): boolean {
  return table.columns.every((c) => c.kind !== null);
}

export interface DirectLoadOptions {
  /**
   * Empty the table first and write its rows frozen (`TRUNCATE`, then `COPY … WITH (FREEZE)`, in the
   * caller's transaction, which must be open and must not have read anything yet). The rows are then
   * all-visible from the start: the index builds and foreign key checks that read the table next set
   * no hint bits and dirty no page again, and no vacuum has to freeze them later. For a table no other
   * session can see or lock meanwhile (a restore's staging tables): TRUNCATE locks it exclusively
   * until COMMIT, and a frozen row is visible to every snapshot, even one older than the load.
   */
  freeze?: boolean;
}

/**
 * Loads one table by converting its JSONL to COPY text in Node (no JSON.parse, exact number text) and
 * COPYing straight into the table: PostgreSQL does no JSON work at all. Returns the rows copied.
 */
export async function loadTableDirect(client: pg.PoolClient, table: TableInfo, entry: string, lines: Readable, opts: DirectLoadOptions = {}): Promise<number> {
  const columns = copyColumns(table);
  const name = qualified(table.schema, table.name);
  if (opts.freeze) await client.query(`TRUNCATE ${name}`);
  const copy = client.query(copyFrom(`COPY ${name} (${table.columns.map((c) => ident(c.name)).join(', ')}) FROM STDIN${opts.freeze ? ' WITH (FREEZE)' : ''}`));
  try {
    await pipeline(lines, new JsonlToCopy(columns, entry), copy);
  } catch (err) {
    if (isCofferError(err)) throw err;
    const pgErr = err as { code?: string };
    const code = pgErr.code && pgErr.code.startsWith('22') ? 'E_ARCHIVE_BAD_ROW' : 'E_RESTORE_FAILED';
    throw new CofferError(code, `${entry}: the database refused a row: ${errorMessage(err)}`, { cause: err });
  }
  return copy.rowCount;
}

export async function setSequence(client: pg.ClientBase, schema: string, name: string, lastValue: string, isCalled: boolean): Promise<void> {
  await client.query(`SELECT setval($1::regclass, $2::bigint, $3)`, [qualified(schema, name), lastValue, isCalled]);
}

/** Deferred constraints are checked now, inside the transaction, so a violation names itself. */
export async function checkDeferredConstraints(client: pg.ClientBase): Promise<void> {
  try {
    await client.query('SET CONSTRAINTS ALL IMMEDIATE');
  } catch (err) {
    throw new CofferError('E_RESTORE_FAILED', `the restored data violates a constraint: ${errorMessage(err)}`, { cause: err });
  }
}
