import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { makeUser, startTestApp, TEST_BACKUP_KEY, type TestApp, type TestUser } from '../support/app';
import { readZip } from '../support/zip';
import { createApp } from '../../src/http/app';
import { silentLogger } from '../../src/log';

const TIMEOUT_MS = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RawExchange {
  /** Everything the server sent before it closed the connection. */
  response: string;
  /** From the first byte written to the close; undefined when the server kept the connection open. */
  closedAfterMs?: number;
}

/**
 * Writes `head` and then each part of `body` after its delay, over a plain socket, and reports what
 * came back and when the server closed the connection (waiting at most `waitMs` after the last part).
 */
function rawRequest(app: TestApp, head: string, body: { delayMs: number; data: string | Buffer }[], waitMs: number): Promise<RawExchange> {
  const { port } = new URL(app.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    const started = Date.now();
    let response = '';
    let closed = false;
    let guard: NodeJS.Timeout | undefined;
    socket.on('data', (d) => (response += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      clearTimeout(guard);
      resolve({ response, closedAfterMs: Date.now() - started });
    });
    socket.on('connect', async () => {
      try {
        socket.write(head);
        for (const part of body) {
          await sleep(part.delayMs);
          if (closed) return;
          socket.write(part.data);
        }
        guard = setTimeout(() => {
          socket.destroy();
          resolve({ response });
        }, waitMs);
      } catch (err) {
        reject(err);
      }
    });
  });
}

