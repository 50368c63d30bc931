import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { lockKey } from '../../src/db/locks';
import { Jobs } from '../../src/jobs';
import { silentLogger } from '../../src/log';
import { apiAs, makeUser, startTestApp, TEST_BACKUP_KEY, type TestApp, type TestUser } from '../support/app';
import { COFFER_BIN } from '../support/cli';
import { seedDomain, writeUploadFiles } from '../support/seed';

jest.setTimeout(90_000);

let app: TestApp;
let sys: TestUser;
const KEY = { 'x-backup-key': TEST_BACKUP_KEY };

const api = apiAs(() => app, () => sys);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function finished(id: string): Promise<any> {
  return app.jobs!.waitFor('backup', id, { timeoutMs: 30_000 });
}

/** Holds ACCESS EXCLUSIVE on a table: a backup reaching it waits there (running, with a .partial). */
async function lockTable(table: string): Promise<() => Promise<void>> {
  const c = new pg.Client({ connectionString: app.db.url });
  await c.connect();
  // A lock some earlier test failed to let go of makes this one fail, not hang.
  await c.query(`SET lock_timeout = '20s'`);
  await c.query('BEGIN');
  await c.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
  return async () => {
    await c.query('ROLLBACK').catch(() => undefined);
    await c.end();
  };
}

function partials(): string[] {
  return fs.existsSync(app.config.backupDir) ? fs.readdirSync(app.config.backupDir).filter((n) => n.endsWith('.partial')) : [];
}

beforeAll(async () => {
  app = await startTestApp({}, { jobs: true });
  sys = await makeUser(app, 'sys', 'system');
  await seedDomain(app.db.pool, { events: 2000 });
  writeUploadFiles(app.dataDir, 5);
});

afterAll(async () => {
  await app.close();
});

