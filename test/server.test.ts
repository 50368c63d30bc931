import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { loadConfig } from '../src/config';
import { startServer } from '../src/http/server';
import { createLogger } from '../src/log';
import { createUser } from '../src/accounts/users';
import { createToken } from '../src/accounts/sessions';
import { createTestDatabase, type TestDatabase } from './support/db';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-server-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('the service', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => db.drop());

  test('logs carry request ids and never a cookie, token, password or key', async () => {
    let logged = '';
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logged += chunk.toString();
        cb();
      },
    });
    const backupKey = 'server-test-backup-key-0123456789';
    const config = loadConfig({}, { DATABASE_URL: db.url, DATA_DIR: tmp, PORT: '0', BACKUP_KEY: backupKey, LOG_LEVEL: 'debug' });
    const server = await startServer(config, createLogger('debug', sink));
    try {
      const user = await createUser(server.db.pool, { username: 'ops', password: 'a long password here', role: 'system' });
      const token = await createToken(server.db.pool, user.id);
      const login = await fetch(`${server.url}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'ops', password: 'a long password here' }),
      });
      const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0];
      const aesKey = 'ab'.repeat(32);
      const res = await fetch(`${server.url}/api/v1/utils/backup/`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, cookie, 'content-type': 'application/json' },
        body: JSON.stringify({ key: backupKey, aes_key: aesKey, check: true }),
      });
      expect(res.status).toBe(200);
      await fetch(`${server.url}/api/v1/utils/backup/`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ key: 'wrong-key-but-long-enough', passphrase: 'my secret passphrase' }),
      });
      expect(logged).toMatch(/"reqId":"[0-9a-f-]{36}"/);
      expect(logged).toMatch(/coffer listening on/);
      for (const secret of [token, cookie.split('=')[1], 'a long password here', backupKey, aesKey, 'my secret passphrase', 'wrong-key-but-long-enough']) {
        expect(logged).not.toContain(secret);
      }
    } finally {
      await server.close();
    }
  });

  test('a port in use is named, and the start fails cleanly', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const config = loadConfig({}, { DATABASE_URL: db.url, DATA_DIR: tmp, PORT: String(port), LOG_LEVEL: 'silent' });
      await expect(startServer(config, createLogger('silent'))).rejects.toMatchObject({ code: 'E_PORT_IN_USE', message: expect.stringContaining(`port ${port}`) });
    } finally {
      blocker.close();
    }
  });

  test('coffer serve answers health and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'coffer.js'), 'serve'], {
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, DATA_DIR: tmp, PORT: '0' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr.on('data', (d) => (log += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      let url: string | undefined;
      for (let i = 0; i < 200 && !url; i++) {
        url = /"url":"(http:\/\/[^"]+)"/.exec(log)?.[1];
        if (!url) await new Promise((r) => setTimeout(r, 50));
      }
      expect(url).toBeDefined();
      const health = (await (await fetch(`${url}/api/v1/health`)).json()) as any;
      expect(health).toMatchObject({ status: 'ok', database: { status: 'up' }, backups: 'disabled' });
      expect(log).toMatch(/backups are disabled: BACKUP_KEY is not set/);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(log).toMatch(/"msg":"stopped"/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('at start, temporary files of uploads a crash interrupted are removed; recent ones and finished uploads stay', async () => {
    const dataDir = fs.mkdtempSync(path.join(tmp, 'abandoned-'));
    const folder = path.join(dataDir, 'uploadedfiles', 'ab');
    fs.mkdirSync(folder, { recursive: true });
    const old = Date.now() / 1000 - 3600;
    const write = (name: string, stale: boolean) => {
      fs.writeFileSync(path.join(folder, name), 'partial');
      if (stale) fs.utimesSync(path.join(folder, name), old, old);
    };
    write('.upload-0123456789abcdef01234567', true);
    write('ab9d4c5e-0000-4000-8000-000000000001.upload-4242', true);
    write('.upload-fedcba9876543210fedcba98', false);
    write('ab9d4c5e-0000-4000-8000-000000000002', true);
    const config = loadConfig({}, { DATABASE_URL: db.url, DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'silent', UPLOAD_IDLE_TIMEOUT_MS: '60000' });
    const server = await startServer(config, createLogger('silent'));
    await server.close();
    expect(fs.readdirSync(folder).sort()).toEqual(['.upload-fedcba9876543210fedcba98', 'ab9d4c5e-0000-4000-8000-000000000002']);
  });
});
