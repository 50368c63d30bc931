import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { createAtomicFile } from '../../core/atomic-file';
import { CofferError, ERROR_CODES, type ErrorCode } from '../../core/errors';
import { FINAL_STATUSES, type BackupObject, type JobError, type Progress, type RestoreObject } from '../../core/jobs';
import type { KeySource } from '../../crypto';
import type { Database } from '../../db/connect';
import { Jobs, type Requester } from '../../jobs';
import { Meter } from '../../pipeline/meter';
import { archiveObjectName } from '../../pipeline/stored';
import { resolveDatabaseUrl, withDatabaseUrlOptions, type DatabaseUrlOptions } from '../database-url';
import { resolveKeySource, withKeyOptions, type KeyOptions } from '../keys';
import { formatBytes, JobProgressBar } from '../progress';
import { confirm } from '../prompt';
import { cliActor, print, runtime, withDatabase, type Runtime } from '../runtime';

/**
 * `coffer backups ...`: stored backups from the command line, through the same jobs as the HTTP API
 * (src/jobs). When a coffer process runs jobs on the database (the service), a job is handed to it;
 * otherwise this process runs its own job and exits when it has ended.
 */

interface JsonOption {
  json?: boolean;
}
interface CreateOptions extends KeyOptions, DatabaseUrlOptions {
  name?: string;
  wait?: boolean;
}
interface RestoreOptions extends KeyOptions, DatabaseUrlOptions {
  safetyBackup: boolean;
  yes?: boolean;
  wait?: boolean;
}
interface DownloadOptions extends DatabaseUrlOptions {
  output?: string;
}

interface Session {
  rt: Runtime;
  db: Database;
  jobs: Jobs;
}

/** Opens the database (migrated, as every command that writes does) and the jobs, runs fn, closes. */
async function withJobs<T>(opts: DatabaseUrlOptions, fn: (s: Session) => Promise<T>, rt = runtime({ quietByDefault: true })): Promise<T> {
  const url = resolveDatabaseUrl(opts);
  return withDatabase(
    rt,
    async (db) => {
      // A job's failure becomes this command's error line; its log warning would say it twice.
      const log = rt.config.logLevelExplicit ? rt.log : rt.log.child({}, { level: 'error' });
      const jobs = await Jobs.open({ pool: db.pool, url: db.url, config: rt.config, log });
      try {
        return await fn({ rt, db, jobs });
      } finally {
        await jobs.close();
      }
    },
    { url },
  );
}

function requester(rt: Runtime): Requester {
  const actor = cliActor(rt.config);
  return { actor, username: actor.username, userId: null, via: 'cli' };
}

/**
 * Whether this process must run the job itself: no coffer process runs jobs on the database. A key
 * handed to another process is sealed with BACKUP_KEY, so without it the other process could not open it.
 */
async function mustRunHere(s: Session, key: KeySource | undefined): Promise<boolean> {
  if (!(await s.jobs.workerIsUp())) return true;
  // Recipients travel in the clear (they are public keys); any other key is sealed with BACKUP_KEY.
  if (key && key.kind !== 'recipients' && !s.rt.config.backupKey) {
    throw new CofferError(
      'E_CONFIG',
      'a coffer service runs the jobs on this database, and it can open the key given here only if BACKUP_KEY is set to the same value as the service: set BACKUP_KEY',
    );
  }
  return false;
}

type Kind = 'backup' | 'restore';
type JobObject<K extends Kind> = K extends 'backup' ? BackupObject : RestoreObject;

/** Every few seconds: is a worker still up? If it went away, waiting on it would never end. */
const WORKER_CHECK_MS = 5000;

/**
 * Follows a job to a final status with a progress bar: runs it here (runHere), or waits on the
 * process that does; if that process goes away meanwhile, this one takes over (the sweep at its
 * worker start marks a job the other left running E_INTERRUPTED; a queued one runs here).
 */
