/**
 * The deployment files, checked without a Docker engine: docker-compose.yml and the Dockerfile are
 * parsed and every file, variable, volume and command they name is looked up; scripts/restore.sh runs
 * against a fake `docker` that records its arguments (and, for one end-to-end test, runs the commands
 * it is given the way a container would, with the mounted paths mapped back to the host); every coffer
 * command in RESTORE.md is checked against the CLI's own --help.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CONFIG_VARIABLES } from '../../src/config';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { seedDomain, writeUploadFiles } from '../support/seed';

import { load as parseYaml } from 'js-yaml';

const execFileP = promisify(execFile);

const ROOT = path.resolve(__dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const COMPOSE_FILE = path.join(DEPLOY, 'docker-compose.yml');
const DOCKERFILE = path.join(DEPLOY, 'Dockerfile');
const RESTORE_SH = path.join(ROOT, 'scripts', 'restore.sh');
const RUNBOOK = path.join(DEPLOY, 'RESTORE.md');
const CLI = path.join(ROOT, 'bin', 'coffer.js');

/** The CLI runs from dist/: build it when a fresh checkout has none. */
function ensureBuilt(): void {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) {
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  }
}

// ---- docker-compose.yml ------------------------------------------------------------------------------

type Yaml = Record<string, any>;
const compose = parseYaml(fs.readFileSync(COMPOSE_FILE, 'utf8')) as Yaml;
const services = compose.services as Record<string, Yaml>;

/** Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}. */
const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g;
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(VARIABLE, (_m, name: string, op: string | undefined, arg: string | undefined) => {
    const v = env[name];
    if (op === ':-') return v ? v : (arg ?? '');
    if (op === '-') return v !== undefined ? v : (arg ?? '');
    if (op === ':?' || op === '?') {
      if (op === ':?' ? !v : v === undefined) throw new Error(`compose would refuse to start: ${name} ${arg}`);
      return v;
    }
    return v ?? '';
  });
}

function stringsIn(node: unknown): string[] {
  if (typeof node === 'string') return [node];
  if (Array.isArray(node)) return node.flatMap(stringsIn);
  if (node && typeof node === 'object') return Object.values(node).flatMap(stringsIn);
  return [];
}

/** The environment of a service as a map, whichever of the two compose forms it uses. */
function environmentOf(service: Yaml): Record<string, string> {
  const env = service.environment ?? {};
  if (!Array.isArray(env)) return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]));
  return Object.fromEntries((env as string[]).map((line) => [line.split('=')[0], line.slice(line.indexOf('=') + 1)]));
}

/** Variables set (commented or not) in .env.example. */
function envExampleVariables(): string[] {
  const text = fs.readFileSync(path.join(DEPLOY, '.env.example'), 'utf8');
  return [...text.matchAll(/^([A-Za-z_][A-Za-z0-9_]*)=/gm)].map((m) => m[1]);
}

/** Named volumes a service mounts (short syntax `name:/path[:mode]` or long syntax with type volume). */
function namedVolumeMounts(service: Yaml): { name: string; target: string }[] {
  return ((service.volumes ?? []) as unknown[]).flatMap((v) => {
    if (typeof v === 'string') {
      const [source, target] = v.split(':');
      return target !== undefined && !/^[./~]/.test(source) ? [{ name: source, target }] : [];
    }
    const long = v as Yaml;
    return long.type === 'volume' ? [{ name: String(long.source), target: String(long.target) }] : [];
  });
}

describe('deploy/docker-compose.yml', () => {
  test('builds the app from the repository root with deploy/Dockerfile, next to its ignore file', () => {
    expect(Object.keys(services).sort()).toEqual(['app', 'db']);
    const build = services.app.build as Yaml;
    const context = path.resolve(DEPLOY, build.context);
    expect(context).toBe(ROOT);
    const dockerfile = path.resolve(context, build.dockerfile);
    expect(dockerfile).toBe(DOCKERFILE);
    expect(fs.existsSync(dockerfile)).toBe(true);
    // BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile.
    expect(fs.existsSync(`${dockerfile}.dockerignore`)).toBe(true);
    expect(services.db.image).toBe('postgres:15');
  });

  test('every ${VAR} it uses is in .env.example, and every variable there is used', () => {
    const used = new Set(stringsIn(compose).flatMap((s) => [...s.matchAll(VARIABLE)].map((m) => m[1])));
    const documented = envExampleVariables();
    expect([...used].sort()).toEqual([...new Set(documented)].sort());
  });

  test('the app starts without BACKUP_KEY (no ${VAR:?} anywhere) and every value interpolates with an empty .env', () => {
    for (const s of stringsIn(compose)) expect(() => interpolate(s, {})).not.toThrow();
    expect(environmentOf(services.app).BACKUP_KEY).toBe('${BACKUP_KEY:-}');
  });

  test("DATABASE_URL points at the db service, with PostgreSQL's user, database and password", () => {
    const app = environmentOf(services.app);
    const db = environmentOf(services.db);
    for (const env of [{}, { POSTGRES_PASSWORD: 'e1f2a3b4c5d6' }] as Record<string, string>[]) {
      const url = new URL(interpolate(app.DATABASE_URL, env));
      expect(url.protocol).toBe('postgresql:');
      expect(url.hostname).toBe('db');
      expect(url.port).toBe('5432');
      expect(decodeURIComponent(url.username)).toBe(interpolate(db.POSTGRES_USER, env));
      expect(decodeURIComponent(url.password)).toBe(interpolate(db.POSTGRES_PASSWORD, env));
      expect(url.pathname).toBe(`/${interpolate(db.POSTGRES_DB, env)}`);
    }
  });

  test('the app gets DATA_DIR on the app-data volume, BACKUP_KEY, and only variables coffer reads', () => {
    const env = environmentOf(services.app);
    for (const name of ['DATABASE_URL', 'DATA_DIR', 'BACKUP_KEY']) expect(env).toHaveProperty(name);
    for (const name of Object.keys(env)) expect(CONFIG_VARIABLES).toContain(name);
    expect(namedVolumeMounts(services.app)).toContainEqual({ name: 'app-data', target: env.DATA_DIR });
    expect(env.DATA_DIR).toBe('/data');
    expect(namedVolumeMounts(services.db)).toContainEqual({ name: 'db-data', target: '/var/lib/postgresql/data' });
  });

  test('every named volume is declared at the top level, and every declared volume is used', () => {
    const used = Object.values(services).flatMap((s) => namedVolumeMounts(s).map((m) => m.name));
    expect([...new Set(used)].sort()).toEqual(Object.keys(compose.volumes ?? {}).sort());
  });

  test('the app waits for a healthy database; both restart unless stopped', () => {
    expect(services.app.depends_on).toEqual({ db: { condition: 'service_healthy' } });
    const test = services.db.healthcheck?.test as string[];
    expect(test.join(' ')).toMatch(/pg_isready\b/);
    expect(test.join(' ')).toContain(`-U ${environmentOf(services.db).POSTGRES_USER}`);
    for (const s of Object.values(services)) expect(s.restart).toBe('unless-stopped');
  });

  test('publishes container port 8000, on host port 8000 unless COFFER_PUBLISH says otherwise', () => {
    const ports = services.app.ports as string[];
    expect(ports).toHaveLength(1);
    expect(interpolate(ports[0], {})).toBe('8000:8000');
    expect(interpolate(ports[0], { COFFER_PUBLISH: '127.0.0.1:8000' })).toBe('127.0.0.1:8000:8000');
  });
});

