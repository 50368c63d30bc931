import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeUser, startTestApp, TEST_BACKUP_KEY, waitFor, type TestApp, type TestUser } from './support/app';
import { readZip, unzipTest, type ReadEntry } from './support/zip';
import { seedDomain, writeUploadFiles } from './support/seed';
import type { Manifest } from '../src/core/manifest';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-backup-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function backupRequest(app: TestApp, user: TestUser | undefined, body: unknown, via: 'token' | 'cookie' = 'token') {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (user && via === 'token') headers.authorization = `Bearer ${user.token}`;
  if (user && via === 'cookie') headers.cookie = user.cookie;
  return fetch(`${app.url}/api/v1/utils/backup/`, { method: 'POST', headers, body: JSON.stringify(body) });
}

async function saveBody(res: Response, name: string): Promise<string> {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.from(await res.arrayBuffer()));
  return file;
}

function manifestOf(entries: ReadEntry[]): Manifest {
  return JSON.parse(entries[entries.length - 1].data.toString('utf8'));
}

describe('backup endpoint permissions', () => {
  let app: TestApp;
  const u: Record<string, TestUser> = {};
  beforeAll(async () => {
    app = await startTestApp();
    u.regular = await makeUser(app, 'alice', 'regular');
    u.superuser = await makeUser(app, 'root', 'superuser');
    u.system = await makeUser(app, 'backup', 'system');
    u.inactive = await makeUser(app, 'retired', 'system', { inactive: true });
  });
  afterAll(async () => app.close());

  test('anonymous callers get 401', async () => {
    const res = await backupRequest(app, undefined, { key: TEST_BACKUP_KEY });
    expect(res.status).toBe(401);
  });

  test.each(['regular', 'superuser', 'inactive'])('%s users get 403 even with the right key', async (kind) => {
    for (const via of ['token', 'cookie'] as const) {
      const res = await backupRequest(app, u[kind], { key: TEST_BACKUP_KEY }, via);
      expect(res.status).toBe(403);
      expect(((await res.json()) as any).code).toBe('E_FORBIDDEN');
    }
  });

  test('a system user with a wrong key gets 400, and the attempt is audited without the key', async () => {
    const res = await backupRequest(app, u.system, { key: 'not-the-key-but-long-enough' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).code).toBe('E_BACKUP_KEY_WRONG');
    const log = await app.db.pool.query(`SELECT event, username, details::text AS d FROM backup_log WHERE event = 'backup_denied' ORDER BY id`);
    expect(log.rows.some((r) => r.username === 'backup' && r.d.includes('E_BACKUP_KEY_WRONG'))).toBe(true);
    expect(log.rows.map((r) => r.d).join()).not.toContain('not-the-key-but-long-enough');
  });

  test('a missing key is a 400 validation error', async () => {
    const res = await backupRequest(app, u.system, {});
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).code).toBe('E_VALIDATION');
  });

  test('check: true answers 200 without a body after all checks', async () => {
    const res = await backupRequest(app, u.system, { key: TEST_BACKUP_KEY, check: true });
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    const bad = await backupRequest(app, u.system, { key: TEST_BACKUP_KEY, check: true, aes_key: 'abc' });
    expect(bad.status).toBe(400);
  });

  test.each([
    ['abc', /64 hex characters|got 3/],
    ['zz' + '0'.repeat(62), /hex/],
    [Buffer.alloc(31).toString('base64'), /32 bytes|31/],
  ])('a malformed aes_key (%s) gets a 400 naming what is wrong', async (aesKey, reason) => {
    const res = await backupRequest(app, u.system, { key: TEST_BACKUP_KEY, aes_key: aesKey });
    expect(res.status).toBe(400);
    const body = (await res.json()) as any;
    expect(body.code).toBe('E_AES_KEY_INVALID');
    expect(body.message).toMatch(reason);
    expect(body.message).not.toContain(aesKey);
  });

  test('a too short passphrase, or both aes_key and passphrase, are refused', async () => {
    expect((await backupRequest(app, u.system, { key: TEST_BACKUP_KEY, passphrase: 'short' })).status).toBe(400);
    const both = await backupRequest(app, u.system, { key: TEST_BACKUP_KEY, passphrase: 'long enough passphrase', aes_key: '00'.repeat(32) });
    expect(both.status).toBe(400);
  });

  test('wrong keys are rate-limited: the 6th attempt within the window gets 429, even with the right key', async () => {
    const other = await makeUser(app, 'backup2', 'system');
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await backupRequest(app, other, { key: `wrong-key-number-${i}-xxxxxxxx` })).status);
    expect(statuses).toEqual([400, 400, 400, 400, 400]);
    const blocked = await backupRequest(app, other, { key: TEST_BACKUP_KEY });
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  test('parallel wrong keys cannot slip past the limit together', async () => {
    const racer = await makeUser(app, 'backup3', 'system');
    const statuses = await Promise.all(Array.from({ length: 12 }, (_, i) => backupRequest(app, racer, { key: `parallel-wrong-key-${i}-xxxxx` }).then((r) => r.status)));
    expect(statuses.filter((s) => s === 400)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(7);
  });

  test('a cookie-authenticated request must be JSON (a cross-site form cannot trigger a backup)', async () => {
    const res = await fetch(`${app.url}/api/v1/utils/backup/`, {
      method: 'POST',
      headers: { cookie: u.system.cookie, 'content-type': 'text/plain' },
      body: JSON.stringify({ key: TEST_BACKUP_KEY }),
    });
    expect(res.status).toBe(403);
  });
});

