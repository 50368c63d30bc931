import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { SMALL_ENTRY_BYTES, UPLOAD_FOLDERS, type ZipArchive, type ZipEntryInfo } from '../archive';
import { writeFileAtomic } from '../core/atomic-file';
import { CofferError, errorMessage } from '../core/errors';
import type { Logger } from '../log';

/**
 * Upload folders are restored in three steps: extract into a staging folder inside DATA_DIR (same file
 * system, so the swap is a rename), swap the folders in after the database has committed, and delete
 * the old ones only once every folder has been swapped. A journal file records how far a restore got,
 * so that a crash between COMMIT and the swap is finished (or undone) by the next run.
 */

export const JOURNAL_FILE = '.coffer-restore.json';
const STAGING_PREFIX = '.coffer-restore-';

export interface Journal {
  id: string;
  staging: string;
  /** prepared: files staged, database not yet known to be committed; committed: swap may proceed. */
  phase: 'prepared' | 'committed';
  database: boolean;
}

export interface StagedFiles {
  id: string;
  staging: string;
  files: number;
  bytes: number;
}

function journalPath(dataDir: string): string {
  return path.join(dataDir, JOURNAL_FILE);
}

export function readJournal(dataDir: string): Journal | undefined {
  try {
    return JSON.parse(fs.readFileSync(journalPath(dataDir), 'utf8')) as Journal;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CofferError('E_RESTORE_FAILED', `restore journal ${journalPath(dataDir)} is unreadable: ${errorMessage(err)}; inspect it and the ${STAGING_PREFIX}* folders by hand`);
  }
}

export function writeJournal(dataDir: string, journal: Journal): void {
  // A unique partial name: what a crash left behind must not block the next restore.
  writeFileAtomic(journalPath(dataDir), JSON.stringify(journal) + '\n', { mode: 0o600, partialName: 'unique' });
}

function removeJournal(dataDir: string): void {
  fs.rmSync(journalPath(dataDir), { force: true });
}

