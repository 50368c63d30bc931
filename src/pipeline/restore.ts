import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type pg from 'pg';
import { CofferError, errorMessage } from '../core/errors';
import type { ProgressCounts } from '../core/types';
import type { Manifest, ManifestTable } from '../core/manifest';
import { keepLiveAuditLog, putBackLiveAuditLog, writeBackupLog, type Actor } from '../db/backup-log';
import { listSequences, listTables, type TableInfo } from '../db/introspect';
import {
  addForeignKeys,
  attachKeys,
  buildIndex,
  canLoadDirect,
  checkDeferredConstraints,
  createStage,
  dropForLoad,
  flushSchema,
  indexBuilds,
  loadTable,
  loadTableDirect,
  setSequence,
  truncateTables,
  type DeferredConstraint,
  type DroppedForLoad,
  type IndexBuild,
} from '../db/load';
import { APP_SCHEMA, migrateInTransaction } from '../db/migrate';
import {
  createStagingSchema,
  dropLeftoverStagingSchemas,
  dropStagingSchema,
  moveStagingObjects,
  newStagingSchemaName,
  releaseRestoreLock,
  tryRestoreLock,
} from '../db/staging';
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
import { archiveLevel, migrationLevelProblem, planTables, refuse, schemaForArchive, sequenceProblems, type TablePlan } from './archive-plan';
import { Meter, through } from './meter';
import { checkMigrationsKnown, type OpenedArchive } from './open-archive';
import { inParallel } from './parallel';

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
  /**
   * Shown in backup_log (e.g. the archive's file name and sha256). It may still be being computed
   * (the CLI hashes the archive file while the restore runs): it is awaited just before the swap, and
   * if it fails, the restore fails with nothing changed.
   */
  source?: Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Connections that load tables and build indexes side by side (default min(4, CPU cores)). */
  jobs?: number;
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
  // Observed first, before any check can refuse the archive: a restore that fails before it needs the
  // source reports its own error, and a source that fails later is no unhandled rejection.
  const source = Promise.resolve(req.source);
  source.catch(() => undefined);
  const started = Date.now();
  const id = `${new Date().toISOString()}-${randomBytes(4).toString('hex')}`;
  const { manifest } = req.archive;
  const { unknown } = checkMigrationsKnown(manifest, !!req.force);
  if (!req.skipDatabase && !req.pool) throw new CofferError('E_INTERNAL', 'restore of the database needs a connection pool');
  if (!req.skipDatabase) checkBeforeTouching(manifest, !!req.force);
  if (req.jobs !== undefined) checkRestoreJobs(req.jobs);
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
      rows = await restoreDatabase(req, id, manifest, unknown, staged, progress, report, source);
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
  source: Promise<Record<string, unknown> | undefined>,
): Promise<number> {
  const pool = req.pool!;
  const jobs = connectionsFor(pool, req.jobs ?? defaultRestoreJobs());
  const coordinator = await pool.connect();
  let destroy = false;
  let locked = false;
  // Set while a staging schema of this restore may exist; cleared once the swap has committed.
  let stage: string | undefined;
  let mark = Date.now();
  const phase = (what: string, extra: Record<string, unknown> = {}) => {
    req.log.debug({ ms: Date.now() - mark, ...extra }, `restore: ${what}`);
    mark = Date.now();
  };
  try {
    locked = await tryRestoreLock(coordinator);
    if (!locked) throw new CofferError('E_RESTORE_RUNNING', 'another restore is running on this database');
    const leftovers = await dropLeftoverStagingSchemas(coordinator);
    if (leftovers.length) req.log.info({ schemas: leftovers }, 'restore: removed the staging schemas of interrupted restores');

    stage = newStagingSchemaName();
    const { plan, dropped } = await prepareStage(req, coordinator, stage, manifest);
    phase('created the staging schema, migrated it to the archive level, prepared tables', { jobs });

    progress.phase = 'database';
    report();
    await setSequences(coordinator, stage, manifest);
    const rows = await loadAndRebuild(req, pool, coordinator, jobs, stage, plan, dropped, progress, report);
    phase('loaded tables, rebuilt keys and indexes, checked foreign keys', { tables: plan.length, rows });
    // Later migrations run on the restored data, as an upgrade would.
    const staging = stage;
    await inTransaction(coordinator, async () => {
      await migrateInTransaction(coordinator, { log: req.log, schema: staging });
      await checkDeferredConstraints(coordinator);
    });
    phase('migrated the staging schema to the latest level');

    const shownSource = await source;
    // The one short transaction that touches the live schema: flush it, move the staging objects in.
    await coordinator.query('BEGIN');
    const hadAuditLog = await keepLiveAuditLog(coordinator);
    await flushSchema(coordinator, APP_SCHEMA);
    await moveStagingObjects(coordinator, stage, APP_SCHEMA);
    if (hadAuditLog) await putBackLiveAuditLog(coordinator);
    await writeBackupLog(coordinator, 'restore', req.actor, {
      restore_id: id,
      ...shownSource,
      archive_started_at: manifest.started_at,
      tables: plan.length,
      rows,
      encrypted: req.archive.encrypted,
      files: staged ? staged.files : null,
      forced_unknown_migrations: unknownMigrations.length ? unknownMigrations : undefined,
    });
    if (staged) writeJournal(req.dataDir, { id, staging: staged.staging, phase: 'prepared', database: true });
    try {
      await coordinator.query('COMMIT');
    } catch (err) {
      destroy = true;
      throw new CommitOutcomeUnknown(
        'E_RESTORE_FAILED',
        `the connection failed during COMMIT, so whether the database was restored is unknown: ${errorMessage(err)}; the staged upload folders are kept, and the next coffer restore or service start finishes or undoes the restore`,
        { cause: err },
      );
    }
    stage = undefined;
    phase('swapped the staging schema in');
    return rows;
  } catch (err) {
    if (!destroy) {
      await coordinator.query('ROLLBACK').catch(() => undefined);
      // Best effort: what is left is removed by the next restore.
      const leftover = stage;
      if (leftover) {
        await dropStagingSchema(coordinator, leftover).catch((e: unknown) => {
          destroy = true;
          req.log.warn({ err: errorMessage(e), schema: leftover }, 'restore: could not drop the staging schema; the next restore removes it');
        });
      }
    }
    throw err;
  } finally {
    if (locked && !destroy) {
      await releaseRestoreLock(coordinator).catch(() => {
        destroy = true;
      });
    }
    coordinator.release(destroy);
  }
}

