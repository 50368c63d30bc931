import type pg from 'pg';

/*
 * Kept apart from pool.ts, which loads the pg driver (about 50 ms at start-up): migrate.ts needs this,
 * and `coffer verify` loads migrate.ts for the list of migrations without ever connecting.
 */

/** Runs fn inside a transaction on one client; rolls back on any error. */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