async function followJob<K extends Kind>(s: Session, kind: K, id: string, runHere: boolean): Promise<JobObject<K>> {
  const bar = new JobProgressBar(kind);
  const onUpdate = (o: { progress: Progress | null }) => bar.update(o.progress);
  try {
    if (!runHere) {
      const gone = new AbortController();
      const timer = setInterval(() => {
        s.jobs
          .workerIsUp()
          .then((up) => up || gone.abort())
          .catch(() => undefined);
      }, WORKER_CHECK_MS);
      try {
        const obj = await waitFor(s.jobs, kind, id, { onUpdate, signal: gone.signal });
        if (FINAL_STATUSES.includes(obj.status)) return obj;
      } finally {
        clearInterval(timer);
      }
      bar.stop();
      process.stderr.write(`coffer: no coffer process runs jobs on this database any more; running ${kind} ${id} here\n`);
    }
    return (kind === 'backup' ? await s.jobs.runUntilFinal('backup', id, { onUpdate }) : await s.jobs.runUntilFinal('restore', id, { onUpdate })) as JobObject<K>;
  } finally {
    bar.stop();
  }
}

function waitFor<K extends Kind>(jobs: Jobs, kind: K, id: string, opts: { onUpdate: (o: { progress: Progress | null }) => void; signal: AbortSignal }): Promise<JobObject<K>> {
  return (kind === 'backup' ? jobs.waitFor('backup', id, opts) : jobs.waitFor('restore', id, opts)) as Promise<JobObject<K>>;
}

/** A job that did not finish becomes the command's error: its own code (and exit status) where coffer knows it. */
function throwUnlessFinished(obj: { status: string; error: JobError | null }, what: string): void {
  if (obj.status === 'finished') return;
  if (obj.status === 'canceled') throw new CofferError('E_CANCELED', obj.error?.message ?? `${what} was canceled`);
  if (obj.status === 'missing') throw new CofferError('E_BACKUP_MISSING', `${what} finished, but its file is no longer in the store (run coffer backups rescan)`);
  const known = obj.error && Object.hasOwn(ERROR_CODES, obj.error.code);
  throw new CofferError(known ? (obj.error!.code as ErrorCode) : 'E_JOB_FAILED', obj.error?.message ?? `${what} ended ${obj.status}`);
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

function sizeOf(b: BackupObject): string {
  return b.size === null ? '-' : formatBytes(b.size);
}

function contentsOf(b: BackupObject): string {
  return `${b.tables ?? '?'} tables, ${b.rows ?? '?'} rows, ${b.files ?? '?'} files`;
}

function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  '));
}

function describeBackup(b: BackupObject): string[] {
  const lines: [string, string | null][] = [
    ['id', b.id],
    ['name', b.name],
    ['status', b.status],
    ['created', `${b.created_at}${b.created_by ? ` by ${b.created_by}` : ''}`],
    ['started', b.started_at],
    ['finished', b.finished_at],
    ['size', b.size === null ? null : `${formatBytes(b.size)} (${b.size} bytes)`],
    ['sha256', b.sha256],
    ['encrypted', b.encryption === 'age' ? `age, sealed to ${b.recipients.join(', ')}` : b.encrypted ? `yes${b.key_id ? `, key id ${b.key_id}` : ''}` : 'no'],
    ['contents', b.tables === null ? null : contentsOf(b)],
    ['progress', b.status === 'running' && b.progress ? `${b.progress.phase} ${Math.round(b.progress.percent)}%` : null],
    ['error', b.error ? `${b.error.message} [${b.error.code}]` : null],
    ['correlation', b.correlation_id],
  ];
  return lines.filter(([, v]) => v !== null).map(([k, v]) => `${k.padEnd(12)}${v}`);
}

function registerList(backups: Command): void {
  withDatabaseUrlOptions(backups.command('list'), 'database of the service')
    .description('list stored backups, newest first')
    .option('--json', 'print {"backups": [...]}, the objects of the HTTP API')
    .action(async (opts: JsonOption & DatabaseUrlOptions) => {
      await withJobs(opts, async ({ jobs }) => {
        const list = await jobs.listBackups();
        if (opts.json) return printJson({ backups: list });
        if (list.length === 0) return print(`no stored backups in ${jobs.store.location}`);
        const rows = list.map((b) => [b.id, b.name, b.status, b.created_at, sizeOf(b), b.encryption === 'age' ? 'age' : b.encrypted ? 'yes' : 'no']);
        for (const line of table(['ID', 'NAME', 'STATUS', 'CREATED_AT', 'SIZE', 'ENCRYPTED'], rows)) print(line);
      });
    });
}

