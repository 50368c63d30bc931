import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { compareFiles, md5Uuid, prng, UPLOAD_FOLDERS, type GeneratedFile } from './files';
import { describeCommand, fileSize, measure, settleDisks, summariseRuns } from './measure';
import { checkpoint, createDatabase, dropDatabase, type Server } from './postgres';
import type { OpResult, RunRecord } from './report';
import { BenchError, fmtMB, fmtSeconds, say, table } from './util';

/**
 * The many-small-files case: N upload files of ~1 KB (default 100,000, about 100 MB), in the upload
 * folders layout (`<folder>/<2 hex>/<uuid>`), half compressible text and half incompressible bytes,
 * cached in the work folder like the scale files (reused while `files.json`, written last, says they
 * are complete). Measured, each as its own process: coffer backup (files only, an empty migrated
 * database), `zip -r -1` of the same folders, coffer restore of that archive (database and files, into
 * a fresh empty database and a fresh DATA_DIR, as an operator restores a full archive; the database
 * part is the empty schema), `unzip` + `sync -f <target>` (one shell command), `unzip -t`, coffer
 * verify. Every coffer restore is followed by a fidelity check of the restored files.
 */

export const SMALL_FILES_VERSION = 1;
export const DEFAULT_SMALL_FILES = 100_000;

export type SmallOpId = 'backup' | 'zip' | 'restore' | 'unzip_sync' | 'verify' | 'unzip_t';

export const SMALL_OPS: { id: SmallOpId; label: string; coffer: boolean }[] = [
  { id: 'backup', label: 'coffer backup (files only, empty db)', coffer: true },
  { id: 'zip', label: 'zip -r -1 (upload folders)', coffer: false },
  { id: 'restore', label: 'coffer restore (db+files; empty schema)', coffer: true },
  { id: 'unzip_sync', label: 'unzip + sync -f (target folder)', coffer: false },
  { id: 'verify', label: 'coffer verify', coffer: true },
  { id: 'unzip_t', label: 'unzip -t', coffer: false },
];

export interface SmallFilesSection {
  files: number;
  bytes: number;
  compressibleBytes: number;
  reused: boolean;
  generationSeconds: number;
  /** How the restore is run, for the report. */
  restoreMode: string;
  /** Why zip/unzip rows are missing, when they are. */
  zipMissing?: string;
  ops: Partial<Record<SmallOpId, OpResult>>;
  fidelity: { checks: number; failures: string[] };
}

export interface SmallFilesOptions {
  workDir: string;
  out: string;
  count: number;
  runs: number;
  server: Server;
  emptyDatabase: string;
  coffer: (args: string[]) => [string, string[]];
  env: (dataDir: string) => NodeJS.ProcessEnv;
  publicText: (text: string) => string;
}

const FOLDER_OF = ['uploadedfiles', 'uploadedimages', 'uploadedassets'];

/** File n: 512–1,535 bytes; even n compressible text (CSV-like lines), odd n incompressible (AES-CTR). */
function contentOf(n: number): Buffer {
  const rnd = prng(n * 2654435761);
  const size = 512 + Math.floor(rnd() * 1024);
  if (n % 2 === 1) {
    const key = createHash('sha256').update(`coffer-bench-small:${n}`).digest();
    return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
  }
  let text = 'n,host,port,state,banner\n';
  for (let i = 0; text.length < size; i++) text += `${i},host-${Math.floor(rnd() * 500)}.example.com,${Math.floor(rnd() * 65536)},open,"nginx ${Math.floor(rnd() * 30)}"\n`;
  return Buffer.from(text.slice(0, size), 'utf8');
}

