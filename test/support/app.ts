import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { loadConfig, type Config } from '../../src/config';
import { createApp } from '../../src/http/app';
import { silentLogger, type Logger } from '../../src/log';
import { createUser, type Role } from '../../src/accounts/users';
import { createToken } from '../../src/accounts/sessions';
import { createTestDatabase, type TestDatabase } from './db';
import { Jobs } from '../../src/jobs';

export const TEST_BACKUP_KEY = 'test-backup-key-0123456789abcdef';
export const TEST_PASSWORD = 'correct horse battery staple';

export interface TestApp {
  url: string;
  db: TestDatabase;
  config: Config;
  dataDir: string;
  /** With `jobs: true`: the stored-backup jobs, run by this process. */
  jobs?: Jobs;
  close(): Promise<void>;
}

export async function startTestApp(env: Record<string, string> = {}, opts: { log?: Logger; jobs?: boolean } = {}): Promise<TestApp> {
  const db = await createTestDatabase({ migrated: true });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-test-data-'));
  const config = loadConfig({}, { DATA_DIR: dataDir, DATABASE_URL: db.url, BACKUP_KEY: TEST_BACKUP_KEY, LOG_LEVEL: 'silent', ...env });
  const log = opts.log ?? silentLogger();
  let jobs: Jobs | undefined;
  if (opts.jobs) {
    jobs = await Jobs.open({ pool: db.pool, url: db.url, config, log });
    await jobs.startWorker();
  }
  const app = createApp({ config, pool: db.pool, log, serverVersion: 'test', jobs });
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    db,
    config,
    dataDir,
    jobs,
    async close() {
      await jobs?.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TestUser {
  id: string;
  username: string;
  token: string;
  cookie: string;
}

/** Creates a user, logs in over HTTP (for the cookie) and makes an API token. */
export async function makeUser(app: TestApp, username: string, role: Role, opts: { inactive?: boolean } = {}): Promise<TestUser> {
  const user = await createUser(app.db.pool, { username, password: TEST_PASSWORD, role });
  const token = await createToken(app.db.pool, user.id);
  const res = await fetch(`${app.url}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: TEST_PASSWORD }),
  });
  if (res.status !== 200) throw new Error(`login of ${username} failed: ${res.status}`);
  const setCookie = res.headers.get('set-cookie') ?? '';
  const cookie = setCookie.split(';')[0];
  if (opts.inactive) await app.db.pool.query(`UPDATE users SET is_active = false WHERE id = $1`, [user.id]);
  return { id: user.id, username, token, cookie };
}

export interface ApiAnswer {
  status: number;
  /** Parsed JSON, or the raw bytes of anything else. */
  body: any;
  headers: Headers;
}

/** A JSON API caller as one user (Bearer token); `token` per call overrides it. */
export function apiAs(app: () => TestApp, user: () => TestUser) {
  return async (method: string, p: string, opts: { body?: unknown; token?: string; headers?: Record<string, string> } = {}): Promise<ApiAnswer> => {
    const res = await fetch(`${app().url}${p}`, {
      method,
      headers: {
        authorization: `Bearer ${opts.token ?? user().token}`,
        ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...opts.headers,
      },
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      // A test waits for a bounded time, never forever.
      signal: AbortSignal.timeout(20_000),
    });
    const type = res.headers.get('content-type') ?? '';
    const body: unknown = type.includes('json') ? await res.json() : Buffer.from(await res.arrayBuffer());
    return { status: res.status, body, headers: res.headers };
  };
}

/** Polls a stored backup or restore job until its status is final (at most 60 s). */
export async function waitFinal(api: ReturnType<typeof apiAs>, kind: 'backups' | 'restores', id: string): Promise<any> {
  for (let i = 0; i < 600; i++) {
    const r = await api('GET', `/api/v1/${kind}/${id}`);
    if (['finished', 'failed', 'canceled', 'missing'].includes(r.body.status)) return r.body;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${kind} ${id} did not end`);
}

/** Polls `fn` every 50 ms until it gives a value; fails naming `what` after `ms`. */
export async function waitFor<T>(fn: () => Promise<T | undefined>, what: string, ms = 15000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
