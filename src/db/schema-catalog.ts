import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { z } from 'zod';
import { CofferError, errorMessage } from '../core/errors';
import { listSequences, listTables } from './introspect';
import { APP_SCHEMA, knownMigrations, migrateInTransaction, MIGRATIONS_DIR, type Migration } from './migrate';

/**
 * What the application schema holds after each migration: its tables (as introspection sees them)
 * and its sequences with their ranges. It lets checks that need "the schema at the archive's level"
 * run without a database (`coffer verify`) and lets restore refuse a bad archive before it touches
 * one. The file is generated from the migrations themselves (`npm run schema-catalog`), and a test
 * rebuilds it on a real PostgreSQL and fails when it differs, so it cannot drift from them.
 */

export const SCHEMA_CATALOG_FILE = path.join(MIGRATIONS_DIR, 'schema.json');

const tableSchema = z.object({
  schema: z.string(),
  name: z.string(),
  columns: z.array(z.object({ name: z.string(), type: z.string(), notNull: z.boolean(), kind: z.enum(['scalar', 'json', 'array']).nullable() })),
  primaryKey: z.array(z.string()),
  hasAlwaysIdentity: z.boolean(),
});

const sequenceSchema = z.object({ schema: z.string(), name: z.string(), min: z.string(), max: z.string() });

const levelSchema = z.object({ tables: z.array(tableSchema), sequences: z.array(sequenceSchema) });

export const schemaCatalogSchema = z.object({
  schema: z.literal(APP_SCHEMA),
  /** Keyed by migration name, in migration order. */
  levels: z.record(z.string(), levelSchema),
});

export type SchemaCatalog = z.infer<typeof schemaCatalogSchema>;
export type SchemaLevel = z.infer<typeof levelSchema>;

let cached: SchemaCatalog | undefined;

export function loadSchemaCatalog(): SchemaCatalog {
  if (cached) return cached;
  try {
    cached = schemaCatalogSchema.parse(JSON.parse(fs.readFileSync(SCHEMA_CATALOG_FILE, 'utf8')));
  } catch (err) {
    throw new CofferError('E_INTERNAL', `the schema catalog ${SCHEMA_CATALOG_FILE} is missing or malformed (a broken installation): ${errorMessage(err)}`);
  }
  return cached;
}

/** The schema after `migration`, or undefined for a migration this build does not know. */
export function schemaAtLevel(migration: string): SchemaLevel | undefined {
  const { levels } = loadSchemaCatalog();
  return Object.hasOwn(levels, migration) ? levels[migration] : undefined;
}

/**
 * Builds the catalog by applying the migrations one at a time on an empty database, inside one
 * transaction that is rolled back: the database is left as it was.
 */
export async function buildSchemaCatalog(pool: pg.Pool, known: Migration[] = knownMigrations()): Promise<SchemaCatalog> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const existing = await listTables(client, APP_SCHEMA);
    if (existing.length > 0) throw new CofferError('E_USAGE', 'the schema catalog must be built on an empty database');
    const levels: SchemaCatalog['levels'] = {};
    for (const m of known) {
      await migrateInTransaction(client, { to: m.name, known });
      levels[m.name] = { tables: await listTables(client, APP_SCHEMA), sequences: await listSequences(client, APP_SCHEMA) };
    }
    return { schema: APP_SCHEMA, levels };
  } finally {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release();
  }
}
