import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import type { Readable } from 'node:stream';
import { CofferError } from '../core/errors';
import { ident, literal, qualified } from './sql';
import type { SequenceInfo, TableInfo } from './introspect';

/**
 * SQL that makes PostgreSQL emit one JSON object a line. CSV with quote and delimiter bytes that JSON
 * text can never contain raw (\x01, \x02) prints each value verbatim, so Node never parses a row.
 */
export function copyOutSql(table: TableInfo): string {
  const cols = table.columns.map((c) => ident(c.name)).join(', ');
  const order = (table.primaryKey.length ? table.primaryKey : table.columns.map((c) => c.name)).map(ident).join(', ');
  const select = `SELECT ${cols} FROM ${qualified(table.schema, table.name)} ORDER BY ${order}`;
  return `COPY (SELECT row_to_json(t) FROM (${select}) t) TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')`;
}

/** A stream of the table's rows as JSONL, in primary-key order, from the client's snapshot. */
export function copyOutTable(client: pg.PoolClient, table: TableInfo): Readable {
  return client.query(copyTo(copyOutSql(table)));
}

/**
 * Opens the snapshot every backup connection reads from. DEFERRABLE is kept for what it says (it has
 * effect only under SERIALIZABLE): the snapshot never blocks writers and writers never disturb it.
 */
export async function beginSnapshot(client: pg.ClientBase): Promise<void> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE');
}

/** Names the open snapshot so that other connections can share it (valid while this transaction lasts). */
export async function exportSnapshot(client: pg.ClientBase): Promise<string> {
  const res = await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id');
  return res.rows[0].id;
}

/** Starts a transaction on `client` that sees exactly the exported snapshot `id`, as pg_dump -j's workers do. */
export async function joinSnapshot(client: pg.ClientBase, id: string): Promise<void> {
  if (!/^[0-9A-Fa-f-]+$/.test(id)) throw new CofferError('E_INTERNAL', `unexpected snapshot id '${id}'`);
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
  // SET TRANSACTION takes no parameters.
  await client.query(`SET TRANSACTION SNAPSHOT ${literal(id)}`);
}

/**
 * Table sizes in bytes (heap plus TOAST, partitions summed) from the pages VACUUM/ANALYZE last counted:
 * catalog reads only, so a table locked by someone else cannot hold the backup up before it starts.
 */
export async function tableSizesFromCatalog(client: pg.ClientBase, schema: string): Promise<Map<string, number>> {
  const res = await client.query<{ name: string; bytes: string }>(
    `SELECT c.relname AS name,
            (COALESCE(sum(p.relpages + COALESCE(t.relpages, 0)), 0) * current_setting('block_size')::bigint)::text AS bytes
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       CROSS JOIN LATERAL (SELECT c.oid AS relid WHERE c.relkind = 'r'
                           UNION ALL SELECT pt.relid FROM pg_partition_tree(c.oid) pt WHERE c.relkind = 'p' AND pt.isleaf) l
       JOIN pg_class p ON p.oid = l.relid LEFT JOIN pg_class t ON t.oid = p.reltoastrelid
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      GROUP BY c.relname`,
    [schema],
  );
  return new Map(res.rows.map((r) => [r.name, Number(r.bytes)]));
}

export async function sequenceState(client: pg.ClientBase, seq: SequenceInfo): Promise<{ last_value: string; is_called: boolean }> {
  const res = await client.query<{ last_value: string; is_called: boolean }>(`SELECT last_value::text AS last_value, is_called FROM ${qualified(seq.schema, seq.name)}`);
  return res.rows[0];
}

/** The migrations recorded in the database, as seen by the client's snapshot. */
export async function appliedMigrationNames(client: pg.ClientBase, migrationsTable: string, schema: string): Promise<string[]> {
  const exists = await client.query(`SELECT to_regclass($1) AS t`, [`${ident(schema)}.${ident(migrationsTable)}`]);
  if (!exists.rows[0].t) {
    throw new CofferError('E_BACKUP_FAILED', `the database has no ${schema}.${migrationsTable} table: it is not a coffer database, or it was never migrated (run coffer migrate)`);
  }
  const res = await client.query<{ name: string }>(`SELECT name FROM ${qualified(schema, migrationsTable)} ORDER BY name`);
  return res.rows.map((r) => r.name);
}
