import zlib from 'node:zlib';
import { createLogger } from '../../src/log';
import { toHttpError } from '../../src/http/errors';
import { makeUser, startTestApp, type TestApp, type TestUser } from '../support/app';

/**
 * Client mistakes are client errors: a 4xx with a specific code, logged at info without a stack, never
 * a 500 logged as an error. Each body here once reached PostgreSQL (or the decompressor) and failed
 * there.
 */
describe('malformed input is answered 4xx and logged as the client’s mistake', () => {
  let app: TestApp;
  let user: TestUser;
  let projectId: string;
  const lines: { level: number; msg: string; stack?: string; err?: unknown }[] = [];
  const log = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line)) });

  beforeAll(async () => {
    app = await startTestApp({}, { log });
    user = await makeUser(app, 'alice', 'regular');
    const res = await post('/api/v1/projects', JSON.stringify({ name: 'Input' }));
    projectId = ((await res.json()) as any).id;
  });
  afterAll(async () => app.close());

  function post(path: string, body: string | Buffer, headers: Record<string, string> = {}) {
    return fetch(`${app.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${user.token}`, 'content-type': 'application/json', ...headers },
      body,
    });
  }

  const nested = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  const projects = '/api/v1/projects';
  const notes = () => `/api/v1/projects/${projectId}/notes`;
  const findings = () => `/api/v1/projects/${projectId}/findings`;

  const cases: [string, () => string, () => string | Buffer, Record<string, string>?, number?, string?][] = [
    ['NUL in a project name', () => projects, () => JSON.stringify({ name: 'a\u0000b' })],
    ['NUL in a tag', () => projects, () => JSON.stringify({ name: 'a', tags: ['x\u0000'] })],
    ['NUL in settings', () => projects, () => JSON.stringify({ name: 'a', settings: { k: 'a\u0000b' } })],
    ['NUL in a settings key', () => projects, () => JSON.stringify({ name: 'a', settings: { 'k\u0000': 1 } })],
    ['a lone surrogate in settings', () => projects, () => '{"name": "a", "settings": {"k": "\\ud800"}}'],
    ['settings nested 5,000 levels', () => projects, () => `{"name": "a", "settings": ${nested(5000)}}`],
    ['NUL in a note title', () => notes(), () => JSON.stringify({ title: 'a\u0000' })],
    ['a 30-digit parent_id as text', () => notes(), () => JSON.stringify({ title: 'a', parent_id: '123456789012345678901234567890' })],
    ['a 30-digit parent_id as a number', () => notes(), () => '{"title": "a", "parent_id": 123456789012345678901234567890}'],
    ['a position beyond integer', () => notes(), () => JSON.stringify({ title: 'a', position: 2 ** 31 })],
    ['NUL in a reference_code', () => findings(), () => JSON.stringify({ title: 'a', reference_code: 'R\u00001' })],
    ['NUL in finding data', () => findings(), () => JSON.stringify({ title: 'a', data: { d: ['\u0000'] } })],
    ['finding data nested 5,000 levels', () => findings(), () => `{"title": "a", "data": ${nested(5000)}}`],
    ['a 200,000-digit score', () => findings(), () => JSON.stringify({ title: 'a', score: '9'.repeat(200_000) })],
    ['NUL in a login name', () => '/api/v1/auth/login', () => JSON.stringify({ username: 'alice\u0000', password: 'whatever-password' })],
    ['junk declared as gzip', () => projects, () => Buffer.from('this is not gzip at all'), { 'content-encoding': 'gzip' }],
    ['junk declared as br', () => projects, () => Buffer.from('this is not brotli at all'), { 'content-encoding': 'br' }],
    ['junk declared as deflate', () => projects, () => Buffer.from('this is not deflate'), { 'content-encoding': 'deflate' }],
    ['gzip cut short', () => projects, () => zlib.gzipSync(JSON.stringify({ name: 'x'.repeat(1000) })).subarray(0, 30), { 'content-encoding': 'gzip' }],
    ['an unknown content encoding', () => projects, () => Buffer.from('{}'), { 'content-encoding': 'compress' }, 415, 'E_UNSUPPORTED_MEDIA_TYPE'],
  ];

  test.each(cases)('%s: 4xx with a code, no error logged', async (_name, path, body, headers = {}, status = 400, code = 'E_VALIDATION') => {
    lines.length = 0;
    const res = await post(path(), body(), headers);
    const answer = (await res.json()) as any;
    expect([res.status, answer.code]).toEqual([status, code]);
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    expect(lines.filter((l) => l.stack !== undefined || l.err !== undefined)).toEqual([]);
    const refusal = lines.find((l) => l.level === 30 && l.msg !== 'request');
    expect(refusal).toBeDefined();
  });

  test('nothing of it was stored', async () => {
    const rows = await app.db.pool.query(`SELECT (SELECT count(*) FROM projects)::int AS p, (SELECT count(*) FROM notes)::int AS n, (SELECT count(*) FROM findings)::int AS f`);
    expect(rows.rows[0]).toEqual({ p: 1, n: 0, f: 0 });
  });

  test('what still passes: deep-enough JSON, long exact scores, big ids as text', async () => {
    expect((await post(projects, `{"name": "ok", "settings": ${nested(63)}}`)).status).toBe(201);
    const f = await post(findings(), JSON.stringify({ title: 'a', score: '9'.repeat(1000) + '.' + '1'.repeat(1000) }));
    expect(f.status).toBe(201);
    expect(((await f.json()) as any).score).toBe('9'.repeat(1000) + '.' + '1'.repeat(1000));
    // A well-formed id that names no note is a validation error, as it always was.
    expect((await post(notes(), JSON.stringify({ title: 'a', parent_id: '9223372036854775807' }))).status).toBe(400);
    await app.db.pool.query(`DELETE FROM projects WHERE name = 'ok'`);
    await app.db.pool.query(`DELETE FROM findings`);
  });

  test('a PostgreSQL data exception that got past validation is still a 400 E_VALIDATION', async () => {
    const err = await app.db.pool.query(`SELECT '12345678901234567890'::bigint::int AS x`).catch((e: unknown) => e);
    expect((err as { code: string }).code).toBe('22003');
    expect(toHttpError(err)).toMatchObject({ status: 400, code: 'E_VALIDATION', expected: true });
    const notData = await app.db.pool.query(`SELECT * FROM no_such_table`).catch((e: unknown) => e);
    expect(toHttpError(notData)).toMatchObject({ status: 500, code: 'E_INTERNAL', expected: false });
  });
});
