import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { BenchError, errorText, runOk, say } from './util';

/** Debian's PostgreSQL 15 (`apt-get install -y postgresql-15`). */
export const PG15_BIN = '/usr/lib/postgresql/15/bin';

/**
 * Settings of the throwaway cluster beyond initdb's defaults. Memory, WAL and checkpoint settings are
 * left at PostgreSQL's defaults on purpose (a stock server, as an operator would have): coffer and
 * pg_dump/pg_restore run against the same server, so the comparison is fair either way. Every statement
 * is logged with its duration (there are only a few hundred per run) so the report can say where the
 * server spends its time; see serverlog.ts.
 */
const CLUSTER_SETTINGS: Record<string, string> = {
  listen_addresses: "'127.0.0.1'",
  log_min_duration_statement: '0',
  log_line_prefix: "'%m [%p] %a '",
  log_checkpoints: 'on',
  log_timezone: "'UTC'",
  timezone: "'UTC'",
};

export interface Server {
  kind: 'cluster' | 'embedded' | 'external';
  /** How it was set up, for the report. */
  description: string;
  version: string;
  major: number;
  /** pg_dump / pg_restore of the server's major version, when installed. */
  toolsDir?: string;
  /** Why pg_dump/pg_restore are not compared, when they are not. */
  toolsMissing?: string;
  /** The server log with every statement's duration (own cluster only). */
  logFile?: string;
  url(database: string): string;
  /** A database to connect to for CREATE/DROP DATABASE and CHECKPOINT. */
  adminUrl: string;
  stop(): Promise<void>;
  /** Synchronous stop for exit handlers. */
  stopSync(): void;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no free port'))));
    });
  });
}

/** As root, PostgreSQL must run as the `postgres` OS user (which Debian's package creates). */
function postgresIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new BenchError("running as root, but there is no 'postgres' OS user to run PostgreSQL as (it comes with apt-get install -y postgresql-15)");
  }
}

export async function serverVersion(url: string): Promise<{ version: string; major: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const res = await client.query<{ v: string; n: string }>(`SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n`);
    return { version: res.rows[0].v, major: Math.floor(Number(res.rows[0].n) / 10000) };
  } finally {
    await client.end();
  }
}

export function pg15Available(): boolean {
  return ['initdb', 'pg_ctl', 'postgres', 'pg_dump', 'pg_restore'].every((b) => fs.existsSync(path.join(PG15_BIN, b)));
}

/**
 * A throwaway PostgreSQL 15 cluster from Debian's binaries, in a new folder under `workDir`, listening
 * on a free loopback port with a random password. pg_ctl starts and stops it.
 */
