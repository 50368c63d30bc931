import { randomBytes, randomUUID } from 'node:crypto';
import PgBoss from 'pg-boss';
import type pg from 'pg';
import type { Config } from '../config';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { FINAL_STATUSES, type BackupObject, type JobError, type Progress, type RestoreObject } from '../core/jobs';
import { encryptionFor, openSealedKeySource, parseRecipient, recipientsOf, sealKeySource, type KeySource } from '../crypto';
import type { Actor } from '../db/backup-log';
import * as catalog from '../db/catalog';
import { jobLockKey, LOCKS } from '../db/locks';
import { activeQueueEntries, ensureOpsSchema, JOBS_SCHEMA } from '../db/ops-schema';
import { createPool } from '../db/pool';
import type { Logger } from '../log';
import { authorizeJobRun } from '../pipeline/policy';
import type { OpenedArchive } from '../pipeline/open-archive';
import { archiveObjectName, checkStoredKey, openStoredArchive, readBackupRecord, recordObjectName, restoreStoredBackup, takeStoredBackup } from '../pipeline/stored';
import type { BackupStore } from '../storage/backup-store';
import { LocalStore } from '../storage/stores/local';

/**
 * Stored backups and restores as jobs (DESIGN §8). pg-boss (in its own schema, coffer_jobs) queues
 * them in one queue with the `singleton` policy: at most one backup or restore runs at a time across
 * every coffer process on the database; the others wait as `queued`. What operators see (status,
 * progress, errors) is coffer's own catalog in coffer_ops, which a restore never touches.
 *
 * Crash safety: the process running a job holds a session advisory lock on the job's id for as long
 * as it runs. A job recorded as running whose lock nobody holds was interrupted (its process died):
 * the sweep, at every worker start and every SWEEP_MS, marks it failed with E_INTERRUPTED, removes its
 * partial objects and fails its queue entry. Interrupted jobs are not retried: a backup is cheap to
 * ask for again, and a restore should never restart on its own.
 */
export const QUEUE = 'coffer-work';
const SWEEP_MS = 10_000;
const PROGRESS_WRITE_MS = 1000;
/** pg-boss's ceiling is 24 h; coffer's own lock, not expiry, tells a dead job from a slow one. */
const EXPIRE_SECONDS = 23 * 3600;

interface JobData {
  kind: 'backup' | 'restore';
  id: string;
  sealed?: string;
  /** Recipients are public: a job sealing to them runs in any coffer process, whatever its BACKUP_KEY. */
  recipients?: string[];
}

export interface Requester {
  actor?: Actor;
  /** Shown as created_by. */
  username: string | null;
  userId: string | null;
  via: 'http' | 'cli';
}

export interface CreateBackupRequest extends Requester {
  name?: string;
  encryption?: KeySource;
  correlationId?: string;
}

export interface CreateRestoreRequest extends Requester {
  backupId: string;
  key?: KeySource;
  safetyBackup: boolean;
  correlationId?: string;
}

const queuedProgress = (): Progress => ({ phase: 'queued', percent: 0, rows: 0, bytes: 0, eta_s: null });
const doneProgress = (rows: number, bytes: number): Progress => ({ phase: 'done', percent: 100, rows, bytes, eta_s: 0 });

const STOPPED: JobError = { code: 'E_INTERRUPTED', message: 'the coffer process running this job was stopped before the job finished; nothing of it was kept' };

function jobError(err: unknown): JobError {
  if (isCofferError(err)) return { code: err.code, message: err.message };
  return { code: 'E_INTERNAL', message: errorMessage(err) };
}

/** The catalog's encryption columns for a backup sealed with `key`. */
function encryptionColumns(key: KeySource | undefined): { encryption: ReturnType<typeof encryptionFor>; recipients: string[] } {
  return { encryption: encryptionFor(key), recipients: recipientsOf(key) };
}

function defaultName(prefix: string, at = new Date()): string {
  return `${prefix}-${at.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}`;
}

export interface JobsOptions {
  /** The database the jobs work on (the application's pool). */
  pool: pg.Pool;
  /** Its URL: the job bookkeeping gets a small pool of its own, so busy requests cannot starve it. */
  url: string;
  config: Config;
  log: Logger;
  store?: BackupStore;
}

