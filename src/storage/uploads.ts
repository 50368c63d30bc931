import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CofferError } from '../core/errors';

export const UPLOAD_KINDS = { file: 'uploadedfiles', image: 'uploadedimages', asset: 'uploadedassets' } as const;
export type UploadKind = keyof typeof UPLOAD_KINDS;
export const UPLOAD_FOLDER_NAMES = Object.values(UPLOAD_KINDS);

export interface StoredUpload {
  /** Relative to DATA_DIR, always generated here: `<folder>/<2 hex>/<uuid>`. */
  storagePath: string;
  size: number;
  sha256: Buffer;
}

/**
 * Stores an upload under a generated name. The client's file name is never part of the path. Data is
 * written to a temporary name and renamed only when complete and within the size limit.
 */
export async function storeUpload(dataDir: string, kind: UploadKind, input: Readable, maxBytes: number): Promise<StoredUpload> {
  const id = randomUUID();
  const storagePath = `${UPLOAD_KINDS[kind]}/${id.slice(0, 2)}/${id}`;
  const finalPath = path.join(dataDir, storagePath);
  const tmpPath = `${finalPath}.upload-${process.pid}`;
  await fs.promises.mkdir(path.dirname(finalPath), { recursive: true });
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
  try {
    await pipeline(input, meter, fs.createWriteStream(tmpPath, { mode: 0o640 }));
    await fs.promises.rename(tmpPath, finalPath);
  } catch (err) {
    await fs.promises.rm(tmpPath, { force: true });
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
