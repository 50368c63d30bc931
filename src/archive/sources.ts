import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { CofferError } from '../core/errors';
import type { RandomAccessSource } from '../core/types';

/** A RandomAccessSource over a plain file. One descriptor, shared by all ranges (positional reads). */
export async function fileSource(path: string): Promise<RandomAccessSource> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'E_NOT_FOUND' : 'E_USAGE';
    throw new CofferError(code, `cannot open archive '${path}': ${(err as Error).message}`, { cause: err });
  }
  const fh = handle;
  const { size } = await fh.stat();
  let closed = false;
  return {
    size,
    createReadStream(start: number, end: number): Readable {
      checkRange(start, end, size);
      return rangeStream(fh, start, end);
    },
    async read(position: number, length: number): Promise<Buffer> {
      checkRange(position, Math.min(size, position + length), size);
      return readFully(fh, position, Math.min(length, size - position));
    },
    async readInto(buffer: Buffer, position: number): Promise<void> {
      checkRange(position, position + buffer.length, size);
      await fill(fh, buffer, position);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}

const READ_CHUNK = 256 * 1024;

/**
 * Positional reads of [start, end) from a shared handle. Not `FileHandle.createReadStream`: destroying
 * such a stream closes the handle even with autoClose off, and yauzl destroys the streams it is done with.
 */
function rangeStream(fh: FileHandle, start: number, end: number): Readable {
  let position = start;
  return new Readable({
    highWaterMark: READ_CHUNK,
    read() {
      const length = Math.min(READ_CHUNK, end - position);
      if (length <= 0) {
        this.push(null);
        return;
      }
      fh.read(Buffer.allocUnsafe(length), 0, length, position).then(
        ({ bytesRead, buffer }) => {
          if (bytesRead === 0) {
            this.destroy(new Error(`unexpected end of file at byte ${position} (the file shrank while being read)`));
            return;
          }
          position += bytesRead;
          this.push(buffer.subarray(0, bytesRead));
        },
        (err: unknown) => this.destroy(err as Error),
      );
    },
  });
}

/** A RandomAccessSource over bytes in memory (tests, small fixtures). */
export function bufferSource(buf: Buffer, chunkSize = 64 * 1024): RandomAccessSource {
  return {
    size: buf.length,
    createReadStream(start: number, end: number): Readable {
      checkRange(start, end, buf.length);
      let position = start;
      return new Readable({
        read() {
          if (position >= end) {
            this.push(null);
            return;
          }
          const next = Math.min(end, position + chunkSize);
          this.push(buf.subarray(position, next));
          position = next;
        },
      });
    },
    read(position: number, length: number): Promise<Buffer> {
      checkRange(position, Math.min(buf.length, position + length), buf.length);
      return Promise.resolve(Buffer.from(buf.subarray(position, position + length)));
    },
    readInto(into: Buffer, position: number): Promise<void> {
      checkRange(position, position + into.length, buf.length);
      buf.copy(into, 0, position, position + into.length);
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  };
}

/** Exactly `length` bytes at `position` of an open file; a file that shrank meanwhile is an error. */
export async function readFully(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  await fill(fh, buf, position);
  return buf;
}

async function fill(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let filled = 0;
  while (filled < buf.length) {
    const { bytesRead } = await fh.read(buf, filled, buf.length - filled, position + filled);
    if (bytesRead === 0) throw new CofferError('E_ARCHIVE_TRUNCATED', `unexpected end of file at byte ${position + filled} (the file shrank while being read)`);
    filled += bytesRead;
  }
}

function checkRange(start: number, end: number, size: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > size) {
    throw new RangeError(`invalid byte range [${start}, ${end}) of a ${size}-byte source`);
  }
}
