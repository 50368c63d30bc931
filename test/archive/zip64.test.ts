import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ARCHIVE_TOP_LEVEL, bufferSource, createZipWriter, fileSource, openZip } from '../../src/archive';
import { expectCofferError, runUnzip, tempDir, writeZip } from './helpers';

// The writer switches to Zip64 end records by itself once there are more than 65,535 entries (and to
// Zip64 sizes and offsets beyond 4 GiB). This protects that behaviour.
const ENTRY_COUNT = 65_600;

describe('an archive with more than 65,535 entries', () => {
  let zip: Buffer;

  beforeAll(async () => {
    zip = await writeZip(async (w) => {
      await w.addBuffer('VERSION', Buffer.from('1\n'));
      for (let i = 1; i < ENTRY_COUNT - 1; i += 1) {
        // Stored: deflate would only add per-entry set-up time; the entry count is what matters here.
        await w.addBuffer(`uploadedfiles/${i % 256}/${i}.txt`, Buffer.from(`file ${i}\n`), { store: true });
      }
      await w.addBuffer('manifest.json', Buffer.from('{"format":1}'));
    });
  }, 120_000);

  test('ends with Zip64 end-of-central-directory records', () => {
    const tail = zip.subarray(zip.length - 22 - 20 - 56);
    expect(tail.readUInt32LE(0)).toBe(0x06064b50); // Zip64 end of central directory record
    expect(Number(tail.readBigUInt64LE(32))).toBe(ENTRY_COUNT);
    expect(tail.readUInt32LE(56)).toBe(0x07064b50); // Zip64 locator
    expect(tail.readUInt16LE(76 + 10)).toBe(0xffff); // classic record defers to Zip64
  });

  test('the hardened reader lists every entry and reads the first, a middle and the last one', async () => {
    const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
    try {
      expect(archive.entries.length).toBe(ENTRY_COUNT);
      expect(archive.entries[ENTRY_COUNT - 1].name).toBe('manifest.json');
      expect((await archive.readEntryBuffer('VERSION', 10)).toString()).toBe('1\n');
      expect((await archive.readEntryBuffer('uploadedfiles/0/65536.txt', 100)).toString()).toBe('file 65536\n');
      expect((await archive.readEntryBuffer('manifest.json', 100)).toString()).toBe('{"format":1}');
    } finally {
      await archive.close();
    }
  }, 60_000);

  test('Info-ZIP unzip -t verifies every entry', async () => {
    const dir = await tempDir();
    try {
      const result = await runUnzip(['-tq', await dir.file('many.zip', zip)]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('No errors detected');
    } finally {
      await dir.remove();
    }
  }, 60_000);

  test('cutting off the Zip64 records makes it E_ARCHIVE_TRUNCATED', async () => {
    await expectCofferError(openZip(bufferSource(zip.subarray(0, zip.length - 30)), { allowedTopLevel: ARCHIVE_TOP_LEVEL }), 'E_ARCHIVE_TRUNCATED');
  });
});

// Writes a 4 GiB file to the temp dir and takes ~30 s, so it only runs when asked for.
const slowTest = process.env.COFFER_SLOW_TESTS === '1' ? test : test.skip;

slowTest('an entry larger than 4 GiB, and an entry after it, round trip with Zip64 fields (COFFER_SLOW_TESTS=1)', async () => {
  const size = 4 * 1024 ** 3 + 12_345;
  const dir = await tempDir();
  try {
    const path = join(dir.path, 'big.zip');
    const writer = createZipWriter();
    const written = pipeline(writer.output, createWriteStream(path));
    await writer.addBuffer('VERSION', Buffer.from('1\n'));
    await writer.addStream('uploadedfiles/zeros.bin', zeros(size), { store: true });
    await writer.addBuffer('manifest.json', Buffer.from('{}'));
    await writer.finalize();
    await written;

    const archive = await openZip(await fileSource(path), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
    try {
      expect(archive.entries[1]).toMatchObject({ name: 'uploadedfiles/zeros.bin', uncompressedSize: size, compressedSize: size });
      let read = 0;
      for await (const chunk of await archive.openEntry('uploadedfiles/zeros.bin')) read += (chunk as Buffer).length;
      expect(read).toBe(size);
      expect((await archive.readEntryBuffer('manifest.json', 10)).toString()).toBe('{}');
    } finally {
      await archive.close();
    }
    expect((await runUnzip(['-tq', path])).code).toBe(0);
  } finally {
    await dir.remove();
  }
}, 300_000);

function zeros(total: number): Readable {
  const block = Buffer.alloc(1024 * 1024);
  let left = total;
  return new Readable({
    highWaterMark: block.length,
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, block.length);
      left -= n;
      this.push(n === block.length ? block : block.subarray(0, n));
    },
  });
}
