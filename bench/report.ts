import fs from 'node:fs';
import path from 'node:path';
import { cryptoSection, type CryptoSection } from './crypto';
import { runtimeSection, type RuntimeSection } from './runtime';
import { summariseRuns, type CpuUse } from './measure';
import type { Breakdown } from './serverlog';
import { smallFilesSection, type SmallFilesSection } from './smallfiles';
import { fmtMB, fmtSeconds, max, mb, median, min, table } from './util';

export type OpId =
  | 'backup_full'
  | 'backup_full_enc'
  | 'backup_full_age'
  | 'backup_db'
  | 'backup_files'
  | 'pg_dump'
  | 'tar'
  | 'tar_gz'
  | 'restore_db'
  | 'pg_restore'
  | 'pg_restore_j2'
  | 'restore_full'
  | 'restore_full_enc'
  | 'restore_full_age';

/** What an operation's MB/s is computed over: table data (heap + TOAST), upload bytes, or both. */
export type Basis = 'db' | 'files' | 'all';

export interface OpDef {
  id: OpId;
  label: string;
  side: 'backup' | 'restore';
  basis: Basis;
  coffer: boolean;
}

export const OPS: OpDef[] = [
  { id: 'backup_full', label: 'coffer backup (db+files)', side: 'backup', basis: 'all', coffer: true },
  { id: 'backup_full_enc', label: 'coffer backup (db+files, encrypted)', side: 'backup', basis: 'all', coffer: true },
  { id: 'backup_full_age', label: 'coffer backup (db+files, sealed to an age recipient)', side: 'backup', basis: 'all', coffer: true },
  { id: 'backup_db', label: 'coffer backup (db only)', side: 'backup', basis: 'db', coffer: true },
  { id: 'backup_files', label: 'coffer backup (files only, empty db)', side: 'backup', basis: 'files', coffer: true },
  { id: 'pg_dump', label: 'pg_dump -Fc', side: 'backup', basis: 'db', coffer: false },
  { id: 'tar', label: 'tar -cf (upload folders)', side: 'backup', basis: 'files', coffer: false },
  { id: 'tar_gz', label: 'tar -c | gzip -1 (upload folders)', side: 'backup', basis: 'files', coffer: false },
  { id: 'restore_db', label: 'coffer restore (db only)', side: 'restore', basis: 'db', coffer: true },
  { id: 'pg_restore', label: 'pg_restore -j1 --no-owner', side: 'restore', basis: 'db', coffer: false },
  { id: 'pg_restore_j2', label: 'pg_restore -j2 --no-owner', side: 'restore', basis: 'db', coffer: false },
  { id: 'restore_full', label: 'coffer restore (db+files)', side: 'restore', basis: 'all', coffer: true },
  { id: 'restore_full_enc', label: 'coffer restore (db+files, encrypted)', side: 'restore', basis: 'all', coffer: true },
  { id: 'restore_full_age', label: 'coffer restore (db+files, age identity)', side: 'restore', basis: 'all', coffer: true },
];

export interface RunRecord {
  run: number;
  wallSeconds: number;
  peakRssBytes: number;
  /** Archive/dump/tar size for backups; pg_database_size of the restored database for restores. */
  outputBytes: number;
  /** Restores: 'pass', or what differs. */
  fidelity?: string[] | 'pass';
  cpu?: CpuUse;
  error?: string;
}

export interface OpResult {
  /** An OpId, or a SmallOpId in the small-files section. */
  id: string;
  label: string;
  command: string;
  runs: RunRecord[];
  /** Over successful runs. */
  wall?: { min: number; median: number; max: number };
  mbps?: { atMedian: number; atMin: number };
  peakRssBytes?: number;
  outputBytes?: number;
  /** Medians over the successful runs that have CPU figures. */
  cpu?: CpuUse;
  phases?: Breakdown;
}

