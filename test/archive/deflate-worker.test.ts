import { randomBytes } from 'node:crypto';
import { crc32, inflateRawSync } from 'node:zlib';
import { ARCHIVE_TOP_LEVEL, BufferDeflater, bufferSource, openZip } from '../../src/archive';
import { writeZip } from './helpers';

function text(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => `${i},name ${i},${(i * 37) % 101}\n`).join(''));
}

describe('BufferDeflater: small buffers deflated on a worker thread', () => {
  test('deflates text, stores what deflate does not shrink when judged, keeps order, CRC and sizes', async () => {
    // No buffer deflated here first: all on the worker.
    const d = new BufferDeflater(1, 0);
    try {
      const inputs = [text(40), randomBytes(1000), randomBytes(1000), Buffer.alloc(0), text(3000)];
      const judge = [true, true, false, true, true];
      const out = await d.deflate(inputs, judge);
      expect(out).toHaveLength(inputs.length);
      out.forEach((o, i) => {
        expect(o.meta.uncompressedSize).toBe(inputs[i].length);
        expect(o.meta.compressedSize).toBe(o.data.length);
        expect(o.meta.crc32).toBe(crc32(inputs[i]));
        const back = o.meta.method === 0 ? o.data : inflateRawSync(o.data);
        expect(back.equals(inputs[i])).toBe(true);
      });
      expect(out[0].meta.method).toBe(8);
      expect(out[0].data.length).toBeLessThan(inputs[0].length / 2);
      // Incompressible and judged: stored; not judged: deflated all the same.
      expect(out[1].meta.method).toBe(0);
      expect(out[2].meta.method).toBe(8);
      expect(out[4].meta.method).toBe(8);
    } finally {
      await d.close();
    }
  });

  test('batches sent together are answered in order, and their entries read back from a zip', async () => {
    const d = new BufferDeflater(1, 0);
    const batches = Array.from({ length: 6 }, (_, b) => Array.from({ length: 50 }, (_, i) => (i % 2 ? randomBytes(600 + b) : text(20 + i + b))));
    try {
      const results = await Promise.all(batches.map((bs) => d.deflate(bs, bs.map(() => true))));
      const zip = await writeZip(async (w) => {
        for (let b = 0; b < batches.length; b++) {
          for (let i = 0; i < batches[b].length; i++) await w.addPrecompressed(`uploadedfiles/${b}/${i}`, results[b][i].data, results[b][i].meta);
        }
      });
      const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
      try {
        for (let b = 0; b < batches.length; b++) {
          for (let i = 0; i < batches[b].length; i++) expect((await archive.readEntryBuffer(`uploadedfiles/${b}/${i}`, 1 << 20)).equals(batches[b][i])).toBe(true);
        }
      } finally {
        await archive.close();
      }
    } finally {
      await d.close();
    }
  });

  test('the first buffers are deflated on this thread, the rest on the worker, with the same bytes either way', async () => {
    const inputs = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? randomBytes(700 + i) : text(30 + i)));
    const judge = inputs.map((_, i) => i % 2 === 0);
    const starts = [0, 10, 25];
    const batches = starts.map((start, k) => ({ buffers: inputs.slice(start, starts[k + 1]), judge: judge.slice(start, starts[k + 1]) }));
    const worker = new BufferDeflater(1, 0);
    // 10 buffers here, then the 15 of the second batch would pass the 20 left: it and the rest go to the worker.
    const mixed = new BufferDeflater(1, 20);
    const here = new BufferDeflater(1, 1000);
    try {
      const all = await Promise.all([worker, mixed, here].map(async (d) => (await Promise.all(batches.map((b) => d.deflate(b.buffers, b.judge)))).flat()));
      for (const out of all) expect(out).toHaveLength(inputs.length);
      all[0].forEach((o, i) => {
        for (const other of [all[1][i], all[2][i]]) {
          expect(other.meta).toEqual(o.meta);
          expect(other.data.equals(o.data)).toBe(true);
        }
        expect(o.meta.crc32).toBe(crc32(inputs[i]));
        expect((o.meta.method === 0 ? o.data : inflateRawSync(o.data)).equals(inputs[i])).toBe(true);
      });
      expect(all[0].some((o) => o.meta.method === 0) && all[0].some((o) => o.meta.method === 8)).toBe(true);
    } finally {
      await Promise.all([worker.close(), mixed.close(), here.close()]);
    }
  });

  test('after close, a batch is refused with a clear error', async () => {
    const d = new BufferDeflater(1, 0);
    await d.deflate([text(10)], [true]);
    await d.close();
    await expect(d.deflate([text(10)], [true])).rejects.toThrow('the deflate worker was already closed');
  });
});