/** How many connections load tables side by side when the request names none: min(4, CPU cores). */
export function defaultRestoreJobs(): number {
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/** The largest number of restore jobs accepted. */
export const MAX_RESTORE_JOBS = 64;

/** Checks a requested number of restore connections. */
export function checkRestoreJobs(jobs: number): number {
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_RESTORE_JOBS) {
    throw new CofferError('E_USAGE', `the number of restore jobs must be a whole number from 1 to ${MAX_RESTORE_JOBS}, not ${jobs}`);
  }
  return jobs;
}

/** The loading connections come from the pool beside the coordinator's: at most the pool's size less one. */
function connectionsFor(pool: pg.Pool, jobs: number): number {
  checkRestoreJobs(jobs);
  const max = pool.options.max ?? 10;
  return Math.max(1, Math.min(jobs, max - 1));
}

async function inTransaction<T>(client: pg.PoolClient, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Creates the staging schema and, in one transaction, brings it to exactly the archive's level, so its
 * tables match what the archive holds; then empties the tables and drops keys, indexes and foreign keys
 * for the load. The staging schema is committed: the loading connections must see it.
 */
async function prepareStage(req: RestoreRequest, client: pg.PoolClient, stage: string, manifest: Manifest): Promise<{ plan: TablePlan[]; dropped: DroppedForLoad }> {
  return inTransaction(client, async () => {
    await createStagingSchema(client, stage);
    const level = archiveLevel(manifest);
    if (level) await migrateInTransaction(client, { to: level, log: req.log, schema: stage });
    const tables = await listTables(client, stage);
    // The archive names the application schema; its tables are matched by name to the staging ones.
    const { plan, problems } = planTables(
      manifest,
      tables.map((t) => ({ ...t, schema: APP_SCHEMA })),
      { force: !!req.force, where: 'this database schema' },
    );
    refuse(problems);
    await truncateTables(client, tables);
    const dropped = await dropForLoad(client, stage);
    return { plan: plan.map((p) => ({ entry: p.entry, table: { ...p.table, schema: stage } })), dropped };
  });
}

/**
 * setval is not transactional, so a restore sets only sequences it created itself: those of its
 * staging schema, which a failure drops with everything else. The live sequences are never set.
 */
async function setSequences(client: pg.PoolClient, stage: string, manifest: Manifest): Promise<void> {
  refuse(sequenceProblems(manifest, await listSequences(client, stage), 'this database schema'));
  for (const s of manifest.sequences) {
    try {
      await setSequence(client, stage, s.name, String(s.last_value), s.is_called);
    } catch (err) {
      throw new CofferError('E_RESTORE_FAILED', `cannot set sequence ${s.schema}.${s.name}: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** Biggest first (by the bytes the manifest gives), so the longest load starts at once. */
function biggestFirst(plan: TablePlan[]): TablePlan[] {
  return [...plan].sort((a, b) => b.entry.bytes - a.entry.bytes || a.entry.name.localeCompare(b.entry.name));
}

type Task = { load: TablePlan } | { index: IndexBuild } | { attach: string } | { foreignKey: DeferredConstraint };

/** The tables a foreign key locks (SHARE ROW EXCLUSIVE): its own and the one it references. */
function foreignKeyTables(fk: DeferredConstraint): string[] {
  const own = `${fk.schema}.${fk.table}`;
  return fk.refTable === null ? [own] : [own, `${fk.refSchema}.${fk.refTable}`];
}

/**
 * Loads the tables over `jobs` connections, biggest first, and rebuilds each table's keys and indexes
 * as soon as it is loaded, ahead of the loads still waiting: the index builds of the small tables
 * overlap the big load. A table's index builds are separate tasks, so the free connections build the
 * indexes of the last big table side by side instead of one connection building them one after the
 * other while the rest wait; the connection that finishes the last of them puts the table's keys on
 * their indexes (ADD CONSTRAINT … USING INDEX locks the table exclusively, but only for a moment).
 * A foreign key is added as soon as both of its tables are loaded and rebuilt, on whichever
 * connection is free, so the checks of the finished tables overlap the last load and index builds
 * instead of running one after the other at the end; two foreign keys that share a table never run
 * at the same time (they would wait for each other, or deadlock). Returns the rows loaded.
 */
async function loadAndRebuild(
  req: RestoreRequest,
  pool: pg.Pool,
  coordinator: pg.PoolClient,
  jobs: number,
  stage: string,
  plan: TablePlan[],
  dropped: DroppedForLoad,
  progress: RestoreProgress,
  report: () => void,
): Promise<number> {
  const keysOf = (table: string) => dropped.keys.filter((k) => k.schema === stage && k.table === table);
  const rebuild = new Set([...dropped.keys.filter((k) => k.schema === stage).map((k) => k.table), ...dropped.indexes.map((i) => i.table)]);
  // A table's index builds still to finish; the last one to finish attaches its keys.
  const buildsLeft = new Map<string, number>();
  const rebuildTasks = (table: string): Task[] => {
    const builds = indexBuilds(keysOf(table), dropped.indexes.filter((i) => i.table === table));
    buildsLeft.set(table, builds.length);
    return builds.length ? builds.map((b) => ({ index: b })) : [{ attach: table }];
  };
  const loaded = new Set(plan.map((p) => p.table.name));
  // Tables that get no rows (never backed up, or restored empty) can be rebuilt at any time: last.
  const tasks: Task[] = [...biggestFirst(plan).map((p) => ({ load: p })), ...[...rebuild].filter((t) => !loaded.has(t)).sort().flatMap(rebuildTasks)];
  // A staging table is finished once its load and its rebuild are done: then its foreign keys can go.
  const unfinished = new Map<string, number>();
  for (const t of [...loaded, ...rebuild]) unfinished.set(`${stage}.${t}`, (unfinished.get(`${stage}.${t}`) ?? 0) + 1);
  let waitingKeys = [...dropped.foreignKeys];
  const queueReadyKeys = (queue: Task[]) => {
    const ready = waitingKeys.filter((fk) => foreignKeyTables(fk).every((t) => !unfinished.get(t)));
    if (ready.length === 0) return;
    waitingKeys = waitingKeys.filter((fk) => !ready.includes(fk));
    queue.push(...ready.map((fk) => ({ foreignKey: fk })));
  };
  const finished = (table: string, queue: Task[]) => {
    const key = `${stage}.${table}`;
    unfinished.set(key, (unfinished.get(key) ?? 1) - 1);
    queueReadyKeys(queue);
  };
  queueReadyKeys(tasks);
  // Tables of the foreign keys being added now; a foreign key sharing one waits in the queue.
  const keyLocks = new Set<string>();
  const pick = (queue: Task[]) =>
    queue.findIndex((t) => !('foreignKey' in t) || foreignKeyTables(t.foreignKey).every((name) => !keyLocks.has(name)));
  // Index builds sort in memory up to this; the connections building side by side share the budget.
  const memory = Math.min(256, Math.max(64, Math.floor(512 / jobs)));
  // The staging work commits without waiting for its WAL to reach the disk: the swap's COMMIT, which
  // does wait, flushes all of it first (WAL is written in order), and a crash before then leaves only a
  // staging schema, which the next restore drops. One wait saved per task; many tasks are small.
  const staged = (client: pg.PoolClient, fn: () => Promise<unknown>) =>
    inTransaction(client, async () => {
      await client.query(`SET LOCAL synchronous_commit = off; SET LOCAL maintenance_work_mem = '${memory}MB'`);
      await fn();
    });
  const attach = async (client: pg.PoolClient, table: string, queue: Task[]) => {
    const keys = keysOf(table);
    // A key added whole (an exclusion constraint) builds its index here.
    if (keys.length) await staged(client, () => attachKeys(client, keys));
    finished(table, queue);
  };

  let rowsDone = 0;
  const loading = new Set<Meter>();
  const tick = () => {
    let rows = rowsDone;
    for (const m of loading) rows += m.lines;
    progress.rows = rows;
  };
  const ticker = setInterval(() => {
    if (progress.phase !== 'database') return;
    tick();
    report();
  }, 250);
  try {
    await inParallel(pool, coordinator, jobs, tasks, pick, async (client, task, queue) => {
      if ('foreignKey' in task) {
        const tables = foreignKeyTables(task.foreignKey);
        for (const t of tables) keyLocks.add(t);
        try {
          await staged(client, () => addForeignKeys(client, [task.foreignKey]));
        } finally {
          for (const t of tables) keyLocks.delete(t);
        }
        return;
      }
      if ('index' in task) {
        const { table } = task.index;
        await staged(client, () => buildIndex(client, task.index));
        const left = buildsLeft.get(table)! - 1;
        buildsLeft.set(table, left);
        if (left === 0) await attach(client, table, queue);
        return;
      }
      if ('attach' in task) {
        await attach(client, task.attach, queue);
        return;
      }
      const { entry, table } = task.load;
      const meter = new Meter({ lines: true });
      progress.table = `${entry.schema}.${entry.name}`;
      loading.add(meter);
      report();
      try {
        await staged(client, async () => {
          if (!canLoadDirect(table)) await createStage(client);
          await loadEntry(req, client, entry, table, meter);
        });
      } finally {
        loading.delete(meter);
      }
      rowsDone += entry.rows;
      progress.tablesDone++;
      tick();
      report();
      if (progress.tablesDone === plan.length) {
        progress.phase = 'constraints';
        progress.table = undefined;
        report();
      }
      if (rebuild.has(table.name)) queue.unshift(...rebuildTasks(table.name));
      finished(table.name, queue);
    });
  } finally {
    clearInterval(ticker);
  }
  // Every foreign key's tables are finished by now; should one still wait, it is added here.
  if (waitingKeys.length) await inTransaction(coordinator, () => addForeignKeys(coordinator, waitingKeys));
  if (progress.phase !== 'constraints') {
    progress.phase = 'constraints';
    progress.table = undefined;
    report();
  }
  return rowsDone;
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

/** Loads one archive entry into its (staging) table, with every check against the manifest. */
async function loadEntry(req: RestoreRequest, client: pg.PoolClient, entry: ManifestTable, table: TableInfo, meter: Meter): Promise<number> {
  const lines = through(await req.archive.zip.openEntry(entry.entry), meter);
  // The staging table was created by this restore and is loaded once, in this transaction: frozen.
  const inserted = canLoadDirect(table) ? await loadTableDirect(client, table, entry.entry, lines, { freeze: true }) : await loadTable(client, table, entry.entry, lines);
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
 * the swap of the upload folders, and removes the staging schemas of killed restores. Skipped while
 * another restore holds the lock.
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
    await dropLeftoverStaging(pool, log);
  } finally {
    release();
  }
}

/** Removes the staging schemas killed restores left, unless a restore (on any host) is running. */
async function dropLeftoverStaging(pool: pg.Pool, log: Logger): Promise<void> {
  const client = await pool.connect();
  let destroy = false;
  try {
    if (!(await tryRestoreLock(client))) return;
    try {
      const dropped = await dropLeftoverStagingSchemas(client);
      if (dropped.length) log.info({ schemas: dropped }, 'removed the staging schemas of interrupted restores');
    } finally {
      await releaseRestoreLock(client).catch(() => {
        destroy = true;
      });
    }
  } finally {
    client.release(destroy);
  }
}
