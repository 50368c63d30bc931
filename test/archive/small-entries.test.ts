import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { ARCHIVE_TOP_LEVEL, bufferSource, fileSource, openZip, SMALL_ENTRY_BYTES, type ZipArchive } from '../../src/archive';
import { buildZip, collect, deflated, expectCofferError, stored, tempDir, writeZip } from './helpers';

const opts = { allowedTopLevel: ARCHIVE_TOP_LEVEL };

function open(zip: Buffer): Promise<ZipArchive> {
  return openZip(bufferSource(zip), opts);
}

/** The one-shot path of readEntryBuffer (entries of at most SMALL_ENTRY_BYTES) refuses what the stream path refuses. */
describe('small entries read whole keep every check of the stream path', () => {
  test('a small entry inflating beyond its declared size is E_ARCHIVE_UNSAFE_ENTRY, never more than declared', async () => {
    const archive = await open(buildZip([deflated('uploadedfiles/bomb', Buffer.alloc(10 * 1024 * 1024), { uncompressedSize: 1000 })]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/bomb', SMALL_ENTRY_BYTES), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/bomb'", 'declared size of 1000');
    await archive.close();
  });

  test('an empty declared size with data behind it is refused', async () => {
    const archive = await open(buildZip([deflated('uploadedfiles/e', Buffer.from('x'), { uncompressedSize: 0 })]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/e', 10), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/e'", 'declared size of 0');
    await archive.close();
  });

  test('a declared size larger than the data is E_ARCHIVE_INVALID', async () => {
    const archive = await open(buildZip([deflated('uploadedfiles/short', Buffer.from('hello'), { uncompressedSize: 6 })]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/short', 100), 'E_ARCHIVE_INVALID', "'uploadedfiles/short'", 'fewer than the 6 declared');
    await archive.close();
  });

  test.each([
    ['stored', stored('uploadedfiles/a', 'hello', { crc32: 0x12345678 })],
    ['deflated', deflated('uploadedfiles/a', Buffer.from('hello'.repeat(100)), { crc32: 0x12345678 })],
  ])('a CRC-32 mismatch in a small %s entry is E_ARCHIVE_CHECKSUM', async (_method, entry) => {
    const archive = await open(buildZip([entry]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/a', 1000), 'E_ARCHIVE_CHECKSUM', "'uploadedfiles/a'", 'expected 12345678');
    await archive.close();
  });

  test('corrupt deflate data is E_ARCHIVE_INVALID naming the entry', async () => {
    const data = deflateRawSync(Buffer.from('some text '.repeat(1000)));
    data[0] = 0x07;
    const archive = await open(buildZip([{ name: 'uploadedfiles/x', data, method: 8, content: Buffer.alloc(10_000), uncompressedSize: 10_000 }]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/x', SMALL_ENTRY_BYTES), 'E_ARCHIVE_INVALID', "'uploadedfiles/x'", 'corrupt compressed data');
    await archive.close();
  });

  test('deflate data that stops before its end is E_ARCHIVE_INVALID', async () => {
    const content = randomBytes(5000);
    const full = deflateRawSync(content);
    const archive = await open(buildZip([{ name: 'uploadedfiles/cut', data: full.subarray(0, 2000), method: 8, content }]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/cut', SMALL_ENTRY_BYTES), 'E_ARCHIVE_INVALID', "'uploadedfiles/cut'", 'corrupt compressed data');
    await archive.close();
  });

  test('a local header naming another file than the central directory is refused', async () => {
    const archive = await open(buildZip([stored('uploadedfiles/a', 'x', { localName: 'uploadedfiles/b' })]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/a', 10), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/a'", 'local header');
    await archive.close();
  });

  test('a local header whose extra field pushes the data past the end of the file is E_ARCHIVE_TRUNCATED', async () => {
    const zip = buildZip([stored('uploadedfiles/a', 'hello')]);
    zip.writeUInt16LE(0xffff, 28);
    const archive = await open(zip);
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/a', 10), 'E_ARCHIVE_TRUNCATED', "'uploadedfiles/a'", 'past the end');
    await expectCofferError(archive.openEntry('uploadedfiles/a'), 'E_ARCHIVE_TRUNCATED', "'uploadedfiles/a'");
    await archive.close();
  });

  test('an archive file cut after it was opened is E_ARCHIVE_TRUNCATED naming the entry', async () => {
    const dir = await tempDir();
    try {
      const file = path.join(dir.path, 'cut.zip');
      // The small entry comes first, far from the central directory, so it is not yet in the block cache.
      fs.writeFileSync(file, buildZip([deflated('uploadedfiles/a', Buffer.from('a'.repeat(3000))), stored('uploadedfiles/filler', randomBytes(300_000))]));
      const archive = await openZip(await fileSource(file), opts);
      fs.truncateSync(file, 40);
      await expectCofferError(archive.readEntryBuffer('uploadedfiles/a', SMALL_ENTRY_BYTES), 'E_ARCHIVE_TRUNCATED', "'uploadedfiles/a'");
      await archive.close();
    } finally {
      await dir.remove();
    }
  });

  test('the limit given is still enforced before reading', async () => {
    const archive = await open(buildZip([stored('uploadedfiles/a', 'x'.repeat(100))]));
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/a', 99), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/a'", 'more than the 99 allowed');
    await archive.close();
  });
});

describe('small and large entries side by side', () => {
  test('many small entries read whole, in any order and concurrently, equal what was written; large ones still stream', async () => {
    const contents = new Map<string, Buffer>();
    for (let i = 0; i < 3000; i++) {
      const name = `uploadedfiles/${(i % 16).toString(16)}/${i}`;
      contents.set(name, i % 3 === 0 ? randomBytes(i % 2000) : Buffer.from(`file ${i} `.repeat(i % 200)));
    }
    const big = randomBytes(SMALL_ENTRY_BYTES + 1);
    const zip = await writeZip(async (w) => {
      for (const [name, data] of contents) await w.addBuffer(name, data, { store: 'if-incompressible' });
      await w.addBuffer('uploadedfiles/big', big);
    });
    const archive = await open(zip);
    expect(archive.entries.length).toBe(3001);
    const names = [...contents.keys()];
    const reads = await Promise.all(names.reverse().map((n) => archive.readEntryBuffer(n, SMALL_ENTRY_BYTES)));
    reads.forEach((data, i) => expect(data.equals(contents.get(names[i])!)).toBe(true));
    expect((await archive.readEntryBuffer('uploadedfiles/big', 2 * SMALL_ENTRY_BYTES)).equals(big)).toBe(true);
    expect((await collect(await archive.openEntry('uploadedfiles/big'))).equals(big)).toBe(true);
    await archive.close();
  });

  test("store: 'if-incompressible' stores random bytes and deflates text, judged on the whole buffer", async () => {
    const random = randomBytes(4000);
    const text = Buffer.from('line of text\n'.repeat(300));
    const tiny = randomBytes(100);
    const zip = await writeZip(async (w) => {
      await w.addBuffer('uploadedfiles/random', random, { store: 'if-incompressible' });
      await w.addBuffer('uploadedfiles/text', text, { store: 'if-incompressible' });
      await w.addBuffer('uploadedfiles/tiny', tiny, { store: 'if-incompressible' });
    });
    const archive = await open(zip);
    const byName = new Map(archive.entries.map((e) => [e.name, e]));
    expect(byName.get('uploadedfiles/random')!.compressedSize).toBe(random.length);
    expect(byName.get('uploadedfiles/text')!.compressedSize).toBeLessThan(text.length / 5);
    // Too short to judge: deflated, as looksIncompressible would have it.
    expect(byName.get('uploadedfiles/tiny')!.compressedSize).not.toBe(tiny.length);
    for (const [name, data] of [['uploadedfiles/random', random], ['uploadedfiles/text', text], ['uploadedfiles/tiny', tiny]] as const) {
      expect((await archive.readEntryBuffer(name, 10_000)).equals(data)).toBe(true);
    }
    await archive.close();
    // The stored bytes are the data itself; the deflated ones inflate to it.
    const local = zip.indexOf('uploadedfiles/text') + 'uploadedfiles/text'.length;
    expect(inflateRawSync(zip.subarray(local, local + byName.get('uploadedfiles/text')!.compressedSize)).equals(text)).toBe(true);
  });
});
