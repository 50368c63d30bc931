/**
 * The shapes of stored backups and restore jobs, as the API answers them, the CLI prints them with
 * --json and the store keeps them (`<id>.json`). The zod schemas are the types and the OpenAPI document.
 */
import { z } from 'zod';
import { isoTime } from './time';
import { ENCRYPTIONS, type Encryption } from './types';

export const BACKUP_STATUSES = ['queued', 'running', 'finished', 'failed', 'canceled', 'missing'] as const;
export const JOB_STATUSES = ['queued', 'running', 'finished', 'failed', 'canceled'] as const;
export type BackupStatus = (typeof BACKUP_STATUSES)[number];
export type JobStatus = (typeof JOB_STATUSES)[number];

/** Statuses a job never leaves. `missing` (the file vanished) ends with a rescan. */
export const FINAL_STATUSES: readonly string[] = ['finished', 'failed', 'canceled', 'missing'];

export const progressSchema = z.object({
  phase: z.string().describe('what the job is doing: queued, database, files, finishing, safety-backup, swap, done...'),
  percent: z.number().min(0).max(100).describe('from the database estimates (pg_class.reltuples, relation sizes) and upload folder sizes'),
  rows: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative().describe('archive bytes written (backup) or read (restore)'),
  eta_s: z.number().nonnegative().nullable().describe('seconds left, once there is enough progress to tell'),
});
export type Progress = z.infer<typeof progressSchema>;

export const jobErrorSchema = z.object({ code: z.string(), message: z.string() });
export type JobError = z.infer<typeof jobErrorSchema>;


export const backupObjectSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  status: z.enum(BACKUP_STATUSES),
  created_by: z.string().nullable(),
  created_at: isoTime,
  started_at: isoTime.nullable(),
  finished_at: isoTime.nullable(),
  size: z.number().int().nonnegative().nullable().describe('bytes of the stored file, once finished'),
  sha256: z.string().nullable().describe('of the stored file (as downloaded); the download ETag'),
  encrypted: z.boolean(),
  encryption: z.enum(ENCRYPTIONS).describe('none (a zip), aes-256-gcm (format v1: raw key or passphrase) or age (sealed to recipients)'),
  key_id: z.string().nullable().describe('format v1: the id of the key (raw keys; for passphrases, of the derived key)'),
  recipients: z.array(z.string()).describe('age: the recipients (age1…) the backup is sealed to; any one of their identities opens it'),
  tables: z.number().int().nullable(),
  rows: z.number().int().nullable(),
  files: z.number().int().nullable(),
  progress: progressSchema.nullable(),
  error: jobErrorSchema.nullable(),
  correlation_id: z.string().nullable(),
});
export type BackupObject = z.infer<typeof backupObjectSchema>;

export const restoreObjectSchema = z.object({
  id: z.uuid(),
  backup_id: z.uuid(),
  status: z.enum(JOB_STATUSES),
  safety_backup_id: z.uuid().nullable(),
  created_by: z.string().nullable(),
  created_at: isoTime,
  started_at: isoTime.nullable(),
  finished_at: isoTime.nullable(),
  progress: progressSchema.nullable(),
  error: jobErrorSchema.nullable(),
  correlation_id: z.string().nullable(),
});
export type RestoreObject = z.infer<typeof restoreObjectSchema>;

/** `<id>.json` beside each stored archive: enough to rebuild the catalog (`coffer backups rescan`). */
export const backupRecordSchema = z.object({
  record: z.literal(1),
  id: z.uuid(),
  name: z.string(),
  object: z.string(),
  created_by: z.string().nullable(),
  created_at: isoTime,
  started_at: isoTime.nullable(),
  finished_at: isoTime,
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  encrypted: z.boolean(),
  /** Absent in records written before age: those are format v1 when encrypted. */
  encryption: z.enum(ENCRYPTIONS).optional(),
  key_id: z.string().nullable(),
  recipients: z.array(z.string()).optional(),
  correlation_id: z.string().nullable(),
  summary: z.object({
    tables: z.number().int().nonnegative(),
    rows: z.number().int().nonnegative(),
    files: z.number().int().nonnegative(),
    file_bytes: z.number().int().nonnegative(),
    migrations: z.array(z.string()),
    app_version: z.string(),
    postgres: z.string(),
  }),
});
export type BackupRecord = z.infer<typeof backupRecordSchema>;

/** A record's format: records written before age have no `encryption`, and were format v1 when encrypted. */
export function recordEncryption(r: BackupRecord): Encryption {
  return r.encryption ?? (r.encrypted ? 'aes-256-gcm' : 'none');
}