function multipartParts(boundary: string): { start: string; end: string } {
  return {
    start: `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    end: `\r\n--${boundary}--\r\n`,
  };
}

describe('request body timeouts', () => {
  let app: TestApp;
  let user: TestUser;
  let system: TestUser;
  let projectId: string;

  beforeAll(async () => {
    app = await startTestApp({ REQUEST_BODY_TIMEOUT_MS: String(TIMEOUT_MS), UPLOAD_IDLE_TIMEOUT_MS: String(TIMEOUT_MS) });
    user = await makeUser(app, 'alice', 'regular');
    system = await makeUser(app, 'backup', 'system');
    const res = await fetch(`${app.url}/api/v1/projects`, {
      method: 'POST',
      headers: { authorization: `Bearer ${user.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Uploads' }),
    });
    projectId = ((await res.json()) as any).id;
  });
  afterAll(async () => app.close());

  test('an anonymous login whose JSON body never completes gets 408 and is closed within about the timeout', async () => {
    const body = '{"username":"alice","password":"';
    const head = `POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length + 40}\r\n\r\n`;
    const r = await rawRequest(app, head, [{ delayMs: 0, data: body }], 3000);
    expect(r.closedAfterMs).toBeDefined();
    expect(r.closedAfterMs!).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(r.closedAfterMs!).toBeLessThan(TIMEOUT_MS + 1500);
    expect(r.response).toMatch(/^HTTP\/1\.1 408 /);
    expect(r.response).toContain('"code":"E_REQUEST_TIMEOUT"');
  });

  test('many requests on one keep-alive connection leave no listeners behind on its socket', async () => {
    // The same app as the harness's, on a server whose sockets the test can see.
    const server = http.createServer(createApp({ config: app.config, pool: app.db.pool, log: silentLogger(), serverVersion: 'test' }));
    const sockets: net.Socket[] = [];
    server.on('connection', (s) => sockets.push(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const listeners: number[] = [];
    try {
      for (let i = 0; i < 15; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port, path: '/api/v1/projects', method: 'POST', agent, headers: { authorization: `Bearer ${user.token}`, 'content-type': 'application/json' } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          });
          req.on('error', reject);
          req.end(JSON.stringify({ name: `p${i}` }));
        });
        expect(status).toBe(201);
        listeners.push(sockets[0].listenerCount('close') + sockets[0].listenerCount('timeout'));
      }
    } finally {
      agent.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
    expect(sockets).toHaveLength(1);
    expect(listeners[14]).toBe(listeners[0]);
  });

  test('a slow but steady upload, longer than the body timeout, is accepted', async () => {
    const boundary = 'coffer-slow-upload';
    const content = randomBytes(8 * 1024);
    const { start, end } = multipartParts(boundary);
    const slices = 10;
    const parts = [{ delayMs: 0, data: start }];
    for (let i = 0; i < slices; i++) parts.push({ delayMs: TIMEOUT_MS / 3, data: content.subarray((i * content.length) / slices, ((i + 1) * content.length) / slices).toString('latin1') });
    parts.push({ delayMs: TIMEOUT_MS / 3, data: end });
    const length = Buffer.byteLength(start) + content.length + Buffer.byteLength(end);
    const head =
      `POST /api/v1/projects/${projectId}/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${user.token}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`;
    const binary = parts.map((p) => ({ delayMs: p.delayMs, data: Buffer.from(p.data, 'latin1') }));
    const r = await rawRequest(app, head, binary, 3000);
    // About (slices + 1) × timeout/3: well past the body timeout, never idle for a whole timeout.
    expect(r.closedAfterMs!).toBeGreaterThan(TIMEOUT_MS * 2);
    expect(r.response).toMatch(/^HTTP\/1\.1 201 /);
    const row = JSON.parse(r.response.slice(r.response.indexOf('\r\n\r\n') + 4));
    expect(Number(row.size)).toBe(content.length);
  });

  test('an upload that stalls longer than the idle timeout is cut', async () => {
    const boundary = 'coffer-stalled-upload';
    const { start } = multipartParts(boundary);
    const head =
      `POST /api/v1/projects/${projectId}/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${user.token}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: 100000\r\n\r\n`;
    const r = await rawRequest(app, head, [{ delayMs: 0, data: start + 'some bytes, then nothing' }], 3000);
    expect(r.closedAfterMs).toBeDefined();
    expect(r.closedAfterMs!).toBeLessThan(TIMEOUT_MS + 1500);
    expect(r.response).toMatch(/^HTTP\/1\.1 408 /);
    const uploads = await app.db.pool.query(`SELECT count(*)::int AS n FROM uploaded_files`);
    expect(uploads.rows[0].n).toBe(1); // only the slow upload above
  });

  test('a backup response that streams longer than the body timeout is not cut', async () => {
    // Incompressible uploads well beyond the socket buffers, read slowly: the response takes a while.
    const dir = path.join(app.dataDir, 'uploadedfiles', 'ab');
    fs.mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(dir, `big-${i}`), randomBytes(4 * 1024 * 1024));
    const { port } = new URL(app.url);
    const started = Date.now();
    const body = await new Promise<Buffer>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port, method: 'POST', path: '/api/v1/utils/backup/', headers: { authorization: `Bearer ${system.token}`, 'content-type': 'application/json' } },
        (res) => {
          if (res.statusCode !== 200) return reject(new Error(`backup answered ${res.statusCode}`));
          const chunks: Buffer[] = [];
          res.pause();
          // Read nothing for a while, then slowly: the server waits on a full socket meanwhile.
          setTimeout(async () => {
            try {
              for await (const chunk of res) {
                chunks.push(chunk as Buffer);
                if (chunks.length % 32 === 0) await sleep(20);
              }
              resolve(Buffer.concat(chunks));
            } catch (err) {
              reject(err);
            }
          }, TIMEOUT_MS * 2);
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ key: TEST_BACKUP_KEY }));
    });
    expect(Date.now() - started).toBeGreaterThan(TIMEOUT_MS * 2);
    const file = path.join(app.dataDir, 'received.zip');
    fs.writeFileSync(file, body);
    const entries = await readZip(file);
    expect(entries[entries.length - 1].name).toBe('manifest.json');
    expect(entries.filter((e) => e.name.startsWith('uploadedfiles/ab/big-'))).toHaveLength(4);
  });
});