function registerCreate(backups: Command): void {
  withDatabaseUrlOptions(withKeyOptions(backups.command('create'), 'seal'), 'database to back up')
    .description('take a stored backup (into BACKUP_DIR); encrypted when a key is given, sealed to BACKUP_RECIPIENTS when set')
    .option('--name <name>', 'name of the backup (default backup-<UTC time>)')
    .option('--wait', 'when the service runs the job: follow it until it ends (without a service, the command always runs it and waits)')
    .action(async (opts: CreateOptions) => {
      const rt = runtime({ quietByDefault: true });
      const encryption = await resolveKeySource(opts, rt.config, { use: 'seal', confirm: true });
      await withJobs(
        opts,
        async (s) => {
          const runHere = await mustRunHere(s, encryption);
          const queued = await s.jobs.createBackup({ ...requester(rt), name: opts.name, encryption });
          if (!runHere && !opts.wait) return print(queued.id);
          const b = await followJob(s, 'backup', queued.id, runHere);
          throwUnlessFinished(b, `backup ${b.id}`);
          print(`backup ${b.id} (${b.name}) finished: ${sizeOf(b)}, ${contentsOf(b)}${b.encryption === 'age' ? `, sealed to ${b.recipients.length} age recipient(s)` : b.encrypted ? ', encrypted' : ''}`);
          print(`sha256 ${b.sha256}`);
        },
        rt,
      );
    });
}

function registerShow(backups: Command): void {
  withDatabaseUrlOptions(backups.command('show'), 'database of the service')
    .description('show one stored backup')
    .argument('<id>', 'backup id')
    .option('--json', 'print the object of the HTTP API')
    .action(async (id: string, opts: JsonOption & DatabaseUrlOptions) => {
      await withJobs(opts, async ({ jobs }) => {
        const b = await jobs.getBackup(id);
        if (opts.json) return printJson(b);
        for (const line of describeBackup(b)) print(line);
      });
    });
}

function registerDownload(backups: Command): void {
  withDatabaseUrlOptions(backups.command('download'), 'database of the service')
    .description('write a stored backup archive to a file, checked against its sha256')
    .argument('<id>', 'backup id')
    .option('-o, --output <file>', "file, or '-' for standard output (default: <id>.zip, <id>.zip.crypt or <id>.zip.age in the current folder)")
    .action(async (id: string, opts: DownloadOptions) => {
      const toStdout = opts.output === '-';
      if (toStdout && process.stdout.isTTY) {
        throw new CofferError('E_USAGE', 'refusing to write a binary archive to a terminal; redirect standard output or use -o FILE');
      }
      await withJobs(opts, async ({ jobs }) => {
        const { backup, object, source } = await jobs.openDownload(id);
        try {
          const target = toStdout ? 'standard output' : (opts.output ?? archiveObjectName(backup.id, backup.encryption));
          const file = toStdout ? undefined : createAtomicFile(target);
          let committed = false;
          try {
            const meter = new Meter();
            await pipeline(source.createReadStream(0, source.size), meter, file ? file.stream : process.stdout);
            const got = { sha256: meter.sha256, bytes: meter.bytes };
            if (got.sha256 !== backup.sha256 || got.bytes !== backup.size) {
              throw new CofferError(
                'E_ARCHIVE_CHECKSUM',
                `${object} in ${jobs.store.location} has sha256 ${got.sha256} (${got.bytes} bytes), the catalog says ${backup.sha256} (${backup.size} bytes): ` +
                  (file ? `${target} was not written` : 'what went to standard output is not that backup'),
              );
            }
            await file?.commit();
            committed = true;
          } finally {
            if (!committed) await file?.abort();
          }
          const line = `downloaded backup ${backup.id} to ${target}: ${formatBytes(backup.size ?? 0)}, sha256 ${backup.sha256} (checked)`;
          if (toStdout) process.stderr.write(line + '\n');
          else print(line);
        } finally {
          await source.close();
        }
      });
    });
}

