import type pg from 'pg';
import type { FileSet } from './files';
import { withClient } from './postgres';
import { say } from './util';

/**
 * The database of the data set, generated in SQL (generate_series), one statement a table, inside one
 * transaction. Deterministic: pseudo-randomness comes from md5()/hashtext()/sha512() of the row number,
 * timestamps are fixed, uuids are md5 of the row number, never random() or now(). Scale 1:
 *   users 10k, projects 20k (uuid, text[], jsonb, enum), findings 500k (numeric incl. NaN/Infinity and
 *   30-digit values, ~300 bytes of markdown with unicode, quotes, backslashes and newlines, jsonb),
 *   events 1M (jsonb payload, bytea of 0-200 bytes or NULL), notes 100k (self-referencing), api_tokens
 *   1k, uploaded_files (one row per generated file), backup_log (the migration's setup row and 20
 *   backup_denied rows). sessions and rate_limits stay empty: backups leave them out by design.
 * projects.lead_finding_id and findings.project_id form the schema's circular foreign-key pair.
 */

export interface Counts {
  users: number;
  projects: number;
  findings: number;
  events: number;
  notes: number;
  apiTokens: number;
}

export function countsFor(scale: number): Counts {
  const n = (base: number) => Math.max(1, Math.round(base * scale));
  return { users: n(10_000), projects: n(20_000), findings: n(500_000), events: n(1_000_000), notes: n(100_000), apiTokens: n(1_000) };
}

/** A non-negative pseudo-random integer (0 … 2^32-1) from hashtext of a text expression. */
const H = (expr: string) => `(hashtext(${expr})::bigint + 2147483648)`;
const T0 = `timestamptz '2023-01-01 00:00:00+00'`;
const BT = 'chr(96)';

const USERS = String.raw`
INSERT INTO users (id, username, password_hash, is_active, is_superuser, is_system_user, created_at, last_login_at)
SELECT g,
       CASE WHEN g % 7 = 0 THEN 'user.' || g || '@example.com' ELSE 'user' || g END,
       '$argon2id$v=19$m=65536,t=3,p=4$' || rtrim(encode(decode(md5('salt' || g), 'hex'), 'base64'), '=') || '$'
         || rtrim(encode(sha256(('pw' || g)::bytea), 'base64'), '='),
       g % 50 <> 0,
       g % 1000 = 1,
       g % 2500 = 2,
       ${T0} + g * interval '17 minutes',
       CASE WHEN g % 4 = 0 THEN NULL ELSE timestamptz '2024-06-01 00:00:00+00' + (${H(`'login' || g`)} % 500000) * interval '1 minute' END
  FROM generate_series(1, $1::int) g`;

// lead_finding_id = g: finding g belongs to project g for g <= projects (see FINDINGS); the foreign
// key is DEFERRABLE INITIALLY DEFERRED, so it may point at a finding inserted later in the transaction.
const PROJECTS = String.raw`
INSERT INTO projects (id, name, tags, settings, status, owner_id, lead_finding_id, created_at, updated_at)
SELECT md5('project' || g)::uuid,
       'Project ' || g || ' — Prüfung «' || substr(md5('pn' || g), 1, 6) || '» for "'
         || (ARRAY['Acme Corp', 'Initech', 'Umbrella', 'Globex', 'Ünïcødé GmbH', 'O''Reilly & Söhne'])[1 + g % 6] || '"',
       ARRAY['web', 'customer-' || (g % 97), CASE WHEN g % 3 = 0 THEN 'internal' ELSE 'external' END]
         || CASE WHEN g % 11 = 0 THEN ARRAY['needs "retest"', 'back\slash', NULL, '中文', ''] ELSE ARRAY[]::text[] END,
       jsonb_build_object(
         'language', CASE WHEN g % 2 = 0 THEN 'de-DE' ELSE 'en-US' END,
         'retest', g % 5 = 0,
         'budget', (g % 1000) * 12.5,
         'scope', jsonb_build_array('10.' || (g % 250) || '.0.0/16', 'app' || g || '.example.com', 'api' || g || '.example.com'),
         'contacts', jsonb_build_array(jsonb_build_object('name', 'Contact ' || g, 'email', 'contact' || g || '@example.com', 'phone', '+49 30 ' || (1000000 + g))),
         'notes', CASE WHEN g % 4 = 0 THEN E'multi\nline "text" \\ with backslash\ttab' END),
       (ARRAY['draft', 'active', 'archived'])[1 + g % 3]::project_status,
       CASE WHEN g % 13 = 0 THEN NULL ELSE 1 + ${H(`'owner' || g`)} % $2 END,
       CASE WHEN g % 3 = 1 AND g <= $3 THEN g END,
       ${T0} + g * interval '23 minutes',
       ${T0} + g * interval '23 minutes' + (${H(`'upd' || g`)} % 100000) * interval '1 minute'
  FROM generate_series(1, $1::int) g`;

