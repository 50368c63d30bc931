import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { CofferError, errorMessage } from '../core/errors';
import type { ProgressCounts } from '../core/types';
import type { Manifest, ManifestTable } from '../core/manifest';
import { keepLiveAuditLog, putBackLiveAuditLog, writeBackupLog, type Actor } from '../db/backup-log';
import { listSequences, listTables, sequencesCreatedInTransaction, type TableInfo } from '../db/introspect';
import { canLoadDirect, checkDeferredConstraints, createStage, dropForLoad, flushSchema, loadTable, loadTableDirect, restoreAfterLoad, setSequence, truncateTables } from '../db/load';
import { lockKey } from '../db/locks';
import { APP_SCHEMA, migrateInTransaction } from '../db/migrate';
import type { Logger } from '../log';
import {
  abandonStaged,
  acquireRestoreLock,
  completeSwap,
  repairInterruptedRestore,
  stageFiles,
  swapStaged,
  writeJournal,
  type StagedFiles,
} from '../storage/restore-files';
import { archiveLevel, migrationLevelProblem, planTables, refuse, schemaForArchive, sequenceProblems } from './archive-plan';
import { Meter, through } from './meter';
import { checkMigrationsKnown, type OpenedArchive } from './open-archive';

export interface RestoreProgress extends ProgressCounts {
  phase: 'files' | 'database' | 'constraints' | 'swap';
}

export interface RestoreRequest {
  archive: OpenedArchive;
  /** Absent with skipDatabase. */
  pool?: pg.Pool;
  dataDir: string;
  log: Logger;
  actor?: Actor;
  skipFiles?: boolean;
  skipDatabase?: boolean;
  force?: boolean;
  /** Shown in backup_log (e.g. the archive's file name and sha256). */
  source?: Record<string, unknown>;
  onProgress?: (p: RestoreProgress) => void;
}

export interface RestoreSummary {
  id: string;
  tables: number;
  rows: number;
  files: number;
  fileBytes: number;
  durationMs: number;
  unknownMigrations: string[];
}

/** Whether restore `id` committed its database part: its backup_log row exists only if it did. */
export function restoreCommitted(pool: pg.Pool): (id: string) => Promise<boolean> {
  return async (id) => {
    // A failing query is not an answer: it throws, and the staged files stay for the next run.
    const res = await pool.query(`SELECT 1 FROM backup_log WHERE event = 'restore' AND details->>'restore_id' = $1`, [id]);
    return (res.rowCount ?? 0) > 0;
  };
}

/** COMMIT was sent but its outcome is unknown (the connection failed): the journal decides later. */
class CommitOutcomeUnknown extends CofferError {}

/**
 * Restores an opened archive, all or nothing (DESIGN §6): files are staged first, the database is
 * replaced in one transaction, and the staged folders are swapped in only after COMMIT.
 */
