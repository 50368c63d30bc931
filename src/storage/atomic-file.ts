import fs from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { CofferError, errorMessage } from '../core/errors';

export interface AtomicFile {
  /** Where bytes go until commit: `<path>.partial`. */
  readonly stream: Writable;
  readonly partialPath: string;
  /** fsyncs and renames the partial file to its final name (after the stream has finished). */
  commit(): Promise<void>;
  /** Removes the partial file. */
  abort(): Promise<void>;
}

/**
 * A file that appears under its name only when complete: a reader (or an operator's `ls`) never takes
 * a half-written archive for a good one.
 */
export function createAtomicFile(target: string, mode = 0o600): AtomicFile {
  const partialPath = `${target}.partial`;
  try {
    fs.mkdirSync(path.dirname(path.resolve(target)), { recursive: true });
  } catch (err) {
    throw new CofferError('E_OUTPUT', `cannot create the folder for ${target}: ${errorMessage(err)}`);
  }
  const stream = fs.createWriteStream(partialPath, { mode, flags: 'w' });
  return {
    stream,
    partialPath,
    async commit() {
      const fh = await fs.promises.open(partialPath, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.promises.rename(partialPath, target);
    },
    async abort() {
      stream.destroy();
      await fs.promises.rm(partialPath, { force: true });
    },
  };
}