export async function startCluster(workDir: string): Promise<Server> {
  const ids = postgresIds();
  fs.mkdirSync(workDir, { recursive: true, mode: 0o755 });
  const dir = fs.mkdtempSync(path.join(workDir, 'cluster-'));
  // The postgres user must reach the data folder: every parent is searchable (0755).
  fs.chmodSync(dir, 0o755);
  const dataDir = path.join(dir, 'data');
  const socketDir = path.join(dir, 'run');
  const logFile = path.join(dir, 'server.log');
  fs.mkdirSync(dataDir, { mode: 0o700 });
  fs.mkdirSync(socketDir, { mode: 0o755 });
  fs.writeFileSync(logFile, '');
  const password = randomBytes(18).toString('base64url');
  const pwFile = path.join(dir, 'pw');
  fs.writeFileSync(pwFile, password + '\n', { mode: 0o600 });
  if (ids) for (const p of [dataDir, socketDir, logFile, pwFile]) fs.chownSync(p, ids.uid, ids.gid);
  const spawnOpts = { ...ids, cwd: dir, env: { ...process.env, LC_ALL: 'C', PGPASSWORD: undefined } };

  say(`initialising a throwaway PostgreSQL 15 cluster in ${dataDir}`);
  try {
    await runOk(path.join(PG15_BIN, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwFile}`, '-E', 'UTF8', '--locale=C', '--no-sync'], spawnOpts);
  } finally {
    fs.rmSync(pwFile, { force: true });
  }
  const port = await freePort();
  const settings = { ...CLUSTER_SETTINGS, port: String(port), unix_socket_directories: `'${socketDir}'` };
  fs.appendFileSync(path.join(dataDir, 'postgresql.conf'), '\n# coffer bench\n' + Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  await runOk(path.join(PG15_BIN, 'pg_ctl'), ['-D', dataDir, '-l', logFile, '-w', '-t', '120', 'start'], spawnOpts);

  let stopped = false;
  const stopArgs = ['-D', dataDir, '-m', 'fast', '-w', '-t', '120', 'stop'];
  const base = `postgresql://postgres:${password}@127.0.0.1:${port}/postgres`;
  const { version, major } = await serverVersion(base);
  return {
    kind: 'cluster',
    description: `throwaway cluster (${PG15_BIN}), stock settings, port ${port}`,
    version,
    major,
    toolsDir: PG15_BIN,
    logFile,
    url: (db) => withDatabase(base, db),
    adminUrl: base,
    async stop() {
      if (stopped) return;
      stopped = true;
      await runOk(path.join(PG15_BIN, 'pg_ctl'), stopArgs, spawnOpts).catch((err) => say(`stopping the cluster failed: ${errorText(err)}`));
      fs.rmSync(dir, { recursive: true, force: true });
    },
    stopSync() {
      if (stopped) return;
      stopped = true;
      spawnSync(path.join(PG15_BIN, 'pg_ctl'), stopArgs, { ...spawnOpts, stdio: 'ignore' });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface EmbeddedModule {
  startEmbedded(dataDir: string, log: unknown): Promise<{ url: string; owned: boolean; stop(): Promise<void> }>;
}
interface LogModule {
  createLogger(level: string): unknown;
}

/** coffer's own embedded PostgreSQL 15.18 (no pg_dump/pg_restore in that package). */
export async function startEmbeddedServer(workDir: string, cofferRoot: string, toolsMissing: string): Promise<Server> {
  const dir = path.join(workDir, 'embedded');
  say(`starting coffer's embedded PostgreSQL in ${dir}`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const embedded = require(path.join(cofferRoot, 'dist', 'db', 'embedded.js')) as EmbeddedModule;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const logs = require(path.join(cofferRoot, 'dist', 'log', 'index.js')) as LogModule;
  const server = await embedded.startEmbedded(dir, logs.createLogger('warn'));
  const { version, major } = await serverVersion(server.url);
  let stopped = false;
  return {
    kind: 'embedded',
    description: `coffer's embedded PostgreSQL (${dir})`,
    version,
    major,
    toolsMissing,
    url: (db) => withDatabase(server.url, db),
    adminUrl: withDatabase(server.url, 'postgres'),
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      if (server.owned) fs.rmSync(dir, { recursive: true, force: true });
    },
    stopSync() {
      // The embedded server is a child of this process; it is told to stop when the process exits.
    },
  };
}

export async function externalServer(url: string): Promise<Server> {
  const { version, major } = await serverVersion(url);
  const tools = pg15Available() && major === 15;
  return {
    kind: 'external',
    description: `server given by --database-url (${new URL(url).host})`,
    version,
    major,
    toolsDir: tools ? PG15_BIN : undefined,
    toolsMissing: tools ? undefined : pg15Available() ? `the server is PostgreSQL ${major}, the installed pg_dump/pg_restore are 15` : missingToolsMessage(),
    url: (db) => withDatabase(url, db),
    adminUrl: url,
    async stop() {},
    stopSync() {},
  };
}

export function missingToolsMessage(): string {
  return `PostgreSQL 15 binaries not found in ${PG15_BIN}; to compare with pg_dump/pg_restore install them: apt-get install -y postgresql-15`;
}

/** Short-lived admin connections (CREATE/DROP DATABASE, CHECKPOINT, generation, checks). */
export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A new empty database, or with `template` a file-level copy of that one (which must have no connections). */
export async function createDatabase(server: Server, name: string, template?: string): Promise<void> {
  await withClient(server.adminUrl, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${quoteIdent(name)}${template ? ` TEMPLATE ${quoteIdent(template)}` : ''}`);
  });
}

export async function dropDatabase(server: Server, name: string): Promise<void> {
  await withClient(server.adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
}

/** Writes dirty buffers out before a measurement, so one run does not pay for the last one's writes. */
export async function checkpoint(server: Server): Promise<void> {
  await withClient(server.adminUrl, (c) => c.query('CHECKPOINT')).catch(() => undefined);
}