async function freeBytes(dir: string): Promise<number | undefined> {
  try {
    const s = await fs.promises.statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

export interface StageOptions {
  onFile?: (files: number, bytes: number) => void;
  /** Told how the staged files were made durable when the one filesystem-wide flush was not available. */
  log?: Logger;
}

/**
 * Extracts the upload folders of the archive into a new staging folder. Nothing live is touched.
 * Files are written without an fsync each; once all are written, one `syncfs` of the file system that
 * holds DATA_DIR makes them and their directories durable together (docs/DECISIONS.md), before the
 * caller journals the restore as prepared and long before any swap.
 */
export async function stageFiles(zip: ZipArchive, dataDir: string, opts: StageOptions = {}): Promise<StagedFiles> {
  const { onFile, log } = opts;
  fs.mkdirSync(dataDir, { recursive: true });
  const id = `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
  const staging = path.join(dataDir, STAGING_PREFIX + id);
  const root = path.join(staging, 'new');
  // Walked twice (the sum, then the files) in archive order rather than kept: one object each while in use.
  const prefixes = UPLOAD_FOLDERS.map((f) => `${f}/`);
  const uploadEntries = function* (): Generator<ZipEntryInfo> {
    for (const e of zip.list()) if (prefixes.some((p) => e.name.startsWith(p))) yield e;
  };
  let needed = 0;
  for (const e of uploadEntries()) needed += e.uncompressedSize;
  const free = await freeBytes(dataDir);
  if (free !== undefined && needed > free) {
    throw new CofferError('E_RESTORE_FAILED', `not enough disk space in ${dataDir} to stage the upload folders: need ${needed} bytes, ${free} free`);
  }
  let files = 0;
  let bytes = 0;
  try {
    const made = new Set<string>();
    const makeDir = (dir: string): void => {
      if (made.has(dir)) return;
      fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
      made.add(dir);
    };
    for (const folder of UPLOAD_FOLDERS) makeDir(path.join(root, folder));
    for (const e of uploadEntries()) {
      const target = path.resolve(root, e.name);
      // The zip reader already refused unsafe names; this is the last line of defence.
      if (!target.startsWith(root + path.sep)) throw new CofferError('E_ARCHIVE_UNSAFE_ENTRY', `entry ${e.name} would be written outside the staging folder`);
      if (e.isDirectory) {
        makeDir(target);
        continue;
      }
      makeDir(path.dirname(target));
      if (e.uncompressedSize <= SMALL_ENTRY_BYTES) {
        // Read, inflated and checked whole (size and CRC-32) before anything is written.
        writeNewFile(target, await zip.readEntryBuffer(e.name, SMALL_ENTRY_BYTES));
      } else {
        await pipeline(await zip.openEntry(e.name), fs.createWriteStream(target, { flags: 'wx', mode: 0o640 }));
      }
      files++;
      bytes += e.uncompressedSize;
      onFile?.(files, bytes);
    }
    await makeDurable(root, log);
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  return { id, staging, files, bytes };
}

/** A new file with exactly `data`: open (refusing an existing name), write, close. */
function writeNewFile(target: string, data: Buffer): void {
  const fd = fs.openSync(target, 'wx', 0o640);
  try {
    for (let written = 0; written < data.length; ) written += fs.writeSync(fd, data, written, data.length - written, written);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Makes every file and directory below `root` durable: one `sync -f` (Linux syncfs) of its file system,
 * or, where that is unavailable or fails, an fsync of every file and directory.
 */
async function makeDurable(root: string, log: Logger | undefined): Promise<void> {
  const problem = await syncFileSystem(root);
  if (problem === null) return;
  log?.warn({ reason: problem }, 'restore: one file-system flush (sync -f) was not possible; flushing every staged file and folder instead, which is slower');
  syncTree(root, true);
}

/** Runs coreutils' `sync -f root` (syncfs(2) on root's file system); resolves with why it failed, or null. */
function syncFileSystem(root: string): Promise<string | null> {
  if (process.platform !== 'linux') return Promise.resolve(`syncfs is Linux only (platform ${process.platform})`);
  return new Promise((resolve) => {
    execFile('sync', ['-f', root], { env: process.env, windowsHide: true }, (err, _stdout, stderr) => {
      if (err === null) resolve(null);
      else resolve(`sync -f failed: ${stderr.trim() || errorMessage(err)}`);
    });
  });
}

function syncPath(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsyncs every directory below root, and with `files` every file too. */
function syncTree(root: string, files: boolean): void {
  for (const e of fs.readdirSync(root, { withFileTypes: true })) {
    if (e.isDirectory()) syncTree(path.join(root, e.name), files);
    else if (files && e.isFile()) syncPath(path.join(root, e.name));
  }
  syncPath(root);
}

/**
 * Swaps the staged folders in. Idempotent, so an interrupted swap can simply be run again: a folder
 * already swapped has no staged copy left.
 */
export function swapStaged(dataDir: string, staging: string): void {
  const oldRoot = path.join(staging, 'old');
  fs.mkdirSync(oldRoot, { recursive: true });
  for (const folder of UPLOAD_FOLDERS) {
    const incoming = path.join(staging, 'new', folder);
    if (!fs.existsSync(incoming)) continue;
    const live = path.join(dataDir, folder);
    const aside = path.join(oldRoot, folder);
    if (fs.existsSync(live)) {
      if (fs.existsSync(aside)) fs.rmSync(live, { recursive: true, force: true });
      else fs.renameSync(live, aside);
    }
    fs.renameSync(incoming, live);
  }
  // The renames are durable only once DATA_DIR's own entry list is on disk.
  syncPath(dataDir);
}

/** Swap, then forget: the journal goes first (so no later run redoes anything), then the old folders. */
export function completeSwap(dataDir: string, journal: Journal): void {
  writeJournal(dataDir, { ...journal, phase: 'committed' });
  swapStaged(dataDir, journal.staging);
  removeJournal(dataDir);
  fs.rmSync(journal.staging, { recursive: true, force: true });
}

export function abandonStaged(dataDir: string, staging: string): void {
  removeJournal(dataDir);
  fs.rmSync(staging, { recursive: true, force: true });
}

/**
 * Finishes or undoes a restore that stopped between staging its files and swapping them in.
 * `committed(id)` says whether the database part of restore `id` committed (a restore row exists).
 * Leftover staging folders without a journal (a restore killed while extracting) are removed.
 */
export async function repairInterruptedRestore(
  dataDir: string,
  log: Logger,
  committed: ((id: string) => Promise<boolean>) | undefined,
): Promise<'none' | 'completed' | 'rolled-back'> {
  let outcome: 'none' | 'completed' | 'rolled-back' = 'none';
  const journal = readJournal(dataDir);
  if (journal) {
    const needsDatabase = journal.phase !== 'committed' && journal.database;
    if (needsDatabase && !committed) {
      // Only the database knows whether that restore committed; guessing could throw away the files
      // of a committed restore.
      throw new CofferError(
        'E_RESTORE_FAILED',
        `an interrupted restore (${journal.id}) has staged upload folders waiting; run coffer restore or coffer serve with its database reachable to finish or undo it first`,
      );
    }
    const done = !needsDatabase || (await committed!(journal.id));
    if (done) {
      completeSwap(dataDir, journal);
      log.warn({ restore: journal.id }, 'finished swapping in the upload folders of an interrupted restore (its database part had committed)');
      outcome = 'completed';
    } else {
      abandonStaged(dataDir, journal.staging);
      log.warn({ restore: journal.id }, 'removed the staged upload folders of an interrupted restore (its database part had not committed)');
      outcome = 'rolled-back';
    }
  }
  let leftovers: string[] = [];
  try {
    leftovers = fs.readdirSync(dataDir).filter((n) => n.startsWith(STAGING_PREFIX));
  } catch {
    // no DATA_DIR yet: nothing to repair
  }
  // A stdin spool left by a killed restore may be a whole (unencrypted) archive: never keep it.
  for (const name of abandonedSpools(dataDir)) {
    fs.rmSync(path.join(dataDir, name), { force: true });
    log.info({ file: name }, 'removed an archive spool left by an interrupted restore');
  }
  for (const name of leftovers) {
    fs.rmSync(path.join(dataDir, name), { recursive: true, force: true });
    log.info({ folder: name }, 'removed a staging folder left by an interrupted restore');
  }
  return outcome;
}

const LOCK_FILE = '.coffer-restore.lock';
export const SPOOL_PREFIX = '.coffer-spool-';

/** A spool's name carries its writer's pid: `.coffer-spool-<pid>-<random>`. */
export function spoolName(): string {
  return `${SPOOL_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Spools whose writer is gone (a running restore or verify keeps its own). */
function abandonedSpools(dataDir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dataDir).filter((n) => n.startsWith(SPOOL_PREFIX));
  } catch {
    return [];
  }
  return names.filter((n) => {
    const pid = Number(n.slice(SPOOL_PREFIX.length).split('-')[0]);
    return !(Number.isInteger(pid) && pid > 0 && pidAlive(pid));
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One restore at a time per DATA_DIR (the database has its own advisory lock). The lock file holds the
 * owner's pid; a lock whose owner is gone (killed restore) is taken over. Returns the release function.
 */
export function acquireRestoreLock(dataDir: string): () => void {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o600);
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      return () => fs.rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner)) {
        throw new CofferError('E_RESTORE_RUNNING', `another restore (pid ${owner}) is running on ${dataDir}`);
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new CofferError('E_RESTORE_RUNNING', `could not take the restore lock ${file}`);
}
