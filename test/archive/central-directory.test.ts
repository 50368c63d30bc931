import { crc32 } from 'node:zlib';
import { ARCHIVE_TOP_LEVEL, bufferSource, EntryNameRegistry, openZip, type ZipArchive } from '../../src/archive';
import { readZip } from '../support/zip';
import { buildZip, expectCofferError, fileAttributes, S_IFDIR, stored, tempDir, writeZip } from './helpers';

// coffer's own central-directory parser (src/archive/central-directory.ts): name encodings, Zip64 and
// Unicode Path extra fields, the records' own consistency, the path table, and list().

const opts = { allowedTopLevel: ARCHIVE_TOP_LEVEL };
const open = (zip: Buffer): Promise<ZipArchive> => openZip(bufferSource(zip), opts);

function extraField(id: number, data: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(id, 0);
  h.writeUInt16LE(data.length, 2);
  return Buffer.concat([h, data]);
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

describe('entry names', () => {
  test('a name without the UTF-8 flag is CP437, and the local header must repeat its stored bytes', async () => {
    const raw = Buffer.concat([Buffer.from('uploadedfiles/caf'), Buffer.from([0x82])]);
    const archive = await open(buildZip([stored(raw, 'x', { flags: 0 })]));
    expect(archive.entries.map((e) => e.name)).toEqual(['uploadedfiles/café']);
    expect((await archive.readEntryBuffer('uploadedfiles/café', 10)).toString()).toBe('x');
    await archive.close();
  });

  test('an Info-ZIP Unicode Path field names the entry while its CRC matches the stored name', async () => {
    const raw = Buffer.from('uploadedfiles/plain');
    const field = (crc: number) => extraField(0x7075, Buffer.concat([Buffer.from([1]), u32(crc), Buffer.from('uploadedfiles/ünï')]));
    const good = await open(buildZip([stored(raw, 'a', { flags: 0, centralExtra: field(crc32(raw)) })]));
    expect(good.entries.map((e) => e.name)).toEqual(['uploadedfiles/ünï']);
    expect((await good.readEntryBuffer('uploadedfiles/ünï', 10)).toString()).toBe('a');
    await good.close();
    const stale = await open(buildZip([stored(raw, 'a', { flags: 0, centralExtra: field(crc32(raw) ^ 1) })]));
    expect(stale.entries.map((e) => e.name)).toEqual(['uploadedfiles/plain']);
    await stale.close();
  });

  test('a Unicode Path field cannot smuggle in an unsafe name', async () => {
    const raw = Buffer.from('uploadedfiles/plain');
    const centralExtra = extraField(0x7075, Buffer.concat([Buffer.from([1]), u32(crc32(raw)), Buffer.from('uploadedfiles/../../x')]));
    await expectCofferError(open(buildZip([stored(raw, 'a', { flags: 0, centralExtra })])), 'E_ARCHIVE_UNSAFE_ENTRY', "'..' path segment");
  });
});

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

describe('Zip64 extended information', () => {
  test('sizes and offsets of 0xffffffff are taken from the Zip64 field', async () => {
    const centralExtra = extraField(0x0001, Buffer.concat([u64(5), u64(5)]));
    const archive = await open(buildZip([stored('uploadedfiles/a', 'hello', { compressedSize: 0xffffffff, uncompressedSize: 0xffffffff, centralExtra })]));
    expect(archive.entries[0]).toMatchObject({ compressedSize: 5, uncompressedSize: 5 });
    expect((await archive.readEntryBuffer('uploadedfiles/a', 10)).toString()).toBe('hello');
    await archive.close();
  });

  test('a Zip64 field without the value it stands for is E_ARCHIVE_INVALID', async () => {
    const centralExtra = extraField(0x0001, u64(5));
    const zip = buildZip([stored('uploadedfiles/a', 'hello', { compressedSize: 0xffffffff, uncompressedSize: 0xffffffff, centralExtra })]);
    await expectCofferError(open(zip), 'E_ARCHIVE_INVALID', 'corrupt central directory', 'compressed size');
  });

  test('an extra field longer than its record is E_ARCHIVE_INVALID', async () => {
    const centralExtra = Buffer.from([0x01, 0x00, 0xff, 0x00, 0, 0]);
    await expectCofferError(open(buildZip([stored('uploadedfiles/a', 'x', { centralExtra })])), 'E_ARCHIVE_INVALID', 'extra field length');
  });
});

describe('end records', () => {
  const zip = buildZip([stored('VERSION', '1\n'), stored('uploadedfiles/a', 'x')]);

  test('an entry count the directory cannot hold is refused before anything is allocated for it', async () => {
    const bad = Buffer.from(zip);
    bad.writeUInt16LE(0xfff0, bad.length - 12);
    await expectCofferError(open(bad), 'E_ARCHIVE_INVALID', 'corrupt central directory', 'do not fit');
  });

  test('fewer records than the count says is E_ARCHIVE_INVALID', async () => {
    const bad = Buffer.from(zip);
    bad.writeUInt16LE(3, bad.length - 12);
    await expectCofferError(open(bad), 'E_ARCHIVE_INVALID', 'corrupt central directory');
  });

  test('a multi-disk archive is E_ARCHIVE_INVALID', async () => {
    const bad = Buffer.from(zip);
    bad.writeUInt16LE(1, bad.length - 18);
    await expectCofferError(open(bad), 'E_ARCHIVE_INVALID', 'multi-disk');
  });

  test('an archive comment is allowed, and its length must match the bytes after the end record', async () => {
    const comment = Buffer.from('made by hand');
    const withComment = Buffer.concat([zip, comment]);
    withComment.writeUInt16LE(comment.length, zip.length - 2);
    const archive = await open(withComment);
    expect(archive.entryCount).toBe(2);
    await archive.close();
    withComment.writeUInt16LE(comment.length - 1, zip.length - 2);
    await expectCofferError(open(withComment), 'E_ARCHIVE_INVALID', 'after the end of central directory');
  });

  test('an empty archive opens with no entries', async () => {
    const archive = await open(buildZip([]));
    expect(archive.entryCount).toBe(0);
    expect(archive.entries).toEqual([]);
    expect(archive.has('VERSION')).toBe(false);
    await archive.close();
  });
});

describe('the path table', () => {
  const dir = (name: string) => stored(name, '', { externalAttributes: fileAttributes(S_IFDIR | 0o755) | 0x10 });

  test('a directory entry after names inside it is fine; implied folders are not entries', async () => {
    const archive = await open(buildZip([stored('uploadedfiles/a/b', '1'), dir('uploadedfiles/a/'), stored('uploadedfiles/a/c', '2')]));
    expect(archive.has('uploadedfiles/a/')).toBe(true);
    expect(archive.has('uploadedfiles/a')).toBe(false);
    expect(archive.has('uploadedfiles/')).toBe(false);
    expect(archive.has('uploadedfiles/a/b')).toBe(true);
    expect(archive.has('uploadedfiles/a/b/')).toBe(false);
    await archive.close();
  });

  test.each<[string, string[], string, string]>([
    ['a file named like an earlier directory', ['uploadedfiles/a/', 'uploadedfiles/a'], 'uploadedfiles/a', "file clashes with directory 'uploadedfiles/a/'"],
    ['a file named like an implied folder', ['uploadedfiles/a/b', 'uploadedfiles/a'], 'uploadedfiles/a', "file clashes with directory 'uploadedfiles/a/'"],
    ['a directory named like an earlier file', ['uploadedfiles/a', 'uploadedfiles/a/'], 'uploadedfiles/a/', "directory clashes with file 'uploadedfiles/a'"],
    ['a directory entry twice', ['uploadedfiles/a/', 'uploadedfiles/a/'], 'uploadedfiles/a/', 'duplicate name'],
    ['a file inside a deeper file', ['uploadedfiles/a/b', 'uploadedfiles/a/b/c/d'], 'uploadedfiles/a/b/c/d', "parent 'uploadedfiles/a/b' is a file"],
    ['a file inside the file just before it', ['uploadedfiles/p/q', 'uploadedfiles/p/q/r'], 'uploadedfiles/p/q/r', "parent 'uploadedfiles/p/q' is a file"],
    ['a file inside an earlier file', ['uploadedfiles/b', 'uploadedfiles/a/x', 'uploadedfiles/b/c'], 'uploadedfiles/b/c', "parent 'uploadedfiles/b' is a file"],
  ])('%s is refused', async (_what, names, entry, reason) => {
    const zip = buildZip(names.map((n) => (n.endsWith('/') ? dir(n) : stored(n, 'x'))));
    await expectCofferError(open(zip), 'E_ARCHIVE_UNSAFE_ENTRY', `'${entry}'`, reason);
  });

  test('refuses exactly what EntryNameRegistry refuses, for random sequences of related names', async () => {
    let seed = 7;
    const next = (n: number): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) >>> 16) % n;
    let refused = 0;
    for (let round = 0; round < 400; round++) {
      const names: string[] = [];
      for (let i = 0; i < 4; i++) {
        const segments = Array.from({ length: 1 + next(3) }, () => 'abc'[next(3)]);
        names.push(`uploadedfiles/${segments.join('/')}${next(4) === 0 ? '/' : ''}`);
      }
      const registry = new EntryNameRegistry();
      let expected: [string, string] | undefined;
      for (const n of names) {
        const reason = registry.add(n);
        if (reason !== null) {
          expected = [n, reason];
          break;
        }
      }
      const zip = buildZip(names.map((n) => (n.endsWith('/') ? dir(n) : stored(n, 'x'))));
      if (expected === undefined) await (await open(zip)).close();
      else {
        refused++;
        await expectCofferError(open(zip), 'E_ARCHIVE_UNSAFE_ENTRY', `unsafe zip entry '${expected[0]}': ${expected[1]}`);
      }
    }
    expect(refused).toBeGreaterThan(50);
    expect(refused).toBeLessThan(390);
  });

  test('names that differ only in their last bytes, in a table that grows', async () => {
    const names = Array.from({ length: 3000 }, (_, i) => `uploadedfiles/${String(i % 7)}/${'x'.repeat(40)}${i}`);
    const archive = await open(buildZip(names.map((n) => stored(n, n))));
    for (const n of [names[0], names[1234], names[2999]]) expect((await archive.readEntryBuffer(n, 100)).toString()).toBe(n);
    expect(archive.has(`uploadedfiles/0/${'x'.repeat(40)}3000`)).toBe(false);
    await archive.close();
  });
});

