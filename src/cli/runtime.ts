import os from 'node:os';
import { loadConfig, type Config } from '../config';
import type { Database } from '../db/connect';
import { migrate } from '../db/migrate';
import { createLogger, type Logger } from '../log';

export interface Runtime {
  config: Config;
  log: Logger;
}

/**
 * Config and logger for one command. Commands other than `serve` log warnings only unless LOG_LEVEL
 * is set: their output is for people (stdout) and logs stay on stderr.
 */
export function runtime(opts: { quietByDefault?: boolean; overrides?: Record<string, string> } = {}): Runtime {
  const config = loadConfig(process.env, opts.overrides);
  const level = opts.quietByDefault && !config.logLevelExplicit ? 'warn' : config.logLevel;
  return { config, log: createLogger(level) };
}

/** Opens the database (embedded or DATABASE_URL), optionally migrates, runs fn, and closes. */
export async function withDatabase<T>(rt: Runtime, fn: (db: Database) => Promise<T>, opts: { migrate?: boolean; url?: string; poolMax?: number } = {}): Promise<T> {
  // Loaded here, not at the top: the driver and the embedded server's code cost about 50 ms at
  // start-up, and the commands that never connect (verify, keygen, encrypt, decrypt) need neither.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { openDatabase } = require('../db/connect') as typeof import('../db/connect');
  const db = await openDatabase(rt.config, rt.log, { url: opts.url, poolMax: opts.poolMax });
  try {
    if (opts.migrate !== false) await migrate(db.pool, { log: rt.log });
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** Who ran a command, for backup_log: USER, else the OS account (containers may run a uid with no name). */
export function cliActor(config: Config): { username: string } {
  if (config.operator) return { username: `cli:${config.operator}` };
  try {
    return { username: `cli:${os.userInfo().username}` };
  } catch {
    return { username: `cli:uid-${process.getuid?.() ?? 'unknown'}` };
  }
}

export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A secret typed by a person or piped in: one line, trailing newline removed. */
export async function readSecretFromStdin(): Promise<string> {
  return (await readStdin()).toString('utf8').replace(/\r?\n$/, '');
}

export function print(line = ''): void {
  process.stdout.write(line + '\n');
}
