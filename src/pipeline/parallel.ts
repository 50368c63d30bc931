import type pg from 'pg';
import { CofferError } from '../core/errors';
import { cancelBackends } from '../db/staging';

/**
 * Runs work(item) for every item over up to `jobs` pooled connections (work may queue more). Each
 * connection takes the item pick() chooses (-1: none now); one that finds none waits for an item
 * that is running to end (which may queue more, or let pick() allow one), and stops once nothing is
 * running and nothing is left. The first failure stops the rest: no new item starts, and the
 * statements still running are cancelled (through the coordinator), so the caller can drop the
 * staging schema at once. Resolves when every connection is back.
 */
export async function inParallel<T>(
  pool: pg.Pool,
  coordinator: pg.PoolClient,
  jobs: number,
  items: T[],
  pick: (queue: T[]) => number,
  work: (client: pg.PoolClient, item: T, queue: T[]) => Promise<void>,
): Promise<void> {
  const queue = [...items];
  const busy = new Set<number>();
  let running = 0;
  // Resolved (and replaced) whenever an item ends or the work fails: the idle connections look again.
  let wake = () => {};
  let changed = new Promise<void>((resolve) => (wake = resolve));
  const notify = () => {
    const woken = wake;
    changed = new Promise<void>((resolve) => (wake = resolve));
    woken();
  };
  let failure: { err: unknown } | undefined;
  const fail = async (err: unknown) => {
    if (failure) return;
    failure = { err };
    notify();
    await cancelBackends(coordinator, [...busy]).catch(() => undefined);
  };
  const worker = async () => {
    let client: pg.PoolClient | undefined;
    let broken = false;
    try {
      client = await pool.connect();
      const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      while (!failure) {
        const i = queue.length ? pick(queue) : -1;
        if (i < 0) {
          if (running === 0) break;
          await changed;
          continue;
        }
        const item = queue.splice(i, 1)[0];
        running++;
        busy.add(pid);
        try {
          await work(client, item, queue);
        } catch (err) {
          broken = true;
          // Only the others' statements are cancelled; this one has already failed.
          busy.delete(pid);
          await fail(err);
        } finally {
          running--;
          busy.delete(pid);
          notify();
        }
      }
    } catch (err) {
      broken = true;
      await fail(err);
    } finally {
      client?.release(broken);
      notify();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, worker));
  if (failure) throw failure.err;
  if (queue.length) throw new CofferError('E_INTERNAL', `${queue.length} task(s) were left that could never run`);
}
