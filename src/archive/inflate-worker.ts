import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';

/**
 * Inflating small zip entries and taking their CRC-32 a batch at a time, for
 * `ZipArchive.checkEntries`: on a walk through 100,000 small uploads the zlib calls (an inflater set
 * up per entry, the inflate itself, the CRC) are most of the CPU time. A batch is inflated here or in
 * a worker thread, beside the main thread's reading and checking of the next batch. This only
 * computes; what the results mean (declared size, CRC-32, which error) is decided by the zip reader,
 * with the same checks as `readEntryBuffer`.
 */

/** Per entry: `length` and `crc` of the (inflated) bytes, or the error zlib gave. */
export type InflateOutcome = { length: number; crc: number; error?: undefined } | { error: { code: string | undefined; message: string } };

/** A batch's jobs as numbers, FIELDS a job: offset and length of its stored bytes in the batch buffer, maxOutputLength (0: stored, take the CRC of the bytes as they are), chunkSize. */
const FIELDS = 4;

/** The jobs of one batch, as inflateBatch reads them (no object per entry). */
export class InflateJobs {
  count = 0;
  readonly numbers: Float64Array;

  constructor(readonly capacity: number) {
    this.numbers = new Float64Array(capacity * FIELDS);
  }

  /** `inflate` undefined: a stored entry. */
  add(offset: number, length: number, inflate: { maxOutputLength: number; chunkSize: number } | undefined): void {
    const at = this.count++ * FIELDS;
    this.numbers[at] = offset;
    this.numbers[at + 1] = length;
    this.numbers[at + 2] = inflate?.maxOutputLength ?? 0;
    this.numbers[at + 3] = inflate?.chunkSize ?? 0;
  }
}

interface BatchResult {
  /** Three numbers per entry: 1 if it failed (see errors), length, crc. */
  out: Float64Array;
  /** [entry, code, message] of the entries zlib refused. */
  errors: [number, string | undefined, string][];
}

/**
 * The one implementation, run in this thread and, as its source text, in the worker; so it uses
 * nothing but its parameters and globals (and the job layout is written out: 4 numbers per job).
 */
function inflateBatch(z: Pick<typeof zlib, 'inflateRawSync' | 'crc32'>, data: Buffer, jobs: Float64Array, n: number): BatchResult {
  const out = new Float64Array(n * 3);
  const errors: BatchResult['errors'] = [];
  for (let k = 0; k < n; k++) {
    const at = jobs[k * 4];
    const input = data.subarray(at, at + jobs[k * 4 + 1]);
    const maxOutputLength = jobs[k * 4 + 2];
    let bytes = input;
    if (maxOutputLength > 0) {
      try {
        bytes = z.inflateRawSync(input, { maxOutputLength, chunkSize: jobs[k * 4 + 3] });
      } catch (err) {
        const e = err as { code?: unknown; message?: unknown };
        out[k * 3] = 1;
        errors.push([k, typeof e.code === 'string' ? e.code : undefined, typeof e.message === 'string' ? e.message : String(err)]);
        continue;
      }
    }
    out[k * 3 + 1] = bytes.length;
    out[k * 3 + 2] = z.crc32(bytes);
  }
  return { out, errors };
}

/**
 * The worker: inflateBatch's source text and a message loop, run with `eval` (so the compiled build
 * and the TypeScript sources under test run the same code). In: `{ id, data, jobs, count }`; out:
 * `{ id, out, errors }`.
 */
const WORKER_SOURCE = `'use strict';
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
const inflateBatch = ${inflateBatch.toString()};
parentPort.on('message', ({ id, data, jobs, count }) => {
  const { out, errors } = inflateBatch(zlib, Buffer.from(data), jobs, count);
  parentPort.postMessage({ id, out, errors }, [out.buffer]);
});
`;

function decode({ out, errors }: BatchResult): InflateOutcome[] {
  const outcomes: InflateOutcome[] = [];
  for (let k = 0; k < out.length / 3; k++) outcomes.push({ length: out[k * 3 + 1], crc: out[k * 3 + 2] });
  for (const [k, code, message] of errors) outcomes[k] = { error: { code, message } };
  return outcomes;
}

/** The jobs of one batch, in this thread. */
export function inflateHere(data: Buffer, jobs: InflateJobs): InflateOutcome[] {
  return decode(inflateBatch(zlib, data, jobs.numbers, jobs.count));
}

interface Pending {
  resolve: (outcomes: InflateOutcome[]) => void;
  reject: (err: Error) => void;
}

/** One worker thread; `inflate` may be called again before earlier batches are done (they queue). */
export class InflateWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private failure: Error | undefined;

  constructor() {
    // A small heap: the worker holds a batch or two (a MiB each) and the inflated bytes of one entry at a time.
    this.worker = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 } });
    this.worker.unref();
    this.worker.on('message', (m: BatchResult & { id: number }) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      p.resolve(decode(m));
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`the inflate worker stopped (exit code ${code})`)));
  }

  /** Batches sent and not yet answered. */
  get busy(): number {
    return this.pending.size;
  }

  /** Inflates (or only checksums) every job's bytes in `data`; `data` and `jobs` are handed over to the worker. */
  inflate(data: ArrayBuffer, jobs: InflateJobs): Promise<InflateOutcome[]> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<InflateOutcome[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, data, jobs: jobs.numbers, count: jobs.count }, [data, jobs.numbers.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.fail(new Error('the inflate worker was closed'));
    await this.worker.terminate();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }
}
