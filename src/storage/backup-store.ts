import type { Writable } from 'node:stream';
import { CofferError } from '../core/errors';
import type { RandomAccessSource } from '../core/types';

/**
 * Where stored backups live (DESIGN §8). Every store keeps flat objects named `<id>.zip`,
 * `<id>.zip.crypt` and `<id>.json`; it knows nothing of what they hold. One contract test suite
 * (test/storage/store-contract.ts) is passed by every implementation.
 */
export interface StoredObject {
  name: string;
  size: number;
  modifiedAt: Date;
}

/** An object being written: invisible under its name until commit. */
export interface PendingObject {
  readonly stream: Writable;
  /** Ends the stream and makes the object visible, complete and durable; returns its size. */
  commit(): Promise<{ size: number }>;
  /** Drops what was written; nothing is left under the object's name or its partial name. */
  abort(): Promise<void>;
}

export interface BackupStore {
  readonly kind: 'local' | 's3';
  /** Where the objects are, for people and `GET /api/v1/backups/directory` (never credentials). */
  readonly location: string;
  /** Starts writing `name`. Fails with E_STORE (naming the location) when the store cannot take it. */
  put(name: string): Promise<PendingObject>;
  /** Opens a committed object for reading at any offset; E_BACKUP_MISSING when it is not there. */
  open(name: string): Promise<RandomAccessSource>;
  /** A committed object's size and time, or undefined. */
  stat(name: string): Promise<StoredObject | undefined>;
  /** Every committed object, by name. Partial objects are never listed. */
  list(): Promise<StoredObject[]>;
  /** Removes a committed object; removing one that is not there is not an error. */
  delete(name: string): Promise<void>;
  /** Names of partial objects (what interrupted writes left), with their `.partial` suffix. */
  listPartials(): Promise<string[]>;
  /** Removes partial objects whose names start with `prefix` (all when empty); returns their names. */
  removePartials(prefix?: string): Promise<string[]>;
}

const OBJECT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

/** Object names are coffer's own (ids and fixed suffixes); anything else is a bug, refused loudly. */
export function checkObjectName(name: string): void {
  if (!OBJECT_NAME.test(name) || name.includes('..') || name.endsWith('.partial')) {
    throw new CofferError('E_INTERNAL', `invalid store object name ${JSON.stringify(name)}`);
  }
}

/** Writes a small object in one go. */
export async function putBuffer(store: BackupStore, name: string, data: Buffer | string): Promise<void> {
  const pending = await store.put(name);
  try {
    await new Promise<void>((resolve, reject) => {
      pending.stream.once('error', reject);
      pending.stream.write(data, (err) => (err ? reject(err) : resolve()));
    });
    await pending.commit();
  } catch (err) {
    await pending.abort().catch(() => undefined);
    throw err;
  }
}

/** Reads a small object whole (a backup's record). */
export async function readObject(store: BackupStore, name: string, maxBytes = 16 * 1024 * 1024): Promise<Buffer> {
  const source = await store.open(name);
  try {
    if (source.size > maxBytes) throw new CofferError('E_STORE', `${store.location}: ${name} is ${source.size} bytes, more than the ${maxBytes} expected`);
    return await source.read(0, source.size);
  } finally {
    await source.close();
  }
}

/** A failure of the store itself (full disk, no permission), as one error that names where. */
export function storeError(store: BackupStore, err: unknown, doing: string): CofferError {
  if (err instanceof CofferError && (err.code === 'E_STORE' || err.code === 'E_BACKUP_MISSING')) return err;
  const e = err as NodeJS.ErrnoException;
  const why = e.code === 'ENOSPC' ? 'no space left on the device' : e.code === 'EACCES' || e.code === 'EPERM' ? 'permission denied' : e.code === 'EROFS' ? 'read-only file system' : (e.message ?? String(err));
  return new CofferError('E_STORE', `${doing} in the backup store ${store.location}: ${why}`, { cause: err });
}
