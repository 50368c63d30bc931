import type pg from 'pg';
import { ident } from './sql';

export type BackupLogEvent = 'setup' | 'backup_started' | 'backup_finished' | 'backup_failed' | 'backup_denied' | 'restore';

export interface Actor {
  id?: string;
  username?: string;
}

/**
 * Appends an audit row. Never pass key material in details. The user id is kept only when that user
 * exists under that name (a restore may just have replaced the users table); the name always is.
 */
export async function writeBackupLog(
  db: pg.Pool | pg.ClientBase,
  event: BackupLogEvent,
  actor: Actor | undefined,
  details: Record<string, unknown>,
): Promise<void> {
  await db.query(`INSERT INTO backup_log (event, user_id, username, details) VALUES ($1, (SELECT u.id FROM users u WHERE u.id = $2::bigint AND u.username = $3), $3, $4)`, [
    event,
    actor?.id ?? null,
    actor?.username ?? null,
    JSON.stringify(details),
  ]);
}

const LIVE_LOG = 'coffer_live_backup_log';

/**
 * The audit log is the present, not the past: a restore must not roll it back. Before the flush,
 * the live rows are kept aside in a temporary table (dropped at COMMIT). Returns whether the database
 * had an audit log at all (a fresh database has none: then the archive's rows are its history).
 */
export async function keepLiveAuditLog(client: pg.ClientBase): Promise<boolean> {
  const exists = await client.query<{ t: string | null }>(`SELECT to_regclass('public.backup_log')::text AS t`);
  if (!exists.rows[0].t) return false;
  await client.query(`CREATE TEMP TABLE ${LIVE_LOG} ON COMMIT DROP AS SELECT * FROM public.backup_log`);
  return true;
}

/**
 * Replaces the archive's audit rows with the live ones kept by keepLiveAuditLog (run after the last
 * migration, so both have the current columns). A row keeps its user_id only when the restored
 * users table has that id under the same name; otherwise it keeps the name alone, as ON DELETE SET
 * NULL would. The id sequence continues after the live rows.
 */
export async function putBackLiveAuditLog(client: pg.ClientBase): Promise<number> {
  const cols = await client.query<{ name: string }>(
    `SELECT a.attname AS name FROM pg_attribute a
      WHERE a.attrelid = 'public.backup_log'::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = 'pg_temp.${LIVE_LOG}'::regclass AND t.attname = a.attname AND NOT t.attisdropped)
      ORDER BY a.attnum`,
  );
  const names = cols.rows.map((c) => c.name);
  const select = names.map((n) =>
    n === 'user_id' ? `CASE WHEN EXISTS (SELECT 1 FROM public.users u WHERE u.id = l.user_id AND u.username = l.username) THEN l.user_id END` : `l.${ident(n)}`,
  );
  await client.query(`DELETE FROM public.backup_log`);
  const res = await client.query(`INSERT INTO public.backup_log (${names.map(ident).join(', ')}) SELECT ${select.join(', ')} FROM pg_temp.${LIVE_LOG} l ORDER BY l.id`);
  await client.query(
    `SELECT setval(pg_get_serial_sequence('public.backup_log', 'id'), m) FROM (SELECT max(id) AS m FROM public.backup_log) x WHERE m IS NOT NULL`,
  );
  return res.rowCount ?? 0;
}