export interface Target {
  name: string;
  limit: string;
  /** From medians (the verdict) and from minimums (the least noisy estimate). */
  value?: number;
  valueAtMin?: number;
  unit: 'x' | 'MB';
  verdict: 'PASS' | 'MISS' | 'n/a';
  why?: string;
}

export interface Results {
  format: 1;
  date: string;
  startedAt: string;
  finishedAt: string;
  scale: number;
  runs: number;
  git: { commit: string; dirty: string[] };
  /** node: the bench's own Node; cofferNode: the one coffer runs on (--node), when another. */
  machine: { cpus: number; memoryGB: number; node: string; cofferNode?: string; kernel: string };
  server: { kind: string; description: string; version: string; tools?: string; toolsMissing?: string };
  dataset: {
    rows: Record<string, number>;
    databaseBytes: number;
    tableBytes: number;
    indexBytes: number;
    files: number;
    fileBytes: number;
    compressibleFileBytes: number;
    generationSeconds: number;
    filesReused: boolean;
    tables: { name: string; rows: number; tableBytes: number; indexBytes: number }[];
  };
  ops: Partial<Record<OpId, OpResult>>;
  targets: Target[];
  ratios: { name: string; value?: number; valueAtMin?: number }[];
  fidelity: { checks: number; failures: string[] };
  /** The stored-backups section (HTTP service); absent with --no-stored. */
  stored?: StoredSection;
  /** The many-small-files case; absent with --no-small-files. */
  smallFiles?: SmallFilesSection;
  /** coffer on a second Node binary (--compare-node). */
  runtime?: RuntimeSection;
  /** Encrypt/decrypt throughput, format v1 beside age. */
  crypto?: CryptoSection;
  /** --profile: main-thread CPU profile summaries (Markdown). */
  profile?: string[];
  notes: string[];
}

/** The three HTTP measurements of the stored-backups section. */
export type StoredOpId = 'stream' | 'stored' | 'download';

export const STORED_OPS: { id: StoredOpId; label: string; what: string }[] = [
  { id: 'stream', label: 'streaming endpoint (POST /api/v1/utils/backup/)', what: 'POST to the last byte of the zip' },
  { id: 'stored', label: 'stored backup (POST /api/v1/backups, poll GET)', what: 'POST to status finished' },
  { id: 'download', label: 'download of the stored backup', what: 'GET to the last byte' },
];

export interface StoredRun {
  run: number;
  seconds: number;
  /** Bytes received (stream, download) or the stored object's `size` (stored). */
  bytes: number;
  /** download: whether the sha256 of the bytes received equals the object's `sha256`. */
  sha256Match?: boolean;
  error?: string;
}

export interface StoredOp {
  id: StoredOpId;
  label: string;
  runs: StoredRun[];
  /** Over successful runs. */
  wall?: { min: number; median: number; max: number };
  /** Bytes of the archive over the wall time (median bytes / median wall, bytes / min wall). */
  mbps?: { atMedian: number; atMin: number };
  bytes?: number;
}

export interface StoredSection {
  /** How the service was run (paths replaced by $WORK and $COFFER). */
  command: string;
  ops: Record<StoredOpId, StoredOp>;
  ratios: { name: string; value?: number; valueAtMin?: number }[];
  /** Largest RSS of the service's process tree while it ran the section. */
  serviceRssBytes?: number;
  /** Set when the section could not run at all. */
  error?: string;
}