describe('backup endpoint with BACKUP_KEY unset or short', () => {
  test.each([
    [{ BACKUP_KEY: '' }, 'BACKUP_KEY is not set'],
    [{ BACKUP_KEY: 'x'.repeat(19) }, 'BACKUP_KEY is shorter than 20 characters'],
  ])('answers that backups are disabled and why (%j)', async (env, why) => {
    const app = await startTestApp(env);
    try {
      const sys = await makeUser(app, 'backup', 'system');
      const res = await backupRequest(app, sys, { key: 'x'.repeat(19) });
      expect(res.status).toBe(403);
      const body = (await res.json()) as any;
      expect(body).toEqual({ code: 'E_BACKUP_DISABLED', message: `backups are disabled: ${why}` });
    } finally {
      await app.close();
    }
  });
});

describe('backup archive', () => {
  let app: TestApp;
  let sys: TestUser;
  let uploads: string[];
  beforeAll(async () => {
    app = await startTestApp();
    sys = await makeUser(app, 'backup', 'system');
    await seedDomain(app.db.pool);
    uploads = writeUploadFiles(app.dataDir, 64);
    const uni = path.join(app.dataDir, 'uploadedfiles', 'ünï', 'файл 😀 (1).txt');
    fs.mkdirSync(path.dirname(uni), { recursive: true });
    fs.writeFileSync(uni, 'unicode name\n');
    uploads.push('uploadedfiles/ünï/файл 😀 (1).txt');
    // A symbolic link is not followed: it is recorded as a file error.
    fs.symlinkSync('/etc/hostname', path.join(app.dataDir, 'uploadedassets', 'link'));
    // A name a zip cannot carry safely is recorded too, and the backup goes on.
    fs.writeFileSync(path.join(app.dataDir, 'uploadedassets', 'back\\slash.txt'), 'x');
  });
  afterAll(async () => app.close());

  test('a system user with the right key gets a valid archive v1', async () => {
    const res = await backupRequest(app, sys, { key: TEST_BACKUP_KEY });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/zip');
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="backup-\d{8}T\d{6}Z\.zip"$/);
    const file = await saveBody(res, 'http.zip');
    expect(unzipTest(file)).toMatch(/No errors detected/);
    const entries = await readZip(file);
    const names = entries.map((e) => e.name);

    // Order: VERSION, db/, upload folders, manifest last.
    expect(names[0]).toBe('VERSION');
    expect(entries[0].data.toString()).toBe('1\n');
    expect(names[names.length - 1]).toBe('manifest.json');
    const group = (n: string) => (n === 'VERSION' ? 0 : n.startsWith('db/') ? 1 : n === 'manifest.json' ? 3 : 2);
    const groups = names.map(group);
    expect([...groups].sort()).toEqual(groups);

    const m = manifestOf(entries);
    expect(m.format).toBe(1);
    expect(m.app).toEqual({ name: 'coffer', version: '0.1.0' });
    expect(m.migrations).toEqual(['001_init', '002_domain', '003_project_members']);
    const tableNames = m.tables.map((t) => t.name).sort();
    expect(tableNames).toEqual(['api_tokens', 'backup_log', 'events', 'findings', 'notes', 'project_members', 'projects', 'uploaded_files', 'users']);
    for (const t of m.tables) {
      const entry = entries.find((e) => e.name === t.entry)!;
      expect(entry).toBeDefined();
      expect(entry.data.length).toBe(t.bytes);
      expect(createHash('sha256').update(entry.data).digest('hex')).toBe(t.sha256);
      const lines = entry.data.toString('utf8').split('\n');
      expect(lines.pop()).toBe('');
      expect(lines.length).toBe(t.rows);
      for (const line of lines) expect(typeof JSON.parse(line)).toBe('object');
      const count = await app.db.pool.query(`SELECT count(*)::int AS n FROM ${t.name}`);
      if (t.name !== 'backup_log') expect(t.rows).toBe(count.rows[0].n);
    }
    // Generated columns are not written; rows are in primary-key order.
    const findings = entries.find((e) => e.name === 'db/public.findings.jsonl')!.data.toString().trim().split('\n').map((l) => JSON.parse(l));
    expect(findings[0]).not.toHaveProperty('severity');
    expect(findings.map((f) => Number(f.id))).toEqual([...findings.map((f) => Number(f.id))].sort((a, b) => a - b));
    expect(m.tables.find((t) => t.name === 'findings')!.columns.map((c) => c.name)).not.toContain('severity');

    // Files: all uploads byte for byte, counted per folder, the symlink reported.
    for (const rel of uploads) {
      const entry = entries.find((e) => e.name === rel);
      expect(entry?.data.equals(fs.readFileSync(path.join(app.dataDir, rel)))).toBe(true);
    }
    const fileCount = Object.values(m.files).reduce((n, f) => n + f.files, 0);
    expect(fileCount).toBe(uploads.length);
    expect(Object.keys(m.files).sort()).toEqual(['uploadedassets', 'uploadedfiles', 'uploadedimages']);
    expect(m.file_errors).toEqual([
      { path: 'uploadedassets/back\\slash.txt', error: expect.stringMatching(/^name cannot be stored in the archive: .*backslash/) },
      { path: 'uploadedassets/link', error: 'symbolic link skipped' },
    ]);
    // Already-compressed media are stored (method 0), text is deflated (method 8).
    expect(entries.find((e) => e.name.endsWith('.png'))!.compressionMethod).toBe(0);
    expect(entries.find((e) => e.name.endsWith('.txt'))!.compressionMethod).toBe(8);
    // Sequences: exact states.
    const seq = m.sequences.find((s) => s.name === 'findings_id_seq')!;
    const live = await app.db.pool.query(`SELECT last_value::text, is_called FROM findings_id_seq`);
    expect(String(seq.last_value)).toBe(live.rows[0].last_value);
    expect(seq.is_called).toBe(live.rows[0].is_called);
    // The audit log has the finished backup with size and sha256 of what was sent.
    const fin = await waitFor(async () => (await app.db.pool.query(`SELECT details FROM backup_log WHERE event = 'backup_finished'`)).rows[0], 'backup_finished');
    expect(fin.details.bytes).toBe(fs.statSync(file).size);
    expect(fin.details.sha256).toBe(createHash('sha256').update(fs.readFileSync(file)).digest('hex'));
  });

  test('rows written while a backup runs are not in it, and nothing else is missing', async () => {
    const big = path.join(app.dataDir, 'uploadedfiles', 'zz-big.bin');
    fs.writeFileSync(big, randomBytes(24 * 1024 * 1024));
    try {
      const before = await app.db.pool.query(`SELECT count(*)::int AS n FROM events`);
      const res = await backupRequest(app, sys, { key: TEST_BACKUP_KEY });
      expect(res.status).toBe(200);
      // The snapshot exists once headers are sent; these writes come after it.
      await app.db.pool.query(`INSERT INTO events (kind) SELECT 'late' FROM generate_series(1, 50)`);
      await app.db.pool.query(`DELETE FROM notes WHERE id IN (SELECT id FROM notes ORDER BY id LIMIT 5)`);
      const file = await saveBody(res, 'concurrent.zip');
      const entries = await readZip(file);
      const events = entries.find((e) => e.name === 'db/public.events.jsonl')!.data.toString().trim().split('\n').map((l) => JSON.parse(l));
      expect(events.length).toBe(before.rows[0].n);
      expect(events.some((e) => e.kind === 'late')).toBe(false);
      const notes = entries.find((e) => e.name === 'db/public.notes.jsonl')!.data.toString().trim().split('\n');
      expect(notes.length).toBe(20);
    } finally {
      fs.rmSync(big);
    }
  });

  test('coffer backup -o FILE makes the same archive as the endpoint', async () => {
    const out = path.join(tmp, 'cli.zip');
    const { code, stderr } = await runCli(['backup', '-o', out], { DATABASE_URL: app.db.url, DATA_DIR: app.dataDir });
    expect(stderr).toMatch(/backup written to/);
    expect(code).toBe(0);
    expect(fs.existsSync(out + '.partial')).toBe(false);
    const cli = await readZip(out);
    const http = await readZip(await saveBody(await backupRequest(app, sys, { key: TEST_BACKUP_KEY }), 'http2.zip'));
    // The same entries; the tables may be in another order (the order the zip took them in).
    expect(cli.map((e) => e.name).sort()).toEqual(http.map((e) => e.name).sort());
    const [mc, mh] = [manifestOf(cli), manifestOf(http)];
    // backup_log and api_tokens (last_used_at) change with every request, the rest must match.
    for (const t of mc.tables.filter((t) => t.name !== 'backup_log' && t.name !== 'api_tokens')) {
      const h = mh.tables.find((x) => x.name === t.name)!;
      expect([t.rows, t.sha256]).toEqual([h.rows, h.sha256]);
    }
    expect(mc.files).toEqual(mh.files);
  });

  test('--compression-level trades speed for size and is validated', async () => {
    const env = { DATABASE_URL: app.db.url, DATA_DIR: app.dataDir };
    const sizes: number[] = [];
    for (const level of ['0', '9']) {
      const out = path.join(tmp, `level${level}.zip`);
      const r = await runCli(['backup', '-o', out, '--compression-level', level], env);
      expect(r.code).toBe(0);
      unzipTest(out);
      sizes.push(fs.statSync(out).size);
    }
    expect(sizes[1]).toBeLessThan(sizes[0]);
    const bad = await runCli(['backup', '-o', path.join(tmp, 'bad.zip'), '--compression-level', '12'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--compression-level must be a whole number from 0 to 9/);
  });

  test('coffer backup refuses to write an archive to a terminal-less "-o -" only when stdout is a TTY, and streams otherwise', async () => {
    const { code, stdout } = await runCli(['backup', '-o', '-'], { DATABASE_URL: app.db.url, DATA_DIR: app.dataDir });
    expect(code).toBe(0);
    expect(stdout.subarray(0, 4).toString('latin1')).toBe('PK\x03\x04');
  });
});

