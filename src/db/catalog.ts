import type pg from 'pg';
import { recordEncryption, type BackupObject, type BackupRecord, type BackupStatus, type JobError, type JobStatus, type Progress, type RestoreObject } from '../core/jobs';
import type { Encryption } from '../core/types';
import { OPS_SCHEMA } from './ops-schema';

/** SQL of the stored-backup catalog and the restore jobs (coffer_ops). */

type Queryable = pg.Pool | pg.ClientBase;

export interface BackupRow {
  id: string;
  name: string;
  status: BackupStatus;
  store: string;
  object: string | null;
  created_by: string | null;
  created_by_id: string | null;
  via: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  size: string | null;
  sha256: string | null;
  encrypted: boolean;
  encryption: Encryption;
  key_id: string | null;
  recipients: string[];
  tables: number | null;
  rows: string | null;
  files: number | null;
  summary: BackupRecord['summary'] | null;
  progress: Progress | null;
  error: JobError | null;
  correlation_id: string | null;
  cancel_requested: boolean;
}

export interface RestoreRow {
  id: string;
  backup_id: string;
  status: JobStatus;
  safety_backup: boolean;
  safety_backup_id: string | null;
  created_by: string | null;
  created_by_id: string | null;
  via: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  progress: Progress | null;
  error: JobError | null;
  correlation_id: string | null;
  cancel_requested: boolean;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);
const num = (v: string | number | null): number | null => (v === null ? null : Number(v));

export function backupObject(r: BackupRow): BackupObject {
  return {
    id: r.id,
    name: r.name,
    status: r.status,
    created_by: r.created_by,
    created_at: r.created_at.toISOString(),
    started_at: iso(r.started_at),
    finished_at: iso(r.finished_at),
    size: num(r.size),
    sha256: r.sha256,
    encrypted: r.encryption !== 'none',
    encryption: r.encryption,
    key_id: r.key_id,
    recipients: r.recipients,
    tables: r.tables,
    rows: num(r.rows),
    files: r.files,
    progress: r.progress,
    error: r.error,
    correlation_id: r.correlation_id,
  };
}

export function restoreObject(r: RestoreRow): RestoreObject {
  return {
    id: r.id,
    backup_id: r.backup_id,
    status: r.status,
    safety_backup_id: r.safety_backup_id,
    created_by: r.created_by,
    created_at: r.created_at.toISOString(),
    started_at: iso(r.started_at),
    finished_at: iso(r.finished_at),
    progress: r.progress,
    error: r.error,
    correlation_id: r.correlation_id,
  };
}

const B = `${OPS_SCHEMA}.stored_backups`;
const R = `${OPS_SCHEMA}.restores`;

export interface NewBackup {
  id: string;
  name: string;
  status: 'queued' | 'running';
  store: string;
  createdBy: string | null;
  createdById: number | null;
  via: string;
  encryption: Encryption;
  recipients: string[];
  correlationId: string | null;
  progress: Progress;
}

export async function insertBackup(db: Queryable, b: NewBackup): Promise<BackupRow> {
  const res = await db.query<BackupRow>(
    `INSERT INTO ${B} (id, name, status, store, created_by, created_by_id, via, encrypted, encryption, recipients, correlation_id, progress, started_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8 <> 'none', $8, $9, $10, $11, CASE WHEN $3 = 'running' THEN now() END) RETURNING *`,
    [b.id, b.name, b.status, b.store, b.createdBy, b.createdById, b.via, b.encryption, b.recipients, b.correlationId, b.progress],
  );
  return res.rows[0];
}

export async function getBackup(db: Queryable, id: string): Promise<BackupRow | undefined> {
  return (await db.query<BackupRow>(`SELECT * FROM ${B} WHERE id = $1`, [id])).rows[0];
}

export async function listBackups(db: Queryable, status?: string): Promise<BackupRow[]> {
  const res = await db.query<BackupRow>(`SELECT * FROM ${B} WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC, id DESC`, [status ?? null]);
  return res.rows;
}

/** queued → running; false when it is no longer queued (canceled meanwhile). */
export async function startBackupRow(db: Queryable, id: string, object: string): Promise<boolean> {
  const res = await db.query(`UPDATE ${B} SET status = 'running', started_at = now(), object = $2 WHERE id = $1 AND status = 'queued'`, [id, object]);
  return (res.rowCount ?? 0) > 0;
}

/** Saves progress of a running job; answers whether it should go on (not canceled, not taken over). */
export async function backupProgress(db: Queryable, id: string, progress: Progress | undefined): Promise<{ running: boolean; cancel: boolean }> {
  const res = await db.query<{ cancel_requested: boolean }>(`UPDATE ${B} SET progress = COALESCE($2, progress) WHERE id = $1 AND status = 'running' RETURNING cancel_requested`, [id, progress]);
  return res.rows.length ? { running: true, cancel: res.rows[0].cancel_requested } : { running: false, cancel: false };
}

export async function finishBackupRow(db: Queryable, r: BackupRecord, progress: Progress): Promise<void> {
  await db.query(
    `UPDATE ${B} SET status = 'finished', finished_at = $2, size = $3, sha256 = $4, key_id = $5, tables = $6, rows = $7, files = $8,
                     summary = $9, progress = $10, object = $11, error = NULL
      WHERE id = $1`,
    [r.id, r.finished_at, r.size, r.sha256, r.key_id, r.summary.tables, r.summary.rows, r.summary.files, r.summary, progress, r.object],
  );
}

