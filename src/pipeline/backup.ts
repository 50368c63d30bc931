import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline, type Readable, type Transform } from 'node:stream';
import type pg from 'pg';
import { ARCHIVE_TOP_LEVEL, BufferDeflater, checkEntryName, EntrySpool, COMPRESSIBILITY_SAMPLE_BYTES, createZipWriter, looksIncompressible, MANIFEST_ENTRY, shouldStore, tableEntryName, UPLOAD_FOLDERS, VERSION_CONTENT, VERSION_ENTRY, type DeflatedBuffer, type PrecompressedMeta, type ZipWriter } from '../archive';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import type { ProgressCounts } from '../core/types';
import { APP_NAME, APP_VERSION, ARCHIVE_FORMAT, type Manifest, type ManifestFolder, type ManifestSequence, type ManifestTable } from '../core/manifest';
import { createEncryptStream, type KeySource } from '../crypto';
import { writeBackupLog, type Actor } from '../db/backup-log';
import { appliedMigrationNames, beginSnapshot, copyOutTable, exportSnapshot, joinSnapshot, sequenceState, tableSizesFromCatalog } from '../db/dump';
import { listSequences, listTables, type TableInfo } from '../db/introspect';
import { lockKey } from '../db/locks';
import { APP_SCHEMA, MIGRATIONS_TABLE } from '../db/migrate';
import type { Logger } from '../log';
import { isUploadInProgress } from '../storage/uploads';
import { walkFolder } from '../storage/walk';
import { Meter, through } from './meter';

export interface BackupProgress extends ProgressCounts {
  phase: 'database' | 'files' | 'finishing';
  /** Archive bytes produced so far. */
  bytesOut: number;
  /** JSONL bytes of the current table so far (of all tables being dumped, with several jobs). */
  tableBytes?: number;
  /**
   * The tables being dumped right now, with their rows and JSONL bytes so far: one with --jobs 1,
   * up to one per job otherwise. `table`, `rows` and `tableBytes` are these together.
   */
  active?: { table: string; rows: number; bytes: number }[];
}

export interface BackupRequest {
  pool: pg.Pool;
  dataDir: string;
  log: Logger;
  actor?: Actor;
  via: 'http' | 'cli';
  encryption?: KeySource;
  /** Deflate level 0-9 for entries that are not stored (default DEFAULT_COMPRESSION_LEVEL). */
  compressionLevel?: number;
  onProgress?: (p: BackupProgress) => void;
  /**
   * Connections that dump tables side by side, all reading one exported snapshot (default
   * defaultBackupJobs()). 1 dumps the tables one after another on the snapshot connection.
   */
  jobs?: number;
  /** Where the private folder for spooled table entries is made (default os.tmpdir()). */
  spoolDir?: string;
}

/** Most connections one backup opens. */
export const MAX_BACKUP_JOBS = 16;

