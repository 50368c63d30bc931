import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { Meter, through } from '../src/pipeline/meter';

/** The chunks as the stream pushed them ('data' events; an async iterator would join buffered ones). */
function chunksOf(stream: Readable): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    stream.on('data', (c: Buffer) => out.push(c));
    stream.on('end', () => resolve(out));
    stream.on('error', reject);
  });
}

describe('meter', () => {
  /** 8 KiB pieces, as PostgreSQL sends COPY rows, then a short last one. */
  const pieces = Array.from({ length: 40 }, (_, i) => Buffer.from(`{"id":${i}}\n`.repeat(1000).slice(0, 8192))).concat([Buffer.from('{"id":"last"}\n')]);
  const all = Buffer.concat(pieces);

  test('with batchBytes, small chunks leave gathered (the last one short) with the same bytes, count, lines and SHA-256', async () => {
    const meter = new Meter({ lines: true, batchBytes: 64 * 1024 });
    const out = await chunksOf(through(Readable.from(pieces), meter));
    expect(Buffer.concat(out).equals(all)).toBe(true);
    expect(out.slice(0, -1).every((c) => c.length >= 64 * 1024)).toBe(true);
    expect(out.map((c) => c.length)).toEqual([65536, 65536, 65536, 65536, 65536, 14]);
    expect(meter.bytes).toBe(all.length);
    expect(meter.lines).toBe(all.toString().split('\n').length - 1);
    expect(meter.sha256).toBe(createHash('sha256').update(all).digest('hex'));
  });

  test('without batchBytes, chunks pass as they came; a chunk at least batchBytes long passes whole', async () => {
    expect((await chunksOf(through(Readable.from(pieces), new Meter()))).map((c) => c.length)).toEqual(pieces.map((c) => c.length));
    const big = Buffer.alloc(100_000, 0x61);
    const out = await chunksOf(through(Readable.from([big]), new Meter({ batchBytes: 64 * 1024 })));
    expect(out).toHaveLength(1);
    expect(out[0]).toBe(big);
  });
});
