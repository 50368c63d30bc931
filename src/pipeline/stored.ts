import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { backupRecordSchema, type BackupRecord, type Progress } from '../core/jobs';
import { encryptionFor, recipientsOf, HEADER_SIZE, isCofferEncrypted, parseHeaderFields, readEnvelope, type KeySource } from '../crypto';
import type { Encryption } from '../core/types';
import type { Actor } from '../db/backup-log';
import type { Logger } from '../log';
import { putBuffer, readObject, storeError, type BackupStore } from '../storage/backup-store';
import { startBackup } from './backup';
import { archiveExtension } from './names';
import { openArchive, type OpenedArchive } from './open-archive';
import { BackupProgressMeter, estimateBackup, RestoreProgressMeter } from './progress';
import { restoreArchive, type RestoreSummary } from './restore';

/** Store object names of a stored backup: the archive and its record. */
export function archiveObjectName(id: string, encryption: Encryption): string {
  return `${id}${archiveExtension(encryption)}`;
}
export function recordObjectName(id: string): string {
  return `${id}.json`;
}

export interface StoredBackupRequest {
  id: string;
  name: string;
  createdBy: string | null;
  createdAt: Date;
  correlationId: string | null;
  pool: pg.Pool;
  dataDir: string;
  store: BackupStore;
  log: Logger;
  actor?: Actor;
  via: 'http' | 'cli';
  encryption?: KeySource;
  onProgress?: (p: Progress) => void;
  /** Aborting it cancels the backup (E_CANCELED); nothing is left in the store. */
  signal?: AbortSignal;
}

/**
 * Takes a backup into the store: the archive is written as a partial object and committed only once
 * complete, then its record `<id>.json` is written beside it. On any failure nothing is left.
 */
export async function takeStoredBackup(req: StoredBackupRequest): Promise<BackupRecord> {
  const startedAt = new Date();
  const estimate = await estimateBackup(req.pool, req.dataDir);
  const meter = new BackupProgressMeter(estimate);
  const encryption = encryptionFor(req.encryption);
  const object = archiveObjectName(req.id, encryption);
  const pending = await req.store.put(object);
  let committed = false;
  try {
    const running = await startWhenFree(req, () =>
      startBackup({
        pool: req.pool,
        dataDir: req.dataDir,
        log: req.log,
        actor: req.actor,
        via: req.via,
        encryption: req.encryption,
        onProgress: (p) => req.onProgress?.(meter.update(p)),
      }),
    );
    const onAbort = () => running.output.destroy(new CofferError('E_CANCELED', 'the backup was canceled'));
    req.signal?.addEventListener('abort', onAbort, { once: true });
    // Canceled while the backup was starting: the listener came too late to hear it.
    if (req.signal?.aborted) onAbort();
    let result;
    try {
      await pipeline(running.output, pending.stream).catch((err: unknown) => {
        throw isCofferError(err) ? err : storeError(req.store, err, `cannot write ${object}`);
      });
      result = await running.result;
    } catch (err) {
      await running.result.catch(() => undefined);
      if (req.signal?.aborted) throw new CofferError('E_CANCELED', 'the backup was canceled');
      throw err;
    } finally {
      req.signal?.removeEventListener('abort', onAbort);
    }
    const { size } = await pending.commit();
    committed = true;
    const m = result.manifest;
    let keyId: string | null = null;
    if (result.encrypted) {
      const source = await req.store.open(object);
      try {
        const header = await source.read(0, HEADER_SIZE);
        if (isCofferEncrypted(header)) keyId = parseHeaderFields(header).keyId.toString('hex');
      } finally {
        await source.close();
      }
    }
    const record: BackupRecord = {
      record: 1,
      id: req.id,
      name: req.name,
      object,
      created_by: req.createdBy,
      created_at: req.createdAt.toISOString(),
      started_at: startedAt.toISOString(),
      finished_at: new Date().toISOString(),
      size,
      sha256: result.sha256,
      encrypted: result.encrypted,
      encryption,
      key_id: keyId,
      recipients: recipientsOf(req.encryption),
      correlation_id: req.correlationId,
      summary: {
        tables: m.tables.length,
        rows: m.tables.reduce((n, t) => n + t.rows, 0),
        files: Object.values(m.files).reduce((n, f) => n + f.files, 0),
        file_bytes: Object.values(m.files).reduce((n, f) => n + f.bytes, 0),
        migrations: m.migrations,
        app_version: m.app.version,
        postgres: m.postgres.server_version,
      },
    };
    await putBuffer(req.store, recordObjectName(req.id), JSON.stringify(record, null, 2) + '\n');
    return record;
  } catch (err) {
    if (committed) await req.store.delete(object).catch(() => undefined);
    else await pending.abort().catch(() => undefined);
    throw err;
  }
}

