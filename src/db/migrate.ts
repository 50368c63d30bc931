import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { CofferError } from '../core/errors';
import type { Logger } from '../log';
import { lockKey } from './locks';
import { withTransaction } from './transaction';
import { ident, qualified } from './sql';

/** The bookkeeping table. It lives in the application schema and is never backed up or truncated. */
export const MIGRATIONS_TABLE = 'coffer_migrations';
export const APP_SCHEMA = 'public';

export interface Migration {
  name: string;
  file: string;
}

export const MIGRATIONS_DIR = path.resolve(__dirname, '..', '..', 'migrations');

/** The migrations this build knows, in order. */
export function knownMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ name: f.replace(/\.sql$/, ''), file: path.join(dir, f) }));
}

export async function appliedMigrations(client: pg.ClientBase, schema: string = APP_SCHEMA): Promise<{ name: string; applied_at: Date }[]> {
  const exists = await client.query(`SELECT to_regclass($1) AS t`, [qualified(schema, MIGRATIONS_TABLE)]);
  if (!exists.rows[0].t) return [];
  const res = await client.query<{ name: string; applied_at: Date }>(`SELECT name, applied_at FROM ${qualified(schema, MIGRATIONS_TABLE)} ORDER BY name`);
  return res.rows;
}

export interface MigrateOptions {
  /** Stop after this migration (inclusive). */
  to?: string;
  log?: Logger;
  known?: Migration[];
  /**
   * The schema to migrate (restore builds its new data in a staging schema). The migrations are
   * unqualified SQL: they run with search_path set to this schema alone, for the rest of the
   * transaction's migration work, and the caller's search_path is put back afterwards.
   * Default: the application schema, with the session's search_path untouched.
   */
  schema?: string;
}

/**
 * Applies pending migrations on a client that is already inside a transaction (restore runs its whole
 * flow in one). Takes the migration advisory lock for the rest of that transaction.
 */
export async function migrateInTransaction(client: pg.ClientBase, opts: MigrateOptions = {}): Promise<string[]> {
  const known = opts.known ?? knownMigrations();
  const schema = opts.schema ?? APP_SCHEMA;
  const bookkeeping = schema === APP_SCHEMA ? `${APP_SCHEMA}.${MIGRATIONS_TABLE}` : qualified(schema, MIGRATIONS_TABLE);
  await client.query('SELECT pg_advisory_xact_lock($1)', [lockKey('migrate')]);
  let previousPath: string | undefined;
  if (opts.schema !== undefined) {
    previousPath = (await client.query<{ p: string }>(`SELECT current_setting('search_path') AS p`)).rows[0].p;
    await client.query(`SELECT set_config('search_path', $1, true)`, [ident(schema)]);
  }
  try {
    return await applyPending(client, known, schema, bookkeeping, opts);
  } finally {
    if (previousPath !== undefined) await client.query(`SELECT set_config('search_path', $1, true)`, [previousPath]).catch(() => undefined);
  }
}

async function applyPending(client: pg.ClientBase, known: Migration[], schema: string, bookkeeping: string, opts: MigrateOptions): Promise<string[]> {
  await client.query(`CREATE TABLE IF NOT EXISTS ${bookkeeping} (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
  const applied = new Set((await appliedMigrations(client, schema)).map((r) => r.name));
  const knownNames = new Set(known.map((m) => m.name));
  const unknown = [...applied].filter((n) => !knownNames.has(n));
  if (unknown.length > 0) {
    throw new CofferError('E_CONFLICT', `the database has migrations this build does not know (${unknown.join(', ')}): it was migrated by a newer coffer`);
  }
  let targetIndex = known.length - 1;
  if (opts.to !== undefined) {
    targetIndex = known.findIndex((m) => m.name === opts.to);
    if (targetIndex < 0) throw new CofferError('E_NOT_FOUND', `unknown migration '${opts.to}'; known: ${known.map((m) => m.name).join(', ')}`);
    const later = known.slice(targetIndex + 1).filter((m) => applied.has(m.name));
    if (later.length > 0) {
      throw new CofferError('E_CONFLICT', `cannot migrate down to '${opts.to}': ${later.map((m) => m.name).join(', ')} already applied (coffer migrations only go up)`);
    }
  }
  const done: string[] = [];
  for (const m of known.slice(0, targetIndex + 1)) {
    if (applied.has(m.name)) continue;
    opts.log?.info({ migration: m.name }, 'applying migration');
    await client.query(fs.readFileSync(m.file, 'utf8'));
    await client.query(`INSERT INTO ${bookkeeping} (name) VALUES ($1)`, [m.name]);
    done.push(m.name);
  }
  return done;
}

/** Applies pending migrations in one transaction under an advisory lock. */
export async function migrate(pool: pg.Pool, opts: MigrateOptions = {}): Promise<string[]> {
  return withTransaction(pool, (client) => migrateInTransaction(client, opts));
}

export interface MigrationStatus {
  name: string;
  appliedAt: Date | null;
}

export async function migrationStatus(pool: pg.Pool): Promise<{ migrations: MigrationStatus[]; unknownApplied: string[] }> {
  const client = await pool.connect();
  try {
    const applied = await appliedMigrations(client);
    const byName = new Map(applied.map((r) => [r.name, r.applied_at]));
    const known = knownMigrations();
    const knownNames = new Set(known.map((m) => m.name));
    return {
      migrations: known.map((m) => ({ name: m.name, appliedAt: byName.get(m.name) ?? null })),
      unknownApplied: applied.map((r) => r.name).filter((n) => !knownNames.has(n)),
    };
  } finally {
    client.release();
  }
}
