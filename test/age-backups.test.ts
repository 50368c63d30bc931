/**
 * Backups sealed to age recipients, end to end: over HTTP (streaming and stored, with the configured
 * BACKUP_RECIPIENTS), through the CLI, and against the real `age` binary in both directions.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateAgeIdentity, type AgeIdentity } from '../src/crypto';
import { apiAs, makeUser, startTestApp, waitFinal, TEST_BACKUP_KEY, type TestApp, type TestUser } from './support/app';
import { fingerprint, restoreFile } from './support/archive';
import { runCoffer, type CliRun } from './support/cli';
import { createTestDatabase } from './support/db';
import { filesBelow, seedDomain, writeUploadFiles } from './support/seed';

jest.setTimeout(90_000);

const AGE_MAGIC = Buffer.from('age-encryption.org/v1\n');
const MARKER = 'Sealed Project Name 41c9';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-age-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Writes an identity file as age-keygen would, readable only by its owner. */
function identityFile(identity: AgeIdentity, name: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, `# public key: ${identity.recipient.text}\n${identity.reveal()}\n`, { mode: 0o600 });
  return file;
}

function coffer(args: string[], env: Record<string, string> = {}, input?: string | Buffer): Promise<CliRun> {
  return runCoffer(args, { env: { HOME: tmp, DATA_DIR: path.join(tmp, 'cli-data'), ...env }, input, cwd: tmp });
}

function comparable(f: Record<string, string>): Record<string, string> {
  // Each API request stamps api_tokens.last_used_at, so the live row moves on after the backup.
  delete f['table api_tokens'];
  return f;
}

const operator = generateAgeIdentity();
const auditor = generateAgeIdentity();
const stranger = generateAgeIdentity();

