import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fingerprint } from '../support/archive';
import { apiAs, makeUser, startTestApp, TEST_BACKUP_KEY, waitFinal, type TestApp, type TestUser } from '../support/app';
import { seedDomain, writeUploadFiles } from '../support/seed';

jest.setTimeout(60_000);

let app: TestApp;
let sys: TestUser;

const api = apiAs(() => app, () => sys);

/** The database as a restore should give it back; API tokens' last_used_at moves with every call made here. */
async function state(): Promise<Record<string, string>> {
  const f = await fingerprint(app.db.pool, { comparable: true });
  delete f['table api_tokens'];
  return f;
}

beforeAll(async () => {
  app = await startTestApp({}, { jobs: true });
  sys = await makeUser(app, 'sys', 'system');
  await seedDomain(app.db.pool, { events: 500 });
  writeUploadFiles(app.dataDir, 12);
});

afterAll(async () => {
  await app.close();
});

describe('stored backups over HTTP', () => {
  test('POST → 202 queued → finished; the record and the file match; list, download and delete', async () => {
    const created = await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, name: 'first', correlation_id: 'c-1' } });
    expect(created.status).toBe(202);
    expect(created.body).toMatchObject({ name: 'first', status: 'queued', created_by: 'sys', correlation_id: 'c-1', finished_at: null, size: null });
    const done = await waitFinal(api, 'backups', created.body.id);
    expect(done).toMatchObject({ status: 'finished', error: null, encrypted: false });
    expect(done.progress).toMatchObject({ phase: 'done', percent: 100 });
    const file = path.join(app.config.backupDir, `${done.id}.zip`);
    const bytes = fs.readFileSync(file);
    expect(done.size).toBe(bytes.length);
    expect(done.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const record = JSON.parse(fs.readFileSync(path.join(app.config.backupDir, `${done.id}.json`), 'utf8'));
    expect(record).toMatchObject({ id: done.id, name: 'first', size: done.size, sha256: done.sha256 });
    expect(done.tables).toBe(record.summary.tables);
    expect(done.files).toBe(12);

    const list = await api('GET', '/api/v1/backups');
    expect(list.body.backups.map((b: any) => b.id)).toContain(done.id);

    const dl = await api('GET', `/api/v1/backups/${done.id}/download`, { headers: { 'x-backup-key': TEST_BACKUP_KEY } });
    expect(dl.status).toBe(200);
    expect(dl.headers.get('etag')).toBe(`"${done.sha256}"`);
    expect(Buffer.compare(dl.body, bytes)).toBe(0);

    const del = await api('DELETE', `/api/v1/backups/${done.id}`, { headers: { 'x-backup-key': TEST_BACKUP_KEY } });
    expect(del.status).toBe(204);
    expect(fs.existsSync(file)).toBe(false);
    expect((await api('GET', `/api/v1/backups/${done.id}`)).status).toBe(404);
  });

  test('restore from a stored backup, then of its safety backup, gives back the database from before', async () => {
    const before = await state();
    const b = await waitFinal(api, 'backups', (await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY } })).body.id);
    await app.db.pool.query(`DELETE FROM events WHERE id % 2 = 0`);
    const changed = await state();
    expect(changed).not.toEqual(before);
    const r = await api('POST', `/api/v1/backups/${b.id}/restore`, { body: { key: TEST_BACKUP_KEY } });
    expect(r.status).toBe(202);
    const restored = await waitFinal(api, 'restores', r.body.id);
    expect(restored).toMatchObject({ status: 'finished', error: null });
    expect(restored.safety_backup_id).toEqual(expect.any(String));
    expect(await state()).toEqual(before);

    const safety = await api('GET', `/api/v1/backups/${restored.safety_backup_id}`);
    expect(safety.body).toMatchObject({ status: 'finished' });
    expect(safety.body.name).toMatch(/^pre-restore-/);
    sys = await makeUser(app, 'sys2', 'system'); // sessions and tokens ended with the restore
    const queued = await api('POST', `/api/v1/backups/${safety.body.id}/restore`, { body: { key: TEST_BACKUP_KEY, safety_backup: false } });
    expect(queued.status).toBe(202);
    // sys2 is not in the safety backup: once restored, its token is gone, so follow the job directly.
    const undo = await app.jobs!.waitFor('restore', queued.body.id, { timeoutMs: 30_000 });
    expect(undo).toMatchObject({ status: 'finished', safety_backup_id: null, error: null });
    expect(await state()).toEqual(changed);
  });
});