// ---- Dockerfile --------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
  /** Index of the FROM stage it belongs to; -1 before the first FROM. */
  stage: number;
}

function parseDockerfile(text: string): { instructions: Instruction[]; stages: { image: string; name?: string }[] } {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && current === '')) continue;
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push((current + line).trim());
    current = '';
  }
  const globalArgs: Record<string, string> = {};
  const stages: { image: string; name?: string }[] = [];
  const instructions: Instruction[] = [];
  for (const line of logical.filter(Boolean)) {
    const [, op, args] = /^(\S+)\s*(.*)$/.exec(line)!;
    const upper = op.toUpperCase();
    if (upper === 'ARG' && stages.length === 0) {
      const [name, value] = args.split('=');
      globalArgs[name] = value ?? '';
    }
    if (upper === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      stages.push({ image: interpolate(m[1], globalArgs), name: m[2] });
    }
    instructions.push({ op: upper, args, stage: stages.length - 1 });
  }
  return { instructions, stages };
}

/** COPY sources and destination (shell form), without its --flags. */
function copyParts(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
  const paths = words.filter((w) => !w.startsWith('--'));
  return { from, sources: paths.slice(0, -1), dest: paths[paths.length - 1] };
}

/** The .dockerignore rules: the last pattern that matches a path or one of its parent folders decides. */
function dockerIgnored(rel: string, ignoreText: string): boolean {
  const rules = ignoreText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!');
      const glob = (negated ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
      const re = glob
        .split('')
        .map((c, i, all) => (c === '*' ? (all[i + 1] === '*' ? '' : all[i - 1] === '*' ? '.*' : '[^/]*') : c === '?' ? '[^/]' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('');
      return { negated, re: new RegExp(`^${re}$`) };
    });
  const parts = rel.split('/');
  let ignored = false;
  for (const rule of rules) {
    if (parts.some((_p, i) => rule.re.test(parts.slice(0, i + 1).join('/')))) ignored = !rule.negated;
  }
  return ignored;
}

/** A local HTTP server answering /api/v1/health with the given status. */
async function healthServer(status: () => number): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const code = req.url === '/api/v1/health' ? status() : 404;
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify({ status: code === 200 ? 'ok' : 'degraded' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('deploy/Dockerfile', () => {
  const dockerfileText = fs.readFileSync(DOCKERFILE, 'utf8');
  const { instructions, stages } = parseDockerfile(dockerfileText);
  const runtimeStage = stages.length - 1;
  const inRuntime = (op: string) => instructions.filter((i) => i.op === op && i.stage === runtimeStage);

  test('has a build stage on node:24-bookworm-slim that runs npm ci and npm run build, then drops dev dependencies', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.image).toBe('node:24-bookworm-slim');
    const build = stages.findIndex((s) => s.name === 'build');
    expect(build).toBeGreaterThanOrEqual(0);
    const runs = instructions.filter((i) => i.op === 'RUN' && i.stage === build).map((i) => i.args);
    const order = ['npm ci', 'npm run build', 'npm prune --omit=dev'].map((cmd) => runs.findIndex((r) => r.includes(cmd)));
    for (const index of order) expect(index).toBeGreaterThanOrEqual(0);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    // npm run build is the script the repository defines, and it writes dist/.
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.scripts.build).toContain('tsconfig.build.json');
    expect(JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8')).compilerOptions.outDir).toBe('dist');
  });

  test('every COPY source exists in the repository and is let in by Dockerfile.dockerignore', () => {
    const ignore = fs.readFileSync(`${DOCKERFILE}.dockerignore`, 'utf8');
    const copies = instructions.filter((i) => i.op === 'COPY' || i.op === 'ADD').map((i) => copyParts(i.args));
    const fromContext = copies.filter((c) => c.from === undefined).flatMap((c) => c.sources);
    expect(fromContext.length).toBeGreaterThan(0);
    for (const source of fromContext) {
      expect(fs.existsSync(path.join(ROOT, source)) ? source : `${source} (missing)`).toBe(source);
      expect(dockerIgnored(source, ignore) ? `${source} (ignored)` : source).toBe(source);
    }
    // The runtime takes the pruned node_modules and the compiled dist from the build stage.
    const fromBuild = copies.filter((c) => c.from === 'build').flatMap((c) => c.sources);
    expect(fromBuild.sort()).toEqual(['/app/dist', '/app/node_modules']);
  });

  test('the ignore file keeps secrets, archives and host builds out of the context', () => {
    const ignore = fs.readFileSync(`${DOCKERFILE}.dockerignore`, 'utf8');
    for (const rel of ['.env', 'deploy/.env', 'backup.key', 'backup-20260101T000000Z.zip.crypt', 'node_modules/pg/package.json', 'dist/cli/main.js', 'var/pg/PG_VERSION', '.git/config']) {
      expect(dockerIgnored(rel, ignore) ? rel : `${rel} (sent)`).toBe(rel);
    }
    expect(dockerIgnored('src/cli/main.ts', ignore)).toBe(false);
    expect(dockerIgnored('migrations/001_init.sql', ignore)).toBe(false);
  });

  test('runs bin/coffer.js serve from the copied files, as a non-root user', () => {
    const entrypoint = JSON.parse(inRuntime('ENTRYPOINT')[0].args) as string[];
    const cmd = JSON.parse(inRuntime('CMD')[0].args) as string[];
    expect(entrypoint[0]).toBe('node');
    // Node options (the same as bin/coffer.js's own shebang) come before the script.
    const script = 1 + entrypoint.slice(1).findIndex((a) => !a.startsWith('--'));
    const shebang = fs.readFileSync(path.join(ROOT, 'bin/coffer.js'), 'utf8').split('\n')[0].split(/\s+/);
    expect(shebang.slice(0, 3)).toEqual(['#!/usr/bin/env', '-S', 'node']);
    expect(entrypoint.slice(1, script)).toEqual(shebang.slice(3));
    expect(entrypoint.slice(1, script)).toContain('--max-semi-space-size=2');
    expect(entrypoint[script]).toMatch(/(^|\/)bin\/coffer\.js$/);
    expect(cmd).toEqual(['serve']);
    // The entrypoint's file is where WORKDIR and `COPY bin ./bin` put the repository's bin/coffer.js,
    // which loads dist/cli/main.js, compiled from src/cli/main.ts.
    const workdir = inRuntime('WORKDIR').pop()!.args;
    const binCopy = inRuntime('COPY').map((i) => copyParts(i.args)).find((c) => c.sources.includes('bin'))!;
    expect(path.posix.resolve(workdir, entrypoint[script])).toBe(path.posix.join(path.posix.resolve(workdir, binCopy.dest), 'coffer.js'));
    expect(fs.readFileSync(CLI, 'utf8')).toContain("require('../dist/cli/main.js')");
    expect(fs.existsSync(path.join(ROOT, 'src', 'cli', 'main.ts'))).toBe(true);
    // Migrations are read at run time from ../../migrations relative to dist/db.
    const migrationsCopy = inRuntime('COPY').map((i) => copyParts(i.args)).find((c) => c.sources.includes('migrations'))!;
    const distCopy = inRuntime('COPY').map((i) => copyParts(i.args)).find((c) => c.sources.includes('/app/dist'))!;
    expect(path.posix.resolve(workdir, distCopy.dest, 'db', '..', '..', 'migrations')).toBe(path.posix.resolve(workdir, migrationsCopy.dest));

    const user = inRuntime('USER').pop()!.args.split(':')[0];
    expect(user).toBe('10001');
  });

  test('sets DATA_DIR=/data, HOST=0.0.0.0, PORT=8000 and exposes that port', () => {
    const env = Object.fromEntries(
      inRuntime('ENV')
        .flatMap((i) => i.args.split(/\s+/))
        .map((kv) => kv.split('=')),
    );
    expect(env).toMatchObject({ DATA_DIR: '/data', HOST: '0.0.0.0', PORT: '8000' });
    expect(inRuntime('EXPOSE').map((i) => i.args)).toEqual(['8000']);
    for (const name of ['DATA_DIR', 'HOST', 'PORT']) expect(CONFIG_VARIABLES).toContain(name);
  });

  test('its HEALTHCHECK passes on 200 from /api/v1/health and fails on 503 or no answer', async () => {
    const healthcheck = inRuntime('HEALTHCHECK')[0].args;
    const argv = JSON.parse(healthcheck.slice(healthcheck.indexOf('CMD') + 3).trim()) as string[];
    expect(argv[0]).toBe('node');
    expect(argv.join(' ')).toContain('/api/v1/health');
    let status = 200;
    const server = await healthServer(() => status);
    const run = (port: number) =>
      execFileP(process.execPath, argv.slice(1), { env: { PATH: process.env.PATH, PORT: String(port) } }).then(
        () => 0,
        (err: { code?: number }) => err.code ?? -1,
      );
    try {
      expect(await run(server.port)).toBe(0);
      status = 503;
      expect(await run(server.port)).toBe(1);
    } finally {
      await server.close();
    }
    expect(await run(server.port)).toBe(1); // nothing listens any more
  });
});

// ---- scripts/restore.sh -------------------------------------------------------------------------------

/**
 * A stand-in for the docker CLI. It appends one JSON line per call to FAKE_DOCKER_LOG: the arguments,
 * and for each `-v SRC:DST[:ro]` what SRC was at that moment. FAKE_APP_RUNNING makes `ps` list the app;
 * FAKE_FAIL makes every call whose arguments contain that text fail with FAKE_FAIL_STATUS.
 * With FAKE_EXECUTE, `run` and `exec` do what the container would: `--entrypoint node` runs node, a
 * plain `run app CMD` runs bin/coffer.js CMD, `exec app node` runs node, with container paths of the
 * mounts mapped to their host paths and the app's environment from FAKE_APP_ENV.
 */
const FAKE_DOCKER = `#!/usr/bin/env node
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const args = process.argv.slice(2);
const mounts = [];
for (let i = 0; i < args.length - 1; i++) {
  if (args[i] !== '-v') continue;
  const [src, dst, mode] = args[i + 1].split(':');
  const m = { src, dst, readOnly: mode === 'ro', exists: fs.existsSync(src) };
  if (m.exists) {
    const st = fs.statSync(src);
    m.mode = st.mode & 0o777;
    if (st.size < 1024) m.content = fs.readFileSync(src, 'utf8');
  }
  mounts.push(m);
}
const st0 = fs.fstatSync(0);
const stdin = process.stdin.isTTY ? 'tty' : st0.isFIFO() || st0.isSocket() ? 'pipe' : st0.isCharacterDevice() ? 'null' : st0.isFile() ? 'file' : 'other';
fs.appendFileSync(process.env.FAKE_DOCKER_LOG, JSON.stringify({ args, mounts, stdin }) + '\\n');
if (process.env.FAKE_FAIL && args.join(' ').includes(process.env.FAKE_FAIL)) {
  process.stderr.write('fake docker: failing on purpose\\n');
  process.exit(Number(process.env.FAKE_FAIL_STATUS || 3));
}
const sub = args[3];
if (sub === 'ps') process.stdout.write(process.env.FAKE_APP_RUNNING ? 'f00dfeed\\n' : '');
if (!process.env.FAKE_EXECUTE || (sub !== 'run' && sub !== 'exec')) process.exit(0);

const withValue = new Set(['-v', '-e', '-u', '--user', '-w', '--entrypoint', '--name']);
const env = { PATH: process.env.PATH, ...JSON.parse(process.env.FAKE_APP_ENV || '{}') };
let entrypoint;
let i = 4;
for (; i < args.length && args[i].startsWith('-'); i++) {
  if (!withValue.has(args[i])) continue;
  if (args[i] === '-e') {
    const [k, ...v] = args[i + 1].split('=');
    env[k] = v.length ? v.join('=') : process.env[k];
  }
  if (args[i] === '--entrypoint') entrypoint = args[i + 1];
  i++;
}
const toHost = (a) => {
  for (const m of mounts) if (a === m.dst || a.startsWith(m.dst + '/')) return m.src + a.slice(m.dst.length);
  return a;
};
let command = args.slice(i + 1).map(toHost);
if (sub === 'run' && entrypoint === undefined) command = ['node', path.join(process.env.FAKE_REPO_ROOT, 'bin', 'coffer.js'), ...command];
else if (entrypoint !== undefined) command = [entrypoint, ...command];
const r = spawnSync(command[0], command.slice(1), { env, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
`;

interface DockerCall {
  args: string[];
  mounts: { src: string; dst: string; readOnly: boolean; exists: boolean; mode?: number; content?: string }[];
  /** What the call's standard input was: 'pipe' (the script's own), 'null' (/dev/null), 'tty'... */
  stdin: string;
}

interface ScriptRun {
  status: number;
  stdout: string;
  stderr: string;
  calls: DockerCall[];
  /** Each call's compose sub-command and what follows, without `compose -f FILE`. */
  commands: string[][];
}

let work: string;
let fakeBin: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-deploy-test-'));
  fakeBin = path.join(work, 'bin');
  fs.mkdirSync(fakeBin);
  fs.writeFileSync(path.join(fakeBin, 'docker'), FAKE_DOCKER, { mode: 0o755 });
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** Runs restore.sh (asynchronously: the fake may call back into a server of this process). */
async function runRestore(args: string[], opts: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<ScriptRun> {
  const log = path.join(work, `docker-${Date.now()}-${Math.random().toString(16).slice(2)}.log`);
  fs.writeFileSync(log, '');
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? os.tmpdir(),
    TMPDIR: work,
    USER: 'operator',
    COMPOSE: `${path.join(fakeBin, 'docker')} compose`,
    FAKE_DOCKER_LOG: log,
    FAKE_REPO_ROOT: ROOT,
    ...opts.env,
  };
  const { status, stdout, stderr } = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve, reject) => {
    // Standard input is a pipe (with `input`, if given): no terminal, as under cron or CI.
    const child = spawn(RESTORE_SH, args, { cwd: opts.cwd ?? work, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    // A child that exits without reading its input closes the pipe: EPIPE here is not the test's failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
    child.on('error', reject);
    child.on('close', (code) => resolve({ status: code ?? -1, stdout: out, stderr: err }));
  });
  const calls = fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as DockerCall);
  // Every call names the deployment's compose file, whatever the caller's folder.
  for (const c of calls) expect(c.args.slice(0, 3)).toEqual(['compose', '-f', fs.realpathSync(COMPOSE_FILE)]);
  return { status, stdout, stderr, calls, commands: calls.map((c) => c.args.slice(3)) };
}

