import type { RandomAccessSource } from '../core/types';

/**
 * 64 KiB: the plaintext chunk size of the encrypted format, so one cached block costs one chunk
 * decryption.
 */
const BLOCK_SIZE = 64 * 1024;
/** Enough for the end-of-central-directory search (up to 2 blocks) plus local headers near each other. */
const CACHED_BLOCKS = 8;

/**
 * Small reads of a RandomAccessSource (end records, local headers, whole small entries) through a small
 * block cache: each read of an encrypted source costs a chunk decryption, and many small entries share
 * one block. Large entries' data is streamed from the source directly.
 */
export class SourceReader {
  private readonly blocks = new Map<number, Promise<Buffer>>();
  /** The blocks of `blocks` that have arrived. */
  private readonly loaded = new Map<number, Buffer>();

  constructor(private readonly source: RandomAccessSource) {}

  /** `length` bytes at `position` in one read of the source, bypassing the cache (the central directory). */
  readRange(position: number, length: number): Promise<Buffer> {
    return this.source.read(position, length);
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

  /**
   * The same copy without waiting, when every block it needs is already loaded (small entries next to
   * each other mostly are); undefined otherwise, and then nothing was copied that counts.
   */
  readAtSync(buffer: Buffer, offset: number, length: number, position: number): number | undefined {
    let copied = 0;
    while (copied < length && position + copied < this.source.size) {
      const at = position + copied;
      const index = Math.floor(at / BLOCK_SIZE);
      const block = this.loaded.get(index);
      if (block === undefined) return undefined;
      const from = at - index * BLOCK_SIZE;
      const n = Math.min(length - copied, block.length - from);
      if (n <= 0) break;
      block.copy(buffer, offset + copied, from, from + n);
      copied += n;
    }
    return copied;
  }

  private block(index: number, readAhead = true): Promise<Buffer> {
    const hit = this.blocks.get(index);
    if (hit !== undefined) {
      // Re-insert to keep the map in least-recently-used order.
      this.blocks.delete(index);
      this.blocks.set(index, hit);
      return hit;
    }
    const start = index * BLOCK_SIZE;
    const loading = this.source.read(start, Math.min(this.source.size, start + BLOCK_SIZE) - start);
    loading.then(
      (buf) => {
        if (this.blocks.get(index) === loading) this.loaded.set(index, buf);
      },
      () => this.blocks.delete(index),
    );
    this.blocks.set(index, loading);
    if (this.blocks.size > CACHED_BLOCKS) {
      const oldest = this.blocks.keys().next().value as number;
      this.blocks.delete(oldest);
      this.loaded.delete(oldest);
    }
    // Reads are mostly sequential (the directory, then entry after entry): the next block is on its way
    // while this one is used, so a walk through small entries seldom waits for the disk.
    if (readAhead && (index + 1) * BLOCK_SIZE < this.source.size && !this.blocks.has(index + 1)) void this.block(index + 1, false).catch(() => undefined);
    return loading;
  }
}
