import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isCofferError } from '../../src/core/errors';
import { putBuffer, readObject, type BackupStore } from '../../src/storage/backup-store';

export interface StoreFixture {
  store: BackupStore;
  /** A store of the same kind that cannot be written (no such folder, no such bucket...). */
  broken: BackupStore;
  cleanup(): Promise<void>;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function expectCode(p: Promise<unknown>, code: string, text?: string): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(isCofferError(caught)).toBe(true);
  expect((caught as { code: string }).code).toBe(code);
  if (text !== undefined) expect((caught as Error).message).toContain(text);
}

/** The one contract every BackupStore passes (DESIGN §8). */
export function storeContract(kind: string, make: () => Promise<StoreFixture>): void {
  describe(`BackupStore contract: ${kind}`, () => {
    let fx: StoreFixture;
    beforeEach(async () => {
      fx = await make();
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    test('an object is invisible until commit, then listed, stat-ed and readable whole and at any range', async () => {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const pending = await fx.store.put('a1.zip');
      const writing = pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), pending.stream);
      await writing;
      expect(await fx.store.stat('a1.zip')).toBeUndefined();
      expect((await fx.store.list()).map((o) => o.name)).not.toContain('a1.zip');
      await expectCode(fx.store.open('a1.zip'), 'E_BACKUP_MISSING', 'a1.zip');
      expect(await pending.commit()).toEqual({ size: data.length });

      const st = await fx.store.stat('a1.zip');
      expect(st?.size).toBe(data.length);
      expect(Math.abs(Date.now() - st!.modifiedAt.getTime())).toBeLessThan(3_600_000);
      expect((await fx.store.list()).map((o) => [o.name, o.size])).toEqual([['a1.zip', data.length]]);

      const src = await fx.store.open('a1.zip');
      try {
        expect(src.size).toBe(data.length);
        const whole = await collect(src.createReadStream(0, src.size));
        expect(createHash('sha256').update(whole).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
        for (const [a, b] of [[0, 1], [5, 70_000], [data.length - 22, data.length], [1_048_575, 2_097_153], [data.length, data.length]]) {
          expect((await collect(src.createReadStream(a, b))).equals(data.subarray(a, b))).toBe(true);
          expect((await src.read(a, b - a)).equals(data.subarray(a, b))).toBe(true);
        }
        // A read past the end returns what there is.
        expect((await src.read(data.length - 5, 100)).equals(data.subarray(data.length - 5))).toBe(true);
      } finally {
        await src.close();
      }
    });

    test('abort leaves nothing behind, under the name or as a partial object', async () => {
      const pending = await fx.store.put('b2.zip');
      await new Promise<void>((resolve, reject) => pending.stream.write(randomBytes(100_000), (e) => (e ? reject(e) : resolve())));
      await pending.abort();
      expect(await fx.store.stat('b2.zip')).toBeUndefined();
      expect(await fx.store.list()).toEqual([]);
      expect(await fx.store.removePartials()).toEqual([]);
    });

    test('partial objects a crash left behind are never listed and are removed by prefix', async () => {
      const keep = await fx.store.put('keep-1.zip');
      const gone = await fx.store.put('gone-1.zip');
      for (const p of [keep, gone]) await new Promise<void>((resolve, reject) => p.stream.write(Buffer.from('half'), (e) => (e ? reject(e) : resolve())));
      expect(await fx.store.list()).toEqual([]);
      expect((await fx.store.listPartials()).length).toBe(2);
      expect((await fx.store.removePartials('gone-')).length).toBe(1);
      expect((await fx.store.listPartials()).length).toBe(1);
      await expect(keep.commit()).resolves.toEqual({ size: 4 });
      expect((await fx.store.list()).map((o) => o.name)).toEqual(['keep-1.zip']);
      gone.stream.destroy();
    });

    test('small objects round-trip; commit replaces an object of the same name; delete is idempotent', async () => {
      await putBuffer(fx.store, 'c3.json', '{"a":1}');
      expect((await readObject(fx.store, 'c3.json')).toString()).toBe('{"a":1}');
      await putBuffer(fx.store, 'c3.json', '{"a":2}');
      expect((await readObject(fx.store, 'c3.json')).toString()).toBe('{"a":2}');
      await putBuffer(fx.store, 'c4.json', '');
      expect((await fx.store.stat('c4.json'))?.size).toBe(0);
      expect((await fx.store.list()).map((o) => o.name)).toEqual(['c3.json', 'c4.json']);
      await fx.store.delete('c3.json');
      await fx.store.delete('c3.json');
      await expectCode(fx.store.open('c3.json'), 'E_BACKUP_MISSING');
      expect((await fx.store.list()).map((o) => o.name)).toEqual(['c4.json']);
    });

    test('names that are not coffer object names are refused', async () => {
      for (const bad of ['../x.zip', 'a/b.zip', '', '.hidden', 'x.zip.partial']) {
        await expectCode(fx.store.put(bad), 'E_INTERNAL');
        await expectCode(fx.store.open(bad), 'E_INTERNAL');
      }
    });

    test('a store that cannot be written fails with E_STORE, naming where', async () => {
      let caught: unknown;
      try {
        const p = await fx.broken.put('d5.zip');
        await pipeline(Readable.from([randomBytes(1000)]), p.stream);
        await p.commit();
      } catch (err) {
        caught = err;
      }
      expect(isCofferError(caught, 'E_STORE')).toBe(true);
      expect((caught as Error).message).toContain(fx.broken.location);
    });
  });
}
