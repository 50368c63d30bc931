import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { CofferError, errorMessage } from '../core/errors';
import { lockKey } from './locks';
import { ident, qualified } from './sql';

/**
 * The staging schema of a restore (DESIGN §6): the new data is built there over several connections,
 * checked, and then moved into the application schema in one short transaction. A killed restore
 * leaves only a staging schema behind, which the next restore (or service start) removes.
 */

/** Every staging schema's name starts with this; nothing else may. */
export const STAGING_PREFIX = 'coffer_restore_stage_';

export function newStagingSchemaName(): string {
  return `${STAGING_PREFIX}${randomBytes(6).toString('hex')}`;
}

/**
 * The restore lock, held by the session (not a transaction) for the whole restore: while it is held,
 * every staging schema belongs to the restore that holds it; once taken, any other is a leftover.
 */
export async function tryRestoreLock(client: pg.ClientBase): Promise<boolean> {
  const res = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [lockKey('restore')]);
  return res.rows[0].ok;
}

export async function releaseRestoreLock(client: pg.ClientBase): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1)', [lockKey('restore')]);
}

/** Names of the staging schemas that exist now. */
export async function stagingSchemas(client: pg.ClientBase): Promise<string[]> {
  const res = await client.query<{ name: string }>(`SELECT nspname AS name FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY nspname`, [STAGING_PREFIX]);
  return res.rows.map((r) => r.name);
}

/** Drops one staging schema and everything in it. Refuses any other name. */
export async function dropStagingSchema(client: pg.ClientBase, schema: string): Promise<void> {
  if (!schema.startsWith(STAGING_PREFIX)) throw new CofferError('E_INTERNAL', `refusing to drop schema ${schema}: not a restore staging schema`);
  await client.query(`DROP SCHEMA IF EXISTS ${ident(schema)} CASCADE`);
}

/** Removes the staging schemas of killed restores; call only while holding the restore lock. */
export async function dropLeftoverStagingSchemas(client: pg.ClientBase): Promise<string[]> {
  const leftovers = await stagingSchemas(client);
  for (const s of leftovers) await dropStagingSchema(client, s);
  return leftovers;
}

export async function createStagingSchema(client: pg.ClientBase, schema: string): Promise<void> {
  if (!schema.startsWith(STAGING_PREFIX)) throw new CofferError('E_INTERNAL', `schema ${schema} is not a restore staging schema name`);
  await client.query(`CREATE SCHEMA ${ident(schema)}`);
}

/**
 * Moves every object of the staging schema into `to` (which the caller has just flushed), then drops
 * the then empty staging schema. Tables move with their indexes, constraints, triggers and the
 * sequences their columns own; the rest (free-standing sequences, views, types, domains, routines)
 * move one by one. Anything left behind is an object kind restore does not know: the drop (RESTRICT)
 * then fails, and with it the swap transaction, rather than losing it silently.
 */
export async function moveStagingObjects(client: pg.ClientBase, from: string, to: string): Promise<void> {
  const rels = await client.query<{ kind: string; name: string }>(
    `SELECT c.relkind AS kind, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'f', 'v', 'm') ORDER BY c.relname`,
    [from],
  );
  const relWhat: Record<string, string> = { r: 'TABLE', p: 'TABLE', f: 'FOREIGN TABLE', v: 'VIEW', m: 'MATERIALIZED VIEW' };
  for (const r of rels.rows) await client.query(`ALTER ${relWhat[r.kind]} ${qualified(from, r.name)} SET SCHEMA ${ident(to)}`);
  // Owned sequences moved with their tables; the others are still here.
  const seqs = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY c.relname`,
    [from],
  );
  for (const s of seqs.rows) await client.query(`ALTER SEQUENCE ${qualified(from, s.name)} SET SCHEMA ${ident(to)}`);
  // Array types and the row types of tables move with their element type or table; a multirange may
  // move with its range, so what is left is asked again.
  for (const kinds of [['e', 'd', 'r', 'c'], ['m']]) {
    const types = await client.query<{ name: string; domain: boolean }>(
      `SELECT t.typname AS name, t.typtype = 'd' AS domain FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = $1 AND t.typtype = ANY($2::"char"[]) AND t.typcategory <> 'A'
          AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        ORDER BY t.typname`,
      [from, kinds],
    );
    for (const t of types.rows) await client.query(`ALTER ${t.domain ? 'DOMAIN' : 'TYPE'} ${qualified(from, t.name)} SET SCHEMA ${ident(to)}`);
  }
  const routines = await client.query<{ sig: string }>(
    `SELECT p.oid::regprocedure::text AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1`,
    [from],
  );
  for (const r of routines.rows) await client.query(`ALTER ROUTINE ${r.sig} SET SCHEMA ${ident(to)}`);
  try {
    await client.query(`DROP SCHEMA ${ident(from)} RESTRICT`);
  } catch (err) {
    throw new CofferError('E_RESTORE_FAILED', `the restored schema holds objects restore cannot move into ${to}: ${errorMessage(err)}`, { cause: err });
  }
}

/** Cancels the statement a connection is running (a parallel restore stops its other loads on a failure). */
export async function cancelBackends(client: pg.ClientBase, pids: number[]): Promise<void> {
  if (pids.length) await client.query('SELECT pg_cancel_backend(pid) FROM unnest($1::int[]) AS pid', [pids]);
}
