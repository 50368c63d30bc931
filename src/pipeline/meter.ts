import { createHash, type Hash } from 'node:crypto';
import { pipeline, Transform, type Readable } from 'node:stream';

/** Passes bytes through while counting them and, as asked, their lines and their SHA-256. */
export class Meter extends Transform {
  bytes = 0;
  lines = 0;
  private readonly hash: Hash | undefined;
  private readonly countLines: boolean;
  private digestHex: string | undefined;

  constructor(opts: { lines?: boolean; sha256?: boolean } = {}) {
    super();
    this.countLines = opts.lines ?? false;
    this.hash = opts.sha256 === false ? undefined : createHash('sha256');
  }

  _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    this.hash?.update(chunk);
    if (this.countLines) {
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) this.lines++;
    }
    cb(null, chunk);
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
