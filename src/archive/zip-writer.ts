import { finished, PassThrough, type Readable } from 'node:stream';
import archiver from 'archiver';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { checkEntryName, EntryNameRegistry } from './entries';

export interface ZipWriterOptions {
  /** Deflate level 0–9 for entries that are not stored. Default 6. */
  level?: number;
}

export interface ZipEntryOptions {
  /** Store the entry instead of deflating it (already-compressed media). Default false. */
  store?: boolean;
  /** Modification time recorded in the entry. Default: now. */
  date?: Date;
  /** Unix permission bits (e.g. 0o644). Default 0644 for files, 0755 for directories. */
  mode?: number;
}

export interface ZipWriter {
  /** The zip bytes. Errors if anything fails, so a consumer never sees a well-formed but incomplete zip. */
  readonly output: Readable;
  /**
   * Appends one entry read from `source` and resolves once `source` has been fully consumed and the
   * entry written, so the caller can append the next one. The writer owns `source` from here on: it is
   * consumed, or destroyed if the entry is refused or writing fails.
   */
  addStream(name: string, source: Readable, opts?: ZipEntryOptions): Promise<void>;
  addBuffer(name: string, data: Buffer, opts?: ZipEntryOptions): Promise<void>;
  /** Appends a directory entry; a trailing `/` is added if missing. */
  addDirectory(name: string, opts?: Omit<ZipEntryOptions, 'store'>): Promise<void>;
  /** Writes the central directory; resolves once every byte has been handed to `output`. */
  finalize(): Promise<{ bytes: number }>;
  /** Stops writing: pending and later calls reject, `output` errors with `err` (default E_ABORTED). */
  abort(err?: unknown): void;
  /** Bytes of zip produced so far. */
  readonly bytesWritten: number;
}

export function createZipWriter(opts: ZipWriterOptions = {}): ZipWriter {
  return new ArchiverZipWriter(opts.level ?? DEFAULT_LEVEL);
}

const DEFAULT_LEVEL = 6;
// Buffer sizes are left at their defaults (archiver: 1 MiB a stream, 16 KiB here). Larger zlib chunks
// and buffers were measured and made no difference beyond noise: one deflate stream on the libuv
// threadpool is the bottleneck, and archiver reaches ~95% of a bare zlib.createDeflateRaw pipeline.
// A consumer that stops reading holds back the source after a few MB in flight, whatever the entry size.

type State = 'open' | 'busy' | 'finalizing' | 'done' | 'failed';

interface Settle<T> {
  resolve: (value: T) => void;
  reject: (err: CofferError) => void;
}

interface PendingEntry extends Settle<void> {
  name: string;
  source: Readable | null;
  stopWatching: () => void;
}

class ArchiverZipWriter implements ZipWriter {
  readonly output: PassThrough;
  private readonly archive: archiver.Archiver;
  private readonly names = new EntryNameRegistry();
  private state: State = 'open';
  private failure: CofferError | null = null;
  private pending: PendingEntry | null = null;
  private finalizing: Settle<{ bytes: number }> | null = null;

  constructor(level: number) {
    if (!Number.isInteger(level) || level < 0 || level > 9) {
      throw new CofferError('E_INTERNAL', `zip deflate level must be an integer 0-9, got ${level}`);
    }
    this.archive = archiver('zip', { zlib: { level } });
    this.output = new PassThrough();
    this.archive.on('error', (err: unknown) => this.fail(this.wrap(err)));
    this.archive.on('entry', () => this.entryDone());
    this.archive.once('end', () => this.archiveEnded());
    // A consumer that goes away (client disconnect) must stop the writer, or a pending addStream would
    // wait forever on back-pressure.
    this.output.once('close', () => {
      if (this.state !== 'done') this.fail(new CofferError('E_ABORTED', 'zip output was closed before the archive was complete'));
    });
    this.archive.pipe(this.output);
  }

  get bytesWritten(): number {
    return this.archive.pointer();
  }

  addStream(name: string, source: Readable, opts: ZipEntryOptions = {}): Promise<void> {
    const refusal = this.refusal(name, opts, source);
    if (refusal !== null) {
      source.destroy();
      return Promise.reject(refusal);
    }
    return this.append(name, source, opts);
  }

  addBuffer(name: string, data: Buffer, opts: ZipEntryOptions = {}): Promise<void> {
    const refusal = this.refusal(name, opts);
    if (refusal !== null) return Promise.reject(refusal);
    return this.append(name, data, opts);
  }

  addDirectory(name: string, opts: Omit<ZipEntryOptions, 'store'> = {}): Promise<void> {
    const dirName = name.endsWith('/') ? name : `${name}/`;
    const refusal = this.refusal(dirName, opts);
    if (refusal !== null) return Promise.reject(refusal);
    return this.append(dirName, Buffer.alloc(0), { ...opts, store: true });
  }

