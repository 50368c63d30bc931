import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { backupToFile } from '../support/archive';
import { makeUser, startTestApp, type TestApp, type TestUser } from '../support/app';
import { readZip } from '../support/zip';
import { storeUpload } from '../../src/storage/uploads';

const LIMIT = 256 * 1024;
const UUID_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function multipart(filename: string, content: Buffer, type?: string) {
  const fd = new FormData();
  fd.append('file', new Blob([content], type ? { type } : {}), filename);
  return fd;
}

/** Every file and folder under a directory, relative. */
function tree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

/** Files in the upload folders that are not a finished upload (a bare uuid name). */
function strayUploadFiles(dataDir: string): string[] {
  return fs
    .readdirSync(dataDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && !UUID_NAME.test(e.name))
    .map((e) => path.join(e.parentPath, e.name));
}

async function waitFor(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('uploads: aborted, oversize, odd kinds, names and types', () => {
  let app: TestApp;
  let user: TestUser;
  let projectId: string;
  const auth = () => ({ authorization: `Bearer ${user.token}` });
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-uploads-'));

  beforeAll(async () => {
    app = await startTestApp({ UPLOAD_MAX_BYTES: String(LIMIT) });
    user = await makeUser(app, 'alice', 'regular');
    const res = await fetch(`${app.url}/api/v1/projects`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Uploads' }) });
    projectId = ((await res.json()) as any).id;
  });
  afterAll(async () => {
    await app.close();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('a client that promises 10 MB, sends 200 KB and hangs up leaves no file, and a backup meanwhile does not carry it', async () => {
    const rowsBefore = (await app.db.pool.query(`SELECT count(*)::int AS n FROM uploaded_files`)).rows[0].n;
    const boundary = 'coffer-test-boundary';
    const port = new URL(app.url).port;
    const sock = net.connect(Number(port), '127.0.0.1');
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      `POST /api/v1/projects/${projectId}/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${user.token}\r\n` +
        `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${10 * 1024 * 1024}\r\n\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    );
    sock.write(Buffer.alloc(200 * 1024, 0x41));
    await waitFor('the upload to reach the disk', () => strayUploadFiles(app.dataDir).some((f) => fs.statSync(f).size > 0));

    const file = path.join(scratch, 'during-upload.zip');
    await backupToFile(app.db.pool, app.dataDir, file);
    const names = (await readZip(file)).map((e) => e.name);
    expect(names.filter((n) => /upload-/.test(n))).toEqual([]);
    expect(names.filter((n) => n.startsWith('uploadedfiles/') && !n.endsWith('/'))).toEqual([]);

    sock.destroy();
    await waitFor('the temporary file to be removed', () => strayUploadFiles(app.dataDir).length === 0);
    expect((await app.db.pool.query(`SELECT count(*)::int AS n FROM uploaded_files`)).rows[0].n).toBe(rowsBefore);
    // The service is still fine.
    expect((await fetch(`${app.url}/api/v1/projects/${projectId}`, { headers: auth() })).status).toBe(200);
  });

  test('temporary upload files planted in the upload folders are not archived', async () => {
    const dir = path.join(app.dataDir, 'uploadedimages', 'ab');
    fs.mkdirSync(dir, { recursive: true });
    const planted = ['.upload-0123456789abcdef01234567', 'abcdef01-2345-6789-abcd-ef0123456789.upload-4242'];
    for (const name of planted) fs.writeFileSync(path.join(dir, name), 'half an upload');
    fs.writeFileSync(path.join(dir, 'abcdef01-2345-6789-abcd-ef0123456789'), 'a finished one');
    try {
      const file = path.join(scratch, 'planted.zip');
      await backupToFile(app.db.pool, app.dataDir, file);
      const entries = await readZip(file);
      const names = entries.map((e) => e.name);
      expect(names).toContain('uploadedimages/ab/abcdef01-2345-6789-abcd-ef0123456789');
      for (const name of planted) expect(names).not.toContain(`uploadedimages/ab/${name}`);
      const manifest = JSON.parse(entries.find((e) => e.name === 'manifest.json')!.data.toString());
      expect(manifest.files.uploadedimages.files).toBe(1);
      expect(manifest.file_errors).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an oversize upload answers 413 and leaves no file, temporary or not', async () => {
    const before = tree(app.dataDir);
    const res = await fetch(`${app.url}/api/v1/projects/${projectId}/assets`, { method: 'POST', headers: auth(), body: multipart('big.bin', Buffer.alloc(LIMIT + 1, 1)) });
    expect(res.status).toBe(413);
    expect(((await res.json()) as any).code).toBe('E_PAYLOAD_TOO_LARGE');
    await waitFor('no stray files', () => strayUploadFiles(app.dataDir).length === 0);
    expect(tree(app.dataDir).filter((f) => !before.includes(f) && fs.statSync(path.join(app.dataDir, f)).isFile())).toEqual([]);
  });

  test('a source that fails before the file is open is an error of the store, not an unhandled one', async () => {
    const input = new PassThrough();
    const stored = storeUpload(app.dataDir, 'file', input, LIMIT);
    // Before storeUpload got round to reading: an 'error' nobody listened for would end the process.
    input.destroy(new Error('client went away'));
    await expect(stored).rejects.toThrow('client went away');
    expect(strayUploadFiles(app.dataDir)).toEqual([]);
  });

  test.each(['constructor', '__proto__', 'toString', 'hasOwnProperty', 'constructors', 'valueOfs'])(
    'upload kind %s is unknown: 404 and nothing written',
    async (kind) => {
      const before = tree(app.dataDir);
      const res = await fetch(`${app.url}/api/v1/projects/${projectId}/${kind}`, { method: 'POST', headers: auth(), body: multipart('a.txt', Buffer.from('x')) });
      expect(res.status).toBe(404);
      expect(((await res.json()) as any).code).toBe('E_NOT_FOUND');
      expect(tree(app.dataDir)).toEqual(before);
    },
  );

  test('a UTF-8 file name round-trips', async () => {
    const name = 'résumé-日本.txt';
    const res = await fetch(`${app.url}/api/v1/projects/${projectId}/files`, { method: 'POST', headers: auth(), body: multipart(name, Buffer.from('cv')) });
    expect(res.status).toBe(201);
    const row = (await res.json()) as any;
    expect(row.name).toBe(name);
    const listed = (await (await fetch(`${app.url}/api/v1/projects/${projectId}/uploads`, { headers: auth() })).json()) as any[];
    expect(listed.find((u) => u.id === row.id).name).toBe(name);
    const dl = await fetch(`${app.url}/api/v1/projects/${projectId}/uploads/${row.id}/content`, { headers: auth() });
    expect(dl.headers.get('content-disposition')).toContain(`filename*=UTF-8''${encodeURIComponent(name)}`);
  });

  test('a download carries the stored type, not one guessed from the name, and nosniff', async () => {
    const res = await fetch(`${app.url}/api/v1/projects/${projectId}/files`, { method: 'POST', headers: auth(), body: multipart('x.html', Buffer.from('<script>alert(1)</script>'), 'text/plain') });
    const row = (await res.json()) as any;
    expect(row.content_type).toBe('text/plain');
    const dl = await fetch(`${app.url}/api/v1/projects/${projectId}/uploads/${row.id}/content`, { headers: auth() });
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-type')).toBe('text/plain');
    expect(dl.headers.get('x-content-type-options')).toBe('nosniff');
    expect(dl.headers.get('content-disposition')).toMatch(/^attachment; filename="?x\.html"?$/);
    expect(await dl.text()).toBe('<script>alert(1)</script>');
  });
});
