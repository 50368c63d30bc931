import pg from 'pg';
import type { Logger } from '../log';
import { CofferError, errorMessage } from '../core/errors';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

// int8 and numeric stay strings: JavaScript numbers would silently lose precision.
export function createPool(url: string, log: Logger, opts: { max?: number; applicationName?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'coffer',
    connectionTimeoutMillis: 15000,
  });
  pool.on('error', (err) => log.warn({ err: errorMessage(err) }, 'idle database connection failed'));
  return pool;
}

export async function checkConnection(pool: pg.Pool, where: string): Promise<string> {
  try {
    const res = await pool.query<{ server_version: string }>('SHOW server_version');
    return res.rows[0].server_version;
  } catch (err) {
    throw new CofferError('E_DATABASE_UNAVAILABLE', `cannot connect to the database (${where}): ${errorMessage(err)}`);
  }
}

/** A database name and host for messages, never the password. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.pathname.replace(/^\//, '') || '(default)'} on ${u.hostname}${u.port ? ':' + u.port : ''}`;
  } catch {
    return '(unparseable database URL)';
  }
}
