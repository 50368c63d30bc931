import type pg from 'pg';
import { LOCKS } from './locks';

/**
 * Operational state lives in its own schema, coffer_ops: the stored-backup catalog and the restore
 * jobs. It is never in an archive (archives hold the application schema only) and a restore, which
 * flushes the application schema, never touches it: a restore cannot roll back what the service
 * knows about its own backups. The job queue has its own schema too (pg-boss, JOBS_SCHEMA).
 *
 * Versioned steps, applied in order under an advisory lock; never edited once released.
 */
export const OPS_SCHEMA = 'coffer_ops';
export const JOBS_SCHEMA = 'coffer_jobs';

const STEPS: string[] = [
  `CREATE TABLE coffer_ops.stored_backups (
     id uuid PRIMARY KEY,
     name text NOT NULL,
     status text NOT NULL CHECK (status IN ('queued', 'running', 'finished', 'failed', 'canceled', 'missing')),
     store text NOT NULL,
     object text,
     created_by text,
     created_by_id bigint,
     via text NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now(),
     started_at timestamptz,
     finished_at timestamptz,
     size bigint,
     sha256 text,
     encrypted boolean NOT NULL DEFAULT false,
     key_id text,
     tables integer,
     rows bigint,
     files integer,
     summary jsonb,
     progress jsonb,
     error jsonb,
     correlation_id text,
     cancel_requested boolean NOT NULL DEFAULT false
   );
   CREATE INDEX stored_backups_created_at ON coffer_ops.stored_backups (created_at DESC);
   CREATE TABLE coffer_ops.restores (
     id uuid PRIMARY KEY,
     backup_id uuid NOT NULL,
     status text NOT NULL CHECK (status IN ('queued', 'running', 'finished', 'failed', 'canceled')),
     safety_backup boolean NOT NULL,
     safety_backup_id uuid,
     created_by text,
     created_by_id bigint,
     via text NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now(),
     started_at timestamptz,
     finished_at timestamptz,
     progress jsonb,
     error jsonb,
     correlation_id text,
     cancel_requested boolean NOT NULL DEFAULT false
   );
   CREATE INDEX restores_created_at ON coffer_ops.restores (created_at DESC);`,
  // age recipients: which format a backup is in, and whom it is sealed to.
  `ALTER TABLE coffer_ops.stored_backups
     ADD COLUMN encryption text NOT NULL DEFAULT 'none' CHECK (encryption IN ('none', 'aes-256-gcm', 'age')),
     ADD COLUMN recipients text[] NOT NULL DEFAULT '{}';
   UPDATE coffer_ops.stored_backups SET encryption = 'aes-256-gcm' WHERE encrypted;`,
];

/** Creates or upgrades coffer_ops; safe to call from every process at every start. */
export async function ensureOpsSchema(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCKS.ops.toString()]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${OPS_SCHEMA}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${OPS_SCHEMA}.version (version integer NOT NULL)`);
    const res = await client.query<{ version: number }>(`SELECT version FROM ${OPS_SCHEMA}.version`);
    const current = res.rows[0]?.version ?? 0;
    for (let v = current; v < STEPS.length; v++) await client.query(STEPS[v]);
    if (res.rows.length === 0) await client.query(`INSERT INTO ${OPS_SCHEMA}.version VALUES ($1)`, [STEPS.length]);
    else if (current < STEPS.length) await client.query(`UPDATE ${OPS_SCHEMA}.version SET version = $1`, [STEPS.length]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * Entries of a pg-boss queue in state `active`, with how long ago they were taken. pg-boss 10 has no
 * call for this; its job table (documented: name, state, started_on) is read directly.
 */
export async function activeQueueEntries(client: pg.ClientBase, queue: string): Promise<{ id: string; ageMs: number }[]> {
  const res = await client.query<{ id: string; age_ms: number }>(
    `SELECT id::text AS id, (extract(epoch FROM now() - started_on) * 1000)::float8 AS age_ms FROM ${JOBS_SCHEMA}.job WHERE name = $1 AND state = 'active'`,
    [queue],
  );
  return res.rows.map((r) => ({ id: r.id, ageMs: r.age_ms ?? 0 }));
}