  finalize(): Promise<{ bytes: number }> {
    const refusal = this.stateRefusal('finalize');
    if (refusal !== null) return Promise.reject(refusal);
    this.state = 'finalizing';
    return new Promise((resolve, reject) => {
      this.finalizing = { resolve, reject };
      // Failures arrive through the 'error' listener as well; this only avoids an unhandled rejection.
      this.archive.finalize().catch(() => undefined);
    });
  }

  abort(err?: unknown): void {
    const reason = err === undefined ? new CofferError('E_ABORTED', 'zip writing was aborted') : this.wrap(err);
    this.fail(reason);
  }

  /** Why a new entry cannot be added now, or null. Checked before any state changes. */
  private refusal(name: string, opts: ZipEntryOptions, source?: Readable): CofferError | null {
    const stateRefusal = this.stateRefusal(`add entry '${name}'`);
    if (stateRefusal !== null) return stateRefusal;
    const optionProblem = entryOptionsProblem(opts);
    if (optionProblem !== null) return new CofferError('E_INTERNAL', `cannot add zip entry '${name}': ${optionProblem}`);
    // archiver would wait forever for data from a stream that has already ended.
    if (source !== undefined && (source.readableEnded || source.destroyed)) {
      return new CofferError('E_INTERNAL', `cannot add zip entry '${name}': its source stream was already consumed or destroyed`);
    }
    // Last, because it records the name.
    const reason = checkEntryName(name) ?? this.names.add(name);
    if (reason === null) return null;
    return new CofferError('E_ARCHIVE_UNSAFE_ENTRY', `refusing to write zip entry '${name}': ${reason}`);
  }

  private stateRefusal(action: string): CofferError | null {
    switch (this.state) {
      case 'open':
        return null;
      case 'failed':
        return this.failure;
      case 'busy':
        // Appending while an entry is in flight would queue open streams inside archiver.
        return new CofferError('E_INTERNAL', `cannot ${action}: entry '${this.pending?.name}' is still being written (await it first)`);
      case 'finalizing':
      case 'done':
        return new CofferError('E_INTERNAL', `cannot ${action}: the zip has already been finalized`);
    }
  }

  private append(name: string, source: Readable | Buffer, opts: ZipEntryOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const isStream = !Buffer.isBuffer(source);
      this.pending = {
        name,
        resolve,
        reject,
        source: isStream ? source : null,
        stopWatching: isStream ? this.watchSource(name, source) : () => undefined,
      };
      this.state = 'busy';
      this.archive.append(source, {
        name,
        store: opts.store === true,
        date: opts.date ?? new Date(),
        ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
      });
    });
  }

  /**
   * archiver pipes the source into its own PassThrough, and `pipe` does not forward errors: a source
   * that errors or is destroyed early would leave the entry hanging forever. Watch it ourselves.
   */
  private watchSource(name: string, source: Readable): () => void {
    return finished(source, { writable: false }, (err) => {
      if (err !== undefined && err !== null && this.pending?.name === name) this.fail(this.wrap(err));
    });
  }

  private entryDone(): void {
    const pending = this.pending;
    if (pending === null || this.state !== 'busy') return;
    pending.stopWatching();
    this.pending = null;
    this.state = 'open';
    pending.resolve();
  }

  private archiveEnded(): void {
    // archiver also ends its stream when aborted; only an end after finalize is a complete zip.
    if (this.state !== 'finalizing' || this.finalizing === null) return;
    this.state = 'done';
    this.finalizing.resolve({ bytes: this.archive.pointer() });
    this.finalizing = null;
  }

  /** Puts the writer in its failed state once; every later call rejects with the same error. */
  private fail(err: CofferError): void {
    if (this.state === 'failed' || this.state === 'done') return;
    this.state = 'failed';
    this.failure = err;
    // Unpipe before aborting: archiver ends its stream on abort, and that end must not reach the
    // consumer as a clean end of file.
    this.archive.unpipe(this.output);
    this.output.destroy(err);
    this.archive.abort();
    this.rejectPending(err);
  }

  private rejectPending(err: CofferError): void {
    const pending = this.pending;
    this.pending = null;
    if (pending !== null) {
      pending.stopWatching();
      pending.source?.destroy();
      pending.reject(err);
    }
    const finalizing = this.finalizing;
    this.finalizing = null;
    finalizing?.reject(err);
  }

  /** CofferErrors (e.g. from the database stream) keep their code; anything else becomes E_BACKUP_FAILED. */
  private wrap(err: unknown): CofferError {
    if (isCofferError(err)) return err;
    const entry = this.pending === null ? '' : ` entry '${this.pending.name}'`;
    return new CofferError('E_BACKUP_FAILED', `writing zip${entry} failed: ${errorMessage(err)}`, { cause: err });
  }
}

function entryOptionsProblem(opts: ZipEntryOptions): string | null {
  if (opts.date !== undefined && Number.isNaN(opts.date.getTime())) return 'invalid date';
  if (opts.mode !== undefined && (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777)) {
    return `mode must be permission bits 0-0o7777, got ${opts.mode}`;
  }
  return null;
}

