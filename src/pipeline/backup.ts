import fs from 'node:fs';
import path from 'node:path';
import { pipeline, type Readable, type Transform } from 'node:stream';
import type pg from 'pg';
import { ARCHIVE_TOP_LEVEL, checkEntryName, COMPRESSIBILITY_SAMPLE_BYTES, createZipWriter, looksIncompressible, MANIFEST_ENTRY, shouldStore, tableEntryName, UPLOAD_FOLDERS, VERSION_CONTENT, VERSION_ENTRY, type ZipWriter } from '../archive';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import type { ProgressCounts } from '../core/types';
import { APP_NAME, APP_VERSION, ARCHIVE_FORMAT, type Manifest, type ManifestFolder, type ManifestSequence, type ManifestTable } from '../core/manifest';
import { createEncryptStream, type KeySource } from '../crypto';
import { writeBackupLog, type Actor } from '../db/backup-log';
import { appliedMigrationNames, copyOutTable, sequenceState } from '../db/dump';
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
  /** JSONL bytes of the current table so far. */
  tableBytes?: number;
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
  tables: TableInfo[];
  migrations: string[];
  serverVersion: string;
}

/**
 * Takes the backup lock and a consistent snapshot. Throws E_BACKUP_RUNNING before anything is sent
 * when another backup holds the lock, so the endpoint can still answer 409.
 */
async function openSnapshot(pool: pg.Pool): Promise<Snapshot> {
  const client = await pool.connect();
  try {
    const locked = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [lockKey('backup')]);
    if (!locked.rows[0].ok) throw new CofferError('E_BACKUP_RUNNING', 'a backup is already running; try again when it has finished');
    // READ ONLY DEFERRABLE: the snapshot never blocks writers and writers never disturb it.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE');
    const tables = await listTables(client);
    const migrations = await appliedMigrationNames(client, MIGRATIONS_TABLE, APP_SCHEMA);
    const serverVersion = (await client.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version'])).rows[0].v;
    return { client, tables, migrations, serverVersion };
  } catch (err) {
    // Dropping the connection releases the advisory lock and the snapshot together.
    client.release(true);
    throw err;
  }
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
  const snap = await openSnapshot(req.pool);
  const previousBytes = await previousBackupBytes(req.pool).catch(() => undefined);
  const encrypted = req.encryption !== undefined;
  let encryptor: Transform | undefined;
  try {
    if (req.encryption) encryptor = await createEncryptStream(req.encryption);
    await writeBackupLog(req.pool, 'backup_started', req.actor, { via: req.via, encrypted });
  } catch (err) {
    snap.client.release(true);
    throw err;
  }

  const zip = createZipWriter({ level: req.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL });
  const meter = new Meter();
  const stages: (Readable | Transform)[] = [zip.output, ...(encryptor ? [encryptor] : []), meter];
  let pipelineError: Error | undefined;
  let pipelineDone!: () => void;
  const pipelineFinished = new Promise<void>((resolve) => (pipelineDone = resolve));
  const output = pipeline(stages as [Readable, ...Transform[]], (err) => {
    if (err) {
      pipelineError = err;
      // The reader went away or a stage failed: stop producing.
      zip.abort(isCofferError(err) ? err : new CofferError('E_ABORTED', `backup aborted: ${errorMessage(err)}`));
    }
    pipelineDone();
  }) as Transform;

  const result = (async (): Promise<BackupResult> => {
    let manifest: Manifest | undefined;
    let cleanClose = false;
    try {
      manifest = await produce(req, snap, zip, started, () => meter.bytes);
      await pipelineFinished;
      if (pipelineError) throw pipelineError;
      await snap.client.query('COMMIT');
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
      if (cleanClose) {
        await snap.client.query('SELECT pg_advisory_unlock($1)', [lockKey('backup')]).catch(() => undefined);
        snap.client.release();
      } else {
        // A connection that was mid-COPY cannot be reused: closing it ends the snapshot and the lock.
        snap.client.release(true);
      }
    }
    const res: BackupResult = { bytes: meter.bytes, sha256: meter.sha256, durationMs: Date.now() - started.getTime(), encrypted, manifest };
    await writeBackupLog(req.pool, 'backup_finished', req.actor, { via: req.via, encrypted, bytes: res.bytes, sha256: res.sha256, duration_ms: res.durationMs, tables: manifest.tables.length, file_errors: manifest.file_errors.length });
    return res;
  })();
  // The caller consumes `result`; this keeps an unobserved rejection from crashing the process first.
  result.catch(() => undefined);
  return { output, result, previousBytes };
}

async function produce(req: BackupRequest, snap: Snapshot, zip: ZipWriter, started: Date, bytesOut: () => number): Promise<Manifest> {
  const progress: BackupProgress = { phase: 'database', tablesDone: 0, tablesTotal: snap.tables.length, rows: 0, files: 0, fileBytes: 0, bytesOut: 0 };
  const report = () => req.onProgress?.({ ...progress, bytesOut: bytesOut() });
  await zip.addBuffer(VERSION_ENTRY, Buffer.from(VERSION_CONTENT));

  const tables: ManifestTable[] = [];
  for (const table of snap.tables) {
    progress.table = `${table.schema}.${table.name}`;
    report();
    const entry = tableEntryName(table.schema, table.name);
    const meter = new Meter({ lines: true });
    const tableStarted = Date.now();
    const rows = copyOutTable(snap.client, table);
    const ticker = setInterval(() => {
      progress.rows = meter.lines;
      progress.tableBytes = meter.bytes;
      report();
    }, 250);
    try {
      await zip.addStream(entry, through(rows, meter));
    } finally {
      clearInterval(ticker);
    }
    req.log.debug({ table: table.name, rows: meter.lines, bytes: meter.bytes, ms: Date.now() - tableStarted }, 'backup: table written');
    tables.push({ schema: table.schema, name: table.name, entry, columns: table.columns.map((c) => ({ name: c.name, type: c.type })), rows: meter.lines, bytes: meter.bytes, sha256: meter.sha256 });
    progress.tablesDone++;
    progress.rows = 0;
    progress.tableBytes = 0;
  }

  const sequences: ManifestSequence[] = [];
  for (const seq of await listSequences(snap.client)) {
    const state = await sequenceState(snap.client, seq);
    sequences.push({ schema: seq.schema, name: seq.name, last_value: sequenceValue(state.last_value), is_called: state.is_called });
  }

  progress.phase = 'files';
  progress.table = undefined;
  const files: Record<string, ManifestFolder> = {};
  const fileErrors: { path: string; error: string }[] = [];
  for (const folder of UPLOAD_FOLDERS) files[folder] = { files: 0, bytes: 0 };
  const items = preparedUploads(req.dataDir, fileErrors);
  let lastYield = Date.now();
  for await (const item of items) {
    if (item.kind === 'dir') {
      await zip.addDirectory(item.rel + '/');
      continue;
    }
    let bytes: number;
    if (item.kind === 'small') {
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
