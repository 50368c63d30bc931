import type pg from 'pg';

export type BackupLogEvent = 'setup' | 'backup_started' | 'backup_finished' | 'backup_failed' | 'backup_denied' | 'restore';

export interface Actor {
  id?: string;
  username?: string;
}

/** Appends an audit row. Never pass key material in details. */
export async function writeBackupLog(
  db: pg.Pool | pg.ClientBase,
  event: BackupLogEvent,
  actor: Actor | undefined,
  details: Record<string, unknown>,
): Promise<void> {
  await db.query(`INSERT INTO backup_log (event, user_id, username, details) VALUES ($1, $2, $3, $4)`, [
    event,
    actor?.id ?? null,
    actor?.username ?? null,
    JSON.stringify(details),
  ]);
}
