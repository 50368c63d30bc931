import { withClient } from './postgres';

/**
 * The fidelity check: does a restored database equal the source, table by table (rows and sequences)?
 * The same comparison as test/support/archive.ts fingerprint(), computed inside PostgreSQL so that
 * nothing of the size of a table crosses the wire or sits in memory:
 *
 *   SELECT count(*), md5(string_agg(md5(row_to_json(t)::text), '' ORDER BY <primary key>)) FROM <table> t
 *
 * Each row is reduced to the md5 of its row_to_json text, and the table to the md5 of those digests
 * concatenated in primary-key order. That is exact in the sense that matters here (two tables hash
 * alike only if every row's JSON text is identical and in the same order, barring an md5 collision
 * between non-adversarial rows) and bounded: the aggregate holds 32 bytes a row (32 MB for 1M rows),
 * far from the 1 GB limit of a text value that a string_agg of the rows themselves would hit at
 * scale 4. Tables without a primary key are ordered by the row text itself.
 *
 * What differs legitimately is left out: coffer_migrations is compared by migration name only (a
 * restore re-applies migrations, with new applied_at), backup_log only on the rows that existed when
 * the data set was generated (id <= the maximum then; backups and restores add their own audit rows),
 * and the backup_log id sequence only has to be at least that maximum. Everything else, including
 * sessions and rate_limits (empty in the source, never backed up), must be equal. The schema (tables,
 * indexes, constraints with their definitions, enum labels) is compared too, so a restore that forgot
 * an index or a foreign key does not pass.
 */

export interface Fingerprint {
  tables: Record<string, { rows: number; hash: string }>;
  sequences: Record<string, { lastValue: string; isCalled: boolean }>;
  schema: Record<string, string>;
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;

export async function fingerprint(url: string, backupLogMaxId: number): Promise<Fingerprint> {
  return withClient(url, async (c) => {
    const out: Fingerprint = { tables: {}, sequences: {}, schema: {} };
    const tables = await c.query<{ name: string; pk: string[] | null }>(
      `SELECT c.relname AS name,
              (SELECT array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_constraint con CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                WHERE con.conrelid = c.oid AND con.contype = 'p') AS pk
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname`,
    );
    for (const t of tables.rows) {
      let sql: string;
      if (t.name === 'coffer_migrations') {
        sql = `SELECT count(*)::text AS rows, coalesce(md5(string_agg(name, ',' ORDER BY name)), '') AS hash FROM public.coffer_migrations`;
      } else {
        const order = t.pk?.length ? t.pk.map((col) => `t.${quote(col)}`).join(', ') : 'row_to_json(t)::text';
        const where = t.name === 'backup_log' ? `WHERE t.id <= ${Number(backupLogMaxId)}` : '';
        sql = `SELECT count(*)::text AS rows, coalesce(md5(string_agg(md5(row_to_json(t)::text), '' ORDER BY ${order})), '') AS hash
                 FROM public.${quote(t.name)} t ${where}`;
      }
      const res = await c.query<{ rows: string; hash: string }>(sql);
      out.tables[t.name] = { rows: Number(res.rows[0].rows), hash: res.rows[0].hash };
    }
    const seqs = await c.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1`,
    );
    for (const s of seqs.rows) {
      const v = await c.query<{ last_value: string; is_called: boolean }>(`SELECT last_value::text AS last_value, is_called FROM public.${quote(s.name)}`);
      out.sequences[s.name] = { lastValue: v.rows[0].last_value, isCalled: v.rows[0].is_called };
    }
    const schema = await c.query<{ objects: string | null; constraints: string | null; indexes: string | null; enums: string | null }>(
      `SELECT (SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public') AS objects,
              (SELECT string_agg(t.relname || '.' || con.conname || ' ' || pg_get_constraintdef(con.oid) || CASE WHEN con.convalidated THEN '' ELSE ' NOT VALID' END,
                                 E'\n' ORDER BY t.relname, con.conname)
                 FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                WHERE n.nspname = 'public') AS constraints,
              (SELECT string_agg(pg_get_indexdef(x.indexrelid), E'\n' ORDER BY pg_get_indexdef(x.indexrelid))
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace
                WHERE n.nspname = 'public') AS indexes,
              (SELECT string_agg(t.typname || ':' || e.enumlabel, ',' ORDER BY t.typname, e.enumsortorder)
                 FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE n.nspname = 'public') AS enums`,
    );
    const row = schema.rows[0];
    out.schema = { objects: row.objects ?? '', constraints: row.constraints ?? '', indexes: row.indexes ?? '', enums: row.enums ?? '' };
    return out;
  });
}

/** What differs between the source and a restored copy; empty when the restore is faithful. */
export function compareFingerprints(source: Fingerprint, restored: Fingerprint, backupLogMaxId: number): string[] {
  const problems: string[] = [];
  for (const name of new Set([...Object.keys(source.tables), ...Object.keys(restored.tables)])) {
    const a = source.tables[name];
    const b = restored.tables[name];
    if (!a || !b) problems.push(`table ${name} ${a ? 'missing after restore' : 'not in the source'}`);
    else if (a.rows !== b.rows) problems.push(`table ${name}: ${b.rows} rows, source has ${a.rows}`);
    else if (a.hash !== b.hash) problems.push(`table ${name}: same row count (${a.rows}), different content`);
  }
  for (const name of new Set([...Object.keys(source.sequences), ...Object.keys(restored.sequences)])) {
    const a = source.sequences[name];
    const b = restored.sequences[name];
    if (!a || !b) problems.push(`sequence ${name} ${a ? 'missing after restore' : 'not in the source'}`);
    else if (name === 'backup_log_id_seq') {
      if (BigInt(b.lastValue) < BigInt(backupLogMaxId)) problems.push(`sequence ${name}: ${b.lastValue}, below the source's ${backupLogMaxId} audit rows`);
    } else if (a.lastValue !== b.lastValue || a.isCalled !== b.isCalled) {
      problems.push(`sequence ${name}: ${b.lastValue}/${b.isCalled}, source ${a.lastValue}/${a.isCalled}`);
    }
  }
  for (const key of Object.keys(source.schema)) {
    if (source.schema[key] !== restored.schema[key]) {
      const sep = key === 'objects' || key === 'enums' ? ',' : '\n';
      const a = new Set(source.schema[key].split(sep));
      const b = new Set((restored.schema[key] ?? '').split(sep));
      const missing = [...a].filter((x) => !b.has(x));
      const extra = [...b].filter((x) => !a.has(x));
      problems.push(`schema ${key} differ: missing [${missing.slice(0, 3).join('; ')}] extra [${extra.slice(0, 3).join('; ')}]`);
    }
  }
  return problems;
}

export function totalRows(fp: Fingerprint): number {
  return Object.values(fp.tables).reduce((s, t) => s + t.rows, 0);
}