/** min(4, CPU cores): past that the server's COPY, not coffer, is what limits a dump. */
export function defaultBackupJobs(): number {
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/**
 * Level 1: JSON rows deflate about twice as fast as at zlib's default 6 for an archive about 7%
 * larger, and deflating must keep pace with PostgreSQL producing the rows on a two-core machine.
 */
export const DEFAULT_COMPRESSION_LEVEL = 1;

export interface BackupResult {
  bytes: number;
  sha256: string;
  durationMs: number;
  encrypted: boolean;
  manifest: Manifest;
}

export interface RunningBackup {
  /** The archive. Destroying it aborts the backup and frees its snapshot. */
  output: Readable;
  /** Settles once the archive has been fully read (or the backup failed), after cleanup and audit. */
  result: Promise<BackupResult>;
  /** Size of the last successful backup, for an ETA; undefined when there was none. */
  previousBytes?: number;
}

interface Snapshot {
  client: pg.PoolClient;
  /** Further connections in the same snapshot (jobs - 1 of them). */
  workers: pg.PoolClient[];
  /** Table sizes in bytes (catalog page counts), to hand out the biggest first; undefined with one job. */
  sizes?: Map<string, number>;
  tables: TableInfo[];
  migrations: string[];
  serverVersion: string;
  /**
   * Called when a connection fails while no query is running on it (killed while idle in its
   * transaction, say): the backup must stop, and the event must not go unhandled.
   */
  onLost: (err: Error) => void;
  /** Ends every connection's transaction and gives it back (clean) or closes it; frees the lock either way. */
  close(clean: boolean): Promise<void>;
}

/**
 * Takes the backup lock and a consistent snapshot. Throws E_BACKUP_RUNNING before anything is sent
 * when another backup holds the lock, so the endpoint can still answer 409.
 */
async function openSnapshot(pool: pg.Pool, jobs: number): Promise<Snapshot> {
  let lostBefore: Error | undefined;
  const snap: Pick<Snapshot, 'onLost'> = { onLost: (err) => (lostBefore ??= err) };
  const onError = (err: Error) => snap.onLost(err);
  const watch = (c: pg.PoolClient) => c.on('error', onError);
  const unwatch = (c: pg.PoolClient) => c.removeListener('error', onError);
  const client = watch(await pool.connect()) as pg.PoolClient;
  const workers: pg.PoolClient[] = [];
  const closeAll = async (clean: boolean) => {
    for (const c of [client, ...workers]) {
      // A connection that was mid-COPY cannot be reused: closing it ends the snapshot (and the lock).
      let reusable = false;
      if (clean) {
        reusable = await c.query('COMMIT').then(
          () => (c === client ? c.query('SELECT pg_advisory_unlock($1)', [lockKey('backup')]).then(() => true) : true),
          () => false,
        ).catch(() => false);
      }
      unwatch(c);
      c.release(!reusable);
    }
  };
  try {
    const locked = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [lockKey('backup')]);
    if (!locked.rows[0].ok) throw new CofferError('E_BACKUP_RUNNING', 'a backup is already running; try again when it has finished');
    await beginSnapshot(client);
    const tables = await listTables(client);
    const migrations = await appliedMigrationNames(client, MIGRATIONS_TABLE, APP_SCHEMA);
    const serverVersion = (await client.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version'])).rows[0].v;
    let sizes: Map<string, number> | undefined;
    const extra = Math.min(jobs, tables.length) - 1;
    if (extra > 0) {
      sizes = await tableSizesFromCatalog(client, APP_SCHEMA);
      const id = await exportSnapshot(client);
      for (let i = 0; i < extra; i++) {
        const worker = watch(await pool.connect()) as pg.PoolClient;
        workers.push(worker);
        await joinSnapshot(worker, id);
      }
    }
    if (lostBefore) throw lostBefore;
    return Object.assign(snap, { client, workers, sizes, tables, migrations, serverVersion, close: closeAll });
  } catch (err) {
    // Dropping the connection releases the advisory lock and the snapshot together.
    await closeAll(false);
    throw err;
  }
}

/** jobs, checked, and bounded so the pool keeps two connections for everything else. */
function effectiveJobs(req: BackupRequest): number {
  const jobs = req.jobs ?? defaultBackupJobs();
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_BACKUP_JOBS) throw new CofferError('E_USAGE', `backup jobs must be a whole number from 1 to ${MAX_BACKUP_JOBS}, got ${jobs}`);
  const poolMax = req.pool.options.max ?? 10;
  return Math.max(1, Math.min(jobs, poolMax - 2));
}