describe('stored backup jobs', () => {
  test('SSE shows the percent rising from queued to finished; a second job waits queued meanwhile', async () => {
    const unlock = await lockTable('projects');
    let released = false;
    try {
      const first = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      const second = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, name: 'second' } })).body;
      const res = await fetch(`${app.url}/api/v1/backups/${first.id}/events`, { headers: { authorization: `Bearer ${sys.token}` }, signal: AbortSignal.timeout(60_000) });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events: { event: string; data: any }[] = [];
      const reader = res.body!.getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += Buffer.from(value).toString('utf8');
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) });
        }
        const last = events.at(-1)?.data;
        if (!released && last?.status === 'running' && last.progress.percent > 0) {
          // Blocked at `projects`, with the tables before it done: the other job must still wait.
          expect((await api('GET', `/api/v1/backups/${second.id}`)).body.status).toBe('queued');
          expect(partials()).toEqual([`${first.id}.zip.partial`]);
          released = true;
          await unlock();
        }
      }
      expect(released).toBe(true);
      expect(events.at(-1)!.event).toBe('finished');
      const percents = events.map((e) => e.data.progress.percent);
      for (let i = 1; i < percents.length; i++) expect(percents[i]).toBeGreaterThanOrEqual(percents[i - 1]);
      expect(percents[0]).toBeLessThan(100);
      expect(percents.some((p) => p > 0 && p < 100)).toBe(true);
      expect(percents.at(-1)).toBe(100);
      expect((await finished(second.id)).status).toBe('finished');
    } finally {
      if (!released) await unlock();
    }
  });

  test('Range downloads reassemble to the same sha256; 416 outside; If-None-Match gives 304', async () => {
    const b = await finished((await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body.id);
    const size: number = b.size;
    const cuts = [0, 1, 777, Math.floor(size / 3), size - 10, size];
    const parts: Buffer[] = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const r = await api('GET', `/api/v1/backups/${b.id}/download`, { headers: { ...KEY, range: `bytes=${cuts[i]}-${cuts[i + 1] - 1}` } });
      expect(r.status).toBe(206);
      expect(r.headers.get('content-range')).toBe(`bytes ${cuts[i]}-${cuts[i + 1] - 1}/${size}`);
      expect(Number(r.headers.get('content-length'))).toBe(cuts[i + 1] - cuts[i]);
      parts.push(r.body);
    }
    expect(createHash('sha256').update(Buffer.concat(parts)).digest('hex')).toBe(b.sha256);
    const suffix = await api('GET', `/api/v1/backups/${b.id}/download`, { headers: { ...KEY, range: 'bytes=-100' } });
    expect(suffix.status).toBe(206);
    expect(suffix.body.length).toBe(100);
    const outside = await api('GET', `/api/v1/backups/${b.id}/download`, { headers: { ...KEY, range: `bytes=${size + 5}-` } });
    expect(outside.status).toBe(416);
    expect(outside.headers.get('content-range')).toBe(`bytes */${size}`);
    const stale = await api('GET', `/api/v1/backups/${b.id}/download`, { headers: { ...KEY, range: 'bytes=0-9', 'if-range': '"other"' } });
    expect(stale.status).toBe(200);
    expect(stale.body.length).toBe(size);
    const cached = await api('GET', `/api/v1/backups/${b.id}/download`, { headers: { ...KEY, 'if-none-match': `"${b.sha256}"` } });
    expect(cached.status).toBe(304);
  });

  test('download of an unfinished backup is 409; delete while running cancels it and removes its partial file', async () => {
    const unlock = await lockTable('projects');
    try {
      const b = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      await until('the backup to run', async () => partials().length === 1 && (await api('GET', `/api/v1/backups/${b.id}`)).body.status === 'running');
      const early = await api('GET', `/api/v1/backups/${b.id}/download`, { headers: KEY });
      expect(early.status).toBe(409);
      expect(early.body.code).toBe('E_NOT_FINISHED');
      const del = await api('DELETE', `/api/v1/backups/${b.id}`, { headers: KEY });
      expect(del.status).toBe(204);
      const after = (await api('GET', `/api/v1/backups/${b.id}`)).body;
      expect(after).toMatchObject({ status: 'canceled', error: { code: 'E_CANCELED' } });
      expect(partials()).toEqual([]);
      expect(fs.readdirSync(app.config.backupDir).filter((n) => n.startsWith(b.id))).toEqual([]);
    } finally {
      await unlock();
    }
    // A queued one is canceled before it starts.
    const unlock2 = await lockTable('projects');
    try {
      const running = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      const queued = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      await until('the first to run', async () => (await api('GET', `/api/v1/backups/${running.id}`)).body.status === 'running');
      expect((await api('DELETE', `/api/v1/backups/${queued.id}`, { headers: KEY })).status).toBe(204);
      expect((await api('GET', `/api/v1/backups/${queued.id}`)).body).toMatchObject({ status: 'canceled', started_at: null });
      await unlock2();
      expect((await finished(running.id)).status).toBe('finished');
    } finally {
      await unlock2();
    }
  });

  test('a file deleted behind coffer shows missing and answers 410 until rescan; rescan rebuilds a truncated catalog', async () => {
    const a = await finished((await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, name: 'a' } })).body.id);
    const b = await finished((await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, name: 'b' } })).body.id);
    fs.rmSync(path.join(app.config.backupDir, `${a.id}.zip`));
    expect((await api('GET', `/api/v1/backups/${a.id}`)).body.status).toBe('missing');
    const gone = await api('GET', `/api/v1/backups/${a.id}/download`, { headers: KEY });
    expect(gone.status).toBe(410);
    expect(gone.body.code).toBe('E_BACKUP_MISSING');
    expect((await api('GET', '/api/v1/backups?status=missing')).body.backups.map((x: any) => x.id)).toEqual([a.id]);

    const listed = (await api('GET', '/api/v1/backups?status=finished')).body.backups.map((x: any) => x.id);
    await app.db.pool.query('TRUNCATE coffer_ops.stored_backups');
    expect((await api('GET', '/api/v1/backups')).body.backups).toEqual([]);
    const result = await app.jobs!.rescan();
    expect(result.problems.join('\n')).toContain(`${a.id}.json`);
    const back = (await api('GET', '/api/v1/backups')).body.backups;
    expect(back.map((x: any) => x.id).sort()).toEqual(listed.sort());
    expect(back.find((x: any) => x.id === b.id)).toMatchObject({ name: 'b', size: b.size, sha256: b.sha256, status: 'finished' });
    expect((await api('GET', `/api/v1/backups/${a.id}`)).status).toBe(404);
  });

  test('an unusable BACKUP_DIR fails the job with a message naming the folder, leaving nothing', async () => {
    const dir = app.config.backupDir;
    const aside = `${dir}.aside`;
    fs.renameSync(dir, aside);
    fs.writeFileSync(dir, 'not a folder');
    try {
      const b = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      const done = await finished(b.id);
      expect(done.status).toBe('failed');
      expect(done.error).toMatchObject({ code: 'E_STORE' });
      expect(done.error.message).toContain(dir);
    } finally {
      fs.rmSync(dir);
      fs.renameSync(aside, dir);
    }
    expect(partials()).toEqual([]);
  });

  test('an encrypted stored backup restores only with its key', async () => {
    const passphrase = 'a passphrase long enough';
    const b = await finished((await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, passphrase } })).body.id);
    expect(b).toMatchObject({ status: 'finished', encrypted: true, key_id: expect.stringMatching(/^[0-9a-f]{16}$/) });
    expect(fs.existsSync(path.join(app.config.backupDir, `${b.id}.zip.crypt`))).toBe(true);
    const noKey = await api('POST', `/api/v1/backups/${b.id}/restore`, { body: { key: TEST_BACKUP_KEY } });
    expect(noKey.status).toBe(400);
    expect(noKey.body.code).toBe('E_CRYPT_KEY_REQUIRED');
    const backupsBefore = (await api('GET', '/api/v1/backups')).body.backups.length;
    const wrong = await api('POST', `/api/v1/backups/${b.id}/restore`, { body: { key: TEST_BACKUP_KEY, passphrase: 'the wrong passphrase!' } });
    expect(wrong.status).toBe(202);
    const failed = await app.jobs!.waitFor('restore', wrong.body.id, { timeoutMs: 30_000 });
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'E_CRYPT_WRONG_PASSPHRASE' }, safety_backup_id: null });
    // The key is checked before the safety backup: a wrong one takes none.
    expect((await api('GET', '/api/v1/backups')).body.backups.length).toBe(backupsBefore);

    const rawKey = '11'.repeat(32);
    const raw = await finished((await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, aes_key: rawKey } })).body.id);
    const mismatch = await api('POST', `/api/v1/backups/${raw.id}/restore`, { body: { key: TEST_BACKUP_KEY, aes_key: '22'.repeat(32) } });
    expect(mismatch.status).toBe(400);
    expect(mismatch.body.code).toBe('E_CRYPT_KEY_MISMATCH');
    expect(mismatch.body.message).toContain(raw.key_id);
    // The archive the job held in the queue is gone with the job: no key material stays in the database.
    const left = await app.db.pool.query(
      `SELECT (SELECT count(*) FROM coffer_jobs.job WHERE data ? 'sealed') + (SELECT count(*) FROM coffer_jobs.archive WHERE data ? 'sealed') AS n`,
    );
    expect(Number(left.rows[0].n)).toBe(0);
    const dump = JSON.stringify((await app.db.pool.query(`SELECT * FROM coffer_ops.restores`)).rows) + JSON.stringify((await app.db.pool.query(`SELECT * FROM backup_log`)).rows);
    expect(dump).not.toContain(passphrase);
  });
});