export function summariseStored(s: StoredSection, ops: Results['ops']): void {
  for (const op of Object.values(s.ops)) {
    const ok = op.runs.filter((r) => !r.error);
    if (ok.length === 0) continue;
    const walls = ok.map((r) => r.seconds);
    op.wall = { min: min(walls), median: median(walls), max: max(walls) };
    op.bytes = median(ok.map((r) => r.bytes));
    const atMin = ok.find((r) => r.seconds === op.wall!.min)!;
    op.mbps = { atMedian: mb(op.bytes) / op.wall.median, atMin: mb(atMin.bytes) / atMin.seconds };
  }
  const { stream, stored, download } = s.ops;
  const div = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a / b : undefined);
  s.ratios = [
    { name: 'stored POST→finished / streaming endpoint, wall time', value: div(stored.wall?.median, stream.wall?.median), valueAtMin: div(stored.wall?.min, stream.wall?.min) },
    { name: 'stored POST→finished + download / streaming endpoint, wall time', value: div(stored.wall && download.wall ? stored.wall.median + download.wall.median : undefined, stream.wall?.median), valueAtMin: div(stored.wall && download.wall ? stored.wall.min + download.wall.min : undefined, stream.wall?.min) },
    { name: 'streaming endpoint / coffer backup (db+files) CLI, wall time', value: div(stream.wall?.median, ops.backup_full?.wall?.median), valueAtMin: div(stream.wall?.min, ops.backup_full?.wall?.min) },
    { name: 'stored archive size / streamed archive size', value: div(stored.bytes, stream.bytes) },
  ];
}