describe('backup edge cases', () => {
  test('an empty database gives a valid archive with empty tables', async () => {
    const app = await startTestApp();
    try {
      const sys = await makeUser(app, 'backup', 'system');
      const file = await saveBody(await backupRequest(app, sys, { key: TEST_BACKUP_KEY }), 'empty.zip');
      unzipTest(file);
      const m = manifestOf(await readZip(file));
      expect(m.tables.find((t) => t.name === 'projects')!.rows).toBe(0);
      expect(m.tables.find((t) => t.name === 'projects')!.sha256).toBe(createHash('sha256').digest('hex'));
      expect(m.files).toEqual({ uploadedfiles: { files: 0, bytes: 0 }, uploadedimages: { files: 0, bytes: 0 }, uploadedassets: { files: 0, bytes: 0 } });
    } finally {
      await app.close();
    }
  });

  test('a client that disconnects mid-stream aborts the backup: no snapshot left open, a failed row in backup_log', async () => {
    const app = await startTestApp();
    try {
      const sys = await makeUser(app, 'backup', 'system');
      await seedDomain(app.db.pool);
      fs.mkdirSync(path.join(app.dataDir, 'uploadedfiles'), { recursive: true });
      fs.writeFileSync(path.join(app.dataDir, 'uploadedfiles', 'big.bin'), randomBytes(48 * 1024 * 1024));
      const ac = new AbortController();
      const res = await fetch(`${app.url}/api/v1/utils/backup/`, {
        method: 'POST',
        headers: { authorization: `Bearer ${sys.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ key: TEST_BACKUP_KEY }),
        signal: ac.signal,
      });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      await reader.read();
      // While it runs, a second request is refused with 409.
      const second = await backupRequest(app, sys, { key: TEST_BACKUP_KEY });
      expect(second.status).toBe(409);
      expect(((await second.json()) as any).code).toBe('E_BACKUP_RUNNING');
      ac.abort();
      const failed = await waitFor(async () => (await app.db.pool.query(`SELECT details FROM backup_log WHERE event = 'backup_failed'`)).rows[0], 'backup_failed row');
      expect(failed.details.error).toMatch(/abort|premature|closed/i);
      const open = await waitFor(async () => {
        const r = await app.db.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND (state LIKE 'idle in transaction%' OR query LIKE 'COPY%')`,
        );
        return r.rows[0].n === 0 ? true : undefined;
      }, 'snapshot connection to close');
      expect(open).toBe(true);
      // The lock is free again: the next backup works.
      const again = await backupRequest(app, sys, { key: TEST_BACKUP_KEY, check: false });
      expect(again.status).toBe(200);
      await again.arrayBuffer();
    } finally {
      await app.close();
    }
  });

  test('uploads without an extension are stored when they do not compress and deflated when they do', async () => {
    const app = await startTestApp();
    try {
      const sys = await makeUser(app, 'backup', 'system');
      const dir = path.join(app.dataDir, 'uploadedimages', 'ab');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'random-blob'), randomBytes(40_000));
      fs.writeFileSync(path.join(dir, 'text-blob'), 'the same line again\n'.repeat(2000));
      const entries = await readZip(await saveBody(await backupRequest(app, sys, { key: TEST_BACKUP_KEY }), 'noext.zip'));
      expect(entries.find((e) => e.name === 'uploadedimages/ab/random-blob')!.compressionMethod).toBe(0);
      expect(entries.find((e) => e.name === 'uploadedimages/ab/text-blob')!.compressionMethod).toBe(8);
    } finally {
      await app.close();
    }
  });

  test('an unreadable upload is recorded in file_errors and the backup goes on', async () => {
    const app = await startTestApp();
    try {
      await seedDomain(app.db.pool);
      writeUploadFiles(app.dataDir, 6);
      const secret = path.join(app.dataDir, 'uploadedfiles', 'locked.txt');
      fs.writeFileSync(secret, 'nobody may read this');
      fs.chmodSync(secret, 0o000);
      const out = path.join(tmp, 'unreadable');
      fs.mkdirSync(out);
      // Root reads everything: as root the backup runs without the capabilities that bypass file
      // permissions (setpriv), so it meets a real EACCES on the mode-000 file.
      const wrapper = process.getuid?.() === 0 ? ['setpriv', '--bounding-set', '-dac_override,-dac_read_search', '--'] : [];
      const { code, stderr } = await runCli(['backup', '-o', path.join(out, 'a.zip')], { DATABASE_URL: app.db.url, DATA_DIR: app.dataDir }, wrapper);
      expect(stderr).toMatch(/1 unreadable files/);
      expect(code).toBe(0);
      const m = manifestOf(await readZip(path.join(out, 'a.zip')));
      expect(m.file_errors).toEqual([{ path: 'uploadedfiles/locked.txt', error: 'EACCES: permission denied' }]);
      expect(m.files.uploadedfiles.files).toBe(2);
    } finally {
      await app.close();
    }
  });
});

function runCli(args: string[], env: Record<string, string>, wrapper: string[] = []): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const argv = [process.execPath, path.join(__dirname, '..', 'bin', 'coffer.js'), ...args];
    const [cmd, ...rest] = [...wrapper, ...argv];
    const child = spawn(cmd, rest, {
      env: { PATH: process.env.PATH, HOME: os.tmpdir(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: tmp,
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
  });
}