async function previousBackupBytes(pool: pg.Pool): Promise<number | undefined> {
  const res = await pool.query<{ bytes: string | null }>(
    `SELECT details->>'bytes' AS bytes FROM backup_log WHERE event = 'backup_finished' ORDER BY id DESC LIMIT 1`,
  );
  const n = Number(res.rows[0]?.bytes);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

function sequenceValue(text: string): string | number {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : text;
}

const FILE_READ_CHUNK = 256 * 1024;
/**
 * Uploads of at most this size are read whole: one open, fstat, read and close, synchronously, then
 * handed to the writer as one buffer. A stream per file would cost more than the bytes.
 */
export const SMALL_FILE_BYTES = 64 * 1024;
/** The files loop reads small files synchronously; it lets the event loop run at least this often (ms). */
const YIELD_EVERY_MS = 20;

type PreparedUpload =
  | { kind: 'dir'; rel: string }
  | { kind: 'small'; rel: string; data: Buffer; store: boolean | 'if-incompressible' }
  | { kind: 'stream'; rel: string; fd: number; store: boolean };

/**
 * An upload ready for the zip: a small file to deflate comes deflated (or judged incompressible and
 * stored); one named as already compressed stays as it was, for the writer to store.
 */
type ZipReadyUpload = PreparedUpload | { kind: 'deflated'; rel: string; data: Buffer; meta: PrecompressedMeta };

/** A batch for the deflate worker ends at this many files or bytes, whichever comes first. */
const DEFLATE_BATCH_FILES = 64;
const DEFLATE_BATCH_BYTES = 64 * 1024;
/** Batches sent and not yet written: one being deflated while the next is read. */
const DEFLATE_BATCHES_AHEAD = 2;

/**
 * The upload folders' entries in archive order, each file already read (small ones) or open (larger
 * ones) and judged (store or deflate). What cannot be read or named in a zip goes to `fileErrors` and
 * is skipped.
 */
async function* preparedUploads(dataDir: string, fileErrors: { path: string; error: string }[]): AsyncGenerator<PreparedUpload> {
  for (const folder of UPLOAD_FOLDERS) {
    // Uploads still being received are not data yet: their rows do not exist. Sizes come from fstat
    // once the file is open, so the walk does not stat.
    for await (const item of walkFolder(path.join(dataDir, folder), folder, { skip: isUploadInProgress, stat: false })) {
      if (item.kind === 'error') {
        fileErrors.push({ path: item.rel, error: item.error });
        continue;
      }
      // A name a zip cannot carry safely (a backslash, say) is reported, not allowed to fail the backup.
      const badName = checkEntryName(item.kind === 'dir' ? item.rel + '/' : item.rel, ARCHIVE_TOP_LEVEL);
      if (badName !== null) {
        fileErrors.push({ path: item.rel, error: `name cannot be stored in the archive: ${badName}` });
        continue;
      }
      if (item.kind === 'dir') {
        yield { kind: 'dir', rel: item.rel };
        continue;
      }
      const read = readUpload(item.abs);
      if ('error' in read) {
        fileErrors.push({ path: item.rel, error: read.error });
        continue;
      }
      if ('data' in read) {
        // The writer judges the whole buffer by deflating it once, instead of a trial deflate here.
        yield { kind: 'small', rel: item.rel, data: read.data, store: shouldStore(item.rel) || 'if-incompressible' };
      } else {
        yield { kind: 'stream', rel: item.rel, fd: read.fd, store: shouldStore(item.rel) || looksIncompressible(read.sample) };
      }
    }
  }
}

/**
 * The prepared uploads in the same order, each small file deflated on a worker thread: a batch of
 * them is deflated there while this thread reads the next batch and writes the one before into the
 * zip. Small files named as already compressed are passed on as they are. Files left open for
 * streaming in batches never written (the backup failed) are closed.
 */
async function* zipReadyUploads(items: AsyncIterable<PreparedUpload>, level: number): AsyncGenerator<ZipReadyUpload> {
  const deflater = new BufferDeflater(level);
  /** A batch sent to the worker; `taken` of its items have been handed on. */
  type Sent = { items: PreparedUpload[]; deflated: Promise<DeflatedBuffer[]>; taken: number };
  const sent: Sent[] = [];
  let batch: PreparedUpload[] = [];
  let small: Buffer[] = [];
  let judge: boolean[] = [];
  let smallBytes = 0;
  const send = (): void => {
    if (batch.length === 0) return;
    const deflated = small.length > 0 ? deflater.deflate(small, judge) : Promise.resolve([]);
    // Awaited in order below; until then a failure must not count as unhandled.
    deflated.catch(() => undefined);
    sent.push({ items: batch, deflated, taken: 0 });
    batch = [];
    small = [];
    judge = [];
    smallBytes = 0;
  };
  async function* written(keep: number): AsyncGenerator<ZipReadyUpload> {
    while (sent.length > keep) {
      const next = sent[0];
      const deflated = await next.deflated;
      let k = 0;
      while (next.taken < next.items.length) {
        const item = next.items[next.taken++];
        yield item.kind === 'small' && item.store !== true ? { kind: 'deflated', rel: item.rel, ...deflated[k++] } : item;
      }
      sent.shift();
    }
  }
  try {
    for await (const item of items) {
      batch.push(item);
      if (item.kind === 'small' && item.store !== true) {
        small.push(item.data);
        judge.push(item.store === 'if-incompressible');
        smallBytes += item.data.length;
      }
      // An open file ends the batch, so few descriptors wait at a time.
      if (item.kind === 'stream' || batch.length >= DEFLATE_BATCH_FILES || smallBytes >= DEFLATE_BATCH_BYTES) {
        send();
        yield* written(DEFLATE_BATCHES_AHEAD - 1);
      }
    }
    send();
    yield* written(0);
  } finally {
    for (const item of [...sent.flatMap((b) => b.items.slice(b.taken)), ...batch]) if (item.kind === 'stream') fs.closeSync(item.fd);
    await deflater.close();
  }
}

/**
 * Opens an upload and reads it whole if it is small, or its first bytes (the compressibility sample)
 * if not; a larger file stays open for streaming. The size is what was read, so a file that changes
 * size while read still gives a consistent entry; one that grows past SMALL_FILE_BYTES is streamed.
 */
function readUpload(abs: string): { data: Buffer } | { fd: number; sample: Buffer } | { error: string } {
  let fd: number;
  try {
    fd = fs.openSync(abs, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { error: `${e.code ?? 'EIO'}: ${e.code === 'EACCES' ? 'permission denied' : 'cannot open'}` };
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size <= SMALL_FILE_BYTES) {
      // One byte more than fstat said, so growth shows.
      const buf = Buffer.allocUnsafe(size + 1);
      let filled = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, filled, buf.length - filled, filled);
        if (n === 0) {
          fs.closeSync(fd);
          return { data: buf.subarray(0, filled) };
        }
        filled += n;
        if (filled === buf.length) break;
      }
    }
    const sample = Buffer.allocUnsafe(COMPRESSIBILITY_SAMPLE_BYTES);
    const n = fs.readSync(fd, sample, 0, sample.length, 0);
    return { fd, sample: sample.subarray(0, n) };
  } catch (err) {
    // Opens but cannot be read (EIO, or swapped for a directory meanwhile): reported, skipped.
    fs.closeSync(fd);
    const e = err as NodeJS.ErrnoException;
    return { error: `${e.code ?? 'EIO'}: cannot read` };
  }
}

