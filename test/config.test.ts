import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { loadConfig } from '../src/config';
import { CofferError } from '../src/core/errors';
import { generateAgeIdentity } from '../src/crypto';

describe('config', () => {
  test('defaults: embedded database, ./var, port 8000, backups disabled because BACKUP_KEY is not set', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBeUndefined();
    expect(c.dataDir.endsWith('/var')).toBe(true);
    expect(c.port).toBe(8000);
    expect(c.backupKey).toBeUndefined();
    expect(c.backupDisabledReason).toBe('BACKUP_KEY is not set');
  });

  test('a BACKUP_KEY shorter than 20 characters disables backups and says why', () => {
    const c = loadConfig({ BACKUP_KEY: 'x'.repeat(19) });
    expect(c.backupKey).toBeUndefined();
    expect(c.backupDisabledReason).toBe('BACKUP_KEY is shorter than 20 characters');
    expect(loadConfig({ BACKUP_KEY: 'x'.repeat(20) }).backupKey?.reveal()).toBe('x'.repeat(20));
  });

  test('every problem is reported at once, without echoing values', () => {
    let err: unknown;
    try {
      loadConfig({ PORT: 'eighty', LOG_LEVEL: 'loud', DATABASE_URL: 'mysql://secretpw@host/db', UPLOAD_MAX_BYTES: '-1' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CofferError);
    const e = err as CofferError;
    expect(e.code).toBe('E_CONFIG');
    for (const name of ['PORT', 'LOG_LEVEL', 'DATABASE_URL', 'UPLOAD_MAX_BYTES']) expect(e.message).toContain(name);
    expect(e.message).not.toContain('secretpw');
  });

  test('secrets do not show in JSON, inspect or string conversion of the config', () => {
    const c = loadConfig({ BACKUP_KEY: 'super-secret-backup-key-123', DATABASE_URL: 'postgres://u:hunter2pw@h/db' });
    const views = [JSON.stringify(c), inspect(c, { depth: 5 }), String(c.backupKey), `${c.databaseUrl}`];
    for (const v of views) {
      expect(v).not.toContain('super-secret-backup-key-123');
      expect(v).not.toContain('hunter2pw');
    }
    expect(c.backupKey?.reveal()).toBe('super-secret-backup-key-123');
  });

  test('empty variables count as unset', () => {
    const c = loadConfig({ PORT: '', DATABASE_URL: '', BACKUP_KEY: '' });
    expect(c.port).toBe(8000);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.backupDisabledReason).toBe('BACKUP_KEY is not set');
  });
});

describe('TRUST_PROXY', () => {
  test.each([
    ['false', false],
    ['0', false],
    ['true', 1],
    ['1', 1],
    ['2', 2],
    ['loopback', ['loopback']],
    ['10.0.0.1, 10.0.0.0/8,uniquelocal', ['10.0.0.1', '10.0.0.0/8', 'uniquelocal']],
    ['fd00::/8', ['fd00::/8']],
    ['10.0.0.0/255.0.0.0', ['10.0.0.0/255.0.0.0']],
  ])('%s is read as %p', (value, expected) => {
    expect(loadConfig({ TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });

  test('unset means no proxy is trusted', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
  });

  test.each(['all', 'yes', '-1', '10.0.0.0/33', '10.0.0.0/8,', 'proxy.example.com', '1.5'])('%s is refused with a config error naming TRUST_PROXY', (value) => {
    expect(() => loadConfig({ TRUST_PROXY: value })).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringMatching(/TRUST_PROXY: must be|TRUST_PROXY: empty entry/) }));
  });
});

describe('request body timeouts', () => {
  test('default to 60 s each and take positive milliseconds', () => {
    expect(loadConfig({})).toMatchObject({ requestBodyTimeoutMs: 60000, uploadIdleTimeoutMs: 60000 });
    expect(loadConfig({ REQUEST_BODY_TIMEOUT_MS: '300', UPLOAD_IDLE_TIMEOUT_MS: '500' })).toMatchObject({ requestBodyTimeoutMs: 300, uploadIdleTimeoutMs: 500 });
    expect(() => loadConfig({ REQUEST_BODY_TIMEOUT_MS: '0', UPLOAD_IDLE_TIMEOUT_MS: 'soon' })).toThrow(
      expect.objectContaining({ message: expect.stringMatching(/REQUEST_BODY_TIMEOUT_MS.*UPLOAD_IDLE_TIMEOUT_MS/) }),
    );
  });
});

describe('age settings', () => {
  const [a, b, c] = [generateAgeIdentity(), generateAgeIdentity(), generateAgeIdentity()];

  test('BACKUP_RECIPIENTS and BACKUP_RECIPIENTS_FILE together, each recipient once, in the order given', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-config-'));
    try {
      const file = path.join(dir, 'recipients.txt');
      fs.writeFileSync(file, `# audit\n${b.recipient.text}\n\n${c.recipient.text}\n${a.recipient.text}\n`);
      const conf = loadConfig({ BACKUP_RECIPIENTS: `${a.recipient.text},\n ${b.recipient.text}`, BACKUP_RECIPIENTS_FILE: file });
      expect(conf.backupRecipients.map((r) => r.text)).toEqual([a, b, c].map((i) => i.recipient.text));
      expect(loadConfig({}).backupRecipients).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a bad or unreadable recipients setting is a config error naming it', () => {
    const fail = (env: Record<string, string>): CofferError => {
      try {
        loadConfig(env);
      } catch (e) {
        return e as CofferError;
      }
      throw new Error('loadConfig accepted it');
    };
    const bad = fail({ BACKUP_RECIPIENTS: `${a.recipient.text} age1zzzz` });
    expect(bad.code).toBe('E_CONFIG');
    expect(bad.message).toContain('BACKUP_RECIPIENTS entry 2: not an age recipient');
    const missing = fail({ BACKUP_RECIPIENTS_FILE: '/nonexistent/recipients.txt' });
    expect(missing.code).toBe('E_CONFIG');
    expect(missing.message).toBe('BACKUP_RECIPIENTS_FILE: cannot read /nonexistent/recipients.txt: ENOENT');
  });

  test('COFFER_IDENTITY_FILE is kept as an absolute path, read only when a command needs it', () => {
    expect(loadConfig({ COFFER_IDENTITY_FILE: 'keys/id.txt' }).identityFile).toBe(path.resolve('keys/id.txt'));
  });
});
