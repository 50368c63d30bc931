import { randomBytes, randomUUID } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZipWriter } from '../../src/archive';

// A measurement, not a check: run with COFFER_BENCH=1 (optionally COFFER_BENCH_MB, COFFER_BENCH_LEVEL).
const bench = process.env.COFFER_BENCH === '1' ? test : test.skip;
const TOTAL_BYTES = Number(process.env.COFFER_BENCH_MB ?? 300) * 1024 * 1024;
const LEVEL = Number(process.env.COFFER_BENCH_LEVEL ?? 6);

/** 8 MB of varied JSON rows (ids, uuids, text, numbers, nested objects, some bytea hex). */
function jsonRowPool(): Buffer {
  const rows: string[] = [];
  let size = 0;
  for (let i = 0; size < 8 * 1024 * 1024; i += 1) {
    const row =
      JSON.stringify({
        id: i,
        uuid: randomUUID(),
        title: `Finding ${i} in project ${i % 97}`,
        score: ((i * 7919) % 100000) / 100,
        tags: ['web', 'api', String(i % 13)],
        created_at: new Date(1.7e12 + i * 1000).toISOString(),
        data: i % 5 === 0 ? '\\x' + randomBytes(24).toString('hex') : null,
        body: { nested: { n: i, ok: i % 2 === 0, text: 'Lorem ipsum dolor sit amet '.repeat(1 + (i % 4)) } },
      }) + '\n';
    rows.push(row);
    size += row.length;
  }
  return Buffer.from(rows.join(''));
}

/** Streams `total` bytes taken from the pool in 64 KiB slices; the pool is larger than deflate's window. */
function rows(pool: Buffer, total: number): Readable {
  const chunk = 64 * 1024;
  let produced = 0;
  return new Readable({
    highWaterMark: chunk,
    read() {
      if (produced >= total) {
        this.push(null);
        return;
      }
      const offset = produced % (pool.length - chunk);
      const n = Math.min(chunk, total - produced);
      produced += n;
      this.push(pool.subarray(offset, offset + n));
    },
  });
}

bench('zip writer throughput on one large JSON-lines entry', async () => {
  const pool = jsonRowPool();
  const rssBefore = process.memoryUsage().rss;
  const writer = createZipWriter({ level: LEVEL });
  const discard = new Writable({ highWaterMark: 1024 * 1024, write: (_chunk, _enc, cb) => cb() });
  const drained = pipeline(writer.output, discard);
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  await writer.addStream('db/public.bench.jsonl', rows(pool, TOTAL_BYTES));
  const { bytes } = await writer.finalize();
  await drained;
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  console.log(
    [
      `level ${LEVEL}: ${(TOTAL_BYTES / 1048576).toFixed(0)} MB in ${seconds.toFixed(2)} s = ${(TOTAL_BYTES / 1048576 / seconds).toFixed(1)} MB/s`,
      `zip ${(bytes / 1048576).toFixed(1)} MB, process CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s`,
      `RSS before ${(rssBefore / 1048576).toFixed(0)} MB, peak ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`,
    ].join('\n'),
  );
}, 600_000);