function registerDelete(backups: Command): void {
  withDatabaseUrlOptions(backups.command('delete'), 'database of the service')
    .description('delete a stored backup and its files; a queued or running one is canceled')
    .argument('<id>', 'backup id')
    .action(async (id: string, opts: DatabaseUrlOptions) => {
      await withJobs(opts, async ({ jobs }) => {
        const before = await jobs.getBackup(id);
        const after = await jobs.deleteBackup(id);
        if (!after) return print(`deleted backup ${before.id} (${before.name}) and its files in ${jobs.store.location}`);
        print(`canceled backup ${after.id} (${after.name}), which was ${before.status}; it stays listed as ${after.status}`);
      });
    });
}

function registerRestoreFrom(backups: Command): void {
  withDatabaseUrlOptions(withKeyOptions(backups.command('restore'), 'open'), 'database to replace')
    .description('replace the database and upload folders with a stored backup, all or nothing; first takes a safety backup')
    .argument('<id>', 'backup id')
    .option('--no-safety-backup', 'do not first take a stored backup (pre-restore-<time>) of what is replaced')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--wait', 'when the service runs the job: follow it until it ends (without a service, the command always runs it and waits)')
    .action(async (id: string, opts: RestoreOptions) => {
      const rt = runtime({ quietByDefault: true });
      const key = await resolveKeySource(opts, rt.config, { use: 'open' });
      await withJobs(
        opts,
        async (s) => {
          const backup = await s.jobs.getBackup(id);
          const runHere = await mustRunHere(s, key);
          // As `coffer restore`: asked only when a person is at a terminal; scripts pass --yes or run without one.
          if (!opts.yes && process.stdin.isTTY && process.stderr.isTTY) {
            const safety = opts.safetyBackup ? ', after a safety backup of what it replaces' : '';
            const ok = await confirm(
              `This replaces ALL data in ${s.db.description} and the upload folders in ${rt.config.dataDir} with stored backup ${backup.name} from ${backup.created_at}${safety}. Type 'yes' to continue: `,
            );
            if (!ok) throw new CofferError('E_ABORTED', 'restore cancelled; nothing was changed');
          }
          const queued = await s.jobs.createRestore({ ...requester(rt), backupId: backup.id, key, safetyBackup: opts.safetyBackup });
          if (!runHere && !opts.wait) return print(queued.id);
          const r = await followJob(s, 'restore', queued.id, runHere);
          throwUnlessFinished(r, `restore ${r.id}`);
          print(`restore ${r.id} finished: backup ${backup.id} (${backup.name}) restored into ${s.db.description} and ${rt.config.dataDir}`);
          if (r.safety_backup_id) print(`safety backup of what was replaced: ${r.safety_backup_id}`);
        },
        rt,
      );
    });
}

function registerRescan(backups: Command): void {
  withDatabaseUrlOptions(backups.command('rescan'), 'database of the service')
    .description("rebuild the catalog of stored backups from the store's <id>.json records")
    .action(async (opts: DatabaseUrlOptions) => {
      await withJobs(opts, async ({ jobs }) => {
        const r = await jobs.rescan();
        print(`rescanned ${jobs.store.location}: ${r.records} backups found, ${r.added} added to the catalog, ${r.removed} removed from it`);
        if (r.problems.length) print(`${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}:`);
        for (const p of r.problems) print(`  ${p}`);
      });
    });
}

export function registerBackups(program: Command): void {
  const backups = program.command('backups').description('stored backups (in BACKUP_DIR): list, create, show, download, delete, restore, rescan');
  registerList(backups);
  registerCreate(backups);
  registerShow(backups);
  registerDownload(backups);
  registerDelete(backups);
  registerRestoreFrom(backups);
  registerRescan(backups);
}
