import { createHash, type Hash } from 'node:crypto';
import { pipeline, Transform, type Readable } from 'node:stream';

/**
 * Passes bytes through while counting them and, as asked, their lines and their SHA-256. With
 * `batchBytes`, small chunks are passed on gathered into chunks of about that size.
 */
export class Meter extends Transform {
  bytes = 0;
  lines = 0;
  private readonly hash: Hash | undefined;
  private readonly countLines: boolean;
  private readonly batchBytes: number;
  private batch: Buffer[] = [];
  private batched = 0;
  private digestHex: string | undefined;

  constructor(opts: { lines?: boolean; sha256?: boolean; batchBytes?: number } = {}) {
    super();
    this.countLines = opts.lines ?? false;
    this.hash = opts.sha256 === false ? undefined : createHash('sha256');
    this.batchBytes = opts.batchBytes ?? 0;
  }

  _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    this.hash?.update(chunk);
    if (this.countLines) {
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) this.lines++;
    }
    if (this.batchBytes === 0 || (this.batched === 0 && chunk.length >= this.batchBytes)) return cb(null, chunk);
    this.batch.push(chunk);
    this.batched += chunk.length;
    if (this.batched < this.batchBytes) return cb();
    cb(null, this.takeBatch());
  }

  _flush(cb: (err?: Error | null, data?: Buffer) => void): void {
    if (this.batched > 0) return cb(null, this.takeBatch());
    cb();
  }

  private takeBatch(): Buffer {
    const out = this.batch.length === 1 ? this.batch[0] : Buffer.concat(this.batch, this.batched);
    this.batch = [];
    this.batched = 0;
    return out;
  }

  /** The SHA-256 of everything that passed, once the stream has ended. */
  get sha256(): string {
    if (!this.hash) throw new Error('this meter does not hash');
    this.digestHex ??= this.hash.digest('hex');
    return this.digestHex;
  }
}

/** source piped into meter, with source errors carried into meter (plain pipe() would drop them). */
export function through(source: Readable, meter: Meter): Meter {
  return pipeline(source, meter, () => undefined) as Meter;
}
