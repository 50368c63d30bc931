import { spawn, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The repository root (this file runs from dist/bench/). */
export const ROOT = path.resolve(__dirname, '..', '..');

const startedAt = Date.now();

/** A progress line on stderr, prefixed with the time since the bench started. */
export function say(message: string): void {
  const s = Math.round((Date.now() - startedAt) / 1000);
  const stamp = `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  process.stderr.write(`[bench ${stamp}] ${message}\n`);
}

export class BenchError extends Error {}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, collecting its output (for short helper commands, not measurements). */
export function run(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** run(), failing with the command's last lines of output when it does not exit 0. */
export async function runOk(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<RunResult> {
  const res = await run(cmd, args, opts);
  if (res.code !== 0) {
    const tail = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-5).join('\n');
    throw new BenchError(`${path.basename(cmd)} ${args.slice(0, 2).join(' ')} failed (${res.signal ?? `exit ${res.code}`}):\n${tail}`);
  }
  return res;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function min(values: number[]): number {
  return Math.min(...values);
}

export function max(values: number[]): number {
  return Math.max(...values);
}

/** Megabytes of 10^6 bytes, as used throughout the report (sizes, throughput and RSS alike). */
export function mb(bytes: number): number {
  return bytes / 1e6;
}

export function fmtMB(bytes: number, digits = 1): string {
  return `${mb(bytes).toFixed(digits)} MB`;
}

export function fmtSeconds(s: number): string {
  return s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`;
}

/** Total size of the regular files below `dir`. */
export function folderBytes(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        files++;
        bytes += fs.statSync(p).size;
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return { files, bytes };
}

/** Newest modification time (ms) of the files below `dir` whose names match `filter`. */
export function newestMtime(dir: string, filter: (name: string) => boolean): number {
  let newest = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (filter(e.name)) newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return newest;
}

/** A plain-text table that is also a valid Markdown table. */
export function table(header: string[], rawRows: string[][], align: ('l' | 'r')[] = []): string {
  // A | inside a cell (tar -c | gzip -1) would end the cell in Markdown: escaped as \|.
  const rows = rawRows.map((r) => r.map((c) => c.replace(/\|/g, '\\|')));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (text: string, i: number) => ((align[i] ?? 'l') === 'r' ? text.padStart(widths[i]) : text.padEnd(widths[i]));
  const line = (cells: string[]) => `| ${cells.map((c, i) => cell(c, i)).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => ((align[i] ?? 'l') === 'r' ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}
