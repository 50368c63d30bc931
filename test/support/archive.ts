import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { startBackup } from '../../src/pipeline/backup';
import { openArchive } from '../../src/pipeline/open-archive';
import { restoreArchive, type RestoreRequest } from '../../src/pipeline/restore';
import type { KeySource } from '../../src/crypto';
import { silentLogger } from '../../src/log';
import { buildZip, deflated, stored, type HandEntry } from '../archive/helpers';
import { readZip, type ReadEntry } from './zip';

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export function manifestOf(entries: ReadEntry[]) {
  return JSON.parse(entries.find((e) => e.name === 'manifest.json')!.data.toString());
}

export function withManifest(entries: ReadEntry[], change: (m: any) => void): ReadEntry[] {
  const m = manifestOf(entries);
  change(m);
  return entries.map((e) => (e.name === 'manifest.json' ? { ...e, data: Buffer.from(JSON.stringify(m)) } : e));
}

/** Replaces a table entry's content and makes the manifest agree, so only the database can object. */
export function replaceTableEntry(entries: ReadEntry[], table: string, content: Buffer): ReadEntry[] {
  const name = `db/public.${table}.jsonl`;
  const replaced = entries.map((e) => (e.name === name ? { ...e, data: content } : e));
  return withManifest(replaced, (m) => {
    const t = m.tables.find((x: any) => x.entry === name);
    t.bytes = content.length;
    t.sha256 = sha256(content);
    t.rows = content.toString().split('\n').length - 1;
  });
}

export async function backupToFile(pool: pg.Pool, dataDir: string, file: string, encryption?: KeySource): Promise<void> {
  const b = await startBackup({ pool, dataDir, log: silentLogger(), via: 'cli', encryption });
  await Promise.all([pipeline(b.output, fs.createWriteStream(file)), b.result]);
}

export async function restoreFile(
  file: string,
  pool: pg.Pool | undefined,
  dataDir: string,
  opts: Partial<RestoreRequest> & { key?: KeySource } = {},
) {
  const archive = await openArchive(file, opts.key);
  try {
    return await restoreArchive({ archive, pool, dataDir, log: silentLogger(), ...opts });
  } finally {
    await archive.close();
  }
}

/** Rewrites an archive entry by entry (with a hand-made zip writer that accepts anything). */
export async function rewriteArchive(src: string, dst: string, change: (entries: ReadEntry[]) => ReadEntry[] | HandEntry[]): Promise<void> {
  const entries = await readZip(src);
  const changed = change(entries);
  const hand = changed.map((e) => ('compressionMethod' in e ? (e.compressionMethod === 8 ? deflated(e.name, e.data) : stored(e.name, e.data)) : e));
  fs.writeFileSync(dst, buildZip(hand));
}

/**
 * Everything a restore could change, as text: every table of the schema row by row, every sequence.
 * `comparable` leaves out what legitimately differs between a source and its restored copy: migration
 * bookkeeping (re-applied by the restore), tables never backed up, and the audit log (a restore
 * keeps the target's own).
 */
export async function fingerprint(pool: pg.Pool, opts: { comparable?: boolean } = {}): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const tables = await pool.query<{ name: string; pk: string | null }>(
    `SELECT c.relname AS name,
            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
               FROM pg_constraint con CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              WHERE con.conrelid = c.oid AND con.contype = 'p') AS pk
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname`,
  );
  for (const t of tables.rows) {
    // Migration bookkeeping is re-applied by a restore; sessions and rate limits are never backed up.
    if (opts.comparable && ['coffer_migrations', 'sessions', 'rate_limits', 'backup_log'].includes(t.name)) continue;
    const rows = await pool.query(`SELECT row_to_json(t)::text AS r FROM public.${JSON.stringify(t.name)} t ORDER BY ${t.pk ?? '1'}`);
    out[`table ${t.name}`] = rows.rows.map((r) => r.r).join('\n');
  }
  const seqs = await pool.query<{ name: string }>(`SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1`);
  for (const s of seqs.rows) {
    if (opts.comparable && s.name === 'backup_log_id_seq') continue;
    const v = await pool.query(`SELECT last_value::text, is_called FROM public.${JSON.stringify(s.name)}`);
    out[`sequence ${s.name}`] = JSON.stringify(v.rows[0]);
  }
  const objects = await pool.query(
    `SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) AS o FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`,
  );
  out.objects = objects.rows[0].o ?? '';
  return out;
}

/** Values at the edges of what the schema's types hold, to prove the round trip loses nothing. */
export async function insertExtremeValues(pool: pg.Pool): Promise<void> {
  const p = await pool.query(
    `INSERT INTO projects (name, tags, settings, status, created_at) VALUES
       ($1, ARRAY['a', NULL, '', 'ü"\\\\', E'tab\\there'], $2::jsonb, 'archived', 'infinity'),
       ('empty tags', '{}', '{}', 'draft', '-infinity')
     RETURNING id`,
    ['𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ✓ 中文 🎉 \x01\x02\x1f "quoted" \\back\\slash\nnew line\r\n', JSON.stringify(deepJson(120))],
  );
  const [p1, p2] = p.rows.map((r) => r.id as string);
  const f = await pool.query(
    `INSERT INTO findings (project_id, title, description, score, confidence, reference_code, data) VALUES
       ($1, 'huge', '', '123456789012345678901234567890.123456789012345678901234567890', 1.7976931348623157e308, 'R1', '{"n": 123456789012345678901234567890.5, "e": 1e-400}'),
       ($1, 'nan', E'\\x01\\x02 control', 'NaN', 'NaN', 'R2', '{"s": "bell \\u0007 \\u0001 \\" \\\\ \\n"}'),
       ($1, 'inf', '', 'Infinity', 'Infinity', NULL, '[]'),
       ($1, '-inf', '', '-Infinity', '-Infinity', NULL, '"just a string"'),
       ($1, 'tiny', '', '-0.000000000000000000000000000000000001', 5e-324, NULL, 'null'),
       ($2, 'same ref other project', '', 0, 0.1, 'R1', '{"unicode": "ü €  𝄞", "key with spaces": true}')
     RETURNING id`,
    [p1, p2],
  );
  await pool.query(`UPDATE projects SET lead_finding_id = $1 WHERE id = $2`, [f.rows[0].id, p1]);
  // A parent with a higher id than its child: loads only if foreign keys are checked after the data.
  const n1 = await pool.query(`INSERT INTO notes (project_id, title, body) VALUES ($1, 'child', '') RETURNING id`, [p1]);
  const n2 = await pool.query(`INSERT INTO notes (project_id, title, body) VALUES ($1, 'parent', $2) RETURNING id`, [p1, 'x'.repeat(100_000)]);
  await pool.query(`UPDATE notes SET parent_id = $1 WHERE id = $2`, [n2.rows[0].id, n1.rows[0].id]);
  await pool.query(`INSERT INTO events (project_id, kind, payload, digest) VALUES ($1, 'big', '{}', $2), ($1, 'empty', '{"a": [null, 1, "x"]}', ''::bytea), ($1, 'null', '{}', NULL)`, [
    p1,
    Buffer.from(Array.from({ length: 1024 * 1024 }, (_, i) => (i * 7919) % 256)),
  ]);
  // Gaps in identity sequences must survive too.
  await pool.query(`SELECT setval('events_id_seq', 5000)`);
}

function deepJson(depth: number): unknown {
  let v: unknown = { leaf: 'ü', n: 1.5, big: 9007199254740991 };
  for (let i = 0; i < depth; i++) v = i % 2 ? { [`k${i}`]: v, i } : [v, null, i];
  return v;
}