const FINDINGS = String.raw`
INSERT INTO findings (id, project_id, title, description, score, confidence, reference_code, data, created_at)
SELECT g,
       md5('project' || CASE WHEN g <= $2 THEN g ELSE 1 + ${H(`'fp' || g`)} % $2 END)::uuid,
       'Finding ' || g || ': ' || (ARRAY['SQL injection', 'Stored XSS', 'Weak TLS configuration', 'IDOR in /api/v2/users', 'Open redirect',
                                         'Path traversal (..\..\)', 'CSRF on "settings"', 'Verbose errors'])[1 + g % 8],
       E'## Description\n\nThe parameter ' || ${BT} || 'q' || (g % 10) || ${BT} || ' is "reflected" without encoding — a naïve filter ('
         || ${BT} || 'C:\temp\x' || g || ${BT} || E') can be bypassed.\n\n'
         || '- Host: app' || (g % 50) || E'.example.com\n'
         || '- Payload: ' || ${BT} || '''"><svg onload=alert(' || g || ')>' || ${BT} || E'\n'
         || E'- Impact: session theft 🍪 → account takeover (Ü, ß, 中文)\n\n'
         || '> ' || substr(md5('fd' || g), 1, 1 + (${H(`'fl' || g`)} % 32)::int),
       CASE WHEN g % 1000 = 7 THEN 'NaN'::numeric
            WHEN g % 5003 = 11 THEN 'Infinity'::numeric
            WHEN g % 997 = 3 THEN ('123456789012345678901234567890.' || ${H(`'sd' || g`)})::numeric
            WHEN g % 101 = 5 THEN (${H(`'sx' || g`)} % 1000000)::numeric / 1000000000
            ELSE round((${H(`'s' || g`)} % 1001)::numeric / 100, 2) END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE (${H(`'conf' || g`)} % 100000)::float8 / 99991 END,
       CASE WHEN g % 4 = 0 THEN 'REF-' || g END,
       jsonb_build_object(
         'cvss', 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:' || (ARRAY['H', 'L', 'N'])[1 + g % 3] || '/A:H',
         'affected', jsonb_build_array('host' || (g % 17) || '.example.com'),
         'retest', g % 7 = 0),
       ${T0} + g * interval '1 minute'
  FROM generate_series(1, $1::int) g`;

// A note's parent is the previous note of the same project (note g - projects), for two notes in three.
const NOTES = String.raw`
INSERT INTO notes (id, project_id, parent_id, title, body, position, created_at) OVERRIDING SYSTEM VALUE
SELECT g,
       md5('project' || (1 + (g - 1) % $2))::uuid,
       CASE WHEN g > $2 AND g % 3 <> 0 THEN g - $2 END,
       'Note ' || g || CASE WHEN g % 5 = 0 THEN ' — “smart quotes” & <tags>' ELSE '' END,
       repeat(E'Lorem ipsum ✓ dolor sit amet, "consectetur" \\ adipiscing elit.\n', (1 + ${H(`'nb' || g`)} % 8)::int),
       g % 10,
       ${T0} + g * interval '5 minutes'
  FROM generate_series(1, $1::int) g`;

const EVENTS = String.raw`
INSERT INTO events (id, project_id, user_id, kind, payload, digest, created_at)
SELECT g,
       CASE WHEN g % 20 = 0 THEN NULL ELSE md5('project' || (1 + ${H(`'ep' || g`)} % $2))::uuid END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE 1 + ${H(`'eu' || g`)} % $3 END,
       (ARRAY['login', 'export', 'edit', 'comment', 'upload', 'share'])[1 + g % 6],
       jsonb_build_object(
         'seq', g,
         'ip', '192.0.2.' || (g % 250),
         'ok', g % 13 <> 0,
         'ratio', round((g % 1000)::numeric / 7, 6),
         'via', jsonb_build_array((ARRAY['web', 'cli', 'api'])[1 + g % 3], NULL, 'ü' || (g % 100))),
       CASE WHEN g % 2 = 0 THEN NULL
            ELSE substring(sha512(('a' || g)::bytea) || sha512(('b' || g)::bytea) || sha512(('c' || g)::bytea) || sha512(('d' || g)::bytea)
                           FROM 1 FOR (${H(`'dl' || g`)} % 201)::int) END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '3 seconds'
  FROM generate_series(1, $1::int) g`;

const API_TOKENS = String.raw`
INSERT INTO api_tokens (id, user_id, token_hash, name, created_at, expires_at, last_used_at)
SELECT g,
       1 + ${H(`'tu' || g`)} % $2,
       sha256(('token' || g)::bytea),
       'token ' || g || CASE WHEN g % 3 = 0 THEN ' (CI “deploy”)' ELSE '' END,
       ${T0} + g * interval '1 hour',
       CASE WHEN g % 2 = 0 THEN ${T0} + g * interval '1 hour' + interval '90 days' END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE ${T0} + g * interval '1 hour' + interval '1 day' END
  FROM generate_series(1, $1::int) g`;

