import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { crc32, deflateRawSync } from 'node:zlib';
import { ARCHIVE_TOP_LEVEL, bufferSource, createZipWriter, EntrySpool, openZip } from '../../src/archive';
import { collect, expectCofferError, runUnzip, tempDir, writeZip } from './helpers';

/** JSON-like lines, compressible like table entries. */
function rows(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => `{"id":${i},"text":"row ${i} ${'x'.repeat(i % 40)}","r":"${randomBytes(4).toString('hex')}"}\n`).join(''));
}

async function readBack(zip: Buffer, names: string[]): Promise<Buffer[]> {
  const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
  try {
    return await Promise.all(names.map((n) => archive.readEntryBuffer(n, 64 * 1024 * 1024)));
  } finally {
    await archive.close();
  }
}

describe('zip writer: precompressed entries', () => {
  test('deflated and stored precompressed entries sit between streamed ones, read back exactly and pass unzip -t', async () => {
    const a = rows(20_000);
    const b = rows(300);
    const zip = await writeZip(async (w) => {
      await w.addBuffer('VERSION', Buffer.from('1\n'));
      const deflated = deflateRawSync(a, { level: 1 });
      await w.addPrecompressed('db/public.a.jsonl', Readable.from([deflated.subarray(0, 1000), deflated.subarray(1000)]), {
        crc32: crc32(a),
        compressedSize: deflated.length,
        uncompressedSize: a.length,
        method: 8,
      });
      await w.addStream('db/public.b.jsonl', Readable.from([b]));
      await w.addPrecompressed('db/public.c.jsonl', Readable.from([b]), { crc32: crc32(b), compressedSize: b.length, uncompressedSize: b.length, method: 0 });
      await w.addBuffer('manifest.json', Buffer.from('{}'));
    });
    const [ra, rb, rc] = await readBack(zip, ['db/public.a.jsonl', 'db/public.b.jsonl', 'db/public.c.jsonl']);
    expect(ra.equals(a)).toBe(true);
    expect(rb.equals(b)).toBe(true);
    expect(rc.equals(b)).toBe(true);
    const dir = await tempDir();
    try {
      const result = await runUnzip(['-t', await dir.file('pre.zip', zip)]);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('No errors detected');
    } finally {
      await dir.remove();
    }
  });

  test('sizes that disagree with the bytes given fail the entry and the writer', async () => {
    const data = rows(100);
    const deflated = deflateRawSync(data);
    const w = createZipWriter();
    const output = collect(w.output);
    await expectCofferError(
      w.addPrecompressed('db/public.a.jsonl', Readable.from([deflated]), { crc32: crc32(data), compressedSize: deflated.length + 1, uncompressedSize: data.length, method: 8 }),
      'E_INTERNAL',
      'were declared',
    );
    await expect(output).rejects.toThrow(/were declared/);
    await expectCofferError(w.addBuffer('manifest.json', Buffer.from('{}')), 'E_INTERNAL');
  });
});