/** Starts a backup: returns the archive stream at once; the work is driven by reading it. */
export async function startBackup(req: BackupRequest): Promise<RunningBackup> {
  const started = new Date();
  const snap = await openSnapshot(req.pool, effectiveJobs(req));
  const previousBytes = await previousBackupBytes(req.pool).catch(() => undefined);
  const encrypted = req.encryption !== undefined;
  let encryptor: Transform | undefined;
  try {
    if (req.encryption) encryptor = await createEncryptStream(req.encryption);
    await writeBackupLog(req.pool, 'backup_started', req.actor, { via: req.via, encrypted });
  } catch (err) {
    await snap.close(false);
    throw err;
  }

  const zip = createZipWriter({ level: req.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL });
  const meter = new Meter();
  const stages: (Readable | Transform)[] = [zip.output, ...(encryptor ? [encryptor] : []), meter];
  let pipelineError: Error | undefined;
  let pipelineDone!: () => void;
  const pipelineFinished = new Promise<void>((resolve) => (pipelineDone = resolve));
  // Stops the table workers too, even those spooling while the zip is not writing their entry.
  const stop = new AbortController();
  const output = pipeline(stages as [Readable, ...Transform[]], (err) => {
    if (err) {
      pipelineError = err;
      // The reader went away or a stage failed: stop producing.
      const failure = isCofferError(err) ? err : new CofferError('E_ABORTED', `backup aborted: ${errorMessage(err)}`);
      zip.abort(failure);
      stop.abort(failure);
    }
    pipelineDone();
  }) as Transform;
  snap.onLost = (err) => {
    const failure = new CofferError('E_BACKUP_FAILED', `backup failed: a database connection was lost: ${errorMessage(err)}`, { cause: err });
    zip.abort(failure);
    stop.abort(failure);
  };

  const result = (async (): Promise<BackupResult> => {
    let manifest: Manifest | undefined;
    let cleanClose = false;
    try {
      manifest = await produce(req, snap, zip, started, () => meter.bytes, stop.signal);
      await pipelineFinished;
      if (pipelineError) throw pipelineError;
      cleanClose = true;
    } catch (err) {
      const failure = isCofferError(err) ? err : new CofferError('E_BACKUP_FAILED', `backup failed: ${errorMessage(err)}`, { cause: err });
      zip.abort(failure);
      output.destroy(failure);
      await writeBackupLog(req.pool, 'backup_failed', req.actor, { via: req.via, encrypted, error: failure.message, bytes: meter.bytes, duration_ms: Date.now() - started.getTime() }).catch(
        (logErr) => req.log.error({ err: errorMessage(logErr) }, 'could not write backup_failed to backup_log'),
      );
      req.log.warn({ code: failure.code }, failure.message);
      throw failure;
    } finally {
      await snap.close(cleanClose);
    }
    const res: BackupResult = { bytes: meter.bytes, sha256: meter.sha256, durationMs: Date.now() - started.getTime(), encrypted, manifest };
    await writeBackupLog(req.pool, 'backup_finished', req.actor, { via: req.via, encrypted, bytes: res.bytes, sha256: res.sha256, duration_ms: res.durationMs, tables: manifest.tables.length, file_errors: manifest.file_errors.length });
    return res;
  })();
  // The caller consumes `result`; this keeps an unobserved rejection from crashing the process first.
  result.catch(() => undefined);
  return { output, result, previousBytes };
}

