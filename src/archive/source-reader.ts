import type { Readable } from 'node:stream';
import { RandomAccessReader } from 'yauzl';
import type { RandomAccessSource } from '../core/types';

/**
 * 64 KiB: the plaintext chunk size of the encrypted format, so one cached block costs one chunk
 * decryption. The central directory of an archive with 100,000 entries is ~8 MB, read as ~130 blocks
 * instead of 200,000 tiny range streams.
 */
const BLOCK_SIZE = 64 * 1024;
/** Enough for the end-of-central-directory search (up to 2 blocks) plus local headers near each other. */
const CACHED_BLOCKS = 8;

type ReadCallback = (err: Error | null, bytesRead?: number) => void;

/**
 * Adapts a RandomAccessSource to yauzl. Large entries' data is streamed straight from the source; the
 * small reads (end of central directory, central directory records, local headers, and whole small
 * entries) go through a small block cache, because each read of an encrypted source costs a chunk
 * decryption and many small entries share one block.
 */
export class SourceReader extends RandomAccessReader {
  private readonly blocks = new Map<number, Promise<Buffer>>();

  constructor(private readonly source: RandomAccessSource) {
    super();
  }

  override _readStreamForRange(start: number, end: number): Readable {
    return this.source.createReadStream(start, end);
  }

  /** yauzl reports `bytesRead < length` as "unexpected EOF", so short reads past the end are allowed. */
  override read(buffer: Buffer, offset: number, length: number, position: number, callback: (err: Error | null) => void): void {
    const done = callback as ReadCallback;
    this.readAt(buffer, offset, length, position).then(
      (bytesRead) => done(null, bytesRead),
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** The source is owned and closed by the ZipArchive, not by yauzl's reference counting. */
  override close(callback: (err: Error | null) => void): void {
    setImmediate(() => callback(null));
  }

  /** Copies up to `length` bytes at `position` into `buffer`; returns how many there were. */
  async readAt(buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
    let copied = 0;
    while (copied < length && position + copied < this.source.size) {
      const at = position + copied;
      const index = Math.floor(at / BLOCK_SIZE);
      const block = await this.block(index);
      const from = at - index * BLOCK_SIZE;
      const n = Math.min(length - copied, block.length - from);
      if (n <= 0) break;
      block.copy(buffer, offset + copied, from, from + n);
      copied += n;
    }
    return copied;
  }

  private block(index: number): Promise<Buffer> {
    const hit = this.blocks.get(index);
    if (hit !== undefined) {
      // Re-insert to keep the map in least-recently-used order.
      this.blocks.delete(index);
      this.blocks.set(index, hit);
      return hit;
    }
    const start = index * BLOCK_SIZE;
    const loading = this.source.read(start, Math.min(this.source.size, start + BLOCK_SIZE) - start);
    loading.catch(() => this.blocks.delete(index));
    this.blocks.set(index, loading);
    if (this.blocks.size > CACHED_BLOCKS) {
      const oldest = this.blocks.keys().next().value as number;
      this.blocks.delete(oldest);
    }
    return loading;
  }
}