describe('entry spool', () => {
  test('a reader started before the spool is filled follows it to the end; the CRC and sizes match', async () => {
    const dir = await tempDir();
    try {
      const data = rows(50_000);
      const spool = await EntrySpool.create(dir.path, 'x.deflate');
      // The file is unlinked at once: nothing is left in the folder, even while it is written.
      expect(fs.readdirSync(dir.path)).toEqual([]);
      const reading = collect(spool.reader());
      const source = new Readable({ read() {} });
      const filling = spool.fill(source, 1);
      for (let i = 0; i < data.length; i += 100_000) {
        source.push(data.subarray(i, i + 100_000));
        await new Promise((r) => setTimeout(r, 2));
      }
      source.push(null);
      await filling;
      const compressed = await reading;
      const meta = spool.meta();
      expect(meta).toEqual({ crc32: crc32(data), compressedSize: compressed.length, uncompressedSize: data.length, method: 8 });
      const zip = await writeZip(async (w) => {
        await w.addPrecompressed('db/public.t.jsonl', Readable.from([compressed]), meta);
      });
      expect((await readBack(zip, ['db/public.t.jsonl']))[0].equals(data)).toBe(true);
      await spool.close();
    } finally {
      await dir.remove();
    }
  });

  test('a reader that is waiting gets the chunks directly, a reader that is not reading gets them through the file, and both get every byte', async () => {
    const dir = await tempDir();
    try {
      const data = rows(100_000);
      const feed = async (source: Readable) => {
        for (let i = 0; i < data.length; i += 64 * 1024) {
          source.push(data.subarray(i, i + 64 * 1024));
          await new Promise((r) => setTimeout(r, 1));
        }
        source.push(null);
      };
      // Read as it is produced: (almost) nothing goes through the file.
      const live = await EntrySpool.create(dir.path, 'live.deflate');
      const liveReading = collect(live.reader());
      const liveSource = new Readable({ read() {} });
      await Promise.all([live.fill(liveSource, 1), feed(liveSource)]);
      const liveBytes = await liveReading;
      expect(live.spooledBytes).toBeLessThan(liveBytes.length / 2);
      // Read only once complete: everything went through the file.
      const late = await EntrySpool.create(dir.path, 'late.deflate');
      const lateSource = new Readable({ read() {} });
      await Promise.all([late.fill(lateSource, 1), feed(lateSource)]);
      const lateBytes = await collect(late.reader());
      expect(late.spooledBytes).toBe(lateBytes.length);
      // Both hold the same deflate stream, whichever way its chunks went.
      expect(liveBytes.equals(lateBytes)).toBe(true);
      expect(live.meta()).toEqual(late.meta());
      const zip = await writeZip(async (w) => {
        await w.addPrecompressed('db/public.live.jsonl', Readable.from([liveBytes]), live.meta());
      });
      expect((await readBack(zip, ['db/public.live.jsonl']))[0].equals(data)).toBe(true);
      await Promise.all([live.close(), late.close()]);
    } finally {
      await dir.remove();
    }
  });

  test('a reader that starts mid-way catches up from the file and then follows the growing spool to the end', async () => {
    const dir = await tempDir();
    try {
      const data = rows(100_000);
      const spool = await EntrySpool.create(dir.path, 'mid.deflate');
      const source = new Readable({ read() {} });
      const filling = spool.fill(source, 1);
      let reading: Promise<Buffer> | undefined;
      const half = Math.floor(data.length / 2);
      for (let i = 0; i < data.length; i += 64 * 1024) {
        if (i >= half) reading ??= collect(spool.reader());
        source.push(data.subarray(i, i + 64 * 1024));
        await new Promise((r) => setTimeout(r, 1));
      }
      source.push(null);
      await filling;
      const compressed = await reading!;
      const meta = spool.meta();
      expect(meta.compressedSize).toBe(compressed.length);
      expect(spool.spooledBytes).toBeGreaterThan(0);
      expect(spool.spooledBytes).toBeLessThan(compressed.length);
      const zip = await writeZip(async (w) => {
        await w.addPrecompressed('db/public.mid.jsonl', Readable.from([compressed]), meta);
      });
      expect((await readBack(zip, ['db/public.mid.jsonl']))[0].equals(data)).toBe(true);
      await spool.close();
    } finally {
      await dir.remove();
    }
  });

  test('a source that fails makes fill and the reader fail', async () => {
    const dir = await tempDir();
    try {
      const spool = await EntrySpool.create(dir.path, 'y.deflate');
      const reading = collect(spool.reader());
      const source = new Readable({ read() {} });
      const filling = spool.fill(source, 1);
      source.push(rows(10));
      source.destroy(new Error('connection lost'));
      await expect(filling).rejects.toThrow(/connection lost/);
      await expect(reading).rejects.toThrow(/connection lost/);
      await spool.close();
    } finally {
      await dir.remove();
    }
  });
});