export function storedTable(s: StoredSection): string {
  const rows = STORED_OPS.map(({ id, what }) => {
    const o = s.ops[id];
    const failed = o.runs.filter((x) => x.error).length;
    return [
      o.label,
      what,
      `${o.runs.length - failed}${failed ? ` (+${failed} failed)` : ''}`,
      o.wall ? fmtSeconds(o.wall.min) : 'n/a',
      o.wall ? fmtSeconds(o.wall.median) : 'n/a',
      o.mbps ? o.mbps.atMedian.toFixed(1) : 'n/a',
      o.mbps ? o.mbps.atMin.toFixed(1) : 'n/a',
      o.bytes ? fmtMB(o.bytes) : 'n/a',
    ];
  });
  return table(['operation', 'timed', 'runs', 'wall min', 'wall median', 'MB/s (median)', 'MB/s (best)', 'archive size'], rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r']);
}

export function storedSection(s: StoredSection): string {
  const lines: string[] = [];
  if (s.error) lines.push(`**The section did not complete**: ${s.error}`, '');
  lines.push(storedTable(s), '', ratiosTable({ ratios: s.ratios }), '');
  const checks = s.ops.download.runs.filter((r) => r.sha256Match !== undefined);
  const bad = checks.filter((r) => !r.sha256Match).length;
  lines.push(
    `- MB/s here is archive bytes (what went over the wire or into the store) over the wall time, not the table-data basis of the table above.`,
    `- download sha256 equals the object's \`sha256\`: ${checks.length ? (bad ? `**${bad} of ${checks.length} differ**` : `yes, ${checks.length} of ${checks.length}`) : 'not checked'}.`,
    `- service peak RSS (process tree, over the whole section): ${s.serviceRssBytes ? fmtMB(s.serviceRssBytes, 0) : 'n/a'}.`,
    `- service: \`${s.command}\``,
    '',
  );
  return lines.join('\n');
}

export function basisBytes(basis: Basis, d: Results['dataset']): number {
  return basis === 'db' ? d.tableBytes : basis === 'files' ? d.fileBytes : d.tableBytes + d.fileBytes;
}

export function summariseOp(op: OpResult, def: OpDef, dataset: Results['dataset']): void {
  summariseRuns(op, basisBytes(def.basis, dataset));
}

/**
 * The CPU table: for each operation, the median CPU seconds of the client process tree and of the
 * whole host while it ran, and what that is in busy cores (host CPU / wall). On a host with `cpus`
 * CPUs, busy cores near `cpus` means the operation was bound by the CPU, not by the disk or a lock.
 */
export function cpuTable(ops: { label: string; op: OpResult | undefined }[], cpus: number): string | undefined {
  const rows = ops
    .filter((x): x is { label: string; op: OpResult } => !!x.op?.cpu && !!x.op.wall)
    .map(({ label, op }) => {
      const c = op.cpu!;
      // Results written before client CPU was split into user and system time have neither.
      return [label, fmtSeconds(op.wall!.median), fmtSeconds(c.client), c.user === undefined ? 'n/a' : `${fmtSeconds(c.user)} + ${fmtSeconds(c.system)}`, fmtSeconds(c.host), fmtSeconds(Math.max(0, c.host - c.client)), `${(c.host / op.wall!.median).toFixed(2)} of ${cpus}`, fmtSeconds(c.iowait)];
    });
  if (!rows.length) return undefined;
  return table(['operation', 'wall (median)', 'client CPU', 'user + system', 'host CPU, busy', 'host − client (server, others)', 'busy cores', 'iowait'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r']);
}

const RSS_LIMIT = 150e6;

function ratio(a: OpResult | undefined, b: OpResult | undefined, key: 'median' | 'min'): number | undefined {
  if (!a?.wall || !b?.wall) return undefined;
  return a.wall[key] / b.wall[key];
}

function verdict(value: number | undefined, ok: (v: number) => boolean): 'PASS' | 'MISS' | 'n/a' {
  return value === undefined ? 'n/a' : ok(value) ? 'PASS' : 'MISS';
}

export function evaluate(r: Results): void {
  const o = r.ops;
  const t: Target[] = [];
  const sumWall = (ids: OpId[], key: 'median' | 'min') => (ids.every((id) => o[id]?.wall) ? ids.reduce((s, id) => s + o[id]!.wall![key], 0) : undefined);
  const div = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a / b : undefined);
  const missing = (ids: OpId[]) => `needs ${ids.filter((id) => !o[id]?.wall).map((id) => OPS.find((d) => d.id === id)?.label ?? id).join(', ')}`;
  const wallTarget = (name: string, a: OpId, b: OpId[], limit: number) => {
    const value = div(o[a]?.wall?.median, sumWall(b, 'median'));
    t.push({ name, limit: `≤ ${limit.toFixed(2)}×`, value, valueAtMin: div(o[a]?.wall?.min, sumWall(b, 'min')), unit: 'x', verdict: verdict(value, (v) => v <= limit), why: value === undefined ? missing([a, ...b]) : undefined });
  };
  wallTarget('backup, database part: coffer (db only) / pg_dump -Fc, wall time', 'backup_db', ['pg_dump'], 0.8);
  wallTarget('full backup: coffer (db+files) / (pg_dump -Fc + tar -c | gzip -1), wall time', 'backup_full', ['pg_dump', 'tar_gz'], 0.8);
  wallTarget('restore, database part: coffer (db only) / pg_restore -j1, wall time', 'restore_db', ['pg_restore'], 0.8);
  wallTarget('restore, database part: coffer (db only) / pg_restore -j2, wall time', 'restore_db', ['pg_restore_j2'], 1.0);
  wallTarget('encrypted / plain backup (db+files), wall time', 'backup_full_enc', ['backup_full'], 1.05);
  wallTarget('encrypted / plain restore (db+files), wall time', 'restore_full_enc', ['restore_full'], 1.05);
  for (const side of ['backup', 'restore'] as const) {
    const ops = OPS.filter((d) => d.coffer && d.side === side).map((d) => o[d.id]).filter((x): x is OpResult => !!x?.peakRssBytes);
    const value = ops.length ? max(ops.map((x) => x.peakRssBytes!)) : undefined;
    const worst = ops.find((x) => x.peakRssBytes === value);
    t.push({ name: `peak RSS, every coffer ${side} variant (largest: ${worst?.label ?? 'n/a'})`, limit: '≤ 150 MB', value: value === undefined ? undefined : mb(value), unit: 'MB', verdict: verdict(value, (v) => v <= RSS_LIMIT) });
  }
  {
    const a = o.backup_db?.outputBytes;
    const b = o.pg_dump?.outputBytes;
    const value = a && b ? a / b : undefined;
    t.push({ name: 'archive size (db only) / pg_dump -Fc size', limit: '≤ 1.30×', value, valueAtMin: value, unit: 'x', verdict: verdict(value, (v) => v <= 1.3) });
  }
  const sf = r.smallFiles;
  if (sf) {
    const n = sf.files.toLocaleString('en-US');
    const smallTarget = (name: string, a: SmallFilesSection['ops'][keyof SmallFilesSection['ops']], b: SmallFilesSection['ops'][keyof SmallFilesSection['ops']], bLabel: string, limit: number) => {
      const value = div(a?.wall?.median, b?.wall?.median);
      t.push({ name: `${n} small files: ${name}, wall time`, limit: `≤ ${limit.toFixed(2)}×`, value, valueAtMin: div(a?.wall?.min, b?.wall?.min), unit: 'x', verdict: verdict(value, (v) => v <= limit), why: value === undefined ? (b ? undefined : `needs ${bLabel}`) : undefined });
    };
    smallTarget('coffer backup / zip -r -1', sf.ops.backup, sf.ops.zip, 'zip', 1.5);
    smallTarget('coffer restore / (unzip + sync -f)', sf.ops.restore, sf.ops.unzip_sync, 'unzip', 1.2);
    smallTarget('coffer verify / unzip -t', sf.ops.verify, sf.ops.unzip_t, 'unzip', 2.0);
    const ops = [sf.ops.backup, sf.ops.restore, sf.ops.verify].filter((x): x is OpResult => !!x?.peakRssBytes);
    const value = ops.length ? max(ops.map((x) => x.peakRssBytes!)) : undefined;
    const worst = ops.find((x) => x.peakRssBytes === value);
    t.push({ name: `${n} small files: peak RSS of coffer backup, restore and verify (largest: ${worst?.label ?? 'n/a'})`, limit: '≤ 150 MB', value: value === undefined ? undefined : mb(value), unit: 'MB', verdict: verdict(value, (v) => v <= RSS_LIMIT) });
  }
  r.targets = t;

  r.ratios = [
    { name: 'backup, files part: coffer (files only) / tar -cf, throughput', value: div(o.backup_files?.mbps?.atMedian, o.tar?.mbps?.atMedian), valueAtMin: div(o.backup_files?.mbps?.atMin, o.tar?.mbps?.atMin) },
    { name: 'backup, files part: coffer (files only) / tar -c | gzip -1, wall time', value: ratio(o.backup_files, o.tar_gz, 'median'), valueAtMin: ratio(o.backup_files, o.tar_gz, 'min') },
    { name: 'pg_restore -j2 / pg_restore -j1', value: ratio(o.pg_restore_j2, o.pg_restore, 'median'), valueAtMin: ratio(o.pg_restore_j2, o.pg_restore, 'min') },
    { name: 'coffer backup (db+files) / (pg_dump -Fc + tar -cf)', value: div(o.backup_full?.wall?.median, sumWall(['pg_dump', 'tar'], 'median')), valueAtMin: div(o.backup_full?.wall?.min, sumWall(['pg_dump', 'tar'], 'min')) },
    { name: 'coffer backup (db+files) / (db only + files only)', value: div(o.backup_full?.wall?.median, sumWall(['backup_db', 'backup_files'], 'median')), valueAtMin: div(o.backup_full?.wall?.min, sumWall(['backup_db', 'backup_files'], 'min')) },
    { name: 'coffer restore (db+files) / pg_restore -j1', value: ratio(o.restore_full, o.pg_restore, 'median'), valueAtMin: ratio(o.restore_full, o.pg_restore, 'min') },
    { name: 'coffer restore (db+files) / coffer restore (db only)', value: ratio(o.restore_full, o.restore_db, 'median'), valueAtMin: ratio(o.restore_full, o.restore_db, 'min') },
    { name: 'age-sealed / plain restore (db+files)', value: ratio(o.restore_full_age, o.restore_full, 'median'), valueAtMin: ratio(o.restore_full_age, o.restore_full, 'min') },
    { name: 'age-sealed / plain backup (db+files)', value: ratio(o.backup_full_age, o.backup_full, 'median'), valueAtMin: ratio(o.backup_full_age, o.backup_full, 'min') },
    { name: 'coffer restore (db only) / coffer backup (db only)', value: ratio(o.restore_db, o.backup_db, 'median'), valueAtMin: ratio(o.restore_db, o.backup_db, 'min') },
    { name: 'archive size (db+files) / (pg_dump -Fc + tar) size', value: div(o.backup_full?.outputBytes, o.pg_dump?.outputBytes !== undefined && o.tar?.outputBytes !== undefined ? o.pg_dump.outputBytes + o.tar.outputBytes : undefined) },
    { name: 'encrypted / plain archive size', value: div(o.backup_full_enc?.outputBytes, o.backup_full?.outputBytes) },
    { name: 'restored database size: coffer / pg_restore', value: div(o.restore_db?.outputBytes, o.pg_restore?.outputBytes) },
  ];
}

const fx = (v: number | undefined, digits = 2) => (v === undefined ? 'n/a' : v.toFixed(digits));

export function opsTable(r: Results): string {
  const rows = OPS.filter((d) => r.ops[d.id]).map((d) => {
    const o = r.ops[d.id]!;
    const failed = o.runs.filter((x) => x.error).length;
    const basis = d.basis === 'db' ? 'table data' : d.basis === 'files' ? 'upload files' : 'data+files';
    return [
      o.label,
      `${o.runs.length - failed}${failed ? ` (+${failed} failed)` : ''}`,
      o.wall ? fmtSeconds(o.wall.min) : 'n/a',
      o.wall ? fmtSeconds(o.wall.median) : 'n/a',
      o.mbps ? `${o.mbps.atMedian.toFixed(1)}` : 'n/a',
      basis,
      o.peakRssBytes ? fmtMB(o.peakRssBytes, 0) : 'n/a',
      o.outputBytes ? fmtMB(o.outputBytes) + (d.side === 'restore' ? ' (db)' : '') : 'n/a',
    ];
  });
  return table(['operation', 'runs', 'wall min', 'wall median', 'MB/s (median)', 'MB/s of', 'peak RSS (max)', 'output size'], rows, ['l', 'r', 'r', 'r', 'r', 'l', 'r', 'r']);
}

export function targetsTable(r: Results): string {
  const v = (t: Target, x: number | undefined) => (x === undefined ? 'n/a' : t.unit === 'MB' ? `${x.toFixed(0)} MB` : `${x.toFixed(2)}×`);
  return table(
    ['target', 'median', 'min', 'limit', 'result'],
    r.targets.map((t) => [t.name, v(t, t.value), t.unit === 'MB' ? '' : v(t, t.valueAtMin), t.limit, t.verdict === 'n/a' && t.why ? `n/a (${t.why})` : t.verdict]),
    ['l', 'r', 'r', 'r', 'l'],
  );
}

export function ratiosTable(r: Pick<Results, 'ratios'>): string {
  return table(['ratio', 'median', 'min'], r.ratios.map((x) => [x.name, x.value === undefined ? 'n/a' : `${fx(x.value)}×`, x.valueAtMin === undefined ? '' : `${fx(x.valueAtMin)}×`]), ['l', 'r', 'r']);
}

/**
 * The latest results of another scale, for the RSS comparison between scale 1 and 4: of the files
 * `<date>-scale<N>.json` and `<date>-scale<N>-<tag>.json`, the one that finished last.
 */
export function loadOtherScale(resultsDir: string, scale: number): Results | undefined {
  let files: string[];
  try {
    files = fs.readdirSync(resultsDir).filter((f) => new RegExp(`-scale${scale}(-[A-Za-z0-9_.-]+)?\\.json$`).test(f));
  } catch {
    return undefined;
  }
  let latest: Results | undefined;
  for (const f of files) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(resultsDir, f), 'utf8')) as Results;
      if (r.format === 1 && r.scale === scale && (!latest || r.finishedAt > latest.finishedAt)) latest = r;
    } catch {
      // ignore unreadable results
    }
  }
  return latest;
}