/**
 * A job does not fail because a streaming or CLI backup holds the backup lock: it waits (phase
 * `waiting`), checking every second, until the lock is free or the job is canceled.
 */
async function startWhenFree<T>(req: StoredBackupRequest, start: () => Promise<T>): Promise<T> {
  for (;;) {
    if (req.signal?.aborted) throw new CofferError('E_CANCELED', 'the backup was canceled');
    try {
      return await start();
    } catch (err) {
      if (!isCofferError(err, 'E_BACKUP_RUNNING')) throw err;
    }
    req.onProgress?.({ phase: 'waiting', percent: 0, rows: 0, bytes: 0, eta_s: null });
    await delay(1000, undefined, { signal: req.signal }).catch(() => undefined);
  }
}

/** Reads and checks a backup's record from the store (rescan). */
export async function readBackupRecord(store: BackupStore, name: string): Promise<BackupRecord> {
  const raw = await readObject(store, name);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new CofferError('E_STORE', `${name} in ${store.location} is not valid JSON: ${errorMessage(err)}`);
  }
  const r = backupRecordSchema.safeParse(parsed);
  if (!r.success) throw new CofferError('E_STORE', `${name} in ${store.location} is not a backup record: ${r.error.issues[0].path.join('.')}: ${r.error.issues[0].message}`);
  return r.data;
}

/**
 * Checks that `key` opens a stored archive's header (the key id of a raw key, an age identity against
 * the stanzas), reading only the start of the object: a wrong key is refused before a job is queued.
 */
export async function checkStoredKey(store: BackupStore, object: string, key: KeySource): Promise<void> {
  const source = await store.open(object);
  try {
    await readEnvelope(source, key);
  } finally {
    await source.close();
  }
}

/** Opens a stored archive (checking its key, its header and its manifest) without changing anything. */
export async function openStoredArchive(store: BackupStore, object: string, key: KeySource | undefined): Promise<OpenedArchive> {
  return openArchive(await store.open(object), key);
}

export interface StoredRestoreRequest {
  pool: pg.Pool;
  dataDir: string;
  /** From openStoredArchive; closed by the caller. */
  archive: OpenedArchive;
  object: string;
  backupId: string;
  sha256: string | null;
  log: Logger;
  actor?: Actor;
  restoreId: string;
  onProgress?: (p: Progress) => void;
}

/** Restores a stored backup, exactly as `coffer restore` does a file: read at random offsets from the store. */
export async function restoreStoredBackup(req: StoredRestoreRequest): Promise<RestoreSummary> {
  const meter = new RestoreProgressMeter(req.archive.manifest);
  return restoreArchive({
    archive: req.archive,
    pool: req.pool,
    dataDir: req.dataDir,
    log: req.log,
    actor: req.actor,
    source: { stored_backup_id: req.backupId, restore_job_id: req.restoreId, archive: req.object, archive_sha256: req.sha256 },
    onProgress: (p) => req.onProgress?.(meter.update(p)),
  });
}
