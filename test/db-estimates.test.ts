import pg from 'pg';
import { tableEstimates } from '../src/db/introspect';
import { createTestDatabase, type TestDatabase } from './support/db';
import { seedDomain } from './support/seed';

describe('table estimates for progress', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
    await seedDomain(db.pool, { events: 3000 });
  });
  afterAll(async () => {
    await db.drop();
  });

  test('sizes and row counts of every application table, after ANALYZE exact enough to weigh work', async () => {
    await db.pool.query('ANALYZE');
    const c = await db.pool.connect();
    try {
      const est = await tableEstimates(c);
      expect(est.get('events')).toMatchObject({ rows: 3000 });
      expect(est.get('events')!.bytes).toBeGreaterThan(100_000);
      expect(est.get('notes')).toMatchObject({ rows: 20 });
      expect(est.has('sessions')).toBe(true);
    } finally {
      c.release();
    }
  });

  test('a partitioned table counts the rows and bytes of its leaf partitions', async () => {
    await db.pool.query(`CREATE TABLE parted (id int, pad text) PARTITION BY RANGE (id)`);
    await db.pool.query(`CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (1000)`);
    await db.pool.query(`CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (1000) TO (2000)`);
    await db.pool.query(`INSERT INTO parted SELECT g, repeat('x', 200) FROM generate_series(0, 1999) g`);
    await db.pool.query('ANALYZE parted');
    const c = await db.pool.connect();
    try {
      const est = await tableEstimates(c);
      expect(est.get('parted')).toMatchObject({ rows: 2000 });
      expect(est.get('parted')!.bytes).toBeGreaterThan(2000 * 200);
      expect(est.has('parted_a')).toBe(false);
    } finally {
      c.release();
      await db.pool.query('DROP TABLE parted');
    }
  });

  test('never waits behind an exclusive lock: falls back to the pages VACUUM counted', async () => {
    await db.pool.query('VACUUM events');
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE');
    const c = await db.pool.connect();
    try {
      const started = Date.now();
      const est = await tableEstimates(c);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(est.get('events')!.bytes).toBeGreaterThan(100_000);
      expect(est.get('events')!.rows).toBe(3000);
    } finally {
      c.release();
      await locker.query('ROLLBACK');
      await locker.end();
    }
  });
});
