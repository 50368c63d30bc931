import { randomUUID } from 'node:crypto';
import { makeUser, startTestApp, TEST_BACKUP_KEY, type TestApp, type TestUser } from '../support/app';

/**
 * Who may use the stored-backup endpoints (src/pipeline/policy.ts): every actor against every
 * endpoint. Listing and status need an active system user; create, download, restore and delete also
 * need BACKUP_KEY (body for POST, X-Backup-Key for GET and DELETE). Refusals are audited.
 */
jest.setTimeout(60_000);

type Actor = 'anonymous' | 'regular' | 'superuser' | 'inactive' | 'system';
const ACTORS: Actor[] = ['anonymous', 'regular', 'superuser', 'inactive', 'system'];

interface Op {
  name: string;
  method: string;
  path: (ids: Ids) => string;
  keyed: boolean;
  body?: Record<string, unknown>;
  /** What the system user with the right key gets. */
  ok: number;
}
interface Ids {
  backup: string;
  missing: string;
}

const OPS: Op[] = [
  { name: 'create', method: 'POST', path: () => '/api/v1/backups', keyed: true, body: { name: 'm' }, ok: 202 },
  { name: 'list', method: 'GET', path: () => '/api/v1/backups', keyed: false, ok: 200 },
  { name: 'directory', method: 'GET', path: () => '/api/v1/backups/directory', keyed: false, ok: 200 },
  { name: 'backup policy', method: 'GET', path: () => '/api/v1/backup-policy', keyed: false, ok: 200 },
  { name: 'show', method: 'GET', path: (i) => `/api/v1/backups/${i.backup}`, keyed: false, ok: 200 },
  { name: 'events', method: 'GET', path: (i) => `/api/v1/backups/${i.backup}/events`, keyed: false, ok: 200 },
  { name: 'download', method: 'GET', path: (i) => `/api/v1/backups/${i.backup}/download`, keyed: true, ok: 200 },
  { name: 'delete', method: 'DELETE', path: (i) => `/api/v1/backups/${i.missing}`, keyed: true, ok: 404 },
  { name: 'restore', method: 'POST', path: (i) => `/api/v1/backups/${i.missing}/restore`, keyed: true, body: {}, ok: 404 },
  { name: 'restores', method: 'GET', path: () => '/api/v1/restores', keyed: false, ok: 200 },
  { name: 'restore status', method: 'GET', path: (i) => `/api/v1/restores/${i.missing}`, keyed: false, ok: 404 },
  { name: 'restore events', method: 'GET', path: (i) => `/api/v1/restores/${i.missing}/events`, keyed: false, ok: 404 },
];

function expected(actor: Actor, op: Op, key: 'right' | 'wrong' | 'none'): number {
  if (actor === 'anonymous') return 401;
  if (actor !== 'system') return 403;
  if (!op.keyed) return op.ok;
  if (key === 'none') return 400;
  if (key === 'wrong') return 400;
  return op.ok;
}