describe('jobs and the other backups', () => {
  test('a stored backup waits (phase "waiting") while a streaming backup holds the backup lock, then runs', async () => {
    const unlock = await lockTable('projects');
    const ctl = new AbortController();
    try {
      const stream = fetch(`${app.url}/api/v1/utils/backup/`, {
        method: 'POST',
        headers: { authorization: `Bearer ${sys.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ key: TEST_BACKUP_KEY }),
        signal: ctl.signal,
      });
      const streamed = stream.then((r) => r.arrayBuffer());
      streamed.catch(() => undefined);
      // The backup lock (src/db/locks.ts) as pg_locks shows a bigint advisory key: high and low halves.
      const key = BigInt(lockKey('backup'));
      await until('the streaming backup to take the backup lock', async () => {
        const r = await app.db.pool.query(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 1
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
          [Number(key >> 32n), Number(key & 0xffffffffn)],
        );
        return r.rows[0].n > 0;
      });
      const b = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      const waiting = await until('the job to wait', async () => {
        const o = (await api('GET', `/api/v1/backups/${b.id}`)).body;
        return o.status === 'running' && o.progress.phase === 'waiting' && o;
      });
      expect(waiting.error).toBeNull();
      await unlock();
      expect((await streamed).byteLength).toBeGreaterThan(0);
      expect((await finished(b.id)).status).toBe('finished');
    } finally {
      ctl.abort();
      await unlock();
    }
  });

  test('stopping the worker during a job ends it as interrupted, with no partial file', async () => {
    const unlock = await lockTable('projects');
    const jobs = await Jobs.open({ pool: app.db.pool, url: app.db.url, config: app.config, log: silentLogger() });
    try {
      const b = (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body;
      await until('the backup to run', async () => (await api('GET', `/api/v1/backups/${b.id}`)).body.status === 'running');
      await app.jobs!.close();
      await unlock();
      const o = await jobs.getBackup(b.id);
      expect(o).toMatchObject({ status: 'failed', error: { code: 'E_INTERRUPTED' } });
      expect(partials()).toEqual([]);
    } finally {
      await unlock();
      await jobs.close();
    }
  });
});

describe('a crash during a job', () => {
  /** What the spawned services wrote (warnings and errors), shown when a wait times out. */
  let output = '';
  function serve(): ChildProcess {
    const child = spawn(process.execPath, [COFFER_BIN, 'serve'], {
      env: { PATH: process.env.PATH, DATABASE_URL: app.db.url, DATA_DIR: app.dataDir, PORT: '0', BACKUP_KEY: TEST_BACKUP_KEY, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer) => (output = (output + d.toString()).slice(-4000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    return child;
  }
  const waitFor = <T>(what: string, fn: () => Promise<T | undefined | false>) =>
    until(what, fn).catch((err: Error) => {
      throw new Error(`${err.message}; the service said: ${output || '(nothing)'}`);
    });

  test('queue entries a dead process left active (before its job started, or after it ended) do not block the queue', async () => {
    await app.jobs!.close(); // this test starts its own workers
    const jobs = await Jobs.open({ pool: app.db.pool, url: app.db.url, config: app.config, log: silentLogger() });
    // As a process killed right after taking an entry (row still queued), or right after its job ended
    // (row finished, entry not yet deleted), leaves them; the singleton queue allows one active entry.
    const strand = async (finished: boolean) => {
      const b = await jobs.createBackup({ username: 'sys', userId: sys.id, via: 'http' });
      await app.db.pool.query(`UPDATE coffer_jobs.job SET state = 'active', started_on = now() - interval '1 minute' WHERE id = $1`, [b.id]);
      if (finished) await app.db.pool.query(`UPDATE coffer_ops.stored_backups SET status = 'finished', finished_at = now() WHERE id = $1`, [b.id]);
      return b.id;
    };
    try {
      for (const finished of [false, true]) {
        const stranded = await strand(finished);
        const next = await jobs.createBackup({ username: 'sys', userId: sys.id, via: 'http' });
        const worker = await Jobs.open({ pool: app.db.pool, url: app.db.url, config: app.config, log: silentLogger() });
        try {
          await worker.startWorker();
          expect((await worker.waitFor('backup', next.id, { timeoutMs: 30_000 })).status).toBe('finished');
        } finally {
          await worker.close();
        }
        expect((await jobs.getBackup(stranded)).status).toBe(finished ? 'finished' : 'failed');
        if (!finished) expect((await jobs.getBackup(stranded)).error).toMatchObject({ code: 'E_INTERRUPTED' });
        const left = await app.db.pool.query(`SELECT count(*)::int AS n FROM coffer_jobs.job WHERE id = $1`, [stranded]);
        expect(left.rows[0].n).toBe(0);
      }
    } finally {
      await jobs.close();
    }
  });

  test('kill -9 of the service during a backup job: after restart no job is running and no .partial is left', async () => {
    await app.jobs!.close(); // only the spawned service runs jobs now
    const jobs = await Jobs.open({ pool: app.db.pool, url: app.db.url, config: app.config, log: silentLogger() });
    const unlock = await lockTable('projects');
    let child = serve();
    try {
      const b = await jobs.createBackup({ username: 'sys', userId: sys.id, via: 'http' });
      await waitFor('the service to run the backup', async () => (await jobs.getBackup(b.id)).status === 'running' && partials().length === 1);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      await unlock();
      expect((await jobs.getBackup(b.id)).status).toBe('running');
      child = serve();
      const after = await waitFor('the restarted service to sweep', async () => {
        const o = await jobs.getBackup(b.id);
        return o.status !== 'running' && o;
      });
      expect(after).toMatchObject({ status: 'failed', error: { code: 'E_INTERRUPTED' } });
      expect(partials()).toEqual([]);
      // The queue is free again: the next backup runs to the end.
      const next = await jobs.createBackup({ username: 'sys', userId: sys.id, via: 'http' });
      expect((await jobs.waitFor('backup', next.id, { timeoutMs: 30_000 })).status).toBe('finished');
    } finally {
      await unlock();
      child.kill('SIGKILL');
      await jobs.close();
    }
  });

  test('kill -9 of the service during a restore job: the job ends interrupted and the database is unchanged', async () => {
    const jobs = await Jobs.open({ pool: app.db.pool, url: app.db.url, config: app.config, log: silentLogger() });
    let child = serve();
    // A reader holding a table: the restore's flush waits for it, mid-transaction.
    const reader = new pg.Client({ connectionString: app.db.url });
    await reader.connect();
    try {
      const b = await jobs.createBackup({ username: 'sys', userId: sys.id, via: 'http' });
      const done = await waitFor('the service to take a backup', async () => {
        const o = await jobs.getBackup(b.id);
        return o.status !== 'queued' && o.status !== 'running' && o;
      });
      expect(done.status).toBe('finished');
      await app.db.pool.query(`INSERT INTO notes (project_id, title) SELECT project_id, 'after the backup' FROM notes LIMIT 1`);
      const before = (await app.db.pool.query(`SELECT count(*)::int AS n FROM notes`)).rows[0].n;
      await reader.query('BEGIN');
      await reader.query('SELECT count(*) FROM notes');
      const r = await jobs.createRestore({ username: 'sys', userId: sys.id, via: 'http', backupId: b.id, safetyBackup: false });
      await waitFor('the restore to wait on the reader', async () => {
        const locks = await app.db.pool.query(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`);
        return (await jobs.getRestore(r.id)).status === 'running' && locks.rows[0].n > 0;
      });
      child.kill('SIGKILL');
      await new Promise((res) => child.once('exit', res));
      await reader.query('ROLLBACK');
      child = serve();
      const after = await waitFor('the restarted service to sweep', async () => {
        const o = await jobs.getRestore(r.id);
        return o.status !== 'running' && o;
      });
      expect(after).toMatchObject({ status: 'failed', error: { code: 'E_INTERRUPTED' } });
      expect((await app.db.pool.query(`SELECT count(*)::int AS n FROM notes`)).rows[0].n).toBe(before);
    } finally {
      await reader.end().catch(() => undefined);
      child.kill('SIGKILL');
      await jobs.close();
    }
  });
});
