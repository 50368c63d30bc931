import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CofferError } from '../core/errors';
import { spoolName } from '../storage/restore-files';
import type { Runtime } from './runtime';

/*
 * The archive argument of restore and verify: a file, or '-' (or nothing) for standard input. Apart
 * from the restore command so that verify, which never connects, does not load the database code.
 */

/** stdin is spooled (still encrypted, if it was) to a private file: the zip reader needs to seek. */
async function spoolStdin(dataDir: string): Promise<string> {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, spoolName());
  try {
    await pipeline(process.stdin, fs.createWriteStream(file, { mode: 0o600, flags: 'wx' }));
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw err;
  }
  return file;
}

export async function withArchiveFile<T>(rt: Runtime, file: string | undefined, fn: (file: string, label: string) => Promise<T>): Promise<T> {
  if (file === undefined || file === '-') {
    if (process.stdin.isTTY) throw new CofferError('E_USAGE', "name the archive file, or pipe it in and give '-'");
    const spool = await spoolStdin(rt.config.dataDir);
    try {
      return await fn(spool, 'standard input');
    } finally {
      fs.rmSync(spool, { force: true });
    }
  }
  return fn(file, path.basename(file));
}
