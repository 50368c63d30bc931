import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { CofferError, errorMessage } from './errors';

/**
 * Every file coffer writes and then renames into place goes through here. The partial file is always
 * created new (O_CREAT|O_EXCL, O_NOFOLLOW) with the mode set on the open descriptor, so a file or a
 * symbolic link that someone else put at the partial name is never written through, never lends the
 * result its owner or mode, and is reported instead of silently reused.
 */

export interface AtomicFileOptions {
  /** Mode of the file (default 0600), set exactly, whatever the umask. */
  mode?: number;
  /** Owner to give the file (root handing a file to the `postgres` user). */
  owner?: { uid: number; gid: number };
  /**
   * `fixed` (default): the partial file is `<target>.partial`, a name an operator can see and that is
   * refused when it already exists. `unique`: a fresh random name beside the target, for coffer's own
   * state files, which must not be blocked by what a crash left behind.
   */
  partialName?: 'fixed' | 'unique';
}

export interface AtomicFile {
  /** Where bytes go until commit. */
  readonly stream: Writable;
  readonly partialPath: string;
  /** Ends the stream, waits until the file is fsynced and closed, and renames it to its final name. */
  commit(): Promise<void>;
  /** Removes the partial file. */
  abort(): Promise<void>;
}

const EXCLUSIVE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

function partialPathFor(target: string, name: AtomicFileOptions['partialName']): string {
  return name === 'unique' ? `${target}.${process.pid}-${randomBytes(6).toString('hex')}.partial` : `${target}.partial`;
}

/**
 * Creates `file` new, never through an existing file or link; returns the open descriptor. The mode
 * (and owner) are set on the descriptor, so the umask does not matter.
 */
export function openExclusive(file: string, opts: Pick<AtomicFileOptions, 'mode' | 'owner'> = {}): number {
  let fd: number;
  try {
    fd = fs.openSync(file, EXCLUSIVE, opts.mode ?? 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ELOOP') {
      throw new CofferError('E_OUTPUT', `${file} already exists (left by an interrupted run, or not coffer's): check it, remove it and try again`);
    }
    throw new CofferError('E_OUTPUT', `cannot create ${file}: ${errorMessage(err)}`);
  }
  try {
    fs.fchmodSync(fd, opts.mode ?? 0o600);
    if (opts.owner) fs.fchownSync(fd, opts.owner.uid, opts.owner.gid);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw new CofferError('E_OUTPUT', `cannot set the mode of ${file}: ${errorMessage(err)}`);
  }
  return fd;
}

function ensureParent(target: string): void {
  try {
    fs.mkdirSync(path.dirname(path.resolve(target)), { recursive: true });
  } catch (err) {
    throw new CofferError('E_OUTPUT', `cannot create the folder for ${target}: ${errorMessage(err)}`);
  }
}

/**
 * A file that appears under its name only when complete: a reader (or an operator's `ls`) never takes
 * a half-written archive for a good one.
 */
export function createAtomicFile(target: string, opts: AtomicFileOptions = {}): AtomicFile {
  ensureParent(target);
  const partialPath = partialPathFor(target, opts.partialName);
  const fd = openExclusive(partialPath, opts);
  // The stream owns the descriptor it was given and fsyncs it before closing (flush).
  const stream = fs.createWriteStream(partialPath, { fd, flush: true });
  // Errors reach the caller through its pipeline, or through commit (stream.errored); never uncaught.
  stream.on('error', () => undefined);
  const closed = async () => {
    if (!stream.closed) await new Promise<void>((resolve) => stream.once('close', () => resolve()));
  };
  return {
    stream,
    partialPath,
    async commit() {
      stream.end();
      await closed();
      if (stream.errored) throw stream.errored;
      await fs.promises.rename(partialPath, target);
    },
    async abort() {
      stream.destroy();
      await closed();
      await fs.promises.rm(partialPath, { force: true });
    },
  };
}

/** Writes a small file in one go through a partial file, fsynced, then renamed into place. */
export function writeFileAtomic(target: string, data: string | Buffer, opts: AtomicFileOptions = {}): void {
  ensureParent(target);
  const partialPath = partialPathFor(target, opts.partialName);
  const fd = openExclusive(partialPath, opts);
  let open = true;
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    open = false;
    fs.closeSync(fd);
    fs.renameSync(partialPath, target);
  } catch (err) {
    if (open) fs.closeSync(fd);
    fs.rmSync(partialPath, { force: true });
    if (err instanceof CofferError) throw err;
    throw new CofferError('E_OUTPUT', `cannot write ${target}: ${errorMessage(err)}`);
  }
}

/** Creates a new file with `data` (no rename): for private temporary files such as a password file. */
export function writeFileExclusive(file: string, data: string | Buffer, opts: Pick<AtomicFileOptions, 'mode' | 'owner'> = {}): void {
  const fd = openExclusive(file, opts);
  try {
    fs.writeFileSync(fd, data);
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw new CofferError('E_OUTPUT', `cannot write ${file}: ${errorMessage(err)}`);
  } finally {
    fs.closeSync(fd);
  }
}
