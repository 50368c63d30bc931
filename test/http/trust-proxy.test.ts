import { startTestApp, type TestApp } from '../support/app';

/**
 * Rate limits key on the client address. Behind a proxy that address comes from X-Forwarded-For,
 * whose left part the client writes itself: only the hops TRUST_PROXY names may be believed.
 */
describe('TRUST_PROXY and the login rate limit', () => {
  const apps: TestApp[] = [];
  afterAll(async () => {
    for (const app of apps) await app.close();
  });

  async function app(trustProxy: string): Promise<TestApp> {
    const a = await startTestApp({ TRUST_PROXY: trustProxy });
    apps.push(a);
    return a;
  }

  const login = (a: TestApp, xff: string, username = 'victim') =>
    fetch(`${a.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': xff },
      body: JSON.stringify({ username, password: 'wrong password!' }),
    }).then((r) => r.status);

  async function statuses(a: TestApp, xff: (i: number) => string, n = 11): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(await login(a, xff(i)));
    return out;
  }

  test.each(['true', '1'])('TRUST_PROXY=%s: a client rotating X-Forwarded-For still reaches 429', async (value) => {
    const a = await app(value);
    const got = await statuses(a, (i) => `10.0.0.${i}, 127.0.0.1`, 12);
    expect(got.slice(0, 10)).toEqual(Array(10).fill(401));
    expect(got.slice(10)).toEqual([429, 429]);
  });

  test('TRUST_PROXY listing the proxy: the client address it forwards counts, not what the client wrote before it', async () => {
    const a = await app('127.0.0.1');
    const got = await statuses(a, (i) => `10.0.0.${i}, 203.0.113.7`);
    expect(got.slice(0, 10)).toEqual(Array(10).fill(401));
    expect(got[10]).toBe(429);
    // Another client behind the same proxy has its own count.
    expect(await login(a, '198.51.100.9')).toBe(401);
  });

  test('TRUST_PROXY=false: X-Forwarded-For is ignored', async () => {
    const a = await app('false');
    const got = await statuses(a, (i) => `198.51.100.${i}`);
    expect(got[10]).toBe(429);
  });
});