export function rssComparison(current: Results, resultsDir: string): string | undefined {
  const other = [1, 4].find((s) => s !== current.scale && [1, 4].includes(current.scale));
  if (other === undefined) return undefined;
  const prev = loadOtherScale(resultsDir, other);
  if (!prev) return `No results for scale ${other} in bench/results/ yet: run \`npm run bench -- --scale ${other}\` to compare peak RSS between scale 1 and 4.`;
  const [s1, s4] = current.scale === 1 ? [current, prev] : [prev, current];
  const rows = OPS.filter((d) => s1.ops[d.id]?.peakRssBytes || s4.ops[d.id]?.peakRssBytes).map((d) => {
    const a = s1.ops[d.id]?.peakRssBytes;
    const b = s4.ops[d.id]?.peakRssBytes;
    const limit = d.coffer ? (Math.max(a ?? 0, b ?? 0) <= RSS_LIMIT ? 'PASS' : 'MISS') : '';
    const growth = d.coffer && a && b ? (b / a <= 1.1 ? 'PASS' : 'MISS') : '';
    return [d.label, a ? fmtMB(a, 0) : 'n/a', b ? fmtMB(b, 0) : 'n/a', a && b ? `${(b / a).toFixed(2)}×` : 'n/a', limit, growth];
  });
  return (
    `Scale 1 from ${s1.date} (${s1.git.commit}), scale 4 from ${s4.date} (${s4.git.commit}). Targets (coffer rows): ≤ 150 MB at both scales, and scale 4 within 10 % of scale 1.\n\n` +
    table(['operation', 'scale 1', 'scale 4', 'scale 4 / scale 1', '≤ 150 MB at both', 'scale 4 ≤ 1.10× scale 1'], rows, ['l', 'r', 'r', 'r', 'l', 'l'])
  );
}

