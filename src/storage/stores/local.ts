import fs from 'node:fs';
import path from 'node:path';
import { createAtomicFile } from '../../core/atomic-file';
import { CofferError, errorMessage } from '../../core/errors';
import type { RandomAccessSource } from '../../core/types';
import { fileSource } from '../../archive';
import { checkObjectName, storeError, type BackupStore, type PendingObject, type StoredObject } from '../backup-store';

const PARTIAL = '.partial';

/**
 * Stored backups in a folder (BACKUP_DIR, default DATA_DIR/backups): created 0700, objects 0600,
 * written as `<name>.partial`, fsynced, renamed, and the folder fsynced so the rename survives a crash.
 */
export class LocalStore implements BackupStore {
  readonly kind = 'local' as const;

  constructor(readonly location: string) {}

  private ensureFolder(): void {
    try {
      fs.mkdirSync(this.location, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw storeError(this, err, 'cannot create the folder');
    }
  }

  private pathOf(name: string): string {
    checkObjectName(name);
    return path.join(this.location, name);
  }

  async put(name: string): Promise<PendingObject> {
    const target = this.pathOf(name);
    this.ensureFolder();
    let file: ReturnType<typeof createAtomicFile>;
    try {
      file = createAtomicFile(target, { mode: 0o600, partialName: 'fixed' });
    } catch (err) {
      throw storeError(this, err, `cannot create ${name}${PARTIAL}`);
    }
    return {
      stream: file.stream,
      commit: async () => {
        try {
          await file.commit();
          this.syncFolder();
          return { size: fs.statSync(target).size };
        } catch (err) {
          await file.abort().catch(() => undefined);
          throw storeError(this, err, `cannot write ${name}`);
        }
      },
      abort: () => file.abort(),
    };
  }

  private syncFolder(): void {
    const fd = fs.openSync(this.location, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  async open(name: string): Promise<RandomAccessSource> {
    const file = this.pathOf(name);
    try {
      return await fileSource(file);
    } catch (err) {
      if (err instanceof CofferError && err.code === 'E_NOT_FOUND') {
        throw new CofferError('E_BACKUP_MISSING', `${name} is missing from the backup store ${this.location}`);
      }
      throw storeError(this, err, `cannot open ${name}`);
    }
  }

  async stat(name: string): Promise<StoredObject | undefined> {
    const file = this.pathOf(name);
    try {
      const st = await fs.promises.stat(file);
      return st.isFile() ? { name, size: st.size, modifiedAt: st.mtime } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storeError(this, err, `cannot read ${name}`);
    }
  }

  /** The folder's entries; none before the first backup created it. */
  private async names(): Promise<string[]> {
    try {
      return await fs.promises.readdir(this.location);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw storeError(this, err, 'cannot list the folder');
    }
  }

  async list(): Promise<StoredObject[]> {
    const names = await this.names();
    const out: StoredObject[] = [];
    for (const name of names.sort()) {
      if (name.endsWith(PARTIAL)) continue;
      try {
        checkObjectName(name);
      } catch {
        continue;
      }
      const st = await this.stat(name);
      if (st) out.push(st);
    }
    return out;
  }

  async delete(name: string): Promise<void> {
    try {
      await fs.promises.rm(this.pathOf(name), { force: true });
    } catch (err) {
      throw storeError(this, err, `cannot delete ${name}`);
    }
  }

  async listPartials(): Promise<string[]> {
    return (await this.names()).filter((n) => n.endsWith(PARTIAL)).sort();
  }

  async removePartials(prefix = ''): Promise<string[]> {
    const names = await this.names();
    const removed: string[] = [];
    for (const name of names) {
      if (!name.endsWith(PARTIAL) || !name.startsWith(prefix)) continue;
      try {
        await fs.promises.rm(path.join(this.location, name), { force: true });
        removed.push(name);
      } catch (err) {
        throw new CofferError('E_STORE', `cannot remove ${name} from the backup store ${this.location}: ${errorMessage(err)}`);
      }
    }
    return removed;
  }
}