describe('sealed backups over HTTP', () => {
  let app: TestApp;
  let sys: TestUser;
  const api = apiAs(() => app, () => sys);

  beforeAll(async () => {
    app = await startTestApp({ BACKUP_RECIPIENTS: `${operator.recipient.text}, ${auditor.recipient.text}` }, { jobs: true });
    sys = await makeUser(app, 'sys', 'system');
    await seedDomain(app.db.pool);
    await app.db.pool.query('UPDATE projects SET name = $1', [MARKER]);
    writeUploadFiles(app.dataDir, 6);
  });
  afterAll(async () => app.close());

  test('GET /api/v1/backup-policy lists the configured recipients', async () => {
    const r = await api('GET', '/api/v1/backup-policy');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ default_encryption: 'age', recipients: [operator.recipient.text, auditor.recipient.text] });
    const other = await makeUser(app, 'plain-user', 'regular');
    expect((await api('GET', '/api/v1/backup-policy', { token: other.token })).status).toBe(403);
  });

  test('the streaming endpoint seals to the recipients of the body; age -d opens it and coffer restores it with no plaintext on disk', async () => {
    const third = generateAgeIdentity();
    const res = await api('POST', '/api/v1/utils/backup/', { body: { key: TEST_BACKUP_KEY, recipients: [third.recipient.text] } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(/filename="backup-\d{8}T\d{6}Z\.zip\.age"$/);
    const sealed: Buffer = res.body;
    expect(sealed.subarray(0, AGE_MAGIC.length)).toEqual(AGE_MAGIC);
    expect(sealed.includes(Buffer.from(MARKER))).toBe(false);
    const file = path.join(tmp, 'streamed.zip.age');
    fs.writeFileSync(file, sealed);

    // The standard tool opens it: the plaintext is a zip that unzip accepts.
    const plain = execFileSync('age', ['-d', '-i', identityFile(third, 'third.txt'), file]);
    expect(plain.subarray(0, 4)).toEqual(Buffer.from('PK\x03\x04', 'latin1'));
    fs.writeFileSync(path.join(tmp, 'streamed.zip'), plain);
    execFileSync('unzip', ['-tq', path.join(tmp, 'streamed.zip')]);

    // coffer restores it, reading at random offsets: DATA_DIR ends up holding the upload folders only.
    const target = await createTestDatabase();
    const dir = path.join(tmp, 'restore-streamed');
    fs.mkdirSync(dir);
    try {
      await restoreFile(file, target.pool, dir, { key: { kind: 'identities', identities: [third] } });
      expect(comparable(await fingerprint(target.pool, { comparable: true }))).toEqual(comparable(await fingerprint(app.db.pool, { comparable: true })));
      expect(filesBelow(dir).filter((f) => !/\/uploaded(files|images|assets)\//.test(f))).toEqual([]);
    } finally {
      await target.drop();
    }
  });

  test('a malformed recipient in a body is refused with where it was, before anything is produced', async () => {
    const bad = await api('POST', '/api/v1/utils/backup/', { body: { key: TEST_BACKUP_KEY, recipients: [operator.recipient.text, 'age1notarecipient'] } });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'E_AGE_RECIPIENT_INVALID' });
    expect(bad.body.message).toMatch(/^recipients\[1\]: not an age recipient/);
    const both = await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, aes_key: '00'.repeat(32), recipients: [operator.recipient.text] } });
    expect(both.status).toBe(400);
    expect(both.body.message).toBe('give only one of aes_key, recipients');
  });

  test('a stored backup given no key is sealed to BACKUP_RECIPIENTS; a restore job with one identity brings it back, its safety backup sealed to that identity', async () => {
    const before = comparable(await fingerprint(app.db.pool, { comparable: true }));
    const created = await api('POST', '/api/v1/backups', { body: { key: TEST_BACKUP_KEY, name: 'sealed' } });
    expect(created.status).toBe(202);
    expect(created.body).toMatchObject({ encryption: 'age', encrypted: true, recipients: [operator.recipient.text, auditor.recipient.text] });
    const done = await waitFinal(api, 'backups', created.body.id);
    expect(done).toMatchObject({ status: 'finished', encryption: 'age', key_id: null });
    const stored = path.join(app.config.backupDir, `${done.id}.zip.age`);
    expect(fs.readFileSync(stored).subarray(0, AGE_MAGIC.length)).toEqual(AGE_MAGIC);
    const record = JSON.parse(fs.readFileSync(path.join(app.config.backupDir, `${done.id}.json`), 'utf8'));
    expect(record).toMatchObject({ encryption: 'age', recipients: [operator.recipient.text, auditor.recipient.text], object: `${done.id}.zip.age` });

    // Each recipient's identity alone opens the download with the real age binary.
    const dl = await api('GET', `/api/v1/backups/${done.id}/download`, { headers: { 'x-backup-key': TEST_BACKUP_KEY } });
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-disposition')).toBe(`attachment; filename="${done.id}.zip.age"`);
    const dlFile = path.join(tmp, 'stored.zip.age');
    fs.writeFileSync(dlFile, dl.body);
    for (const [who, identity] of [['operator', operator], ['auditor', auditor]] as const) {
      const plain = execFileSync('age', ['-d', '-i', identityFile(identity, `${who}.txt`), dlFile]);
      expect(plain.subarray(0, 4)).toEqual(Buffer.from('PK\x03\x04', 'latin1'));
    }

    // Refused before a job is queued: no identities, the wrong identity.
    const none = await api('POST', `/api/v1/backups/${done.id}/restore`, { body: { key: TEST_BACKUP_KEY } });
    expect(none.status).toBe(400);
    expect(none.body.code).toBe('E_CRYPT_KEY_REQUIRED');
    const wrong = await api('POST', `/api/v1/backups/${done.id}/restore`, { body: { key: TEST_BACKUP_KEY, identities: [stranger.reveal()] } });
    expect(wrong.status).toBe(400);
    expect(wrong.body.code).toBe('E_AGE_NO_MATCH');
    expect(wrong.body.message).toContain('archive is sealed to 2 recipients; none of the 1 identities given matches');
    expect(JSON.stringify(wrong.body)).not.toContain('AGE-SECRET-KEY');
    const garbled = await api('POST', `/api/v1/backups/${done.id}/restore`, { body: { key: TEST_BACKUP_KEY, identities: ['AGE-SECRET-KEY-1QQQQ'] } });
    expect(garbled.status).toBe(400);
    expect(garbled.body).toMatchObject({ code: 'E_AGE_IDENTITY_INVALID' });
    expect(garbled.body.message).toMatch(/^identities\[0\]: not an age identity/);
    expect(garbled.body.message).not.toContain('QQQQ');

    // Change the data, then restore with the auditor's identity only.
    await app.db.pool.query("UPDATE projects SET name = 'changed after the backup'");
    const restore = await api('POST', `/api/v1/backups/${done.id}/restore`, { body: { key: TEST_BACKUP_KEY, identities: [auditor.reveal()] } });
    expect(restore.status).toBe(202);
    const finished = await waitFinal(api, 'restores', restore.body.id);
    expect(finished).toMatchObject({ status: 'finished', error: null });
    expect(comparable(await fingerprint(app.db.pool, { comparable: true }))).toEqual(before);

    // The safety backup holds what was replaced, sealed to the identity that did the restore.
    const safety = await api('GET', `/api/v1/backups/${finished.safety_backup_id}`);
    expect(safety.body).toMatchObject({ status: 'finished', encryption: 'age', recipients: [auditor.recipient.text] });
    const safetyFile = path.join(app.config.backupDir, `${safety.body.id}.zip.age`);
    const safetyZip = path.join(tmp, 'safety.zip');
    execFileSync('age', ['-d', '-i', identityFile(auditor, 'auditor2.txt'), '-o', safetyZip, safetyFile]);
    expect(execFileSync('unzip', ['-p', safetyZip, 'db/public.projects.jsonl']).toString()).toContain('changed after the backup');

    // Nothing decrypted was left beside the stored backups or in DATA_DIR.
    const left = filesBelow(app.dataDir).filter((f) => !/\/uploaded(files|images|assets)\//.test(f));
    expect(left.every((f) => /\/backups\/[0-9a-f-]{36}\.(zip\.age|json)$/.test(f))).toBe(true);
  });
});