function writeFile(name: string, content: string, mode = 0o600): string {
  const file = path.join(work, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
  return file;
}

const KEY = 'ab'.repeat(32);

/** Index of the first command that starts with the given words (after the compose -f FILE prefix). */
function indexOf(commands: string[][], ...words: string[]): number {
  return commands.findIndex((c) => words.every((w, i) => c[i] === w));
}

const isRestoreRun = (c: string[]) => c[0] === 'run' && c.includes('restore') && !c.includes('--entrypoint');

describe('scripts/restore.sh', () => {
  test('--help prints the usage and runs nothing', async () => {
    const r = await runRestore(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: scripts\/restore\.sh FILE/);
    for (const flag of ['--key-file', '--passphrase', '--skip-files', '--skip-database', '--force', '--yes']) expect(r.stdout).toContain(flag);
    expect(r.calls).toEqual([]);
  });

  test('refuses a missing archive, or a missing key file, before any compose command', async () => {
    const missing = await runRestore([path.join(work, 'no-such-backup.zip')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain(`archive not found: ${path.join(work, 'no-such-backup.zip')}`);
    expect(missing.calls).toEqual([]);

    const archive = writeFile('present.zip', 'zip');
    const noKey = await runRestore([archive, '--key-file', path.join(work, 'no-such.key')]);
    expect(noKey.status).toBe(2);
    expect(noKey.stderr).toContain('key file not found');
    expect(noKey.calls).toEqual([]);

    const none = await runRestore([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('name the archive file');
    expect(none.calls).toEqual([]);
  });

  test('checks readability, starts the db, stops the app, restores read-only with --yes, starts the app and checks its health', async () => {
    const archive = writeFile('backups/backup.zip', 'zip', 0o644);
    // A path relative to the caller's folder, run from there: the mount must use the absolute path.
    const r = await runRestore(['backups/backup.zip'], { cwd: work });
    expect(r.stderr).toContain('done:');
    expect(r.status).toBe(0);
    const c = r.commands;

    const preflight = c.findIndex((x) => x[0] === 'run' && x.includes('--entrypoint'));
    const dbUp = indexOf(c, 'up', '-d', '--wait', 'db');
    const appStop = indexOf(c, 'stop', 'app');
    const restore = c.findIndex(isRestoreRun);
    const appUp = indexOf(c, 'up', '-d', 'app');
    const health = indexOf(c, 'exec', '-T', 'app', 'node', '-e');
    for (const i of [preflight, dbUp, appStop, restore, appUp, health]) expect(i).toBeGreaterThanOrEqual(0);
    expect([preflight, dbUp, appStop, restore, appUp, health]).toEqual([...[preflight, dbUp, appStop, restore, appUp, health]].sort((a, b) => a - b));
    expect(c[health].join(' ')).toContain('/api/v1/health');

    const run = c[restore];
    expect(run.slice(0, 3)).toEqual(['run', '--rm', '--no-deps']);
    expect(run).toContain('-T'); // standard input is not a terminal here
    const volume = run[run.indexOf('-v') + 1];
    expect(volume).toBe(`${fs.realpathSync(archive)}:/restore/archive/backup.zip:ro`);
    expect(r.calls[restore].mounts[0]).toMatchObject({ exists: true, readOnly: true });
    expect(run.slice(run.indexOf('app'))).toEqual(['app', 'restore', '/restore/archive/backup.zip', '--yes']);
    expect(run).toContain('USER=operator'); // names the operator in backup_log
    // Only the restore reads the script's standard input (a piped key or passphrase); the other
    // containers get /dev/null, so that docker cannot forward it to them.
    expect(r.calls[restore].stdin).toBe('pipe');
    expect(r.calls[preflight].stdin).toBe('null');
    expect(r.calls[health].stdin).toBe('null');
    // The preflight reads the same mounted path.
    expect(c[preflight]).toContain(volume);
    expect(c[preflight].slice(-1)).toEqual(['/restore/archive/backup.zip']);
  });

  test('hands a private archive over as a readable copy next to it, removed afterwards', async () => {
    const archive = writeFile('private/backup.zip', 'private zip', 0o600);
    const r = await runRestore([archive]);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('temporary readable copy');
    const i = r.commands.findIndex(isRestoreRun);
    const mount = r.calls[i].mounts.find((m) => m.dst === '/restore/archive/backup.zip')!;
    expect(mount).toMatchObject({ readOnly: true, exists: true, mode: 0o644, content: 'private zip' });
    // In a folder of its own next to the archive (mktemp -d: only the operator may enter it).
    const stage = path.dirname(path.dirname(mount.src));
    expect(path.dirname(stage)).toBe(fs.realpathSync(path.dirname(archive)));
    expect(path.basename(stage)).toMatch(/^\.coffer-restore\./);
    expect(path.basename(mount.src)).toBe('backup.zip');
    // The preflight checked that very copy.
    const preflight = r.commands.findIndex((x) => x[0] === 'run' && x.includes('--entrypoint'));
    expect(r.calls[preflight].mounts.find((m) => m.dst === '/restore/archive/backup.zip')!.src).toBe(mount.src);
    expect(fs.existsSync(stage)).toBe(false);
    expect(fs.statSync(archive).mode & 0o777).toBe(0o600);
  });

  test('mounts a readable copy of --key-file read-only and passes its container path; the copy is removed afterwards', async () => {
    const archive = writeFile('enc/backup.zip.crypt', 'crypt', 0o644);
    const key = writeFile('enc/backup.key', `${KEY}\n`, 0o600);
    const r = await runRestore([archive, '--key-file', key]);
    expect(r.status).toBe(0);
    const i = r.commands.findIndex(isRestoreRun);
    const run = r.commands[i];
    const keyMount = r.calls[i].mounts.find((m) => m.dst === '/restore/key')!;
    expect(keyMount).toMatchObject({ readOnly: true, exists: true, mode: 0o644, content: `${KEY}\n` });
    expect(keyMount.src).not.toBe(key);
    // The archive, readable by all, is mounted as it is.
    expect(r.calls[i].mounts.find((m) => m.dst === '/restore/archive/backup.zip.crypt')!.src).toBe(fs.realpathSync(archive));
    expect(run.slice(run.indexOf('app'))).toEqual(['app', 'restore', '/restore/archive/backup.zip.crypt', '--yes', '--key-file', '/restore/key']);
    expect(run.join(' ')).not.toContain(key);
    // The original key file is untouched, and the copy and its folder are gone.
    expect(fs.statSync(key).mode & 0o777).toBe(0o600);
    expect(fs.existsSync(path.dirname(keyMount.src))).toBe(false);
    // --key-file=PATH works the same.
    const eq = await runRestore([archive, `--key-file=${key}`]);
    expect(eq.status).toBe(0);
    expect(eq.commands.find(isRestoreRun)).toContain('/restore/key');
  });

  test('mounts a readable copy of --database-url-file read-only and passes its container path, never the URL', async () => {
    const archive = writeFile('url/backup.zip', 'zip', 0o644);
    const url = 'postgresql://u:url-file-password@elsewhere/db';
    const urlFile = writeFile('url/db.url', `${url}\n`, 0o600);
    const r = await runRestore([archive, '--skip-files', '--database-url-file', urlFile]);
    expect(r.status).toBe(0);
    const i = r.commands.findIndex(isRestoreRun);
    const run = r.commands[i];
    const mount = r.calls[i].mounts.find((m) => m.dst === '/restore/database-url')!;
    expect(mount).toMatchObject({ readOnly: true, exists: true, mode: 0o644, content: `${url}\n` });
    expect(run.slice(run.indexOf('app'))).toEqual(['app', 'restore', '/restore/archive/backup.zip', '--yes', '--skip-files', '--database-url-file', '/restore/database-url']);
    expect(r.commands.flat().join(' ')).not.toContain('url-file-password');
    expect(fs.existsSync(path.dirname(mount.src))).toBe(false);
    const eq = await runRestore([archive, `--database-url-file=${urlFile}`]);
    expect(eq.commands.find(isRestoreRun)).toContain('/restore/database-url');
    const missing = await runRestore([archive, '--database-url-file', path.join(path.dirname(urlFile), 'none.url')]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('database URL file not found');
  });

  test('passes coffer restore options through, whatever their position', async () => {
    const archive = writeFile('opts/backup.zip', 'zip');
    const r = await runRestore(['--skip-files', archive, '--force', '--database-url', 'postgresql://u:p@elsewhere/db', '--passphrase', '--yes']);
    expect(r.status).toBe(0);
    const run = r.commands.find(isRestoreRun)!;
    expect(run.slice(run.indexOf('app'))).toEqual(['app', 'restore', '/restore/archive/backup.zip', '--yes', '--skip-files', '--force', '--database-url', 'postgresql://u:p@elsewhere/db', '--passphrase']);
    expect(r.stderr).toContain('this replaces the database)');
  });

  test('a failed restore says nothing changed, starts the app again only if it was running, and exits with coffer status', async () => {
    const archive = writeFile('fail/backup.zip', 'zip');
    const failing = { FAKE_FAIL: 'app restore /restore/archive/', FAKE_FAIL_STATUS: '15' };

    const wasRunning = await runRestore([archive], { env: { ...failing, FAKE_APP_RUNNING: '1' } });
    expect(wasRunning.status).toBe(15);
    expect(wasRunning.stderr).toMatch(/restore FAILED \(exit status 15\).*unchanged/);
    const restore = wasRunning.commands.findIndex(isRestoreRun);
    expect(indexOf(wasRunning.commands, 'up', '-d', 'app')).toBeGreaterThan(restore);

    const wasStopped = await runRestore([archive], { env: failing });
    expect(wasStopped.status).toBe(15);
    expect(indexOf(wasStopped.commands, 'up', '-d', 'app')).toBe(-1);
    expect(wasStopped.stderr).toContain('stays stopped');
  });

  test('stops before touching anything when the app container cannot read the archive', async () => {
    const archive = writeFile('unreadable/backup.zip', 'zip');
    const r = await runRestore([archive], { env: { FAKE_FAIL: '--entrypoint node' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('nothing was changed');
    expect(r.commands).toHaveLength(1);
  });

  test('a restore whose app never becomes healthy exits 20 and says where to look', async () => {
    const archive = writeFile('unhealthy/backup.zip', 'zip');
    const r = await runRestore([archive], { env: { FAKE_FAIL: 'exec -T app', RESTORE_HEALTH_TIMEOUT: '0' } });
    expect(r.status).toBe(20);
    expect(r.stderr).toContain('WAS restored');
    expect(r.stderr).toContain('logs app');
  });

  test('refuses standard input, a second archive, and nothing to restore', async () => {
    const archive = writeFile('two/backup.zip', 'zip');
    const stdin = await runRestore(['-']);
    expect(stdin.status).toBe(2);
    expect(stdin.calls).toEqual([]);
    const two = await runRestore([archive, archive]);
    expect(two.status).toBe(2);
    expect(two.stderr).toContain('give one archive');
    expect(two.calls).toEqual([]);
    const nothing = await runRestore([archive, '--skip-files', '--skip-database']);
    expect(nothing.status).toBe(2);
    expect(nothing.stderr).toContain('nothing to restore');
    expect(nothing.calls).toEqual([]);
  });

  const shellcheck = (() => {
    try {
      execFileSync('shellcheck', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  (shellcheck ? test : test.skip)('is shellcheck-clean', () => {
    expect(() => execFileSync('shellcheck', [RESTORE_SH], { encoding: 'utf8' })).not.toThrow();
  });

  describe('end to end, with the real coffer CLI in place of the container', () => {
    let source: TestDatabase;
    let target: TestDatabase;

    beforeAll(async () => {
      ensureBuilt();
      source = await createTestDatabase({ migrated: true });
      target = await createTestDatabase(); // empty, as on a new host
    });

    afterAll(async () => {
      await source?.drop();
      await target?.drop();
    });

    test('restores an encrypted archive into an empty database and data folder, then sees the app healthy', async () => {
      await seedDomain(source.pool, { events: 40 });
      const sourceData = path.join(work, 'e2e', 'source-data');
      const targetData = path.join(work, 'e2e', 'target-data');
      fs.mkdirSync(targetData, { recursive: true });
      const files = writeUploadFiles(sourceData, 7);

      const key = writeFile('e2e/backup.key', execFileSync(process.execPath, [CLI, 'keygen'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }), 0o600);
      const archive = path.join(work, 'e2e', 'backup.zip.crypt');
      await execFileP(process.execPath, [CLI, 'backup', '-o', archive, '--key-file', key], {
        env: { PATH: process.env.PATH, DATABASE_URL: source.url, DATA_DIR: sourceData, LOG_LEVEL: 'error' },
      });

      const server = await healthServer(() => 200);
      try {
        const r = await runRestore([archive, '--key-file', key], {
          env: {
            FAKE_EXECUTE: '1',
            FAKE_APP_ENV: JSON.stringify({ DATABASE_URL: target.url, DATA_DIR: targetData, PORT: String(server.port), LOG_LEVEL: 'error' }),
          },
        });
        expect(r.stderr).toContain('the app is healthy');
        expect(r.status).toBe(0);
      } finally {
        await server.close();
      }

      const counts = async (db: TestDatabase) =>
        Object.fromEntries(
          await Promise.all(
            ['projects', 'notes', 'findings', 'events'].map(async (t) => [t, (await db.pool.query(`SELECT count(*)::int AS n FROM ${t}`)).rows[0].n]),
          ),
        );
      expect(await counts(target)).toEqual(await counts(source));
      for (const rel of files) expect(fs.readFileSync(path.join(targetData, rel))).toEqual(fs.readFileSync(path.join(sourceData, rel)));
      const log = await target.pool.query(`SELECT username, details FROM backup_log WHERE event = 'restore'`);
      expect(log.rows).toHaveLength(1);
      expect(log.rows[0].username).toBe('cli:operator');
      expect(log.rows[0].details).toMatchObject({ encrypted: true });
    });

    test('passes a piped passphrase through to coffer restore', async () => {
      const passphrase = 'correct horse battery staple';
      const sourceData = path.join(work, 'e2e-pass', 'source-data');
      const targetData = path.join(work, 'e2e-pass', 'target-data');
      fs.mkdirSync(targetData, { recursive: true });
      writeUploadFiles(sourceData, 2);
      const archive = path.join(work, 'e2e-pass', 'backup.zip.crypt');
      await new Promise<void>((resolve, reject) => {
        const child = execFile(process.execPath, [CLI, 'backup', '-o', archive, '--passphrase'], {
          env: { PATH: process.env.PATH, DATABASE_URL: source.url, DATA_DIR: sourceData, LOG_LEVEL: 'error' },
        }, (err) => (err ? reject(err) : resolve()));
        child.stdin!.end(`${passphrase}\n`);
      });
      const server = await healthServer(() => 200);
      try {
        const env = { FAKE_EXECUTE: '1', FAKE_APP_ENV: JSON.stringify({ DATABASE_URL: target.url, DATA_DIR: targetData, PORT: String(server.port), LOG_LEVEL: 'error' }) };
        const wrong = await runRestore([archive, '--passphrase'], { env, input: 'not the passphrase\n' });
        expect(wrong.stderr).toContain('wrong passphrase');
        expect(wrong.status).toBe(15);
        const right = await runRestore([archive, '--passphrase'], { env, input: `${passphrase}\n` });
        expect(right.stderr).toContain('the app is healthy');
        expect(right.status).toBe(0);
      } finally {
        await server.close();
      }
      // backup_log keeps the target's own rows; the newest is the row of this restore.
      const log = await target.pool.query(`SELECT details FROM backup_log WHERE event = 'restore' ORDER BY id DESC LIMIT 1`);
      expect(log.rows.map((r) => r.details)).toEqual([expect.objectContaining({ archive: 'backup.zip.crypt', encrypted: true })]);
    });
  });
});

// ---- deploy/RESTORE.md --------------------------------------------------------------------------------

/** The code of the runbook: fenced blocks and inline code spans, continuation lines joined. */
function runbookCode(): string[] {
  const text = fs.readFileSync(RUNBOOK, 'utf8');
  const blocks = [...text.matchAll(/^```[a-z]*\n([\s\S]*?)^```/gm)].map((m) => m[1].replace(/\\\n\s*/g, ' '));
  const prose = text.replace(/^```[a-z]*\n[\s\S]*?^```/gm, '');
  const spans = [...prose.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]);
  return [...blocks.flatMap((b) => b.split('\n')), ...spans];
}

/**
 * The words of the shell command that starts at `start`, quotes removed, up to where that command ends:
 * a pipe, `;`, `&&`, a redirection, a comment, or the `)` closing a `$(...)` it stands in. A `$(...)`
 * inside it stays one word.
 */
function commandWords(line: string, start: number): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: string | null = null;
  let depth = 0;
  const push = () => {
    if (inWord) words.push(word);
    word = '';
    inWord = false;
  };
  for (let i = start; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") quote = null;
      else word += c;
      continue;
    }
    if (c === '$' && line[i + 1] === '(') {
      depth++;
      word += '$(';
      inWord = true;
      i++;
      continue;
    }
    if (depth > 0) {
      if (c === ')') depth--;
      word += c;
      continue;
    }
    if (quote === '"') {
      if (c === '"') quote = null;
      else word += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
      continue;
    }
    if (/\s/.test(c)) {
      push();
      continue;
    }
    if (')|;&<>'.includes(c) || (c === '#' && !inWord)) break;
    word += c;
    inWord = true;
  }
  push();
  return words;
}

interface CofferInvocation {
  line: string;
  /** The coffer command words: ['verify'] or ['users', 'create'] (sub-command resolved later). */
  words: string[];
}

/**
 * Every coffer invocation in the runbook: `coffer CMD`, `node bin/coffer.js CMD`, and
 * `docker compose run [options] app CMD` (the image's entrypoint is the CLI).
 */
function cofferInvocations(): { invocations: CofferInvocation[]; services: string[] } {
  const invocations: CofferInvocation[] = [];
  const servicesNamed: string[] = [];
  const withValue = new Set(['-v', '--volume', '-e', '--env', '-u', '--user', '-w', '--workdir', '--entrypoint', '--name', '-p', '--publish', '--index']);
  for (const line of runbookCode()) {
    for (const m of line.matchAll(/(?:^|[\s("`$])(?:node\s+)?(?:\/app\/)?(?:bin\/coffer\.js|coffer)\s+(?=[a-z])/g)) {
      invocations.push({ line, words: commandWords(line, m.index! + m[0].length) });
    }
    for (const m of line.matchAll(/docker compose (run|exec)\s+/g)) {
      const words = commandWords(line, m.index! + m[0].length);
      let i = 0;
      let entrypoint = false;
      for (; i < words.length && words[i].startsWith('-'); i++) {
        if (words[i] === '--entrypoint') entrypoint = true;
        if (withValue.has(words[i])) i++;
      }
      servicesNamed.push(words[i]);
      // `app CMD` where CMD is a command, not a placeholder such as CMD itself.
      if (m[1] === 'run' && words[i] === 'app' && !entrypoint && /^[a-z]/.test(words[i + 1] ?? '')) invocations.push({ line, words: words.slice(i + 1) });
    }
    for (const m of line.matchAll(/docker compose (?:cp\s+\S+\s+([a-z][a-z0-9-]*):|(?:stop|logs|up -d(?: --wait)?)\s+([a-z][a-z0-9-]*))/g)) {
      servicesNamed.push(m[1] ?? m[2]);
    }
  }
  return { invocations, services: servicesNamed };
}

describe('deploy/RESTORE.md', () => {
  /**
   * The --help text of every command and sub-command of the built CLI, keyed 'verify', 'users create'...
   * ('' for the program), from one node process: commander's helpInformation() is what --help prints
   * (checked against a real `--help` run below), and one process per command is slow on a busy machine.
   */
  let helpTexts: Record<string, string> = {};
  const help = async (words: string[]): Promise<string> => helpTexts[words.join(' ')] ?? '';
  const HELP_DUMP = `
    const { buildProgram } = require(process.argv[1]);
    const out = {};
    const walk = (cmd, prefix) => {
      out[prefix.join(' ')] = cmd.helpInformation();
      for (const sub of cmd.commands) walk(sub, [...prefix, sub.name()]);
    };
    walk(buildProgram(), []);
    process.stdout.write(JSON.stringify(out));`;

  beforeAll(async () => {
    ensureBuilt();
    const { stdout } = await execFileP(process.execPath, ['-e', HELP_DUMP, path.join(ROOT, 'dist', 'cli', 'main.js')], { env: { PATH: process.env.PATH } });
    helpTexts = JSON.parse(stdout);
  });

  test('the help texts used below are what `coffer CMD --help` prints', async () => {
    for (const words of [[], ['restore'], ['users', 'token']]) {
      const { stdout } = await execFileP(process.execPath, [CLI, ...words, '--help'], { env: { PATH: process.env.PATH } });
      expect(stdout).toBe(await help(words));
    }
  });

  test('every coffer command and --flag it writes exists in the CLI', async () => {
    const { invocations } = cofferInvocations();
    expect(invocations.length).toBeGreaterThanOrEqual(8);
    const top = await help([]);
    const topCommands = [...top.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]);
    const subCommands = (text: string) => (text.includes('\nCommands:\n') ? [...text.replace(/^[\s\S]*?\nCommands:\n/, '').matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]) : []);
    const seen = new Set<string>();
    const problems: string[] = [];
    for (const { line, words } of invocations) {
      const cmd = words[0];
      if (!topCommands.includes(cmd)) {
        problems.push(`unknown command '${cmd}' in: ${line}`);
        continue;
      }
      // A sub-command (users create, migrate status) when the command has them.
      const target = subCommands(await help([cmd])).includes(words[1]) ? [cmd, words[1]] : [cmd];
      const text = await help(target);
      seen.add(target.join(' '));
      for (const word of words.slice(target.length)) {
        const flag = /^(--?[A-Za-z][\w-]*)/.exec(word)?.[1];
        if (!flag || flag === '--help') continue;
        if (!new RegExp(`(^|[\\s,])${flag.replace(/-/g, '\\-')}([\\s,=]|$)`, 'm').test(text)) problems.push(`coffer ${target.join(' ')} has no ${flag}: ${line}`);
      }
    }
    expect(problems).toEqual([]);
    // The runbook covers the whole cycle.
    for (const cmd of ['keygen', 'users create', 'users token', 'users list', 'backup', 'verify', 'decrypt', 'restore']) expect([...seen]).toContain(cmd);
  });

  test('every scripts/restore.sh flag it writes is in the script --help', async () => {
    const usage = (await runRestore(['--help'])).stdout;
    const uses = runbookCode().flatMap((line) => [...line.matchAll(/scripts\/restore\.sh\b/g)].map((m) => commandWords(line, m.index! + m[0].length)));
    expect(uses.length).toBeGreaterThan(0);
    for (const words of uses) {
      for (const word of words) {
        const flag = /^(--?[A-Za-z][\w-]*)/.exec(word)?.[1];
        if (flag) expect(usage).toContain(flag);
      }
    }
  });

  test('docker compose commands address services of docker-compose.yml', () => {
    const { services: named } = cofferInvocations();
    expect(named.length).toBeGreaterThan(5);
    for (const s of named) expect(Object.keys(services)).toContain(s);
  });

  test('its SQL runs on a restored schema, and psql connects with the compose user and database', async () => {
    const db = await createTestDatabase({ migrated: true });
    try {
      const env = environmentOf(services.db);
      const queries = runbookCode().flatMap((line) => [...line.matchAll(/psql -U (\S+) -d (\S+) -c "([^"]+)"/g)]);
      expect(queries.length).toBeGreaterThanOrEqual(2);
      for (const [, user, database, sql] of queries) {
        expect(user).toBe(env.POSTGRES_USER);
        expect(database).toBe(env.POSTGRES_DB);
        await expect(db.pool.query(sql)).resolves.toBeDefined();
      }
    } finally {
      await db.drop();
    }
  });
});
