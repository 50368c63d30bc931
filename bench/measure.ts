import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { OpResult } from './report';
import { max, mb, median, min } from './util';

/**
 * Wall time and peak memory of one command. Peak RSS is the largest sum of VmRSS over the process and
 * all its descendants, sampled every 50 ms (descendants found through the ppid field of
 * /proc/<pid>/stat), or the largest single-process VmHWM seen, whichever is higher: VmHWM is the
 * kernel's own high-water mark, so a short spike between two samples of a lone process is not missed.
 * Only the client process tree is seen: a PostgreSQL backend serving the command is not its child.
 */
export interface Measurement {
  wallSeconds: number;
  peakRssBytes: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Last lines of stderr (and of stdout when it was not redirected). */
  outputTail: string;
  /** CPU seconds, see CpuUse; absent where /proc cannot be read. */
  cpu?: CpuUse;
}

/**
 * Where the CPU went while one command ran. `client` is the user + system time of the command and
 * every descendant it waited for: the growth of the bench's own cutime + cstime (/proc/self/stat),
 * which the kernel adds when the command is reaped, so it is exact and misses nothing that ran
 * between two samples. `host` is the busy time of the whole machine over the same interval (every
 * CPU's user, nice, system, irq, softirq and steal jiffies in /proc/stat): the client, the
 * PostgreSQL server working for it, and whatever else shares the host. `iowait` is the machine's
 * idle time with I/O outstanding. Seconds of CPU, so on an N-CPU host `host` can reach N × wall.
 */
export interface CpuUse {
  client: number;
  /** The two parts of `client`: user time, and system time (the kernel working for the command). */
  user: number;
  system: number;
  host: number;
  iowait: number;
}

/** Linux reports /proc times in USER_HZ ticks, 100 a second on every architecture Node runs on. */
const TICKS_PER_SECOND = 100;

interface CpuTicks {
  user: number;
  system: number;
  busy: number;
  iowait: number;
}

function cpuTicks(): CpuTicks | undefined {
  try {
    const self = fs.readFileSync('/proc/self/stat', 'latin1');
    const f = self.slice(self.lastIndexOf(')') + 2).split(' ');
    // After the name comes field 3 (state), so field n is f[n - 3]: cutime is field 16, cstime 17.
    const [user, system] = [Number(f[13]), Number(f[14])];
    const line = fs.readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/);
    const [hUser, hNice, hSystem, , iowait, irq, softirq, steal] = line.slice(1).map(Number);
    const busy = hUser + hNice + hSystem + irq + softirq + (steal || 0);
    return [user, system, busy, iowait].every(Number.isFinite) ? { user, system, busy, iowait } : undefined;
  } catch {
    return undefined;
  }
}

function cpuSince(from: CpuTicks | undefined): CpuUse | undefined {
  const to = cpuTicks();
  if (!from || !to) return undefined;
  const s = (k: keyof CpuTicks) => (to[k] - from[k]) / TICKS_PER_SECOND;
  return { client: s('user') + s('system'), user: s('user'), system: s('system'), host: s('busy'), iowait: s('iowait') };
}

/**
 * Flushes every filesystem's dirty pages (`sync`) before a measured run, so that no run pays for the
 * writeback of the one before it (a 350 MB archive, or the removal of a 100,000-file restore target),
 * which `sync -f` in the unzip row and coffer's own flushes would otherwise absorb. It does not remove
 * the spread a shared disk's flush adds during a run. A missing or failing `sync` is ignored.
 */
export async function settleDisks(): Promise<void> {
  await new Promise<void>((resolve) => spawn('sync', [], { stdio: 'ignore' }).once('close', () => resolve()).once('error', () => resolve()));
}

export interface MeasureOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Redirect stdout to this file. */
  stdoutFile?: string;
  sampleMs?: number;
}

function readProc(pid: number, file: string): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'latin1');
  } catch {
    return undefined;
  }
}

