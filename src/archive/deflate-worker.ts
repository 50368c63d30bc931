import { runInThisContext } from 'node:vm';
import zlib from 'node:zlib';
import { Worker } from 'node:worker_threads';
import { INCOMPRESSIBLE_MIN_BYTES, INCOMPRESSIBLE_RATIO, type PrecompressedMeta } from './zip-writer';

/** One buffer as it goes into the zip: deflated, or stored when deflate did not pay. */
export interface DeflatedBuffer {
  data: Buffer;
  meta: PrecompressedMeta;
}

/**
 * One buffer, deflated with one synchronous zlib call, or stored when `judge` is set and deflate does
 * not save a tenth (the zip writer's 'if-incompressible' rule, whose constants it is given). Source
 * text, so the worker and this thread run the very same code: the worker evaluates it in its script,
 * this thread with `runInThisContext` below.
 */
const DEFLATE_ONE_SOURCE = `(function deflateOne(zlib, src, level, judge, ratio, minBytes) {
  // A window no larger than the entry (at least 2^9): the same output, less zlib state to set up.
  // Output room for the whole entry in one piece, not zlib's 16 KiB default per call: 100,000
  // calls would otherwise leave 1.6 GB of dead buffers for the collector.
  let windowBits = 9;
  while (windowBits < 15 && 1 << windowBits < src.length) windowBits++;
  const out = zlib.deflateRawSync(src, { level, windowBits, chunkSize: Math.max(64, src.length + 64) });
  if (judge && src.length >= minBytes && out.length > src.length * ratio) return { out: src, method: 0 };
  return { out, method: 8 };
})`;

type DeflateOne = (zlib: typeof import('node:zlib'), src: Buffer, level: number, judge: boolean, ratio: number, minBytes: number) => { out: Buffer; method: 0 | 8 };
const deflateOne = runInThisContext(DEFLATE_ONE_SOURCE) as DeflateOne;