describe('stored backups: the permission matrix', () => {
  let app: TestApp;
  const users = {} as Record<Exclude<Actor, 'anonymous'>, TestUser>;
  let ids: Ids;

  function send(actor: Actor, op: Op, key: 'right' | 'wrong' | 'none', appUrl = app.url) {
    const keyValue = key === 'right' ? TEST_BACKUP_KEY : key === 'wrong' ? 'not-the-backup-key-at-all' : undefined;
    const headers: Record<string, string> = actor === 'anonymous' ? {} : { authorization: `Bearer ${users[actor].token}` };
    let body: string | undefined;
    if (op.method === 'POST') {
      headers['content-type'] = 'application/json';
      body = JSON.stringify({ ...op.body, ...(keyValue !== undefined ? { key: keyValue } : {}) });
    } else if (keyValue !== undefined && op.keyed) {
      headers['x-backup-key'] = keyValue;
    }
    return fetch(`${appUrl}${op.path(ids)}`, { method: op.method, headers, body });
  }

  beforeAll(async () => {
    app = await startTestApp({}, { jobs: true });
    users.regular = await makeUser(app, 'regular', 'regular');
    users.superuser = await makeUser(app, 'root', 'superuser');
    users.inactive = await makeUser(app, 'retired', 'system', { inactive: true });
    users.system = await makeUser(app, 'sys', 'system');
    const created = await app.jobs!.createBackup({ username: 'sys', userId: users.system.id, via: 'http' });
    await app.jobs!.waitFor('backup', created.id, { timeoutMs: 30_000 });
    ids = { backup: created.id, missing: randomUUID() };
  });

  afterAll(async () => {
    await app.close();
  });

  afterEach(async () => {
    // Wrong keys count towards the rate limit; each cell starts from a clean count.
    await app.db.pool.query('DELETE FROM rate_limits');
  });

  for (const op of OPS) {
    for (const actor of ACTORS) {
      for (const key of op.keyed ? (['right', 'wrong', 'none'] as const) : (['none'] as const)) {
        test(`${op.name} by ${actor}${op.keyed ? ` with ${key} key` : ''} → ${expected(actor, op, key)}`, async () => {
          const res = await send(actor, op, key);
          expect(res.status).toBe(expected(actor, op, key));
          if (res.status >= 400) {
            const body = (await res.json()) as { code: string };
            if (res.status === 400) expect(body.code).toBe(key === 'wrong' ? 'E_BACKUP_KEY_WRONG' : 'E_VALIDATION');
          } else {
            await res.body?.cancel();
          }
        });
      }
    }
  }

  test('refusals are written to backup_log as backup_denied, with the action and never the key', async () => {
    await app.db.pool.query(`DELETE FROM backup_log WHERE event = 'backup_denied'`);
    const download = OPS.find((o) => o.name === 'download')!;
    await (await send('system', download, 'wrong')).text();
    await (await send('superuser', download, 'right')).text();
    const rows = (await app.db.pool.query(`SELECT username, details FROM backup_log WHERE event = 'backup_denied' ORDER BY id`)).rows;
    expect(rows).toEqual([
      { username: 'sys', details: expect.objectContaining({ action: 'download', code: 'E_BACKUP_KEY_WRONG' }) },
      { username: 'root', details: expect.objectContaining({ action: 'download', code: 'E_FORBIDDEN' }) },
    ]);
    expect(JSON.stringify(rows)).not.toContain('not-the-backup-key-at-all');
    expect(JSON.stringify(rows)).not.toContain(TEST_BACKUP_KEY);
  });

  test('wrong keys on the header are rate-limited like the streaming endpoint: the sixth gets 429 with Retry-After', async () => {
    const del = OPS.find((o) => o.name === 'delete')!;
    for (let i = 0; i < 5; i++) expect((await send('system', del, 'wrong')).status).toBe(400);
    const limited = await send('system', del, 'right');
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  test('without a usable BACKUP_KEY, keyed actions answer that backups are disabled; listing still works', async () => {
    const off = await startTestApp({ BACKUP_KEY: 'short' }, { jobs: true });
    try {
      const u = await makeUser(off, 'sys', 'system');
      const post = await fetch(`${off.url}/api/v1/backups`, { method: 'POST', headers: { authorization: `Bearer ${u.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ key: 'short' }) });
      expect(post.status).toBe(403);
      expect(((await post.json()) as { code: string }).code).toBe('E_BACKUP_DISABLED');
      const list = await fetch(`${off.url}/api/v1/backups`, { headers: { authorization: `Bearer ${u.token}` } });
      expect(list.status).toBe(200);
      expect(await list.json()).toEqual({ backups: [] });
    } finally {
      await off.close();
    }
  });

  test('bad requests are refused with specific messages', async () => {
    const h = { authorization: `Bearer ${users.system.token}`, 'content-type': 'application/json' };
    const post = (p: string, body: unknown) => fetch(`${app.url}${p}`, { method: 'POST', headers: h, body: JSON.stringify(body) });
    const both = await post('/api/v1/backups', { key: TEST_BACKUP_KEY, aes_key: '00'.repeat(32), passphrase: 'a long passphrase here' });
    expect(both.status).toBe(400);
    expect(((await both.json()) as { message: string }).message).toContain('give only one of aes_key, passphrase');
    const typo = await post('/api/v1/backups', { key: TEST_BACKUP_KEY, nmae: 'x' });
    expect(typo.status).toBe(400);
    expect(((await typo.json()) as { message: string }).message).toContain('nmae');
    const nul = await post('/api/v1/backups', { key: TEST_BACKUP_KEY, name: 'a\u0000b' });
    expect(nul.status).toBe(400);
    const badStatus = await fetch(`${app.url}/api/v1/backups?status=done`, { headers: h });
    expect(badStatus.status).toBe(400);
    const notUuid = await fetch(`${app.url}/api/v1/backups/not-a-uuid`, { headers: h });
    expect(notUuid.status).toBe(404);
  });
});