/** pid → ppid for every process, from /proc/<pid>/stat (the field after the parenthesised name). */
function parentMap(): Map<number, number> {
  const map = new Map<number, number>();
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return map;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readProc(Number(name), 'stat');
    if (!stat) continue;
    const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    map.set(Number(name), Number(after[1]));
  }
  return map;
}

function descendants(root: number, parents: Map<number, number>): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parents) {
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]) ?? []));
  return out;
}

function statusKb(status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return m ? Number(m[1]) : 0;
}

export class RssSampler {
  peak = 0;
  private timer: NodeJS.Timeout | undefined;
  private tree: number[] = [];
  private ticks = 0;

  constructor(
    private readonly root: number,
    private readonly intervalMs = 50,
  ) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  sample(): void {
    // A full /proc scan costs ~1.5 ms here; new descendants are looked for on every 4th tick only,
    // the known ones are read on every tick.
    if (this.ticks++ % 4 === 0 || this.tree.length === 0) this.tree = descendants(this.root, parentMap());
    let sum = 0;
    for (const pid of this.tree) {
      const status = readProc(pid, 'status');
      if (!status) continue;
      sum += statusKb(status, 'VmRSS') * 1024;
      this.peak = Math.max(this.peak, statusKb(status, 'VmHWM') * 1024);
    }
    this.peak = Math.max(this.peak, sum);
  }
}

export function measure(cmd: string, args: string[], opts: MeasureOptions = {}): Promise<Measurement> {
  return new Promise((resolve, reject) => {
    const out = opts.stdoutFile ? fs.openSync(opts.stdoutFile, 'w') : undefined;
    const ticks = cpuTicks();
    const started = performance.now();
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', out ?? 'pipe', 'pipe'] });
    let tail = '';
    const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-4000));
    child.stdout?.on('data', keep);
    child.stderr!.on('data', keep);
    let wall = 0;
    let cpu: CpuUse | undefined;
    const sampler = child.pid ? new RssSampler(child.pid, opts.sampleMs ?? 50) : undefined;
    sampler?.start();
    child.on('error', (err) => {
      sampler?.stop();
      if (out !== undefined) fs.closeSync(out);
      reject(err);
    });
    child.on('exit', () => {
      wall = (performance.now() - started) / 1000;
      cpu = cpuSince(ticks);
      sampler?.stop();
    });
    child.on('close', (code, signal) => {
      if (out !== undefined) fs.closeSync(out);
      resolve({ wallSeconds: wall, peakRssBytes: sampler?.peak ?? 0, exitCode: code, signal, cpu, outputTail: tail.trim().split('\n').slice(-6).join('\n') });
    });
  });
}

/** The file's size, or 0 when it does not exist. */
export function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

export function describeCommand(cmd: string, args: string[]): string {
  return [path.basename(cmd), ...args].map((a) => (/[\s'"]/.test(a) ? JSON.stringify(a) : a)).join(' ');
}

/** Wall time, MB/s over `bytes`, peak RSS, output size and CPU of an operation's successful runs. */
export function summariseRuns(op: OpResult, bytes: number): void {
  const ok = op.runs.filter((r) => !r.error);
  if (ok.length === 0) return;
  const walls = ok.map((r) => r.wallSeconds);
  op.wall = { min: min(walls), median: median(walls), max: max(walls) };
  op.mbps = { atMedian: mb(bytes) / op.wall.median, atMin: mb(bytes) / op.wall.min };
  op.peakRssBytes = max(ok.map((r) => r.peakRssBytes));
  op.outputBytes = ok[ok.length - 1].outputBytes;
  const cpu = ok.map((r) => r.cpu).filter((c): c is CpuUse => !!c);
  const at = (k: keyof CpuUse) => median(cpu.map((c) => c[k]));
  if (cpu.length) op.cpu = { client: at('client'), user: at('user'), system: at('system'), host: at('host'), iowait: at('iowait') };
}
