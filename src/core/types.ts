import type { Readable } from 'node:stream';

/**
 * How an archive is encrypted, told by its first bytes: not at all (a zip), format v1 (AES-256-GCM
 * with a raw key or a passphrase, `.zip.crypt`) or age v1 (X25519 recipients, `.zip.age`).
 */
export const ENCRYPTIONS = ['none', 'aes-256-gcm', 'age'] as const;
export type Encryption = (typeof ENCRYPTIONS)[number];

/**
 * Bytes that can be read at any offset: a plain file, or the plaintext view of an encrypted archive.
 * The zip reader only needs this, so it works the same on both.
 */
export interface RandomAccessSource {
  /** Total size in bytes. */
  readonly size: number;
  /** A stream of the bytes in [start, end) (end exclusive). */
  createReadStream(start: number, end: number): Readable;
  /**
   * The bytes at [position, position + length), fewer only where the source ends. For small reads
   * (headers, single chunks); streams are for the bulk.
   */
  read(position: number, length: number): Promise<Buffer>;
  /**
   * Optional: fills all of `buffer` with the bytes at `position` (E_ARCHIVE_TRUNCATED if the source
   * ends sooner). Lets a reader that reads a lot reuse its buffers instead of allocating one a read.
   */
  readInto?(buffer: Buffer, position: number): Promise<void>;
  close(): Promise<void>;
}

/** Counts that backup and restore both report while they run. */
export interface ProgressCounts {
  table?: string;
  tablesDone: number;
  tablesTotal: number;
  rows: number;
  files: number;
  fileBytes: number;
}