async function produce(req: BackupRequest, snap: Snapshot, zip: ZipWriter, started: Date, bytesOut: () => number, signal: AbortSignal): Promise<Manifest> {
  const progress: BackupProgress = { phase: 'database', tablesDone: 0, tablesTotal: snap.tables.length, rows: 0, files: 0, fileBytes: 0, bytesOut: 0 };
  const report = () => req.onProgress?.({ ...progress, bytesOut: bytesOut() });
  await zip.addBuffer(VERSION_ENTRY, Buffer.from(VERSION_CONTENT));

  const tables = await dumpTables(req, snap, zip, progress, report, signal);

  const sequences: ManifestSequence[] = [];
  for (const seq of await listSequences(snap.client)) {
    const state = await sequenceState(snap.client, seq);
    sequences.push({ schema: seq.schema, name: seq.name, last_value: sequenceValue(state.last_value), is_called: state.is_called });
  }

  progress.phase = 'files';
  progress.table = undefined;
  progress.active = undefined;
  const files: Record<string, ManifestFolder> = {};
  const fileErrors: { path: string; error: string }[] = [];
  for (const folder of UPLOAD_FOLDERS) files[folder] = { files: 0, bytes: 0 };
  const items = zipReadyUploads(preparedUploads(req.dataDir, fileErrors), req.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL);
  let lastYield = Date.now();
  for await (const item of items) {
    if (item.kind === 'dir') {
      await zip.addDirectory(item.rel + '/');
      continue;
    }
    let bytes: number;
    if (item.kind === 'deflated') {
      await zip.addPrecompressed(item.rel, item.data, item.meta);
      bytes = item.meta.uncompressedSize;
    } else if (item.kind === 'small') {
      await zip.addBuffer(item.rel, item.data, { store: item.store });
      bytes = item.data.length;
    } else {
      // The size is what was read, so a file that changes size while read is still consistent with its entry.
      const meter = new Meter({ sha256: false });
      const stream = fs.createReadStream('', { fd: item.fd, start: 0, highWaterMark: FILE_READ_CHUNK });
      await zip.addStream(item.rel, through(stream, meter), { store: item.store });
      bytes = meter.bytes;
    }
    const folder = files[item.rel.split('/')[0]];
    folder.files++;
    folder.bytes += bytes;
    progress.files++;
    progress.fileBytes += bytes;
    report();
    // Small files are read synchronously and the writer rarely waits: let timers and I/O run.
    if (Date.now() - lastYield >= YIELD_EVERY_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      lastYield = Date.now();
    }
  }

  progress.phase = 'finishing';
  report();
  const manifest: Manifest = {
    format: ARCHIVE_FORMAT,
    app: { name: APP_NAME, version: APP_VERSION },
    postgres: { server_version: snap.serverVersion },
    migrations: snap.migrations,
    started_at: started.toISOString(),
    finished_at: new Date().toISOString(),
    tables,
    sequences,
    files,
    file_errors: fileErrors,
  };
  await zip.addBuffer(MANIFEST_ENTRY, Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  await zip.finalize();
  return manifest;
}

/**
 * PostgreSQL sends COPY rows in 8 KiB pieces; deflate takes them gathered into chunks of this size,
 * so each trip to zlib's thread pool carries eight times as much (about a quarter less deflate CPU).
 */
const TABLE_BATCH_BYTES = 64 * 1024;

interface TableJob {
  /** Position in the manifest (name order). */
  index: number;
  table: TableInfo;
  entry: string;
  meter: Meter;
  /** The COPY stream, once the job has started. */
  rows?: Readable;
  /** Set when the entry is spooled rather than written straight into the zip. */
  spool?: EntrySpool;
  /** Set once the spool is complete: how many spools were complete before it. */
  filledAt?: number;
  startedAt?: number;
}

/**
 * Dumps every table into the zip over the snapshot connection and its workers; the manifest lists
 * them in name order. Each connection takes the biggest table left. A table that starts while the
 * zip is free is written straight into it (with one job that is every table, so the entries are in
 * name order); any other is deflated into a spool. Whenever the zip is free it takes a spooled entry:
 * one that is complete, in the order they were completed, or else the one still being dumped with
 * the most bytes so far, which it follows as it grows (taking its chunks directly once it has caught
 * up). So the biggest table, started first, never touches the disk, and the entries are in the order
 * the zip could take them. The first error (or `signal`) stops every connection; spool files are
 * closed (and so gone) either way.
 */
async function dumpTables(req: BackupRequest, snap: Snapshot, zip: ZipWriter, progress: BackupProgress, report: () => void, signal: AbortSignal): Promise<ManifestTable[]> {
  const level = req.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL;
  const jobs: TableJob[] = snap.tables.map((table, index) => ({ index, table, entry: tableEntryName(table.schema, table.name), meter: new Meter({ lines: true, batchBytes: TABLE_BATCH_BYTES }) }));
  const sizes = snap.sizes;
  // Biggest first, so the longest table starts at once; ties (and unknown sizes) keep name order.
  const queue = sizes ? [...jobs].sort((a, b) => (sizes.get(b.table.name) ?? 0) - (sizes.get(a.table.name) ?? 0) || a.index - b.index) : [...jobs];
  const results: ManifestTable[] = new Array<ManifestTable>(jobs.length);
  const active = new Set<TableJob>();
  const spools: EntrySpool[] = [];
  /** Spooled jobs the zip has not taken yet, in the order their spools were created. */
  const waiting: TableJob[] = [];
  let spoolDir: Promise<string> | undefined;
  let zipped = 0;
  let filledCount = 0;
  let zipBusy = false;
  let failure: Error | undefined;
  let settle!: (err?: Error) => void;
  const finished = new Promise<void>((resolve, reject) => (settle = (err) => (err ? reject(err) : resolve())));
  finished.catch(() => undefined);

  const fail = (err: unknown): void => {
    if (failure) return;
    failure = isCofferError(err) ? err : new CofferError('E_BACKUP_FAILED', `backup failed: ${errorMessage(err)}`, { cause: err });
    zip.abort(failure);
    for (const job of active) job.rows?.destroy(failure);
    settle(failure);
  };
  const onAbort = () => fail(signal.reason);
  if (signal.aborted) onAbort();
  signal.addEventListener('abort', onAbort, { once: true });

  const showProgress = () => {
    const now = [...active].map((j) => ({ table: `${j.table.schema}.${j.table.name}`, rows: j.meter.lines, bytes: j.meter.bytes }));
    progress.active = now;
    progress.table = now.length ? now.map((a) => a.table).join(', ') : undefined;
    progress.rows = now.reduce((n, a) => n + a.rows, 0);
    progress.tableBytes = now.reduce((n, a) => n + a.bytes, 0);
    report();
  };

  /** The spooled entry the zip should take next: a complete one, else the biggest still growing. */
  const nextSpooled = (): TableJob | undefined => {
    const complete = waiting.filter((j) => j.filledAt !== undefined);
    if (complete.length) return complete.reduce((a, b) => (b.filledAt! < a.filledAt! ? b : a));
    return waiting.reduce<TableJob | undefined>((a, b) => (a && a.meter.bytes >= b.meter.bytes ? a : b), undefined);
  };

  /** Starts copying a spooled entry into the zip when the zip is free. */
  const pump = (): void => {
    if (failure || zipBusy) return;
    if (zipped === jobs.length) return settle();
    const job = nextSpooled();
    if (!job) return;
    const spool = job.spool!;
    waiting.splice(waiting.indexOf(job), 1);
    zipBusy = true;
    zip.addPrecompressed(job.entry, spool.reader(), () => spool.meta()).then(() => {
      zipBusy = false;
      zipped++;
      void spool.close();
      pump();
    }, fail);
  };

  const done = (job: TableJob): void => {
    // Its final counts are reported once before it leaves the list, so progress counts every row.
    showProgress();
    active.delete(job);
    const { table, meter } = job;
    // spooledBytes: compressed bytes that went through the spool file rather than straight into the zip.
    req.log.debug({ table: table.name, rows: meter.lines, bytes: meter.bytes, ms: Date.now() - (job.startedAt ?? 0), spooled: job.spool !== undefined, spooledBytes: job.spool?.spooledBytes ?? 0 }, 'backup: table dumped');
    results[job.index] = { schema: table.schema, name: table.name, entry: job.entry, columns: table.columns.map((c) => ({ name: c.name, type: c.type })), rows: meter.lines, bytes: meter.bytes, sha256: meter.sha256 };
    progress.tablesDone++;
    showProgress();
  };

  const dump = async (client: pg.PoolClient, job: TableJob): Promise<void> => {
    job.startedAt = Date.now();
    active.add(job);
    showProgress();
    const rows = copyOutTable(client, job.table);
    job.rows = rows;
    const metered = through(rows, job.meter);
    if (!zipBusy) {
      zipBusy = true;
      await zip.addStream(job.entry, metered);
      zipBusy = false;
      zipped++;
      done(job);
      pump();
      return;
    }
    let spool: EntrySpool;
    try {
      spoolDir ??= fs.promises.mkdtemp(path.join(req.spoolDir ?? os.tmpdir(), 'coffer-backup-'));
      spool = await EntrySpool.create(await spoolDir, `${job.index}.deflate`);
    } catch (err) {
      rows.destroy();
      const e = err as NodeJS.ErrnoException;
      throw new CofferError('E_BACKUP_FAILED', `cannot create a spool file for table ${job.table.name} under ${req.spoolDir ?? os.tmpdir()}: ${e.code ?? errorMessage(err)}`, { cause: err });
    }
    spools.push(spool);
    job.spool = spool;
    waiting.push(job);
    if (failure) rows.destroy(failure);
    pump();
    await spool.fill(metered, level);
    job.filledAt = filledCount++;
    done(job);
    pump();
  };

  const work = async (client: pg.PoolClient): Promise<void> => {
    try {
      for (let job = queue.shift(); job && !failure; job = queue.shift()) await dump(client, job);
    } catch (err) {
      fail(err);
    }
  };

  const ticker = setInterval(showProgress, 250);
  try {
    pump();
    const workers = [snap.client, ...snap.workers].map(work);
    await Promise.allSettled(workers);
    if (!failure && zipped < jobs.length) pump();
    await finished;
  } finally {
    clearInterval(ticker);
    signal.removeEventListener('abort', onAbort);
    await Promise.all(spools.map((s) => s.close()));
    if (spoolDir) await spoolDir.then((dir) => fs.promises.rm(dir, { recursive: true, force: true })).catch(() => undefined);
  }
  progress.rows = 0;
  progress.tableBytes = 0;
  progress.table = undefined;
  progress.active = [];
  return results;
}
