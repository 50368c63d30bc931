import fs from 'node:fs';
import path from 'node:path';
import { makeUser, startTestApp, type TestApp, type TestUser } from '../support/app';

function multipart(filename: string, content: Buffer, field = 'file') {
  const fd = new FormData();
  fd.append(field, new Blob([content]), filename);
  return fd;
}

function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('domain API and uploads', () => {
  let app: TestApp;
  let user: TestUser;
  let projectId: string;
  const auth = () => ({ authorization: `Bearer ${user.token}` });

  beforeAll(async () => {
    app = await startTestApp({ UPLOAD_MAX_BYTES: String(64 * 1024) });
    user = await makeUser(app, 'alice', 'regular');
    const res = await fetch(`${app.url}/api/v1/projects`, {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Audit', tags: ['a', 'b'], settings: { x: 1 }, status: 'active' }),
    });
    expect(res.status).toBe(201);
    projectId = (await res.json() as any).id;
  });
  afterAll(async () => app.close());

  test('projects, notes and findings can be created, listed, read and deleted', async () => {
    const post = (p: string, body: unknown) =>
      fetch(`${app.url}/api/v1/projects/${projectId}/${p}`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const root = await (await post('notes', { title: 'root' })).json() as any;
    const child = await post('notes', { title: 'child', parent_id: root.id });
    expect(child.status).toBe(201);
    expect((await child.json() as any).parent_id).toBe(root.id);
    const finding = await post('findings', { title: 'XSS', score: '123456789012345678901234567890.123456789', reference_code: 'R-1' });
    expect(finding.status).toBe(201);
    const f = await finding.json() as any;
    expect(f.score).toBe('123456789012345678901234567890.123456789');
    expect(f.severity).toBe('critical');
    expect((await post('findings', { title: 'dup', reference_code: 'R-1' })).status).toBe(409);
    const list = await (await fetch(`${app.url}/api/v1/projects/${projectId}/findings`, { headers: auth() })).json() as any;
    expect(list).toHaveLength(1);
    const del = await fetch(`${app.url}/api/v1/projects/${projectId}/findings/${f.id}`, { method: 'DELETE', headers: auth() });
    expect(del.status).toBe(204);
    expect((await fetch(`${app.url}/api/v1/projects/${projectId}/findings/${f.id}`, { headers: auth() })).status).toBe(404);
    expect((await post('notes', { title: 'orphan', parent_id: 999999 })).status).toBe(400);
  });

  test('an upload is stored under a generated name and downloads byte for byte', async () => {
    const content = Buffer.from('hello, coffer\n'.repeat(100));
    const res = await fetch(`${app.url}/api/v1/projects/${projectId}/files`, { method: 'POST', headers: auth(), body: multipart('report.txt', content) });
    expect(res.status).toBe(201);
    const row = await res.json() as any;
    expect(row.name).toBe('report.txt');
    const stored = await app.db.pool.query(`SELECT storage_path FROM uploaded_files WHERE id = $1`, [row.id]);
    expect(stored.rows[0].storage_path).toMatch(/^uploadedfiles\/[0-9a-f]{2}\/[0-9a-f-]{36}$/);
    const dl = await fetch(`${app.url}/api/v1/projects/${projectId}/uploads/${row.id}/content`, { headers: auth() });
    expect(Buffer.from(await dl.arrayBuffer()).equals(content)).toBe(true);
  });

  test.each([['../../etc/passwd'], ['/etc/passwd'], ['..\\..\\boot.ini'], ['uploadedfiles/../../x']])(
    'a hostile client file name (%s) never becomes a path',
    async (name) => {
      const before = listFiles(app.dataDir).length;
      const res = await fetch(`${app.url}/api/v1/projects/${projectId}/images`, { method: 'POST', headers: auth(), body: multipart(name, Buffer.from('x')) });
      expect(res.status).toBe(201);
      const row = await res.json() as any;
      expect(row.name).not.toMatch(/[\\/]/);
      const files = listFiles(app.dataDir);
      expect(files.length).toBe(before + 1);
      for (const f of files) expect(f.startsWith(path.join(app.dataDir, 'upload'))).toBe(true);
      expect(fs.existsSync(path.join(path.dirname(app.dataDir), 'etc'))).toBe(false);
    },
  );

  test('an oversized upload is refused with 413 and leaves no file behind', async () => {
    const before = listFiles(app.dataDir).length;
    const res = await fetch(`${app.url}/api/v1/projects/${projectId}/assets`, { method: 'POST', headers: auth(), body: multipart('big.bin', Buffer.alloc(65 * 1024, 1)) });
    expect(res.status).toBe(413);
    expect((await res.json() as any).code).toBe('E_PAYLOAD_TOO_LARGE');
    expect(listFiles(app.dataDir).length).toBe(before);
  });

  test('an unknown upload kind or a missing file field is refused', async () => {
    expect((await fetch(`${app.url}/api/v1/projects/${projectId}/secrets`, { method: 'POST', headers: auth(), body: multipart('a', Buffer.from('x')) })).status).toBe(404);
    expect((await fetch(`${app.url}/api/v1/projects/${projectId}/files`, { method: 'POST', headers: auth(), body: multipart('a', Buffer.from('x'), 'other') })).status).toBe(400);
  });

  test('deleting a project removes its uploaded files', async () => {
    const p = await (await fetch(`${app.url}/api/v1/projects`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'tmp' }) })).json() as any;
    const up = await (await fetch(`${app.url}/api/v1/projects/${p.id}/files`, { method: 'POST', headers: auth(), body: multipart('a.txt', Buffer.from('abc')) })).json() as any;
    const sp = (await app.db.pool.query(`SELECT storage_path FROM uploaded_files WHERE id = $1`, [up.id])).rows[0].storage_path;
    expect(fs.existsSync(path.join(app.dataDir, sp))).toBe(true);
    expect((await fetch(`${app.url}/api/v1/projects/${p.id}`, { method: 'DELETE', headers: auth() })).status).toBe(204);
    expect(fs.existsSync(path.join(app.dataDir, sp))).toBe(false);
  });
});