export async function ensureSmallFiles(workDir: string, count: number): Promise<{ dir: string; files: GeneratedFile[]; bytes: number; compressibleBytes: number; reused: boolean; seconds: number }> {
  const dir = path.join(workDir, `smallfiles-${count}`);
  const manifestFile = path.join(dir, 'files.json');
  const started = performance.now();
  const done = (files: GeneratedFile[], reused: boolean) => ({
    dir,
    files,
    bytes: files.reduce((s, f) => s + f.size, 0),
    compressibleBytes: files.filter((f) => f.content_type === 'text/csv').reduce((s, f) => s + f.size, 0),
    reused,
    seconds: (performance.now() - started) / 1000,
  });
  try {
    const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as { version: number; files: GeneratedFile[] };
    if (m.version === SMALL_FILES_VERSION && m.files.length === count && m.files.every((f) => fs.statSync(path.join(dir, f.storage_path)).size === f.size)) {
      say(`small files: reusing ${count} files in ${dir}`);
      return done(m.files, true);
    }
  } catch {
    // missing, unreadable or incomplete: generate
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  say(`small files: generating ${count} files of ~1 KB in ${dir}`);
  const files: GeneratedFile[] = [];
  const made = new Set<string>();
  for (let n = 0; n < count; n++) {
    const id = md5Uuid(`small${n}`);
    const folder = FOLDER_OF[n % 3];
    const rel = `${folder}/${id.slice(0, 2)}/${id}`;
    const sub = path.join(dir, folder, id.slice(0, 2));
    if (!made.has(sub)) {
      fs.mkdirSync(sub, { recursive: true, mode: 0o755 });
      made.add(sub);
    }
    const data = contentOf(n);
    fs.writeFileSync(path.join(dir, rel), data, { mode: 0o644 });
    files.push({ n, id, kind: 'file', name: `small-${n}`, storage_path: rel, content_type: n % 2 ? 'application/octet-stream' : 'text/csv', size: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  }
  fs.writeFileSync(manifestFile, JSON.stringify({ version: SMALL_FILES_VERSION, files }) + '\n');
  const set = done(files, false);
  say(`small files: ${count} files, ${fmtMB(set.bytes)}, generated in ${fmtSeconds(set.seconds)}`);
  return set;
}

/**
 * Reads every file once, untimed, so the first measured command does not pay for bringing the set into
 * the page cache while the reference after it reads it warm (a cold first read of 100,000 files took
 * 36 s on the bench host, against 7.5 s warm).
 */
function warmFiles(dir: string, files: GeneratedFile[]): void {
  const started = performance.now();
  for (const f of files) fs.readFileSync(path.join(dir, f.storage_path));
  say(`small files: read every file once to warm the page cache (${fmtSeconds((performance.now() - started) / 1000)})`);
}

/** Whether zip and unzip (Debian's Info-ZIP) are installed; otherwise how to install them. */
export function zipMissing(): string | undefined {
  for (const tool of ['zip', 'unzip']) {
    const r = spawnSync(tool, ['-v'], { stdio: 'ignore' });
    if (r.error || r.status !== 0) return `${tool} is not installed (apt-get install -y zip unzip); the zip/unzip rows and their targets were skipped`;
  }
  return undefined;
}

export async function measureSmallFiles(o: SmallFilesOptions): Promise<SmallFilesSection> {
  const set = await ensureSmallFiles(o.workDir, o.count);
  warmFiles(set.dir, set.files);
  const missing = zipMissing();
  if (missing) say(`small files: ${missing}`);
  const section: SmallFilesSection = {
    files: set.files.length,
    bytes: set.bytes,
    compressibleBytes: set.compressibleBytes,
    reused: set.reused,
    generationSeconds: set.seconds,
    restoreMode: 'a full `coffer restore` (database and upload folders) of the files-only archive into a fresh empty database and a fresh DATA_DIR: the database part is the empty migrated schema, so nearly all of the time is the files; this is how an operator restores an archive',
    zipMissing: missing,
    ops: {},
    fidelity: { checks: 0, failures: [] },
  };
  for (const d of SMALL_OPS) if (d.coffer || !missing) section.ops[d.id] = { id: d.id, label: d.label, command: '', runs: [] };
  const dir = path.join(o.out, 'small');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const cofferZip = path.join(dir, 'coffer-small.zip');
  const plainZip = path.join(dir, 'zip-small.zip');

  const timed = async (id: SmallOpId, runNo: number, cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string, output: () => number): Promise<RunRecord | undefined> => {
    const op = section.ops[id];
    if (!op) return undefined;
    op.command = o.publicText(describeCommand(cmd, args));
    await checkpoint(o.server);
    await settleDisks();
    say(`small files, run ${runNo}/${o.runs}: ${op.label}…`);
    const m = await measure(cmd, args, { env, cwd });
    const rec: RunRecord = { run: runNo, wallSeconds: m.wallSeconds, peakRssBytes: m.peakRssBytes, outputBytes: 0, cpu: m.cpu };
    if (m.exitCode !== 0) {
      rec.error = `exit ${m.signal ?? m.exitCode}: ${m.outputTail}`;
      say(`  FAILED after ${fmtSeconds(m.wallSeconds)}: ${rec.error}`);
    } else {
      rec.outputBytes = output();
      say(`  ${fmtSeconds(m.wallSeconds)}, peak RSS ${fmtMB(m.peakRssBytes, 0)}`);
    }
    op.runs.push(rec);
    return rec.error ? undefined : rec;
  };

  const steps: Record<SmallOpId, (runNo: number) => Promise<void>> = {
    backup: async (runNo) => {
      fs.rmSync(cofferZip, { force: true });
      const [cmd, args] = o.coffer(['backup', '-o', cofferZip, '--database-url', o.server.url(o.emptyDatabase)]);
      await timed('backup', runNo, cmd, args, o.env(set.dir), dir, () => fileSize(cofferZip));
    },
    zip: async (runNo) => {
      fs.rmSync(plainZip, { force: true });
      await timed('zip', runNo, 'zip', ['-q', '-r', '-1', plainZip, ...UPLOAD_FOLDERS], { ...process.env }, set.dir, () => fileSize(plainZip));
    },
    restore: async (runNo) => {
      if (!fs.existsSync(cofferZip)) return;
      const db = 'coffer_bench_small_restore';
      await createDatabase(o.server, db);
      const dataDir = fs.mkdtempSync(path.join(dir, 'restore-'));
      try {
        const [cmd, args] = o.coffer(['restore', cofferZip, '--yes', '--database-url', o.server.url(db)]);
        const rec = await timed('restore', runNo, cmd, args, o.env(dataDir), dir, () => 0);
        if (rec) {
          const problems = await compareFiles(dataDir, set.files);
          section.fidelity.checks++;
          rec.fidelity = problems.length ? problems : 'pass';
          if (problems.length) section.fidelity.failures.push(`small files restore, run ${runNo}: ${problems.slice(0, 5).join('; ')}`);
          say(problems.length ? `  FIDELITY CHECK FAILED: ${problems.slice(0, 3).join('; ')}` : `  fidelity check passed (${set.files.length} files)`);
        }
      } finally {
        await dropDatabase(o.server, db).catch(() => undefined);
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
    },
    unzip_sync: async (runNo) => {
      if (!fs.existsSync(plainZip)) return;
      const target = fs.mkdtempSync(path.join(dir, 'unzip-'));
      try {
        await timed('unzip_sync', runNo, 'sh', ['-c', 'unzip -q "$1" -d "$2" && sync -f "$2"', 'sh', plainZip, target], { ...process.env }, dir, () => 0);
      } finally {
        fs.rmSync(target, { recursive: true, force: true });
      }
    },
    verify: async (runNo) => {
      if (!fs.existsSync(cofferZip)) return;
      const [cmd, args] = o.coffer(['verify', cofferZip]);
      await timed('verify', runNo, cmd, args, o.env(path.join(dir, 'no-data')), dir, () => 0);
    },
    unzip_t: async (runNo) => {
      if (!fs.existsSync(plainZip)) return;
      await timed('unzip_t', runNo, 'unzip', ['-tq', plainZip], { ...process.env }, dir, () => 0);
    },
  };
  for (let runNo = 1; runNo <= o.runs; runNo++) {
    // Backups first (the restores need their archives); the order within each pair alternates.
    const pairs: SmallOpId[][] = [['backup', 'zip'], ['restore', 'unzip_sync'], ['verify', 'unzip_t']];
    for (const pair of pairs) for (const id of runNo % 2 === 0 ? [...pair].reverse() : pair) await steps[id](runNo);
  }
  for (const op of Object.values(section.ops)) {
    summariseRuns(op, set.bytes);
    op.outputBytes ||= undefined;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return section;
}

export function smallFilesTable(s: SmallFilesSection): string {
  const rows = SMALL_OPS.filter((d) => s.ops[d.id]).map((d) => {
    const o = s.ops[d.id]!;
    const failed = o.runs.filter((x) => x.error).length;
    return [
      o.label,
      `${o.runs.length - failed}${failed ? ` (+${failed} failed)` : ''}`,
      o.wall ? fmtSeconds(o.wall.min) : 'n/a',
      o.wall ? fmtSeconds(o.wall.median) : 'n/a',
      o.mbps ? o.mbps.atMedian.toFixed(1) : 'n/a',
      o.peakRssBytes ? fmtMB(o.peakRssBytes, 0) : 'n/a',
      o.outputBytes ? fmtMB(o.outputBytes) : '',
    ];
  });
  return table(['operation', 'runs', 'wall min', 'wall median', 'MB/s (median)', 'peak RSS (max)', 'archive size'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']);
}

export function smallFilesSection(s: SmallFilesSection): string {
  const lines = [
    `${s.files.toLocaleString('en-US')} files of ~1 KB (${fmtMB(s.bytes)}, ${fmtMB(s.compressibleBytes)} compressible text, the rest incompressible) in the three upload folders (\`<folder>/<2 hex>/<uuid>\`)${s.reused ? ', from the cache' : `, generated in ${fmtSeconds(s.generationSeconds)}`}. MB/s is over the file bytes.`,
    '',
    smallFilesTable(s),
    '',
    `- restore: ${s.restoreMode}.`,
    `- \`unzip + sync -f\` is one shell command (\`sh -c 'unzip -q ZIP -d DIR && sync -f DIR'\`): the files are durable when it ends, as they are when coffer restore ends.`,
    `- fidelity: ${s.fidelity.failures.length ? `**FAILED**: ${s.fidelity.failures.join('; ')}` : s.fidelity.checks ? `all ${s.fidelity.checks} restores gave back every file with its sha256, and no other file` : 'not checked (no successful restore)'}.`,
  ];
  if (s.zipMissing) lines.push(`- ${s.zipMissing}.`);
  lines.push(...SMALL_OPS.filter((d) => s.ops[d.id]?.command).map((d) => `- ${d.label}: \`${s.ops[d.id]!.command}\``), '');
  return lines.join('\n');
}

export function parseSmallFiles(value: string | undefined): number {
  if (value === undefined) return DEFAULT_SMALL_FILES;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new BenchError(`--small-files must be a whole number ≥ 1, got ${value}`);
  return n;
}
