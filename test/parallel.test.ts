import { createTestDatabase, type TestDatabase } from './support/db';
import { inParallel } from '../src/pipeline/parallel';

/** What ran where: each item's connection (backend pid) and its start and end on the server's clock. */
interface Ran {
  item: string;
  pid: number;
  start: number;
  end: number;
}

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db.drop());

async function sleepOn(client: import('pg').PoolClient, item: string, seconds: number, ran: Ran[]): Promise<void> {
  const r = await client.query<{ pid: number; start: string; end: string }>(
    `SELECT pg_backend_pid() AS pid, extract(epoch FROM clock_timestamp()) AS start, pg_sleep($1), extract(epoch FROM clock_timestamp()) AS end`,
    [seconds],
  );
  ran.push({ item, pid: r.rows[0].pid, start: Number(r.rows[0].start), end: Number(r.rows[0].end) });
}

describe('running tasks over several connections', () => {
  test('a connection that finds nothing to do waits for the work still running, and takes what it queues', async () => {
    const coordinator = await db.pool.connect();
    const ran: Ran[] = [];
    try {
      // "big" outlasts "small"; when it ends it queues two tasks, which must run side by side, one on the
      // connection that was idle since "small" ended.
      await inParallel(db.pool, coordinator, 2, ['big', 'small'], () => 0, async (client, item, queue) => {
        await sleepOn(client, item, item === 'big' ? 0.6 : item === 'small' ? 0.05 : 0.4, ran);
        if (item === 'big') queue.unshift('after-1', 'after-2');
      });
    } finally {
      coordinator.release();
    }
    const by = Object.fromEntries(ran.map((r) => [r.item, r]));
    expect(Object.keys(by).sort()).toEqual(['after-1', 'after-2', 'big', 'small']);
    expect(by['after-1'].pid).not.toBe(by['after-2'].pid);
    // Side by side: each started before the other ended.
    expect(by['after-1'].start).toBeLessThan(by['after-2'].end);
    expect(by['after-2'].start).toBeLessThan(by['after-1'].end);
  });

  test('a task that pick() holds back runs once the task holding it has ended', async () => {
    const coordinator = await db.pool.connect();
    const ran: Ran[] = [];
    let holding = false;
    try {
      // "second" may not run while "first" does (as two foreign keys sharing a table may not).
      const pick = (queue: string[]) => queue.findIndex((t) => t !== 'second' || !holding);
      await inParallel(db.pool, coordinator, 2, ['first', 'second'], pick, async (client, item) => {
        if (item === 'first') holding = true;
        try {
          await sleepOn(client, item, 0.2, ran);
        } finally {
          if (item === 'first') holding = false;
        }
      });
    } finally {
      coordinator.release();
    }
    const by = Object.fromEntries(ran.map((r) => [r.item, r]));
    expect(by.second.start).toBeGreaterThanOrEqual(by.first.end);
  });

  test('the first failure stops the rest and is what the caller gets', async () => {
    const coordinator = await db.pool.connect();
    const ran: string[] = [];
    try {
      await expect(
        inParallel(db.pool, coordinator, 2, ['long', 'bad', 'never'], () => 0, async (client, item) => {
          ran.push(item);
          if (item === 'bad') throw new Error('bad task');
          await client.query('SELECT pg_sleep(30)');
        }),
      ).rejects.toThrow('bad task');
    } finally {
      coordinator.release();
    }
    // "long" was cancelled, not waited for; "never" never started.
    expect(ran.sort()).toEqual(['bad', 'long']);
  });
});
