import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BACKUP_KEY_FAILURES, countAttempt, LOGIN_FAILURES, sweepRateLimits } from '../src/accounts/rate-limit';
import { loadConfig } from '../src/config';
import { startServer } from '../src/http/server';
import { silentLogger } from '../src/log';
import { createTestDatabase, type TestDatabase } from './support/db';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-rate-limit-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('rate_limits rows are swept', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  afterAll(async () => db.drop());

  const subjects = async () => (await db.pool.query(`SELECT bucket || ':' || subject AS s FROM rate_limits ORDER BY 1`)).rows.map((r) => r.s);

  /** A row whose window started `minutesAgo` minutes ago. */
  const insert = (bucket: string, subject: string, minutesAgo: number) =>
    db.pool.query(`INSERT INTO rate_limits (bucket, subject, hits, window_start) VALUES ($1, $2, 3, now() - make_interval(mins => $3))`, [bucket, subject, minutesAgo]);

  beforeEach(async () => {
    await db.pool.query(`DELETE FROM rate_limits`);
  });

  test('a sweep removes rows whose window has passed and keeps the rest', async () => {
    await insert(LOGIN_FAILURES.bucket, 'old-client', 16);
    await insert(BACKUP_KEY_FAILURES.bucket, 'old-user', 60 * 24);
    await insert('retired-bucket', 'x', 16);
    await insert(LOGIN_FAILURES.bucket, 'recent-client', 5);
    await countAttempt(db.pool, LOGIN_FAILURES, 'counting-now');
    expect(await sweepRateLimits(db.pool)).toBe(3);
    expect(await subjects()).toEqual(['login:counting-now', 'login:recent-client']);
  });

  test('a rule with a shorter window has its rows removed sooner', async () => {
    await insert('short', 'a', 2);
    await insert(LOGIN_FAILURES.bucket, 'b', 2);
    expect(await sweepRateLimits(db.pool, [{ bucket: 'short', limit: 1, windowMs: 60_000 }, LOGIN_FAILURES])).toBe(1);
    expect(await subjects()).toEqual(['login:b']);
  });

  test('the running service sweeps when it starts', async () => {
    await insert(LOGIN_FAILURES.bucket, 'left-while-down', 30);
    await insert(LOGIN_FAILURES.bucket, 'recent', 1);
    const config = loadConfig({}, { DATABASE_URL: db.url, DATA_DIR: tmp, PORT: '0', LOG_LEVEL: 'silent' });
    const server = await startServer(config, silentLogger());
    try {
      const until = Date.now() + 5000;
      while ((await subjects()).length > 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(await subjects()).toEqual(['login:recent']);
    } finally {
      await server.close();
    }
  });
});
