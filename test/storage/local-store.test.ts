import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { putBuffer } from '../../src/storage/backup-store';
import { LocalStore } from '../../src/storage/stores/local';
import { storeContract } from './store-contract';

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-store-'));
}

storeContract('local', async () => {
  const dir = tempDir();
  const blocker = path.join(dir, 'not-a-folder');
  fs.writeFileSync(blocker, 'x');
  return {
    store: new LocalStore(path.join(dir, 'backups')),
    // A folder below a regular file cannot exist, even for root.
    broken: new LocalStore(path.join(blocker, 'backups')),
    cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }),
  };
});

describe('local store specifics', () => {
  test('the folder is created 0700, objects are 0600 whatever the umask, partials are <name>.partial', async () => {
    const dir = tempDir();
    const old = process.umask(0o000);
    try {
      const store = new LocalStore(path.join(dir, 'deep', 'backups'));
      const pending = await store.put('x.zip');
      expect(fs.readdirSync(store.location)).toEqual(['x.zip.partial']);
      await pending.commit();
      await putBuffer(store, 'x.json', '{}');
      expect(fs.statSync(store.location).mode & 0o777).toBe(0o700);
      expect(fs.statSync(path.join(store.location, 'x.zip')).mode & 0o777).toBe(0o600);
      expect(fs.statSync(path.join(store.location, 'x.json')).mode & 0o777).toBe(0o600);
    } finally {
      process.umask(old);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('files that are not coffer objects are not listed', async () => {
    const dir = tempDir();
    try {
      const store = new LocalStore(dir);
      fs.writeFileSync(path.join(dir, '.DS_Store'), 'x');
      fs.mkdirSync(path.join(dir, 'sub.zip'));
      await putBuffer(store, 'ok.json', '{}');
      expect((await store.list()).map((o) => o.name)).toEqual(['ok.json']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