export class Jobs {
  readonly store: BackupStore;
  private readonly ops: pg.Pool;
  private readonly boss: PgBoss;
  private readonly sealSecret: Buffer;
  private readonly local = new Map<string, AbortController>();
  private workerClient?: pg.PoolClient;
  private sweeper?: NodeJS.Timeout;
  private sweeping?: Promise<void>;
  private running = new Set<Promise<unknown>>();
  private closed = false;
  /** Set by close(): jobs it stops end as interrupted, not as canceled by someone. */
  private stopping = false;
  /** runUntilFinal: the job after which this process takes no more jobs. */
  private stopAfter?: string;

  private constructor(private readonly opts: JobsOptions) {
    this.store = opts.store ?? new LocalStore(opts.config.backupDir);
    this.ops = createPool(opts.url, opts.log, { max: 4, applicationName: 'coffer-jobs' });
    const ops = this.ops;
    this.boss = new PgBoss({
      db: { executeSql: (text: string, values: unknown[]) => ops.query(text, values) },
      schema: JOBS_SCHEMA,
      schedule: false,
      supervise: true,
      migrate: true,
    });
    this.boss.on('error', (err: Error) => opts.log.warn({ err: errorMessage(err) }, 'job queue error'));
    // Every coffer process on the database shares BACKUP_KEY; without one, only this process can open
    // the keys it sealed (it then runs its jobs itself).
    this.sealSecret = opts.config.backupKey ? Buffer.from(opts.config.backupKey.reveal(), 'utf8') : randomBytes(32);
  }

  /** Prepares the schemas and the queue and sweeps interrupted jobs; does not run jobs until startWorker(). */
  static async open(opts: JobsOptions): Promise<Jobs> {
    const jobs = new Jobs(opts);
    try {
      await ensureOpsSchema(jobs.ops);
      await jobs.boss.start();
      await jobs.boss.createQueue(QUEUE, { name: QUEUE, policy: 'singleton' });
      // Any process that looks at jobs sees the present: one a crash left "running" is marked first.
      await jobs.sweep();
    } catch (err) {
      await jobs.close();
      throw err;
    }
    return jobs;
  }

  private get log(): Logger {
    return this.opts.log;
  }

  // ---- the worker ----------------------------------------------------------------------------