export async function restoreArchive(req: RestoreRequest): Promise<RestoreSummary> {
  const started = Date.now();
  const id = `${new Date().toISOString()}-${randomBytes(4).toString('hex')}`;
  const { manifest } = req.archive;
  const { unknown } = checkMigrationsKnown(manifest, !!req.force);
  if (!req.skipDatabase && !req.pool) throw new CofferError('E_INTERNAL', 'restore of the database needs a connection pool');
  if (!req.skipDatabase) checkBeforeTouching(manifest, !!req.force);
  const progress: RestoreProgress = { phase: 'files', tablesDone: 0, tablesTotal: manifest.tables.length, rows: 0, files: 0, fileBytes: 0 };
  const report = () => req.onProgress?.({ ...progress });

  const release = acquireRestoreLock(req.dataDir);
  let staged: StagedFiles | undefined;
  // Once the database has committed (or a files-only swap is journalled), the staged folders must be
  // swapped in, never discarded: a failure from there on is finished by the next run's repair.
  let pastNoReturn = false;
  try {
    await repairInterruptedRestore(req.dataDir, req.log, req.pool ? restoreCommitted(req.pool) : undefined);

    if (!req.skipFiles) {
      staged = await stageFiles(req.archive.zip, req.dataDir, {
        log: req.log,
        onFile: (files, bytes) => {
          progress.files = files;
          progress.fileBytes = bytes;
          report();
        },
      });
    }
    let rows = 0;
    if (!req.skipDatabase) {
      rows = await restoreDatabase(req, id, manifest, unknown, staged, progress, report);
      pastNoReturn = true;
    }
    if (staged) {
      progress.phase = 'swap';
      report();
      if (req.skipDatabase) {
        writeJournal(req.dataDir, { id, staging: staged.staging, phase: 'committed', database: false });
        pastNoReturn = true;
        swapStaged(req.dataDir, staged.staging);
        abandonStaged(req.dataDir, staged.staging);
      } else {
        completeSwap(req.dataDir, { id, staging: staged.staging, phase: 'committed', database: true });
      }
    }
    return {
      id,
      tables: req.skipDatabase ? 0 : manifest.tables.length,
      rows,
      files: staged?.files ?? 0,
      fileBytes: staged?.bytes ?? 0,
      durationMs: Date.now() - started,
      unknownMigrations: unknown,
    };
  } catch (err) {
    if (err instanceof CommitOutcomeUnknown) throw err;
    if (!pastNoReturn) {
      // Before COMMIT nothing live changed; staged files are simply dropped.
      if (staged) abandonStaged(req.dataDir, staged.staging);
      throw err;
    }
    throw new CofferError(
      'E_RESTORE_FAILED',
      `the database was restored, but swapping in the upload folders failed: ${errorMessage(err)}; the next coffer restore or service start finishes the swap`,
      { cause: err },
    );
  } finally {
    release();
  }
}

async function restoreDatabase(
  req: RestoreRequest,
  id: string,
  manifest: Manifest,
  unknownMigrations: string[],
  staged: StagedFiles | undefined,
  progress: RestoreProgress,
  report: () => void,
): Promise<number> {
  const client = await req.pool!.connect();
  let committed = false;
  try {
    await client.query('BEGIN');
    const locked = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS ok', [lockKey('restore')]);
    if (!locked.rows[0].ok) throw new CofferError('E_RESTORE_RUNNING', 'another restore is running on this database');

    let mark = Date.now();
    const phase = (what: string, extra: Record<string, unknown> = {}) => {
      req.log.debug({ ms: Date.now() - mark, ...extra }, `restore: ${what}`);
      mark = Date.now();
    };
    const hadAuditLog = await keepLiveAuditLog(client);
    // Flush, then migrate to exactly the archive's level, so tables match what the archive holds.
    await flushSchema(client, APP_SCHEMA);
    const level = archiveLevel(manifest);
    if (level) await migrateInTransaction(client, { to: level, log: req.log });
    const tables = await listTables(client, APP_SCHEMA);
    const { plan, problems } = planTables(manifest, tables, { force: !!req.force, where: 'this database schema' });
    refuse(problems);
    await truncateTables(client, tables);
    const dropped = await dropForLoad(client, APP_SCHEMA);
    await createStage(client);
    phase('flushed, migrated to the archive level, prepared tables');

    progress.phase = 'database';
    let rows = 0;
    for (const { entry, table } of plan) {
      progress.table = `${table.schema}.${table.name}`;
      progress.rows = 0;
      report();
      rows += await loadEntry(req, client, entry, table, progress);
      progress.tablesDone++;
      phase('loaded table', { table: table.name, rows: entry.rows });
    }
    await checkSequencesInTransaction(client, manifest);
    for (const s of manifest.sequences) {
      try {
        await setSequence(client, s.schema, s.name, String(s.last_value), s.is_called);
      } catch (err) {
        throw new CofferError('E_RESTORE_FAILED', `cannot set sequence ${s.schema}.${s.name}: ${errorMessage(err)}`, { cause: err });
      }
    }

    progress.phase = 'constraints';
    progress.table = undefined;
    report();
    await restoreAfterLoad(client, dropped);
    phase('rebuilt keys and indexes, checked foreign keys');
    // Later migrations run on the restored data, as an upgrade would.
    await migrateInTransaction(client, { log: req.log });
    await checkDeferredConstraints(client);
    if (hadAuditLog) await putBackLiveAuditLog(client);
    await writeBackupLog(client, 'restore', req.actor, {
      restore_id: id,
      ...req.source,
      archive_started_at: manifest.started_at,
      tables: plan.length,
      rows,
      encrypted: req.archive.encrypted,
      files: staged ? staged.files : null,
      forced_unknown_migrations: unknownMigrations.length ? unknownMigrations : undefined,
    });
    if (staged) writeJournal(req.dataDir, { id, staging: staged.staging, phase: 'prepared', database: true });
    try {
      await client.query('COMMIT');
    } catch (err) {
      throw new CommitOutcomeUnknown(
        'E_RESTORE_FAILED',
        `the connection failed during COMMIT, so whether the database was restored is unknown: ${errorMessage(err)}; the staged upload folders are kept, and the next coffer restore or service start finishes or undoes the restore`,
        { cause: err },
      );
    }
    committed = true;
    return rows;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release(!committed);
  }
}

