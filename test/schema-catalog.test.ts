import fs from 'node:fs';
import { buildSchemaCatalog, loadSchemaCatalog, SCHEMA_CATALOG_FILE } from '../src/db/schema-catalog';
import { knownMigrations } from '../src/db/migrate';
import { createTestDatabase } from './support/db';

describe('schema catalog (migrations/schema.json)', () => {
  test('matches what the migrations build, level by level (regenerate with npm run schema-catalog)', async () => {
    const db = await createTestDatabase();
    try {
      const built = await buildSchemaCatalog(db.pool);
      const text = JSON.stringify(built, null, 2) + '\n';
      if (process.env.UPDATE_SCHEMA_CATALOG === '1') fs.writeFileSync(SCHEMA_CATALOG_FILE, text);
      expect(fs.readFileSync(SCHEMA_CATALOG_FILE, 'utf8')).toBe(text);
      // Building it left the database as it was.
      expect((await db.pool.query(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`)).rows[0].n).toBe(0);
    } finally {
      await db.drop();
    }
  });

  test('has a level for every known migration, with the tables each one adds', () => {
    const catalog = loadSchemaCatalog();
    expect(Object.keys(catalog.levels)).toEqual(knownMigrations().map((m) => m.name));
    const first = catalog.levels['001_init'];
    expect(first.tables.map((t) => t.name)).toEqual(['api_tokens', 'backup_log', 'users']);
    expect(first.sequences.find((s) => s.name === 'backup_log_id_seq')?.max).toBe('9223372036854775807');
    expect(catalog.levels['002_domain'].tables.map((t) => t.name)).toContain('findings');
  });
});
