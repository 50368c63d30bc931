import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CofferError } from '../core/errors';

export const UPLOAD_KINDS = { file: 'uploadedfiles', image: 'uploadedimages', asset: 'uploadedassets' } as const;
export type UploadKind = keyof typeof UPLOAD_KINDS;
export const UPLOAD_FOLDER_NAMES = Object.values(UPLOAD_KINDS);

/**
 * The upload kind a URL segment names (`files`, `images`, `assets`, or the singular), or undefined.
 * Own keys only: a segment such as `constructor` or `__proto__` must not reach Object.prototype.
 */
export function uploadKindNamed(segment: string): UploadKind | undefined {
  const kind = segment.endsWith('s') ? segment.slice(0, -1) : segment;
  return Object.hasOwn(UPLOAD_KINDS, kind) ? (kind as UploadKind) : undefined;
}

/** Uploads are received under `.upload-<random>` beside their final name and renamed when complete. */
export const UPLOAD_TEMP_PREFIX = '.upload-';
// Before the dot-prefixed names, temporary files were `<uuid>.upload-<pid>`; a crash may have left some.
const LEGACY_TEMP_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.upload-\d+$/;

/** True for the name of an upload still being received (or abandoned by a crash): never backed up. */
export function isUploadInProgress(name: string): boolean {
  return name.startsWith(UPLOAD_TEMP_PREFIX) || LEGACY_TEMP_NAME.test(name);
}

export interface StoredUpload {
  /** Relative to DATA_DIR, always generated here: `<folder>/<2 hex>/<uuid>`. */
  storagePath: string;
  size: number;
  sha256: Buffer;
}

/**
 * Stores an upload under a generated name. The client's file name is never part of the path. Data is
 * written to a private temporary name (created exclusively, mode 0640) and renamed only when complete
 * and within the size limit; if the input fails (client gone, size limit) the temporary file is closed
 * and removed before the error is passed on.
 */
export async function storeUpload(dataDir: string, kind: UploadKind, input: Readable, maxBytes: number): Promise<StoredUpload> {
  // The input may fail before the file is open (size limit, client gone), and an 'error' nobody hears
  // ends the process: this listener stays, and pipeline() below finds the error on the destroyed stream.
  input.on('error', () => undefined);
  const id = randomUUID();
  const storagePath = `${UPLOAD_KINDS[kind]}/${id.slice(0, 2)}/${id}`;
  const finalPath = path.join(dataDir, storagePath);
  const tmpPath = path.join(path.dirname(finalPath), UPLOAD_TEMP_PREFIX + randomBytes(12).toString('hex'));
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > maxBytes) return cb(new CofferError('E_PAYLOAD_TOO_LARGE', `upload exceeds the limit of ${maxBytes} bytes`));
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  let handle: fs.promises.FileHandle | undefined;
  let created = false;
  try {
    await fs.promises.mkdir(path.dirname(finalPath), { recursive: true });
    handle = await fs.promises.open(tmpPath, 'wx', 0o640);
    created = true;
    // The write stream closes the file when it finishes or fails; pipeline() waits for that.
    await pipeline(input, meter, handle.createWriteStream());
    await fs.promises.rename(tmpPath, finalPath);
  } catch (err) {
    input.destroy();
    // Closed already unless the failure came before the pipeline started.
    await handle?.close().catch(() => undefined);
    if (created) await fs.promises.rm(tmpPath, { force: true }).catch(() => undefined);
    throw err;
  }
  return { storagePath, size, sha256: hash.digest() };
}

/** The absolute path of a stored upload; refuses anything that would leave the upload folders. */
export function resolveUploadPath(dataDir: string, storagePath: string): string {
  const top = storagePath.split('/')[0];
  const resolved = path.resolve(dataDir, storagePath);
  if (!(UPLOAD_FOLDER_NAMES as string[]).includes(top) || !resolved.startsWith(path.resolve(dataDir, top) + path.sep)) {
    throw new CofferError('E_VALIDATION', 'stored path is outside the upload folders');
  }
  return resolved;
}

export async function removeUpload(dataDir: string, storagePath: string): Promise<void> {
  await fs.promises.rm(resolveUploadPath(dataDir, storagePath), { force: true });
}

/**
 * Removes the temporary files of uploads that a crash abandoned (kill -9 mid-upload). Only files
 * untouched for longer than `idleMs` go: an upload still being received writes more often than that
 * (the idle limit cuts it otherwise), so one in progress in another process is never removed.
 * Returns the paths removed, relative to DATA_DIR.
 */
export async function removeAbandonedUploads(dataDir: string, idleMs: number, now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  for (const folder of UPLOAD_FOLDER_NAMES) {
    let entries: fs.Dirent[];
    try {
      entries = await fs.promises.readdir(path.join(dataDir, folder), { recursive: true, withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (!e.isFile() || !isUploadInProgress(e.name)) continue;
      const abs = path.join(e.parentPath, e.name);
      try {
        const st = await fs.promises.lstat(abs);
        if (now - st.mtimeMs <= idleMs) continue;
        await fs.promises.rm(abs, { force: true });
        removed.push(path.relative(dataDir, abs));
      } catch {
        // gone meanwhile, or not ours to remove: left for the next start
      }
    }
  }
  return removed;
}