const UPLOADED_FILES = String.raw`
INSERT INTO uploaded_files (id, project_id, kind, name, storage_path, content_type, size, sha256, created_by, created_at)
SELECT f.id, md5('project' || (1 + f.n % $2))::uuid, f.kind, f.name, f.storage_path, f.content_type, f.size, decode(f.sha256, 'hex'),
       CASE WHEN f.n % 10 = 0 THEN NULL ELSE 1 + (f.n * 7) % $3 END,
       timestamptz '2024-03-01 00:00:00+00' + f.n * interval '1 hour'
  FROM jsonb_to_recordset($1::jsonb) AS f(n int, id uuid, kind text, name text, storage_path text, content_type text, size bigint, sha256 text)`;

const BACKUP_LOG = String.raw`
UPDATE backup_log SET created_at = ${T0} WHERE event = 'setup';
INSERT INTO backup_log (event, user_id, username, created_at, details)
SELECT 'backup_denied', 2, 'user2', ${T0} + g * interval '1 day',
       jsonb_build_object('reason', 'wrong key', 'ip', '198.51.100.' || g, 'via', 'http')
  FROM generate_series(1, 20) g`;

const SEQUENCES = ['users', 'projects', 'findings', 'notes', 'events', 'api_tokens', 'backup_log']
  .filter((t) => t !== 'projects')
  .map((t) => `SELECT setval(pg_get_serial_sequence('public.${t}', 'id'), (SELECT max(id) FROM public.${t}))`)
  .join(';\n');

export interface GeneratedDatabase {
  counts: Counts;
  seconds: number;
  /** Highest backup_log id at generation time: later rows are the bench's own audit rows. */
  backupLogMaxId: number;
}

export async function generateDatabase(url: string, scale: number, files: FileSet): Promise<GeneratedDatabase> {
  const counts = countsFor(scale);
  const started = Date.now();
  return withClient(url, async (c: pg.Client) => {
    const step = async (what: string, sql: string, params: unknown[] = []) => {
      const t = Date.now();
      say(`database: ${what}…`);
      const res = await c.query(sql, params);
      const rows = Array.isArray(res) ? '' : ` (${res.rowCount ?? 0} rows)`;
      say(`database: ${what} done in ${((Date.now() - t) / 1000).toFixed(1)} s${rows}`);
    };
    await c.query('BEGIN');
    await c.query('SET LOCAL synchronous_commit = off');
    await step(`users ${counts.users}`, USERS, [counts.users]);
    await step(`projects ${counts.projects}`, PROJECTS, [counts.projects, counts.users, counts.findings]);
    await step(`findings ${counts.findings}`, FINDINGS, [counts.findings, counts.projects]);
    await step(`notes ${counts.notes}`, NOTES, [counts.notes, counts.projects]);
    await step(`events ${counts.events}`, EVENTS, [counts.events, counts.projects, counts.users]);
    await step(`api_tokens ${counts.apiTokens}`, API_TOKENS, [counts.apiTokens, counts.users]);
    const meta = files.files.map(({ n, id, kind, name, storage_path, content_type, size, sha256 }) => ({ n, id, kind, name, storage_path, content_type, size, sha256 }));
    await step(`uploaded_files ${meta.length}`, UPLOADED_FILES, [JSON.stringify(meta), counts.projects, counts.users]);
    await c.query(BACKUP_LOG);
    await c.query(SEQUENCES);
    await c.query('COMMIT');
    await step('VACUUM (FREEZE, ANALYZE)', 'VACUUM (FREEZE, ANALYZE)');
    const maxId = await c.query<{ id: string }>('SELECT max(id)::text AS id FROM backup_log');
    return { counts, seconds: (Date.now() - started) / 1000, backupLogMaxId: Number(maxId.rows[0].id) };
  });
}

export interface DatabaseSize {
  /** pg_database_size. */
  databaseBytes: number;
  /** Heap and TOAST of the application tables, without indexes: the numerator of database MB/s. */
  tableBytes: number;
  indexBytes: number;
  tables: { name: string; rows: number; tableBytes: number; indexBytes: number }[];
}

export async function databaseSize(url: string): Promise<DatabaseSize> {
  return withClient(url, async (c) => {
    const db = await c.query<{ b: string }>('SELECT pg_database_size(current_database())::text AS b');
    const t = await c.query<{ name: string; rows: string; tb: string; ib: string }>(
      `SELECT c.relname AS name, c.reltuples::bigint::text AS rows, pg_table_size(c.oid)::text AS tb, pg_indexes_size(c.oid)::text AS ib
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname`,
    );
    const tables = t.rows.map((r) => ({ name: r.name, rows: Math.max(0, Number(r.rows)), tableBytes: Number(r.tb), indexBytes: Number(r.ib) }));
    return {
      databaseBytes: Number(db.rows[0].b),
      tableBytes: tables.reduce((s, x) => s + x.tableBytes, 0),
      indexBytes: tables.reduce((s, x) => s + x.indexBytes, 0),
      tables,
    };
  });
}
