import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { BenchError } from './util';

/**
 * `coffer serve` as an operator runs it, and the few HTTP calls the stored-backups section makes.
 * The service logs JSON lines (pino, on stderr); the one that says "coffer listening on http://…"
 * tells that it is ready and where.
 */
export interface Service {
  url: string;
  pid: number;
  /** SIGTERM, then waits for the exit (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<void>;
  /** For exit handlers: SIGKILL, no waiting. */
  stopSync(): void;
  /** The last lines the service wrote (stdout and stderr), for error messages. */
  tail(): string;
}

export function startService(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<Service> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let lines: string[] = [];
    let settled = false;
    const tail = () => lines.slice(-8).join('\n');
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const fail = (message: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new BenchError(`${message}${tail() ? `:\n${tail()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`coffer serve did not log "coffer listening on" within ${timeoutMs / 1000} s`), timeoutMs);
    child.on('error', (err) => fail(`coffer serve could not start (${err.message})`));
    child.once('exit', (code, signal) => fail(`coffer serve exited (${signal ?? `exit ${code}`}) before it was listening`));
    const onLine = (line: string) => {
      lines.push(line);
      if (lines.length > 40) lines = lines.slice(-20);
      const url = settled ? undefined : listeningUrl(line);
      if (!url) return;
      settled = true;
      clearTimeout(timer);
      resolve(handle(child, url, exited, tail));
    };
    // coffer's log (pino) goes to stderr; stdout is read the same way in case that changes.
    for (const stream of [child.stdout!, child.stderr!]) {
      let partial = '';
      stream.on('data', (d: Buffer) => {
        const parts = (partial + d.toString()).split('\n');
        partial = parts.pop()!;
        parts.filter(Boolean).forEach(onLine);
      });
    }
  });
}

function listeningUrl(line: string): string | undefined {
  try {
    const entry = JSON.parse(line) as { msg?: unknown };
    const m = typeof entry.msg === 'string' ? /coffer listening on (http:\/\/\S+)/.exec(entry.msg) : null;
    return m ? m[1] : undefined;
  } catch {
    return undefined;
  }
}

function handle(child: ChildProcess, url: string, exited: Promise<void>, tail: () => string): Service {
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    url,
    pid: child.pid!,
    tail,
    async stop(graceMs = 30_000) {
      if (!running()) return;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs)));
      const killed = await Promise.race([exited.then(() => false), late]);
      clearTimeout(timer);
      if (killed) {
        child.kill('SIGKILL');
        await exited;
        throw new BenchError(`coffer serve did not stop within ${graceMs / 1000} s of SIGTERM (killed)`);
      }
    },
    stopSync() {
      if (running()) child.kill('SIGKILL');
    },
  };
}

export interface Received {
  status: number;
  /** From sending the request to the response's last byte. */
  seconds: number;
  bytes: number;
  /** The body when the status is not 2xx (an error answer), or when `keepBody` was asked. */
  text?: string;
  sha256?: string;
}

export interface RequestOptions {
  method: string;
  headers?: Record<string, string>;
  json?: unknown;
  /** Hash the body as it arrives. */
  sha256?: boolean;
  /** Keep the body (small JSON answers); otherwise bytes are counted and dropped. */
  keepBody?: boolean;
}

/** One HTTP request; the body is counted (and hashed if asked) as it arrives, never held in memory. */
export function request(url: string, opts: RequestOptions): Promise<Received> {
  return new Promise((resolve, reject) => {
    const body = opts.json === undefined ? undefined : Buffer.from(JSON.stringify(opts.json));
    const headers: Record<string, string> = { ...opts.headers };
    if (body) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(body.length);
    }
    const started = performance.now();
    const req = http.request(url, { method: opts.method, headers }, (res) => {
      const status = res.statusCode ?? 0;
      const keep = opts.keepBody || status < 200 || status >= 300;
      const hash = opts.sha256 ? createHash('sha256') : undefined;
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        hash?.update(d);
        if (keep && bytes <= 1e6) chunks.push(d);
      });
      res.on('close', () => {
        // A response cut in the middle (coffer destroys it when a backup fails after the first byte).
        if (!res.complete) reject(new Error(`${opts.method} ${new URL(url).pathname}: connection cut after ${bytes} bytes`));
      });
      res.on('end', () =>
        resolve({
          status,
          seconds: (performance.now() - started) / 1000,
          bytes,
          text: keep ? Buffer.concat(chunks).toString('utf8') : undefined,
          sha256: hash?.digest('hex'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A JSON request whose answer must have the expected status; returns the parsed body. */
export async function requestJson<T>(url: string, opts: RequestOptions & { expect: number }): Promise<T> {
  const res = await request(url, { ...opts, keepBody: true });
  if (res.status !== opts.expect) throw new Error(`${opts.method} ${new URL(url).pathname}: HTTP ${res.status} (expected ${opts.expect}): ${(res.text ?? '').slice(0, 300)}`);
  return (res.text ? JSON.parse(res.text) : undefined) as T;
}

/** Runs a short command with `input` on its stdin; resolves with its stdout, fails on a non-zero exit. */
export function runWithInput(cmd: string, args: string[], input: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      code === 0 ? resolve(stdout) : reject(new BenchError(`${args.slice(-4).join(' ')} failed (${signal ?? `exit ${code}`}): ${(stderr.trim() || stdout.trim()).split('\n').slice(-3).join('\n')}`)),
    );
    child.stdin.end(input);
  });
}