export function phasesSection(r: Results): string {
  const parts: string[] = [];
  for (const d of OPS) {
    const p = r.ops[d.id]?.phases;
    if (!p) continue;
    parts.push(`**${d.label}** (last run, ${fmtSeconds(p.wallSeconds)} wall, ${fmtSeconds(p.loggedSeconds)} in logged statements)\n`);
    parts.push(table(['where', 'seconds', 'share of wall'], p.categories.filter((c) => c.seconds >= 0.005).map((c) => [c.name, c.seconds.toFixed(2), `${((100 * c.seconds) / p.wallSeconds).toFixed(0)}%`]), ['l', 'r', 'r']));
    parts.push(`\nlongest statements: ${p.top.slice(0, 8).map((x) => `${x.label} ${x.seconds.toFixed(2)} s`).join(', ')}\n`);
  }
  return parts.join('\n');
}

export function markdown(r: Results, resultsDir: string): string {
  const d = r.dataset;
  const rows = Object.entries(d.rows).map(([k, v]) => `${k} ${v.toLocaleString('en-US')}`).join(', ');
  const lines = [
    `# coffer bench, scale ${r.scale}, ${r.date}`,
    '',
    `- commit ${r.git.commit}${r.git.dirty.length ? ` with uncommitted changes in ${r.git.dirty.length} file(s) under src/ and migrations/ (${r.git.dirty.slice(0, 6).join(', ')}${r.git.dirty.length > 6 ? ', …' : ''})` : ''}`,
    `- machine: ${r.machine.cpus} CPUs, ${r.machine.memoryGB.toFixed(0)} GB, coffer on Node ${r.machine.cofferNode ?? r.machine.node}${r.machine.cofferNode && r.machine.cofferNode !== r.machine.node ? ` (--node; the bench itself on Node ${r.machine.node})` : ''}, Linux ${r.machine.kernel}; other sessions share the CPU, so numbers are noisy (min and median of ${r.runs} run(s))`,
    `- server: PostgreSQL ${r.server.version}, ${r.server.description}${r.server.tools ? `; client tools ${r.server.tools}` : ''}${r.server.toolsMissing ? `; pg_dump/pg_restore not compared: ${r.server.toolsMissing}` : ''}`,
    `- data set: ${rows} rows; database ${fmtMB(d.databaseBytes)} on disk (table data ${fmtMB(d.tableBytes)}, indexes ${fmtMB(d.indexBytes)}); ${d.files} upload files, ${fmtMB(d.fileBytes)} (${fmtMB(d.compressibleFileBytes)} compressible); generated in ${fmtSeconds(d.generationSeconds)}${d.filesReused ? ' (files from cache)' : ''}`,
    `- MB = 10^6 bytes. MB/s is computed over the table data (heap + TOAST of the application tables, without indexes) for database operations, over the upload files for file operations, and over both for db+files: the same numerator for coffer and the tool it is compared with. Peak RSS is the client process tree (pg_dump's and pg_restore's server backend is not their child and is not counted; neither is coffer's).`,
    `- fidelity: ${r.fidelity.failures.length === 0 ? `all ${r.fidelity.checks} restored databases equal the source (table by table, rows and sequences, schema), restored upload files equal the generated ones` : `**FAILED**: ${r.fidelity.failures.join('; ')}`}`,
    '',
    '## Results',
    '',
    opsTable(r),
    '',
    '## Targets',
    '',
    targetsTable(r),
    '',
    '## Other ratios',
    '',
    ratiosTable(r),
    '',
  ];
  if (r.smallFiles) lines.push(`## ${r.smallFiles.files.toLocaleString('en-US')} small upload files`, '', smallFilesSection(r.smallFiles));
  if (r.runtime) lines.push(`## Runtime: Node ${[r.runtime.primary.version, r.runtime.compare.version].map((v) => v.split('.')[0]).sort((x, y) => Number(x) - Number(y)).join(' and Node ')}`, '', runtimeSection(r.runtime));
  if (r.stored) lines.push('## Stored backups (HTTP service, same data)', '', storedSection(r.stored));
  if (r.crypto) lines.push('## Encryption throughput: format v1 and age', '', cryptoSection(r.crypto));
  const rss = rssComparison(r, resultsDir);
  if (rss) lines.push('## Peak RSS, scale 1 vs scale 4', '', rss, '');
  const small = r.smallFiles ? Object.values(r.smallFiles.ops).map((op) => ({ label: `${r.smallFiles!.files.toLocaleString('en-US')} small files: ${op.label}`, op })) : [];
  const cpu = cpuTable([...OPS.map((x) => ({ label: x.label, op: r.ops[x.id] })), ...small], r.machine.cpus);
  if (cpu)
    lines.push(
      '## CPU while each operation ran',
      '',
      'Medians over the runs. Client CPU is the user + system time of the command and every process it waited for, from the bench\'s own cutime and cstime in /proc/self/stat (exact); system time is the kernel working for it: file-system calls, and the write-back a `sync -f` or fsync waits for. Host CPU is the busy time of the whole machine over the same interval (/proc/stat): the client, the PostgreSQL server working for it, and anything else sharing the host (here about 0.15 CPU seconds a second when idle). Busy cores near the CPU count means the operation was bound by the CPU.',
      '',
      cpu,
      '',
    );
  const phases = phasesSection(r);
  if (phases) lines.push('## Where the server spends the time (statement log of the throwaway cluster)', '', phases, '');
  if (r.profile?.length) lines.push('## CPU profiles of coffer (--profile, one extra untimed run each)', '', ...r.profile, '');
  if (r.notes.length) lines.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  if (d.tables?.length) {
    lines.push(
      '## Data set',
      '',
      table(['table', 'rows', 'table data', 'indexes'], d.tables.map((t) => [t.name, t.rows.toLocaleString('en-US'), fmtMB(t.tableBytes), fmtMB(t.indexBytes)]), ['l', 'r', 'r', 'r']),
      '',
    );
  }
  lines.push('## Commands', '', ...OPS.filter((x) => r.ops[x.id]).map((x) => `- ${x.label}: \`${r.ops[x.id]!.command}\``), '');
  return lines.join('\n');
}