describe('the CLI with age keys', () => {
  test('keygen --age writes an identity (0600, never over an existing file) and prints its recipient, as age-keygen -y does', async () => {
    const file = path.join(tmp, 'keygen-id.txt');
    const r = await coffer(['keygen', '--age', '-o', file]);
    expect(r.code).toBe(0);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const recipient = r.stdout.trim();
    expect(recipient).toMatch(/^age1[02-9ac-hj-np-z]{58}$/);
    expect(execFileSync('age-keygen', ['-y', file]).toString().trim()).toBe(recipient);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^# created: .*\n# public key: age1\S+\nAGE-SECRET-KEY-1[0-9A-Z]+\n$/);
    expect(r.stderr).not.toContain('AGE-SECRET-KEY');
    const again = await coffer(['keygen', '--age', '-o', file]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already exists');
    // Without -o the identity file goes to stdout and the recipient to stderr.
    const out = await coffer(['keygen', '--age']);
    expect(out.stdout).toMatch(/^# created: .*\n# public key: (age1\S+)\nAGE-SECRET-KEY-1\S+\n$/);
    expect(out.stderr).toBe(`recipient: ${/# public key: (age1\S+)/.exec(out.stdout)![1]}\n`);
  });

  test('backup --recipient, verify and restore --identity (also from COFFER_IDENTITY_FILE) leave nothing in DATA_DIR or the temp folder', async () => {
    const source = await createTestDatabase({ migrated: true });
    const target = await createTestDatabase();
    try {
      await seedDomain(source.pool);
      const opFile = identityFile(operator, 'cli-operator.txt');
      const archive = path.join(tmp, 'cli.zip.age');
      const b = await coffer(['backup', '-o', archive, '--recipient', operator.recipient.text, '--recipient', auditor.recipient.text], { DATABASE_URL: source.url });
      expect(b.code).toBe(0);
      expect(b.stderr).toContain('sealed to 2 age recipients');
      expect(fs.readFileSync(archive).subarray(0, AGE_MAGIC.length)).toEqual(AGE_MAGIC);

      const v = await coffer(['verify', archive, '--identity', opFile]);
      expect(v.code).toBe(0);
      expect(v.stdout).toContain('(age, sealed to 2 recipients)');
      expect(v.stdout).toContain('archive is restorable');
      const wrong = await coffer(['verify', archive, '--identity', identityFile(stranger, 'cli-stranger.txt')]);
      expect(wrong.code).toBe(15);
      expect(wrong.stderr).toContain('archive is sealed to 2 recipients; none of the 1 identities given matches [E_AGE_NO_MATCH]');
      const noKey = await coffer(['verify', archive]);
      expect(noKey.code).toBe(15);
      expect(noKey.stderr).toContain('E_CRYPT_KEY_REQUIRED');

      const dataDir = path.join(tmp, 'cli-restore-data');
      const tmpDir = path.join(tmp, 'cli-restore-tmp');
      fs.mkdirSync(tmpDir);
      const r = await coffer(['restore', archive, '--yes'], { DATABASE_URL: target.url, DATA_DIR: dataDir, TMPDIR: tmpDir, COFFER_IDENTITY_FILE: opFile });
      expect(r.code).toBe(0);
      expect(await fingerprint(target.pool, { comparable: true })).toEqual(await fingerprint(source.pool, { comparable: true }));
      expect(filesBelow(tmpDir)).toEqual([]);
      expect(filesBelow(dataDir).filter((f) => !/\/uploaded(files|images|assets)\//.test(f))).toEqual([]);
    } finally {
      await source.drop();
      await target.drop();
    }
  });

  test('a zip sealed by age -R (several recipients) decrypts and verifies with coffer; coffer encrypt --recipients-file output opens with age -d', async () => {
    const source = await createTestDatabase({ migrated: true });
    try {
      await seedDomain(source.pool);
      const zip = path.join(tmp, 'plain.zip');
      expect((await coffer(['backup', '-o', zip], { DATABASE_URL: source.url })).code).toBe(0);
      const recipientsFile = path.join(tmp, 'recipients.txt');
      fs.writeFileSync(recipientsFile, `# ops\n${operator.recipient.text}\n\n# audit\n${auditor.recipient.text}\n`);
      const byAge = path.join(tmp, 'by-age.zip.age');
      execFileSync('age', ['-R', recipientsFile, '-o', byAge, zip]);
      const v = await coffer(['verify', byAge, '--identity', identityFile(auditor, 'cli-auditor.txt')]);
      expect(v.code).toBe(0);
      expect(v.stdout).toContain('archive is restorable');
      const out = path.join(tmp, 'by-age-decrypted.zip');
      const d = await coffer(['decrypt', byAge, out, '--identity', identityFile(stranger, 'cli-stranger2.txt'), '--identity', identityFile(operator, 'cli-operator2.txt')]);
      expect(d.code).toBe(0);
      expect(fs.readFileSync(out).equals(fs.readFileSync(zip))).toBe(true);

      const byCoffer = path.join(tmp, 'by-coffer.zip.age');
      const e = await coffer(['encrypt', zip, byCoffer, '--recipients-file', recipientsFile]);
      expect(e.code).toBe(0);
      const plain = execFileSync('age', ['-d', '-i', identityFile(auditor, 'cli-auditor3.txt'), byCoffer]);
      expect(plain.equals(fs.readFileSync(zip))).toBe(true);

      // A truncated age file: decrypt fails and leaves neither OUT nor OUT.partial.
      const cut = path.join(tmp, 'cut.zip.age');
      const whole = fs.readFileSync(byCoffer);
      fs.writeFileSync(cut, whole.subarray(0, whole.length - 100));
      const out2 = path.join(tmp, 'cut.zip');
      const t = await coffer(['decrypt', cut, out2, '--identity', identityFile(operator, 'cli-operator3.txt')]);
      expect(t.code).toBe(16);
      // One chunk cut short: truncation and tampering cannot be told apart, so it is reported as damage.
      expect(t.stderr).toMatch(/\[E_CRYPT_(TRUNCATED|CORRUPT)\]/);
      expect(fs.existsSync(out2) || fs.existsSync(`${out2}.partial`)).toBe(false);
    } finally {
      await source.drop();
    }
  });

  test('bad keys are refused with where they came from, never echoing a secret', async () => {
    const badId = path.join(tmp, 'bad-identity.txt');
    const secret = operator.reveal();
    // One character changed: the checksum fails.
    const typo = secret.slice(0, 20) + (secret[20] === 'Q' ? 'P' : 'Q') + secret.slice(21);
    fs.writeFileSync(badId, `# a comment\n\n${typo}\n`);
    const r = await coffer(['verify', path.join(tmp, 'cli.zip.age'), '--identity', badId]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`identity file ${badId} line 3: not an age identity: its checksum does not match`);
    expect(r.stderr).not.toContain(typo.slice(16));

    const conf = await coffer(['backups', 'list'], { BACKUP_RECIPIENTS: `${operator.recipient.text} age1qqqq` });
    expect(conf.code).toBe(2);
    expect(conf.stderr).toContain('BACKUP_RECIPIENTS entry 2: not an age recipient');
    expect(conf.stderr).toContain('E_CONFIG');

    const both = await coffer(['backup', '-o', path.join(tmp, 'x.zip'), '--key-file', badId, '--recipient', operator.recipient.text]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('give only one kind of key');
  });
});