/**
 * What can be refused without a database is refused before anything is touched: the archive must name
 * its schema level, and its tables and sequences must be those of the schema at that level.
 */
function checkBeforeTouching(manifest: Manifest, force: boolean): void {
  const level = migrationLevelProblem(manifest);
  if (level && !force) refuse([level]);
  const known = schemaForArchive(manifest);
  const where = known ? `the schema at migration ${known.level}` : 'the schema';
  const tables = known ? planTables(manifest, known.schema.tables, { force, where }).problems : [];
  refuse([...tables, ...sequenceProblems(manifest, known?.schema.sequences, where)]);
}

/**
 * setval is not transactional: a rollback undoes it only on a sequence the transaction created.
 * Every sequence the manifest sets must be such a one (the flush dropped the schema's sequences and
 * the migrations created them anew); anything else is refused before a value is set.
 */
async function checkSequencesInTransaction(client: pg.PoolClient, manifest: Manifest): Promise<void> {
  const live = await listSequences(client, APP_SCHEMA);
  const problems = sequenceProblems(manifest, live, 'this database schema');
  const created = await sequencesCreatedInTransaction(client, APP_SCHEMA);
  for (const s of manifest.sequences) {
    if (live.some((l) => l.name === s.name) && !created.has(s.name)) {
      problems.push(`sequence ${s.schema}.${s.name} was not created by this restore, so setting it could not be undone`);
    }
  }
  refuse(problems);
}

async function loadEntry(req: RestoreRequest, client: pg.PoolClient, entry: ManifestTable, table: TableInfo, progress: RestoreProgress): Promise<number> {
  const meter = new Meter({ lines: true });
  const ticker = setInterval(() => {
    progress.rows = meter.lines;
    req.onProgress?.({ ...progress });
  }, 250);
  let inserted: number;
  try {
    const lines = through(await req.archive.zip.openEntry(entry.entry), meter);
    inserted = canLoadDirect(table) ? await loadTableDirect(client, table, entry.entry, lines) : await loadTable(client, table, entry.entry, lines);
  } finally {
    clearInterval(ticker);
  }
  if (meter.bytes !== entry.bytes || meter.sha256 !== entry.sha256) {
    throw new CofferError('E_ARCHIVE_CHECKSUM', `${entry.entry}: sha256 ${meter.sha256} does not match manifest.json (${entry.sha256})`);
  }
  if (meter.lines !== entry.rows) {
    throw new CofferError('E_ARCHIVE_ROWS', `${entry.entry}: ${meter.lines} rows, manifest.json says ${entry.rows}`);
  }
  if (inserted !== entry.rows) {
    throw new CofferError('E_ARCHIVE_ROWS', `${entry.entry}: ${inserted} rows inserted, manifest.json says ${entry.rows}`);
  }
  return inserted;
}

/**
 * Run at service start: finishes (or undoes) a restore that was interrupted between its COMMIT and
 * the swap of the upload folders. Skipped while another restore holds the lock.
 */
export async function repairAfterCrash(dataDir: string, pool: pg.Pool, log: Logger): Promise<void> {
  let release: () => void;
  try {
    release = acquireRestoreLock(dataDir);
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'a restore is running; not checking for an interrupted one');
    return;
  }
  try {
    await repairInterruptedRestore(dataDir, log, restoreCommitted(pool));
  } finally {
    release();
  }
}
