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
 * start before the spooling has finished: it follows the file as it grows, and once it has caught up,
 * each compressed chunk it is waiting for is handed to it directly instead of going through the file.
 * So an entry the zip takes while it is still being deflated touches the disk only while the zip
 * cannot keep up, and memory holds at most one chunk beyond the reader's buffer.
 */
export class EntrySpool {
  /** Compressed bytes produced so far (those handed to the reader included). */
  private written = 0;
  /** Of those, the bytes that went into the file. */
  private filed = 0;
  private crc = 0;
  private size = 0;
  private finished = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  /** Set while the reader waits at the end of what was written: takes the next chunk directly. */
  private take: ((buf: Buffer) => void) | null = null;

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
        const take = this.take;
        if (take) {
          // The reader is waiting for exactly these bytes: no need to write them down and read them back.
          this.take = null;
          this.wake = null;
          this.written += buf.length;
          take(buf);
          continue;
        }
        // Written at their offset in the entry; bytes handed over earlier leave a hole nobody reads.
        let done = 0;
        while (done < buf.length) {
          const { bytesWritten } = await this.handle.write(buf, done, buf.length - done, this.written);
          done += bytesWritten;
          this.written += bytesWritten;
          this.filed += bytesWritten;
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

  /** Compressed bytes that went through the file rather than straight to the reader. */
  get spooledBytes(): number {
    return this.filed;
  }

  /**
   * The compressed bytes, from the start, following the file until `fill` has finished. Only one
   * reader: the spool hands it chunks it is waiting for.
   */
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
        const handed = await new Promise<Buffer | undefined>((resolve) => {
          this.wake = () => resolve(undefined);
          this.take = resolve;
        });
        if (handed) {
          pos += handed.length;
          return handed;
        }
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
    this.take = null;
    w?.();
  }
}
