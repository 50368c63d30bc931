import { makeUser, startTestApp, TEST_PASSWORD, type TestApp, type TestUser } from '../support/app';
import { createUser } from '../../src/accounts/users';

describe('authentication', () => {
  let app: TestApp;
  const users: Record<string, TestUser> = {};

  beforeAll(async () => {
    app = await startTestApp();
    users.regular = await makeUser(app, 'alice', 'regular');
    users.superuser = await makeUser(app, 'root', 'superuser');
    users.system = await makeUser(app, 'backup', 'system');
    users.inactive = await makeUser(app, 'gone', 'system', { inactive: true });
  });
  afterAll(async () => app.close());

  const me = (headers: Record<string, string | undefined>) => fetch(`${app.url}/api/v1/auth/me`, { headers: headers as Record<string, string> });

  test('anonymous requests get 401 with a JSON error code', async () => {
    const res = await me({});
    expect(res.status).toBe(401);
    expect(await res.json() as any).toEqual({ code: 'E_UNAUTHENTICATED', message: expect.stringMatching(/authentication required/) });
  });

  test.each(['regular', 'superuser', 'system'])('%s user is recognised by cookie and by Bearer token', async (kind) => {
    for (const headers of [{ cookie: users[kind].cookie }, { authorization: `Bearer ${users[kind].token}` }]) {
      const res = await me(headers);
      expect(res.status).toBe(200);
      const body = await res.json() as any;
      expect(body.user.username).toBe(users[kind].username);
      expect(body.user.is_system_user).toBe(kind === 'system');
      expect(body.user.is_superuser).toBe(kind === 'superuser');
    }
  });

  test('an inactive user is refused with 403 by cookie and by token', async () => {
    expect((await me({ cookie: users.inactive.cookie })).status).toBe(403);
    expect((await me({ authorization: `Bearer ${users.inactive.token}` })).status).toBe(403);
  });

  test('an inactive user cannot log in', async () => {
    const res = await fetch(`${app.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'gone', password: TEST_PASSWORD }),
    });
    expect(res.status).toBe(401);
  });

  test('a wrong or malformed token is 401, never a fallback to anonymous', async () => {
    expect((await me({ authorization: 'Bearer cft_nope' })).status).toBe(401);
    expect((await me({ authorization: 'Basic abc' })).status).toBe(401);
  });

  test('the session cookie is HttpOnly and SameSite=Strict, and only its hash is stored', async () => {
    const res = await fetch(`${app.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: TEST_PASSWORD }),
    });
    const setCookie = res.headers.get('set-cookie') ?? '';
    expect(setCookie).toMatch(/^sessionid=[A-Za-z0-9_-]{40,};/);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    const sid = setCookie.split(';')[0].split('=')[1];
    const stored = await app.db.pool.query(`SELECT encode(id_hash, 'hex') AS h FROM sessions`);
    expect(stored.rows.map((r) => r.h).join(',')).not.toContain(Buffer.from(sid).toString('hex'));
    const tokens = await app.db.pool.query(`SELECT encode(token_hash, 'escape') AS h FROM api_tokens`);
    expect(tokens.rows.map((r) => r.h).join(',')).not.toContain(users.regular.token);
  });

  test('logout ends the session', async () => {
    const u = await makeUser(app, 'bob', 'regular');
    const out = await fetch(`${app.url}/api/v1/auth/logout`, { method: 'POST', headers: { cookie: u.cookie, 'content-type': 'application/json' } });
    expect(out.status).toBe(204);
    expect((await me({ cookie: u.cookie })).status).toBe(401);
  });

  test('a cookie-authenticated POST without a JSON content type is refused (no cross-site forms)', async () => {
    const res = await fetch(`${app.url}/api/v1/projects`, {
      method: 'POST',
      headers: { cookie: users.regular.cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=x',
    });
    expect(res.status).toBe(403);
  });

  test('wrong passwords are rate-limited after 10 failures, also for unknown users', async () => {
    await createUser(app.db.pool, { username: 'carol', password: TEST_PASSWORD, role: 'regular' });
    const attempt = (username: string, password: string) =>
      fetch(`${app.url}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }) });
    for (const name of ['carol', 'nobody-here']) {
      const statuses: number[] = [];
      for (let i = 0; i < 11; i++) statuses.push((await attempt(name, 'wrong password!')).status);
      expect(statuses.slice(0, 10)).toEqual(Array(10).fill(401));
      expect(statuses[10]).toBe(429);
    }
    const blocked = await attempt('carol', TEST_PASSWORD);
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  test('malformed JSON gets a 400 with a stable code, no stack trace', async () => {
    const res = await fetch(`${app.url}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"username":' });
    expect(res.status).toBe(400);
    const body = await res.json() as any;
    expect(body.code).toBe('E_VALIDATION');
    expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/);
  });
});