  /** Runs queued jobs in this process until close(). Sweeps interrupted jobs first. */
  async startWorker(): Promise<void> {
    if (this.workerClient) return;
    const client = await this.ops.connect();
    await client.query('SELECT pg_advisory_lock_shared($1)', [LOCKS.worker.toString()]);
    this.workerClient = client;
    await this.sweep();
    await this.boss.work<JobData>(QUEUE, { pollingIntervalSeconds: 0.5, batchSize: 1 }, async ([job]) => {
      const run = this.run(job.id, job.data);
      this.running.add(run);
      try {
        await run;
      } finally {
        this.running.delete(run);
        // Before the handler returns, so the worker loop does not fetch another job.
        if (job.data.id === this.stopAfter) await this.boss.offWork(QUEUE);
      }
    });
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /**
   * For a command that found no worker on the database: runs jobs in this process until job `id` has
   * ended, then takes no more. Jobs queued before it run first (one queue, one job at a time). If
   * another process ran `id`, a job this one is running when `id` ends is canceled by close().
   */
  async runUntilFinal(kind: 'backup', id: string, opts?: WaitOptions<BackupObject>): Promise<BackupObject>;
  async runUntilFinal(kind: 'restore', id: string, opts?: WaitOptions<RestoreObject>): Promise<RestoreObject>;
  async runUntilFinal(kind: 'backup' | 'restore', id: string, opts: WaitOptions<BackupObject & RestoreObject> = {}): Promise<BackupObject | RestoreObject> {
    this.stopAfter = id;
    await this.startWorker();
    try {
      return kind === 'backup' ? await this.waitFor('backup', id, opts as WaitOptions<BackupObject>) : await this.waitFor('restore', id, opts as WaitOptions<RestoreObject>);
    } finally {
      await this.boss.offWork(QUEUE);
    }
  }

  /** Whether some coffer process (this one included) runs jobs on this database. */
  async workerIsUp(): Promise<boolean> {
    if (this.workerClient) return true;
    const client = await this.ops.connect();
    try {
      const res = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [LOCKS.worker.toString()]);
      if (res.rows[0].ok) await client.query('SELECT pg_advisory_unlock($1)', [LOCKS.worker.toString()]);
      return !res.rows[0].ok;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopping = true;
    if (this.sweeper) clearInterval(this.sweeper);
    await this.sweeping?.catch(() => undefined);
    // Jobs still running are stopped and end as E_INTERRUPTED (a restore already loading runs to its
    // end: it is all or nothing, and waiting for it is the safe choice).
    for (const ctl of this.local.values()) ctl.abort();
    await Promise.allSettled([...this.running]);
    await this.boss.stop({ graceful: true, wait: true, close: false, timeout: 5000 }).catch(() => undefined);
    this.workerClient?.release(true);
    this.workerClient = undefined;
    await this.ops.end().catch(() => undefined);
  }

  /** Holds the job's advisory lock while fn runs: the sign, for every sweep, that its owner is alive. */
  private async withJobLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const client = await this.ops.connect();
    let ok = false;
    try {
      ok = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [jobLockKey(id)])).rows[0].ok;
      if (!ok) throw new CofferError('E_CONFLICT', `job ${id} is already being run by another process`);
      return await fn();
    } finally {
      if (ok) await client.query('SELECT pg_advisory_unlock($1)', [jobLockKey(id)]).catch(() => undefined);
      client.release(!ok);
    }
  }

  private async run(queueId: string, data: JobData): Promise<void> {
    try {
      const key = data.recipients
        ? { kind: 'recipients' as const, recipients: data.recipients.map((r) => parseRecipient(r, 'queued job')) }
        : data.sealed ? openSealedKeySource(this.sealSecret, data.sealed) : undefined;
      await this.withJobLock(data.id, () => (data.kind === 'backup' ? this.runBackup(data.id, key) : this.runRestore(data.id, key)));
    } catch (err) {
      // Only failures before the job could record its own outcome land here.
      const e = jobError(err);
      if (data.kind === 'backup') await catalog.endBackupRow(this.ops, data.id, 'failed', e).catch(() => undefined);
      else await catalog.endRestoreRow(this.ops, data.id, 'failed', e).catch(() => undefined);
      this.log.warn({ job: data.id, code: e.code }, `job failed: ${e.message}`);
    } finally {
      // The queue entry holds the sealed key: it goes as soon as the job ends.
      await this.boss.deleteJob(QUEUE, queueId).catch(() => undefined);
    }
  }

  /** Writes progress at most once a second; aborts the job when it was canceled or taken from it. */
  private progressWriter(write: (p: Progress | undefined) => Promise<{ running: boolean; cancel: boolean }>, ctl: AbortController) {
    let latest: Progress | undefined;
    let writing: Promise<void> = Promise.resolve();
    const flush = () => {
      const p = latest;
      latest = undefined;
      writing = writing
        .then(async () => {
          if (!p && ctl.signal.aborted) return;
          const state = await write(p);
          if (!state.running || state.cancel) ctl.abort();
        })
        .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'could not record job progress'));
    };
    const timer = setInterval(flush, PROGRESS_WRITE_MS);
    timer.unref();
    return {
      update: (p: Progress) => {
        latest = p;
      },
      async stop() {
        clearInterval(timer);
        await writing;
      },
    };
  }

  private async runBackup(id: string, key: KeySource | undefined): Promise<void> {
    const row = await catalog.getBackup(this.ops, id);
    if (!row || !(await catalog.startBackupRow(this.ops, id, archiveObjectName(id, row.encryption)))) return; // canceled while queued
    await this.backupInto(row, key);
  }

  /** Runs the backup of a catalog row already marked running; records the outcome. */
  private async backupInto(row: catalog.BackupRow, key: KeySource | undefined): Promise<catalog.BackupRow> {
    const ctl = new AbortController();
    this.local.set(row.id, ctl);
    const progress = this.progressWriter((p) => catalog.backupProgress(this.ops, row.id, p), ctl);
    try {
      await authorizeJobRun(this.opts.pool, row.created_by_id);
      const record = await takeStoredBackup({
        id: row.id,
        name: row.name,
        createdBy: row.created_by,
        createdAt: row.created_at,
        correlationId: row.correlation_id,
        pool: this.opts.pool,
        dataDir: this.opts.config.dataDir,
        store: this.store,
        log: this.log,
        actor: row.created_by ? { id: row.created_by_id ?? undefined, username: row.created_by } : undefined,
        via: row.via === 'http' ? 'http' : 'cli',
        encryption: key,
        onProgress: progress.update,
        signal: ctl.signal,
      });
      await progress.stop();
      await catalog.finishBackupRow(this.ops, record, doneProgress(record.summary.rows, record.size));
      this.log.info({ backup: row.id, bytes: record.size }, 'stored backup finished');
    } catch (err) {
      await progress.stop();
      const canceled = !this.stopping && (ctl.signal.aborted || isCofferError(err, 'E_CANCELED'));
      const current = await catalog.getBackup(this.ops, row.id);
      // Taken over by a sweep (its lock was lost): the sweep recorded the outcome.
      if (current?.status === 'running') {
        await catalog.endBackupRow(
          this.ops,
          row.id,
          canceled ? 'canceled' : 'failed',
          canceled ? { code: 'E_CANCELED', message: 'the backup was canceled' } : this.stopping ? STOPPED : jobError(err),
        );
      }
      this.log.warn({ backup: row.id }, `stored backup ${canceled ? 'canceled' : 'failed'}: ${errorMessage(err)}`);
    } finally {
      this.local.delete(row.id);
    }
    return (await catalog.getBackup(this.ops, row.id))!;
  }

  private async runRestore(id: string, key: KeySource | undefined): Promise<void> {
    const row = await catalog.getRestore(this.ops, id);
    if (!row || !(await catalog.startRestoreRow(this.ops, id))) return;
    const ctl = new AbortController();
    this.local.set(id, ctl);
    let safetyId: string | undefined;
    let archive: OpenedArchive | undefined;
    const progress = this.progressWriter((p) => catalog.restoreProgress(this.ops, id, p, safetyId), ctl);
    try {
      await authorizeJobRun(this.opts.pool, row.created_by_id);
      const source = await this.finishedBackup(row.backup_id, 'restored');
      // The key and the archive are checked before anything else, the safety backup included.
      archive = await openStoredArchive(this.store, source.object, key);
      const actor = row.created_by ? { id: row.created_by_id ?? undefined, username: row.created_by } : undefined;
      if (row.safety_backup) {
        // Taken inside this job (the queue runs one job at a time): encrypted like the backup restored,
        // an age backup to the recipients of the identities that opened it.
        const sealWith: KeySource | undefined = key?.kind === 'identities' ? { kind: 'recipients', recipients: key.identities.map((i) => i.recipient) } : key;
        safetyId = randomUUID();
        const safety = await catalog.insertBackup(this.ops, {
          id: safetyId,
          name: defaultName('pre-restore'),
          status: 'running',
          store: this.store.kind,
          createdBy: row.created_by,
          createdById: row.created_by_id === null ? null : Number(row.created_by_id),
          via: row.via,
          ...encryptionColumns(sealWith),
          correlationId: row.correlation_id,
          progress: queuedProgress(),
        });
        await catalog.startBackupRow(this.ops, safetyId, archiveObjectName(safetyId, encryptionFor(sealWith)));
        await catalog.restoreProgress(this.ops, id, undefined, safetyId);
        progress.update({ phase: 'safety-backup', percent: 0, rows: 0, bytes: 0, eta_s: null });
        const done = await this.withJobLock(safetyId, () => this.backupInto(safety, sealWith));
        if (done.status !== 'finished') {
          throw new CofferError('E_JOB_FAILED', `the safety backup ${safetyId} did not finish (${done.error?.message ?? done.status}), so nothing was restored`);
        }
      }
      ctl.signal.throwIfAborted();
      const summary = await restoreStoredBackup({
        pool: this.opts.pool,
        dataDir: this.opts.config.dataDir,
        archive,
        object: source.object,
        backupId: source.id,
        sha256: source.sha256,
        log: this.log,
        actor,
        restoreId: id,
        onProgress: progress.update,
      });
      await progress.stop();
      await catalog.endRestoreRow(this.ops, id, 'finished', null, doneProgress(summary.rows, Number(source.size ?? 0)));
      this.log.info({ restore: id, backup: source.id, rows: summary.rows }, 'restore from a stored backup finished');
    } catch (err) {
      await progress.stop();
      const canceled = !this.stopping && ctl.signal.aborted;
      await catalog.endRestoreRow(
        this.ops,
        id,
        canceled ? 'canceled' : 'failed',
        canceled ? { code: 'E_CANCELED', message: 'the restore was canceled before it changed anything' } : this.stopping ? STOPPED : jobError(err),
      );
      this.log.warn({ restore: id }, `restore from a stored backup failed: ${errorMessage(err)}`);
    } finally {
      await archive?.close().catch(() => undefined);
      this.local.delete(id);
    }
  }

  /** A backup that exists in the store and is finished; E_NOT_FOUND, E_BACKUP_MISSING or E_NOT_FINISHED otherwise. */
  private async finishedBackup(id: string, doing: string): Promise<FinishedRow> {
    return this.requireFinished(await this.checkPresent(await this.getBackupRow(id)), doing);
  }

  private requireFinished(row: catalog.BackupRow, doing: string): FinishedRow {
    if (row.status === 'missing') throw new CofferError('E_BACKUP_MISSING', `stored backup ${row.id} is missing: ${row.object} is no longer in ${this.store.location} (run coffer backups rescan)`);
    if (row.status !== 'finished' || !row.object) throw new CofferError('E_NOT_FINISHED', `stored backup ${row.id} is ${row.status}; it can be ${doing} once finished`);
    return { ...row, object: row.object };
  }

  // ---- the sweep -----------------------------------------------------------------------------

  /** Marks jobs whose process died as failed (E_INTERRUPTED) and removes their partial objects. */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<void> {
    try {
      const client = await this.ops.connect();
      try {
        for (const job of await catalog.runningJobs(client)) {
          const free = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [jobLockKey(job.id)])).rows[0].ok;
          if (!free) continue;
          try {
            const error = { code: 'E_INTERRUPTED', message: 'the coffer process running this job stopped (crash, kill or power loss) before it finished' };
            // Partial objects go first, so a job seen as failed never leaves one behind; a store that cannot
            // remove them (logged) does not keep the job running.
            const removed = await this.store.removePartials(job.id).catch((err: unknown) => {
              this.log.warn({ job: job.id, err: errorMessage(err) }, 'could not remove the partial objects of an interrupted job');
              return [];
            });
            const ended = job.kind === 'backup' ? await catalog.endBackupRow(client, job.id, 'failed', error) : await catalog.endRestoreRow(client, job.id, 'failed', error);
            // Its queue entry, if still active, goes with the entries below (the job is final now).
            if (ended) this.log.warn({ job: job.id, kind: job.kind, removed }, 'marked an interrupted job failed (E_INTERRUPTED)');
          } finally {
            await client.query('SELECT pg_advisory_unlock($1)', [jobLockKey(job.id)]);
          }
        }
        // Queue entries still active with no live owner: taken by a process that died before it marked
        // the job running, or after the job ended but before the entry was deleted. Either blocks the
        // singleton queue until pg-boss's expiry (hours), so they are failed and deleted here.
        for (const entry of await activeQueueEntries(client, QUEUE)) {
          const free = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [jobLockKey(entry.id)])).rows[0].ok;
          if (!free) continue;
          try {
            const backup = await catalog.getBackup(client, entry.id);
            const restore = backup ? undefined : await catalog.getRestore(client, entry.id);
            const status = backup?.status ?? restore?.status;
            const ended = status !== undefined && FINAL_STATUSES.includes(status);
            // A live worker takes the job's lock within moments of taking the entry: give it that time.
            if (!ended && entry.ageMs < SWEEP_MS) continue;
            if (!ended) {
              const error = { code: 'E_INTERRUPTED', message: 'the coffer process that took this job stopped before it started' };
              if (backup) await catalog.endBackupRow(client, entry.id, 'failed', error);
              if (restore) await catalog.endRestoreRow(client, entry.id, 'failed', error);
            }
            await this.boss.deleteJob(QUEUE, entry.id).catch(() => undefined);
          } finally {
            await client.query('SELECT pg_advisory_unlock($1)', [jobLockKey(entry.id)]);
          }
        }
        // Partial objects with no running job behind them (a crash before the job was recorded).
        const live = new Set((await catalog.runningJobs(client)).map((j) => j.id));
        for (const name of await this.store.listPartials()) {
          const owner = name.split('.')[0];
          if (!live.has(owner)) await this.store.removePartials(owner);
        }
      } finally {
        client.release();
      }
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not check for interrupted jobs');
    }
  }

  // ---- requests ------------------------------------------------------------------------------

  async createBackup(req: CreateBackupRequest): Promise<BackupObject> {
    const id = randomUUID();
    const row = await catalog.insertBackup(this.ops, {
      id,
      name: req.name ?? defaultName('backup'),
      status: 'queued',
      store: this.store.kind,
      createdBy: req.username,
      createdById: req.userId === null ? null : Number(req.userId),
      via: req.via,
      ...encryptionColumns(req.encryption),
      correlationId: req.correlationId ?? null,
      progress: queuedProgress(),
    });
    await this.enqueue({ kind: 'backup', id, ...this.keyData(req.encryption) }, () =>
      catalog.endBackupRow(this.ops, id, 'failed', { code: 'E_INTERNAL', message: 'could not queue the job' }),
    );
    return catalog.backupObject(row);
  }

  async createRestore(req: CreateRestoreRequest): Promise<RestoreObject> {
    const backup = this.requireFinished(await this.getBackupRow(req.backupId), 'restored');
    if (backup.encryption !== 'none' && !req.key) {
      throw new CofferError('E_CRYPT_KEY_REQUIRED', `stored backup ${backup.id} is ${backup.encryption === 'age' ? `sealed to age recipients: give identities` : 'encrypted: give aes_key or passphrase'}`);
    }
    // A raw key or an identity is checked now against the archive's header; a passphrase needs
    // argon2, so the job checks it.
    if (req.key && req.key.kind !== 'passphrase' && backup.encryption !== 'none') {
      await checkStoredKey(this.store, backup.object!, req.key).catch((err: unknown) => {
        throw isCofferError(err) ? new CofferError(err.code, `stored backup ${backup.id}: ${err.message}`) : err;
      });
    }
    const id = randomUUID();
    const row = await catalog.insertRestore(this.ops, {
      id,
      backupId: backup.id,
      safetyBackup: req.safetyBackup,
      createdBy: req.username,
      createdById: req.userId === null ? null : Number(req.userId),
      via: req.via,
      correlationId: req.correlationId ?? null,
      progress: queuedProgress(),
    });
    await this.enqueue({ kind: 'restore', id, ...this.keyData(req.key) }, () =>
      catalog.endRestoreRow(this.ops, id, 'failed', { code: 'E_INTERNAL', message: 'could not queue the job' }),
    );
    return catalog.restoreObject(row);
  }

  /** How a job's key travels in its queue entry: recipients as they are, secrets sealed. */
  private keyData(key: KeySource | undefined): Pick<JobData, 'sealed' | 'recipients'> {
    if (key === undefined) return {};
    if (key.kind === 'recipients') return { recipients: recipientsOf(key) };
    return { sealed: sealKeySource(this.sealSecret, key) };
  }

  private async enqueue(data: JobData, undo: () => Promise<unknown>): Promise<void> {
    try {
      await this.boss.send(QUEUE, data, { id: data.id, retryLimit: 0, expireInSeconds: EXPIRE_SECONDS });
    } catch (err) {
      await undo().catch(() => undefined);
      throw err;
    }
  }

  private async getBackupRow(id: string): Promise<catalog.BackupRow> {
    const row = isUuid(id) ? await catalog.getBackup(this.ops, id) : undefined;
    if (!row) throw new CofferError('E_NOT_FOUND', `no stored backup ${JSON.stringify(id)}`);
    return row;
  }

  /** A finished backup whose file has vanished shows `missing` (until rescan). */
  private async checkPresent(row: catalog.BackupRow): Promise<catalog.BackupRow> {
    if (row.status === 'finished' && row.object && !(await this.store.stat(row.object))) {
      await catalog.setBackupStatus(this.ops, row.id, 'finished', 'missing');
      return { ...row, status: 'missing' };
    }
    return row;
  }

  async getBackup(id: string): Promise<BackupObject> {
    return catalog.backupObject(await this.checkPresent(await this.getBackupRow(id)));
  }

  async listBackups(status?: string): Promise<BackupObject[]> {
    const rows = await catalog.listBackups(this.ops, status === 'missing' ? undefined : status);
    const checked = await Promise.all(rows.map((r) => this.checkPresent(r)));
    return checked.filter((r) => status === undefined || r.status === status).map(catalog.backupObject);
  }

  async getRestore(id: string): Promise<RestoreObject> {
    const row = isUuid(id) ? await catalog.getRestore(this.ops, id) : undefined;
    if (!row) throw new CofferError('E_NOT_FOUND', `no restore ${JSON.stringify(id)}`);
    return catalog.restoreObject(row);
  }

  async listRestores(): Promise<RestoreObject[]> {
    return (await catalog.listRestores(this.ops)).map(catalog.restoreObject);
  }

  /** Opens a finished backup's file for download. 409 until finished, 410 when it vanished. */
  async openDownload(id: string): Promise<{ backup: BackupObject; object: string; source: Awaited<ReturnType<BackupStore['open']>> }> {
    const row = await this.finishedBackup(id, 'downloaded');
    try {
      return { backup: catalog.backupObject(row), object: row.object, source: await this.store.open(row.object) };
    } catch (err) {
      if (isCofferError(err, 'E_BACKUP_MISSING')) await catalog.setBackupStatus(this.ops, id, 'finished', 'missing');
      throw err;
    }
  }

  /**
   * Deletes a backup: a finished (or missing, failed, canceled) one with its files; a queued or
   * running one is canceled (its partial file removed) and stays listed as `canceled`.
   */
  async deleteBackup(id: string): Promise<BackupObject | undefined> {
    const row = await this.getBackupRow(id);
    if (row.status === 'queued') {
      await this.boss.cancel(QUEUE, id).catch(() => undefined);
      if (await catalog.endBackupRow(this.ops, id, 'canceled', { code: 'E_CANCELED', message: 'the backup was canceled before it started' })) {
        await this.boss.deleteJob(QUEUE, id).catch(() => undefined);
        return catalog.backupObject((await catalog.getBackup(this.ops, id))!);
      }
    }
    const current = (await catalog.getBackup(this.ops, id))!;
    if (current.status === 'running') {
      await catalog.requestBackupCancel(this.ops, id);
      this.local.get(id)?.abort();
      const ended = await this.waitFor('backup', id, { timeoutMs: 30_000 });
      return ended;
    }
    if (current.object) await this.store.delete(current.object);
    await this.store.delete(recordObjectName(id));
    await this.store.removePartials(id);
    await catalog.deleteBackupRow(this.ops, id);
    return undefined;
  }

  /** Rebuilds the catalog from the store's records. */
  async rescan(): Promise<{ records: number; added: number; removed: number; problems: string[] }> {
    const objects = await this.store.list();
    const names = new Map(objects.map((o) => [o.name, o]));
    const problems: string[] = [];
    let added = 0;
    let records = 0;
    const seen = new Set<string>();
    for (const o of objects) {
      if (!o.name.endsWith('.json')) continue;
      let record;
      try {
        record = await readBackupRecord(this.store, o.name);
      } catch (err) {
        problems.push(errorMessage(err));
        continue;
      }
      const archive = names.get(record.object);
      if (!archive || archive.size !== record.size) {
        problems.push(`${o.name}: its archive ${record.object} is ${archive ? `${archive.size} bytes, the record says ${record.size}` : 'missing'}; not listed`);
        continue;
      }
      records++;
      seen.add(record.id);
      const before = await catalog.getBackup(this.ops, record.id);
      await catalog.upsertBackupRecord(this.ops, record, this.store.kind);
      if (!before) added++;
    }
    let removed = 0;
    for (const row of await catalog.listBackups(this.ops)) {
      if ((row.status === 'finished' || row.status === 'missing') && !seen.has(row.id)) {
        await catalog.deleteBackupRow(this.ops, row.id);
        removed++;
      }
    }
    return { records, added, removed, problems };
  }

  /** Polls a job until it reaches a final status (or the timeout); calls onUpdate on every change. */
  async waitFor(kind: 'backup', id: string, opts?: WaitOptions<BackupObject>): Promise<BackupObject>;
  async waitFor(kind: 'restore', id: string, opts?: WaitOptions<RestoreObject>): Promise<RestoreObject>;
  async waitFor(kind: 'backup' | 'restore', id: string, opts: WaitOptions<BackupObject & RestoreObject> = {}): Promise<BackupObject | RestoreObject> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let last = '';
    for (;;) {
      const obj = kind === 'backup' ? catalog.backupObject(await this.getBackupRow(id)) : await this.getRestore(id);
      const text = JSON.stringify(obj);
      if (text !== last) {
        last = text;
        opts.onUpdate?.(obj as BackupObject & RestoreObject);
      }
      if (FINAL_STATUSES.includes(obj.status) || Date.now() > deadline || opts.signal?.aborted) return obj;
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 250));
    }
  }
}

export interface WaitOptions<T> {
  onUpdate?: (obj: T) => void;
  timeoutMs?: number;
  intervalMs?: number;
  signal?: AbortSignal;
}

/** A catalog row of a finished backup: its object is named. */
type FinishedRow = catalog.BackupRow & { object: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export function isUuid(id: string): boolean {
  return UUID.test(id);
}