/** The worker: each buffer of a batch through deflateOne, with its CRC-32, the outputs sent back in one buffer. */
const WORKER_SOURCE = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const zlib = require('node:zlib');
const { level, ratio, minBytes } = workerData;
const deflateOne = ${DEFLATE_ONE_SOURCE};
parentPort.on('message', (m) => {
  try {
    const input = Buffer.from(m.input);
    const n = m.lengths.length;
    const outs = new Array(n);
    const sizes = new Uint32Array(n);
    const crcs = new Uint32Array(n);
    const methods = new Uint8Array(n);
    let at = 0;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const src = input.subarray(at, at + m.lengths[i]);
      at += m.lengths[i];
      crcs[i] = zlib.crc32(src);
      const { out, method } = deflateOne(zlib, src, level, m.judge[i] === 1, ratio, minBytes);
      methods[i] = method;
      outs[i] = out;
      sizes[i] = out.length;
      total += out.length;
    }
    const output = Buffer.allocUnsafeSlow(total);
    let put = 0;
    for (const out of outs) put += out.copy(output, put);
    parentPort.postMessage({ id: m.id, output: output.buffer, sizes, crcs, methods }, [output.buffer, sizes.buffer, crcs.buffer, methods.buffer]);
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

/** The worker's heap holds a batch or two of a few hundred KB: small limits keep its memory small too. */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 8, stackSizeMb: 1 };

interface Reply {
  id: number;
  error?: string;
  output?: ArrayBuffer;
  sizes?: Uint32Array;
  crcs?: Uint32Array;
  methods?: Uint8Array;
}

interface Pending {
  lengths: Uint32Array;
  resolve: (out: DeflatedBuffer[]) => void;
  reject: (err: Error) => void;
}

/**
 * How many buffers are deflated on the calling thread before the worker takes over. The worker pays
 * for thousands of uploads of a few KB (a 100,000-file backup: 8.5 s to 5.9 s), but costs about 30 MB
 * of RSS (its isolate and the buffers in flight): the bench's 1,050 small files of 2,000 gained
 * nothing in time from it and peaked at 144 MB instead of 112 MB.
 */
export const DEFLATE_HERE_FIRST = 5000;

/**
 * Deflates batches of small buffers (uploads of a few KB): the first `hereFirst` buffers on the calling
 * thread, the rest on a worker thread, so that for many small files the CPU of deflate runs beside
 * the thread that reads the files and writes the zip instead of after it: for 1 KB files one deflate
 * costs more than reading the file. Batches are answered in the order they were sent. The worker
 * starts with the first batch it gets; `close` stops it. A worker that fails rejects every batch it had.
 */
export class BufferDeflater {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private failure: Error | undefined;
  private closed = false;
  private hereLeft: number;

  constructor(
    private readonly level: number,
    hereFirst = DEFLATE_HERE_FIRST,
  ) {
    this.hereLeft = hereFirst;
  }

  /** Deflates `buffers` (each judged by the incompressible rule where `judge` says so). */
  deflate(buffers: readonly Buffer[], judge: readonly boolean[]): Promise<DeflatedBuffer[]> {
    if (this.closed) return Promise.reject(new Error('the deflate worker was already closed'));
    if (this.failure) return Promise.reject(this.failure);
    // Here only while the worker has had nothing: once a batch went to it, every later one does too
    // (the first buffers here, the rest there; answers keep their order either way).
    if (this.worker === undefined && buffers.length <= this.hereLeft) {
      this.hereLeft -= buffers.length;
      return Promise.resolve(buffers.map((src, i) => this.deflateHere(src, judge[i])));
    }
    const worker = this.start();
    const lengths = new Uint32Array(buffers.length);
    const flags = new Uint8Array(buffers.length);
    let total = 0;
    for (let i = 0; i < buffers.length; i++) {
      lengths[i] = buffers[i].length;
      flags[i] = judge[i] ? 1 : 0;
      total += buffers[i].length;
    }
    // A buffer of its own (not a slice of Node's shared pool), so it can be handed over, not copied.
    const input = Buffer.allocUnsafeSlow(total);
    let at = 0;
    for (const b of buffers) at += b.copy(input, at);
    const id = this.nextId++;
    return new Promise<DeflatedBuffer[]>((resolve, reject) => {
      this.pending.set(id, { lengths, resolve, reject });
      worker.ref();
      worker.postMessage({ id, input: input.buffer, lengths, judge: flags }, [input.buffer, flags.buffer]);
    });
  }

  private deflateHere(src: Buffer, judge: boolean): DeflatedBuffer {
    const { out, method } = deflateOne(zlib, src, this.level, judge, INCOMPRESSIBLE_RATIO, INCOMPRESSIBLE_MIN_BYTES);
    return { data: out, meta: { crc32: zlib.crc32(src), compressedSize: out.length, uncompressedSize: src.length, method } };
  }

  /** Stops the worker; batches still pending are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.rejectAll(new Error('the deflate worker was closed with batches pending'));
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { level: this.level, ratio: INCOMPRESSIBLE_RATIO, minBytes: INCOMPRESSIBLE_MIN_BYTES }, resourceLimits: WORKER_LIMITS });
    worker.on('message', (reply: Reply) => this.answer(reply));
    worker.on('error', (err: Error) => this.fail(new Error(`the deflate worker failed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.fail(new Error(`the deflate worker stopped (exit code ${code})`));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private answer(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.worker?.unref();
    if (reply.error !== undefined || !reply.output || !reply.sizes || !reply.crcs || !reply.methods) {
      p.reject(new Error(`the deflate worker could not deflate a batch: ${reply.error ?? 'no output'}`));
      return;
    }
    const output = Buffer.from(reply.output);
    const out: DeflatedBuffer[] = new Array<DeflatedBuffer>(p.lengths.length);
    let at = 0;
    for (let i = 0; i < p.lengths.length; i++) {
      const size = reply.sizes[i];
      out[i] = {
        data: output.subarray(at, at + size),
        meta: { crc32: reply.crcs[i], compressedSize: size, uncompressedSize: p.lengths[i], method: reply.methods[i] === 0 ? 0 : 8 },
      };
      at += size;
    }
    p.resolve(out);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.worker = undefined;
    this.rejectAll(this.failure);
  }

  private rejectAll(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }
}