/** running/queued → failed or canceled, with the error. Only if not final yet. */
export async function endBackupRow(db: Queryable, id: string, status: 'failed' | 'canceled', error: JobError): Promise<boolean> {
  const res = await db.query(
    `UPDATE ${B} SET status = $2, finished_at = now(), error = $3, progress = jsonb_set(COALESCE(progress, '{}'), '{eta_s}', 'null')
      WHERE id = $1 AND status IN ('queued', 'running')`,
    [id, status, error],
  );
  return (res.rowCount ?? 0) > 0;
}

export async function requestBackupCancel(db: Queryable, id: string): Promise<void> {
  await db.query(`UPDATE ${B} SET cancel_requested = true WHERE id = $1`, [id]);
}

export async function deleteBackupRow(db: Queryable, id: string): Promise<void> {
  await db.query(`DELETE FROM ${B} WHERE id = $1`, [id]);
}

export async function setBackupStatus(db: Queryable, id: string, from: BackupStatus, to: BackupStatus): Promise<void> {
  await db.query(`UPDATE ${B} SET status = $3 WHERE id = $1 AND status = $2`, [id, from, to]);
}

/** Inserts or replaces the catalog row of a record found in the store (rescan). */
export async function upsertBackupRecord(db: Queryable, r: BackupRecord, store: string): Promise<void> {
  await db.query(
    `INSERT INTO ${B} (id, name, status, store, object, created_by, via, created_at, started_at, finished_at, size, sha256, encrypted, key_id,
                       tables, rows, files, summary, correlation_id, encryption, recipients, progress)
     VALUES ($1, $2, 'finished', $3, $4, $5, 'rescan', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
             jsonb_build_object('phase', 'done', 'percent', 100, 'rows', $14::bigint, 'bytes', $9::bigint, 'eta_s', 0))
     ON CONFLICT (id) DO UPDATE SET status = 'finished', object = EXCLUDED.object, size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
       finished_at = EXCLUDED.finished_at, tables = EXCLUDED.tables, rows = EXCLUDED.rows, files = EXCLUDED.files, summary = EXCLUDED.summary`,
    [r.id, r.name, store, r.object, r.created_by, r.created_at, r.started_at, r.finished_at, r.size, r.sha256, r.encrypted, r.key_id,
      r.summary.tables, r.summary.rows, r.summary.files, r.summary, r.correlation_id, recordEncryption(r), r.recipients ?? []],
  );
}

export interface NewRestore {
  id: string;
  backupId: string;
  safetyBackup: boolean;
  createdBy: string | null;
  createdById: number | null;
  via: string;
  correlationId: string | null;
  progress: Progress;
}

export async function insertRestore(db: Queryable, r: NewRestore): Promise<RestoreRow> {
  const res = await db.query<RestoreRow>(
    `INSERT INTO ${R} (id, backup_id, status, safety_backup, created_by, created_by_id, via, correlation_id, progress)
     VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8) RETURNING *`,
    [r.id, r.backupId, r.safetyBackup, r.createdBy, r.createdById, r.via, r.correlationId, r.progress],
  );
  return res.rows[0];
}

export async function getRestore(db: Queryable, id: string): Promise<RestoreRow | undefined> {
  return (await db.query<RestoreRow>(`SELECT * FROM ${R} WHERE id = $1`, [id])).rows[0];
}

export async function listRestores(db: Queryable): Promise<RestoreRow[]> {
  return (await db.query<RestoreRow>(`SELECT * FROM ${R} ORDER BY created_at DESC, id DESC`)).rows;
}

export async function startRestoreRow(db: Queryable, id: string): Promise<boolean> {
  const res = await db.query(`UPDATE ${R} SET status = 'running', started_at = now() WHERE id = $1 AND status = 'queued'`, [id]);
  return (res.rowCount ?? 0) > 0;
}

export async function restoreProgress(db: Queryable, id: string, progress: Progress | undefined, safetyBackupId?: string): Promise<{ running: boolean; cancel: boolean }> {
  const res = await db.query<{ cancel_requested: boolean }>(
    `UPDATE ${R} SET progress = COALESCE($2, progress), safety_backup_id = COALESCE($3, safety_backup_id) WHERE id = $1 AND status = 'running' RETURNING cancel_requested`,
    [id, progress, safetyBackupId ?? null],
  );
  return res.rows.length ? { running: true, cancel: res.rows[0].cancel_requested } : { running: false, cancel: false };
}

export async function endRestoreRow(db: Queryable, id: string, status: 'finished' | 'failed' | 'canceled', error: JobError | null, progress?: Progress): Promise<boolean> {
  const res = await db.query(
    `UPDATE ${R} SET status = $2, finished_at = now(), error = $3, progress = COALESCE($4, jsonb_set(COALESCE(progress, '{}'), '{eta_s}', 'null'))
      WHERE id = $1 AND status IN ('queued', 'running')`,
    [id, status, error, progress ?? null],
  );
  return (res.rowCount ?? 0) > 0;
}

export async function requestRestoreCancel(db: Queryable, id: string): Promise<void> {
  await db.query(`UPDATE ${R} SET cancel_requested = true WHERE id = $1`, [id]);
}

/** Jobs recorded as running (whether their owner is alive is the sweep's question: its job lock). */
export async function runningJobs(db: Queryable): Promise<{ kind: 'backup' | 'restore'; id: string; object: string | null }[]> {
  const res = await db.query<{ kind: 'backup' | 'restore'; id: string; object: string | null }>(
    `SELECT 'backup' AS kind, id, object FROM ${B} WHERE status = 'running'
     UNION ALL SELECT 'restore', id, NULL FROM ${R} WHERE status = 'running'`,
  );
  return res.rows;
}
