import type pg from 'pg';
import type { ColumnKind } from './jsonl-to-copy';
import { APP_SCHEMA, MIGRATIONS_TABLE } from './migrate';

/** Tables that are never backed up or restored: transient state and migration bookkeeping. */
export const EXCLUDED_TABLES = new Set(['sessions', 'rate_limits', MIGRATIONS_TABLE]);

export interface TableInfo {
  schema: string;
  name: string;
  /**
   * Columns that hold data (generated columns are left out: PostgreSQL computes them). `kind` tells the
   * direct JSONL-to-COPY load how to write the value; null for a type it does not handle (composite,
   * domain, arrays of those), which makes the table load through jsonb_populate_record instead.
   */
  columns: { name: string; type: string; notNull: boolean; kind: ColumnKind | null }[];
  primaryKey: string[];
  /** Identity columns declared GENERATED ALWAYS need OVERRIDING SYSTEM VALUE on load. */
  hasAlwaysIdentity: boolean;
}

export interface SequenceInfo {
  schema: string;
  name: string;
  /** The range setval accepts, as decimal text (bigint). */
  min: string;
  max: string;
}

/** Every ordinary (or partitioned root) table of the application schema, in name order. */
export async function listTables(client: pg.ClientBase, schema = APP_SCHEMA): Promise<TableInfo[]> {
  const res = await client.query<{ name: string; columns: { name: string; type: string; identity: string; notnull: boolean; kind: ColumnKind | null }[]; pk: string[] | null }>(
    `SELECT c.relname AS name,
            (SELECT json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod), 'identity', a.attidentity, 'notnull', a.attnotnull,
                                       'kind', (SELECT CASE
                                                  WHEN t.typname IN ('json', 'jsonb') THEN 'json'
                                                  WHEN t.typtype IN ('b', 'e', 'r') AND t.typcategory <> 'A' THEN 'scalar'
                                                  WHEN t.typcategory = 'A' AND e.typtype IN ('b', 'e') AND e.typcategory <> 'A' AND e.typname NOT IN ('json', 'jsonb') THEN 'array'
                                                END
                                                  FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
                                                 WHERE t.oid = a.atttypid)) ORDER BY a.attnum)
               FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
            (SELECT array_agg(a.attname::text ORDER BY k.ord)
               FROM pg_constraint con
               CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              WHERE con.conrelid = c.oid AND con.contype = 'p') AS pk
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      ORDER BY c.relname`,
    [schema],
  );
  return res.rows
    .filter((r) => !EXCLUDED_TABLES.has(r.name))
    .map((r) => ({
      schema,
      name: r.name,
      columns: (r.columns ?? []).map((c) => ({ name: c.name, type: c.type, notNull: c.notnull, kind: c.kind })),
      primaryKey: r.pk ?? [],
      hasAlwaysIdentity: (r.columns ?? []).some((c) => c.identity === 'a'),
    }));
}

/** Sequences of the application schema (identity and serial ones included). */
export async function listSequences(client: pg.ClientBase, schema = APP_SCHEMA): Promise<SequenceInfo[]> {
  const res = await client.query<{ name: string; min: string; max: string }>(
    `SELECT c.relname AS name, s.seqmin::text AS min, s.seqmax::text AS max
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
      WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY c.relname`,
    [schema],
  );
  return res.rows.map((r) => ({ schema, name: r.name, min: r.min, max: r.max }));
}

export interface TableEstimate {
  name: string;
  /** PostgreSQL's row estimate (pg_class.reltuples), null when the table was never vacuumed or analyzed. */
  rows: number | null;
  /** Heap plus TOAST bytes (pg_table_size), partitions included. */
  bytes: number;
}

/**
 * The planner's own estimates: what progress percentages are measured against. Sizes come from
 * pg_table_size, which must open each table: behind an exclusive lock (a migration, an ALTER TABLE)
 * that waits, so it may wait at most 200 ms; then the pages VACUUM last counted (pg_class.relpages)
 * stand in, which need no lock.
 */
export async function tableEstimates(client: pg.ClientBase, schema = APP_SCHEMA): Promise<Map<string, TableEstimate>> {
  // A plain table is its own leaf; a partitioned one is the sum of its leaf partitions.
  const query = (size: string) => `
    WITH leaves AS (
      SELECT c.relname AS name, p.oid AS leaf, p.reltuples, p.relpages, p.reltoastrelid
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL (SELECT c.oid AS relid WHERE c.relkind = 'r'
                            UNION ALL SELECT t.relid FROM pg_partition_tree(c.oid) t WHERE c.relkind = 'p' AND t.isleaf) l
        JOIN pg_class p ON p.oid = l.relid
       WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition)
    SELECT name, (CASE WHEN bool_or(reltuples < 0) THEN NULL ELSE sum(GREATEST(reltuples, 0)) END)::float8 AS rows,
           COALESCE(sum(${size}), 0)::text AS bytes
      FROM leaves GROUP BY name`;
  let res: pg.QueryResult<{ name: string; rows: number | null; bytes: string }>;
  await client.query('BEGIN');
  try {
    await client.query(`SET LOCAL lock_timeout = '200ms'`);
    res = await client.query(query('pg_table_size(leaf)'), [schema]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    if ((err as { code?: string }).code !== '55P03') throw err; // lock_not_available
    res = await client.query(
      query(`(relpages + COALESCE((SELECT x.relpages FROM pg_class x WHERE x.oid = reltoastrelid), 0))::bigint * current_setting('block_size')::bigint`),
      [schema],
    );
  }
  return new Map(res.rows.map((r) => [r.name, { name: r.name, rows: r.rows === null ? null : Math.round(r.rows), bytes: Number(r.bytes) }]));
}
