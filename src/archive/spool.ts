import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { crc32, createDeflateRaw } from 'node:zlib';
import { CofferError, errorMessage } from '../core/errors';
import type { PrecompressedMeta } from './zip-writer';

const ZLIB_CHUNK_SIZE = 64 * 1024;
const READ_CHUNK = 256 * 1024;

/**
 * One zip entry deflated into a temporary file while the zip is busy with another, to be appended
 * later with addPrecompressed. The file is unlinked as soon as it is open: its bytes live only as long
 * as this process holds it, so nothing is left behind even if the process is killed. `reader()` may
 * start before the spooling has finished: it follows the file as it grows.
 */
export class EntrySpool {
  private written = 0;
  private crc = 0;
  private size = 0;
  private finished = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  private constructor(private readonly handle: fs.promises.FileHandle) {}

  /** Creates the spool file in `dir` (a private folder) and unlinks it at once. */
  static async create(dir: string, name: string): Promise<EntrySpool> {
    const file = path.join(dir, name);
    const handle = await fs.promises.open(file, 'wx+', 0o600);
    try {
      await fs.promises.unlink(file);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
    return new EntrySpool(handle);
  }

  /** Deflates `source` at `level` into the file, with CRC-32 and sizes. Rejects (and fails readers) on any error. */
  async fill(source: Readable, level: number): Promise<void> {
    try {
      const deflate = createDeflateRaw({ level, chunkSize: ZLIB_CHUNK_SIZE });
      const feeding = (async () => {
        for await (const chunk of source) {
          const buf = chunk as Buffer;
          this.crc = crc32(buf, this.crc);
          this.size += buf.length;
          if (!deflate.write(buf)) await once(deflate, 'drain');
        }
        deflate.end();
      })().catch((err: Error) => deflate.destroy(err));
      for await (const out of deflate) {
        const buf = out as Buffer;
        let done = 0;
        while (done < buf.length) {
          const { bytesWritten } = await this.handle.write(buf, done, buf.length - done, this.written);
          done += bytesWritten;
          this.written += bytesWritten;
        }
        this.notify();
      }
      await feeding;
      this.finished = true;
    } catch (err) {
      source.destroy();
      this.failure = err instanceof Error ? err : new Error(errorMessage(err));
      throw err;
    } finally {
      this.notify();
    }
  }

  /** CRC and sizes, once `fill` has finished. */
  meta(): PrecompressedMeta {
    if (!this.finished) throw new CofferError('E_INTERNAL', 'spooled entry read before it was complete');
    return { crc32: this.crc, compressedSize: this.written, uncompressedSize: this.size, method: 8 };
  }

  /** The compressed bytes, from the start, following the file until `fill` has finished. */
  reader(): Readable {
    let pos = 0;
    const next = async (): Promise<Buffer | null> => {
      for (;;) {
        if (this.failure) throw this.failure;
        if (pos < this.written) {
          const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, this.written - pos));
          const { bytesRead } = await this.handle.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) throw new CofferError('E_BACKUP_FAILED', 'spool file ended early');
          pos += bytesRead;
          return buf.subarray(0, bytesRead);
        }
        if (this.finished) return null;
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    return new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        next().then(
          (buf) => this.push(buf),
          (err: Error) => this.destroy(err),
        );
      },
    });
  }

  /** Closes the file (its space is freed: it was unlinked). Safe to call more than once. */
  async close(): Promise<void> {
    if (!this.finished && !this.failure) this.failure = new CofferError('E_ABORTED', 'spooled entry was closed before it was complete');
    this.notify();
    await this.handle.close().catch(() => undefined);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}