describe('list()', () => {
  test('walks entries in directory order, whole or by prefix, and agrees with entries and with yauzl', async () => {
    const work = await tempDir();
    try {
      const zip = await writeZip(async (w) => {
        await w.addBuffer('VERSION', Buffer.from('1\n'));
        for (let i = 0; i < 300; i++) await w.addBuffer(`${['uploadedfiles', 'uploadedimages'][i % 2]}/${i % 16}/f${i}`, Buffer.from(`file ${i}\n`.repeat(i % 5)));
        await w.addBuffer('manifest.json', Buffer.from('{}'));
      });
      const archive = await open(zip);
      const all = [...archive.list()];
      expect(all).toEqual(archive.entries);
      expect(archive.entryCount).toBe(302);
      expect([...archive.list('uploadedimages/')].map((e) => e.name)).toEqual(all.filter((e) => e.name.startsWith('uploadedimages/')).map((e) => e.name));
      expect([...archive.list('uploadedimages/1/')].length).toBe(all.filter((e) => e.name.startsWith('uploadedimages/1/')).length);
      expect([...archive.list('nothing/')]).toEqual([]);
      const independent = await readZip(await work.file('x.zip', zip));
      expect(all.map((e) => e.name)).toEqual(independent.map((e) => e.name));
      for (const [i, e] of independent.entries()) {
        expect(all[i].uncompressedSize).toBe(e.data.length);
        expect((await archive.readEntryBuffer(e.name, 1000)).equals(e.data)).toBe(true);
      }
      await archive.close();
    } finally {
      await work.remove();
    }
  });
});
