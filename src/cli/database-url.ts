import type { Command } from 'commander';
import fs from 'node:fs';
import { CofferError, errorMessage } from '../core/errors';

export interface DatabaseUrlOptions {
  databaseUrl?: string;
  databaseUrlFile?: string;
}

/** Adds --database-url and --database-url-file, the same on every command that takes a database. */
export function withDatabaseUrlOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--database-url <url>', `${what} (default: DATABASE_URL or the embedded server); a password here shows in ps: prefer --database-url-file`)
    .option('--database-url-file <path>', 'read the database URL from a file (first line), keeping its password off the command line');
}

/** Whether a postgres:// URL carries a password (user:password@host). */
function hasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return /^[a-z][a-z0-9+.-]*:\/\/[^/@]*:[^/@]*@/i.test(url);
  }
}

/**
 * The database URL chosen on the command line, or undefined (DATABASE_URL or the embedded server).
 * A password given in --database-url is used, with a warning: it is visible to every user in `ps`
 * and stays in shell history. The warning never repeats the URL.
 */
export function resolveDatabaseUrl(opts: DatabaseUrlOptions): string | undefined {
  if (opts.databaseUrl !== undefined && opts.databaseUrlFile !== undefined) {
    throw new CofferError('E_USAGE', 'give only one of --database-url and --database-url-file');
  }
  if (opts.databaseUrl !== undefined) {
    if (hasPassword(opts.databaseUrl)) {
      process.stderr.write(
        'coffer: warning: the URL given to --database-url contains a password, which other users can see in ps and which stays in shell history; set DATABASE_URL or use --database-url-file instead\n',
      );
    }
    return opts.databaseUrl;
  }
  if (opts.databaseUrlFile === undefined) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(opts.databaseUrlFile, 'utf8');
  } catch (err) {
    throw new CofferError('E_USAGE', `cannot read the database URL file ${opts.databaseUrlFile}: ${errorMessage(err)}`);
  }
  const url = text.split(/\r?\n/)[0].trim();
  // Never echo the content: it holds a password.
  if (!/^postgres(ql)?:\/\//.test(url)) throw new CofferError('E_USAGE', `${opts.databaseUrlFile} does not start with a postgres:// or postgresql:// URL`);
  return url;
}
