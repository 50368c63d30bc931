import { createTestDatabase, type TestDatabase } from './support/db';
import { knownMigrations, migrate, migrationStatus } from '../src/db/migrate';
import { isCofferError } from '../src/core/errors';

describe('migrations', () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => db.drop());

  test('applying migrations twice applies each once and the second run is a no-op', async () => {
    const first = await migrate(db.pool);
    expect(first).toEqual(knownMigrations().map((m) => m.name));
    const second = await migrate(db.pool);
    expect(second).toEqual([]);
    const status = await migrationStatus(db.pool);
    expect(status.migrations.every((m) => m.appliedAt instanceof Date)).toBe(true);
    const setupRows = await db.pool.query(`SELECT count(*)::int AS n FROM backup_log WHERE event = 'setup'`);
    expect(setupRows.rows[0].n).toBe(1);
  });

  test('--to stops at the named migration and later runs continue from there', async () => {
    const [firstName] = knownMigrations().map((m) => m.name);
    expect(await migrate(db.pool, { to: firstName })).toEqual([firstName]);
    const status = await migrationStatus(db.pool);
    expect(status.migrations.filter((m) => m.appliedAt).map((m) => m.name)).toEqual([firstName]);
    expect(await db.pool.query(`SELECT to_regclass('public.projects') AS t`).then((r) => r.rows[0].t)).toBeNull();
    await migrate(db.pool);
    expect(await db.pool.query(`SELECT to_regclass('public.projects') AS t`).then((r) => r.rows[0].t)).toBe('projects');
  });

  test('concurrent migrate calls serialise on the advisory lock', async () => {
    const results = await Promise.all([migrate(db.pool), migrate(db.pool), migrate(db.pool)]);
    expect(results.flat().sort()).toEqual(knownMigrations().map((m) => m.name).sort());
  });

  test('a database migrated by a newer build is refused', async () => {
    await migrate(db.pool);
    await db.pool.query(`INSERT INTO coffer_migrations (name) VALUES ('999_future')`);
    await expect(migrate(db.pool)).rejects.toThrow(/999_future.*newer coffer/);
    await migrate(db.pool).catch((err) => expect(isCofferError(err, 'E_CONFLICT')).toBe(true));
  });

  test('an unknown --to target is refused and nothing is applied', async () => {
    await expect(migrate(db.pool, { to: '123_nope' })).rejects.toThrow(/unknown migration '123_nope'/);
    expect(await db.pool.query(`SELECT to_regclass('public.users') AS t`).then((r) => r.rows[0].t)).toBeNull();
  });
});
