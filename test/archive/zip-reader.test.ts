import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { deflateRawSync } from 'node:zlib';
import { CofferError, type ErrorCode } from '../../src/core/errors';
import type { RandomAccessSource } from '../../src/core/types';
import { ARCHIVE_TOP_LEVEL, bufferSource, fileSource, openZip, type ZipArchive } from '../../src/archive';
import {
  buildZip,
  collect,
  deflated,
  expectCofferError,
  fileAttributes,
  S_IFDIR,
  S_IFLNK,
  stored,
  tempDir,
  writeZip,
  type HandEntry,
} from './helpers';

const opts = { allowedTopLevel: ARCHIVE_TOP_LEVEL };

function open(zip: Buffer): Promise<ZipArchive> {
  return openZip(bufferSource(zip), opts);
}

/** A source that records whether it was closed. */
function trackedSource(zip: Buffer): RandomAccessSource & { closed: boolean } {
  const inner = bufferSource(zip);
  const source = {
    size: inner.size,
    closed: false,
    createReadStream: (start: number, end: number) => inner.createReadStream(start, end),
    read: (position: number, length: number) => inner.read(position, length),
    close: async () => {
      source.closed = true;
    },
  };
  return source;
}

describe('openZip refuses unsafe entries before returning, naming the entry and the reason', () => {
  const good = stored('VERSION', '1\n');
  test.each<[string, HandEntry, string]>([
    ['a parent-directory escape', stored('../evil', 'x'), "'..' path segment"],
    ['an absolute path', stored('/etc/passwd', 'x'), 'absolute path'],
    ['a nested escape', stored('uploadedfiles/../../b', 'x'), "'..' path segment"],
    ['a relative escape from an unknown folder', stored('a/../../b', 'x'), "'..' path segment"],
    ['a drive letter with backslash', stored('C:\\x', 'x'), 'backslash'],
    ['a drive letter with slash', stored('C:/x', 'x'), 'drive letter'],
    ['a backslash escape', stored('uploadedfiles\\..\\x', 'x'), 'backslash'],
    ['an empty segment', stored('uploadedfiles//x', 'x'), 'empty path segment'],
    ['a NUL byte', stored(Buffer.from('uploadedfiles/a\0.txt'), 'x'), 'NUL'],
    ['an unknown top-level folder', stored('evil/x', 'x'), "top-level name 'evil'"],
    ['an unknown top-level file', stored('README', 'x'), "top-level name 'README'"],
    ['a file where a top-level folder belongs', stored('uploadedfiles', 'x'), 'must be a folder'],
    ['a symlink', stored('uploadedfiles/link', '/etc/passwd', { externalAttributes: fileAttributes(S_IFLNK | 0o777) }), 'symbolic link'],
    ['a fifo', stored('uploadedfiles/fifo', '', { externalAttributes: fileAttributes(0o010644) }), 'special file'],
    ['a directory without a trailing slash', stored('uploadedfiles/d', '', { externalAttributes: fileAttributes(S_IFDIR | 0o755) }), 'directory attributes'],
    ['a directory carrying data', stored('uploadedfiles/d/', 'data'), 'directory entry carries data'],
    ['an encrypted entry', stored('uploadedfiles/secret', 'x', { flags: 0x801 }), 'encrypted entry'],
    ['an unsupported compression method', stored('uploadedfiles/b.bz2', 'x', { method: 12 }), 'unsupported compression method 12'],
    ['a stored entry with mismatched sizes', stored('uploadedfiles/a', 'abc', { uncompressedSize: 1_000_000 }), 'stored entry declares 3 compressed but 1000000'],
    [
      'sizes deflate cannot produce',
      deflated('uploadedfiles/a', Buffer.from('abc'), { uncompressedSize: 4_000_000_000 }),
      'more than deflate can produce',
    ],
  ])('%s', async (_what, hostile, reason) => {
    const source = trackedSource(buildZip([good, hostile]));
    const name = Buffer.isBuffer(hostile.name) ? hostile.name.toString('utf8').replace('\0', '\\x00') : hostile.name;
    await expectCofferError(openZip(source, opts), 'E_ARCHIVE_UNSAFE_ENTRY', `'${name}'`, reason);
    expect(source.closed).toBe(true);
  });

  test('a duplicate name', async () => {
    const zip = buildZip([good, stored('uploadedfiles/a', '1'), stored('uploadedfiles/a', '2')]);
    await expectCofferError(open(zip), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/a'", 'duplicate name');
  });

  test('a file that is also used as a directory', async () => {
    const zip = buildZip([stored('uploadedfiles/a', '1'), stored('uploadedfiles/a/b', '2')]);
    await expectCofferError(open(zip), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/a/b'", "parent 'uploadedfiles/a' is a file");
  });

  test('the last of many entries is checked before openZip returns', async () => {
    const entries = Array.from({ length: 500 }, (_, i) => stored(`uploadedfiles/${i}`, String(i)));
    const zip = buildZip([...entries, stored('../../late-escape', 'x')]);
    await expectCofferError(open(zip), 'E_ARCHIVE_UNSAFE_ENTRY', "'../../late-escape'");
  });

  test('two entries sharing the same data (overlapping zip bomb)', async () => {
    const zip = buildZip([
      deflated('uploadedfiles/a', Buffer.alloc(100_000)),
      deflated('uploadedfiles/b', Buffer.alloc(100_000), { localHeaderOffset: (offsets) => offsets[0] }),
    ]);
    await expectCofferError(open(zip), 'E_ARCHIVE_UNSAFE_ENTRY', 'overlaps');
  });
});

describe('reading an entry enforces declared size and CRC-32', () => {
  test('data that inflates beyond the declared size (zip bomb) is cut off with E_ARCHIVE_UNSAFE_ENTRY', async () => {
    const zip = buildZip([deflated('uploadedfiles/bomb', Buffer.alloc(50 * 1024 * 1024), { uncompressedSize: 1000 })]);
    const archive = await open(zip);
    const stream = await archive.openEntry('uploadedfiles/bomb');
    let received = 0;
    stream.on('data', (c: Buffer) => (received += c.length));
    await expectCofferError(collect(stream), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/bomb'", 'declared size of 1000');
    expect(received).toBeLessThanOrEqual(1000);
    await archive.close();
  });

  test('an entry read as a stream gets output buffers no bigger than its declared size needs (and 256 KiB at most)', async () => {
    const text = (n: number) => Buffer.from('coffer keeps every byte. '.repeat(Math.ceil(n / 25)).slice(0, n));
    const mid = text(100_000);
    const big = text(3_000_000);
    const archive = await open(buildZip([deflated('uploadedfiles/mid', mid), deflated('uploadedfiles/big', big)]));
    for (const [name, content, bound] of [['uploadedfiles/mid', mid, 100_001], ['uploadedfiles/big', big, 256 * 1024]] as const) {
      const chunks: Buffer[] = [];
      const stream = await archive.openEntry(name);
      stream.on('data', (c: Buffer) => chunks.push(c));
      await collect(stream);
      expect(Buffer.concat(chunks).equals(content)).toBe(true);
      // The memory behind each piece the inflater handed over, not only the piece.
      expect(Math.max(...chunks.map((c) => c.buffer.byteLength))).toBeLessThanOrEqual(bound);
    }
    await archive.close();
  });

  test('a declared size larger than the data is E_ARCHIVE_INVALID', async () => {
    const archive = await open(buildZip([deflated('uploadedfiles/short', Buffer.from('hello'), { uncompressedSize: 6 })]));
    await expectCofferError(collect(await archive.openEntry('uploadedfiles/short')), 'E_ARCHIVE_INVALID', "'uploadedfiles/short'", 'fewer than the 6 declared');
    await archive.close();
  });

  test.each([
    ['stored', stored('uploadedfiles/a', 'hello', { crc32: 0x12345678 })],
    ['deflated', deflated('uploadedfiles/a', Buffer.from('hello'.repeat(100)), { crc32: 0x12345678 })],
  ])('a CRC-32 mismatch in a %s entry is E_ARCHIVE_CHECKSUM', async (_method, entry) => {
    const archive = await open(buildZip([entry]));
    await expectCofferError(collect(await archive.openEntry('uploadedfiles/a')), 'E_ARCHIVE_CHECKSUM', "'uploadedfiles/a'", 'expected 12345678');
    await expectCofferError(archive.readEntryBuffer('uploadedfiles/a', 1000), 'E_ARCHIVE_CHECKSUM', "'uploadedfiles/a'");
    await archive.close();
  });

  test('corrupt deflate data is E_ARCHIVE_INVALID naming the entry', async () => {
    const data = deflateRawSync(Buffer.from('some text '.repeat(1000)));
    // First block header: BFINAL=1, BTYPE=11, a block type that does not exist.
    data[0] = 0x07;
    const archive = await open(buildZip([{ name: 'uploadedfiles/x', data, method: 8, content: Buffer.alloc(10_000), uncompressedSize: 10_000 }]));
    await expectCofferError(collect(await archive.openEntry('uploadedfiles/x')), 'E_ARCHIVE_INVALID', "'uploadedfiles/x'", 'corrupt compressed data');
    await archive.close();
  });

  test('a local header naming another file than the central directory is refused', async () => {
    const archive = await open(buildZip([stored('uploadedfiles/a', 'x', { localName: '../../etc/passwd' })]));
    await expectCofferError(archive.openEntry('uploadedfiles/a'), 'E_ARCHIVE_UNSAFE_ENTRY', "'uploadedfiles/a'", 'local header');
    await archive.close();
  });

  test('readEntryBuffer refuses an entry whose declared size exceeds the limit without reading it', async () => {
    const archive = await open(buildZip([stored('manifest.json', 'x'.repeat(2000))]));
    await expectCofferError(archive.readEntryBuffer('manifest.json', 1000), 'E_ARCHIVE_UNSAFE_ENTRY', "'manifest.json'", 'more than the 1000 allowed');
    expect((await archive.readEntryBuffer('manifest.json', 2000)).length).toBe(2000);
    await archive.close();
  });

  test('source errors while reading keep their code and name the entry', async () => {
    const zip = buildZip([stored('VERSION', '1\n'), stored('uploadedfiles/big', randomBytes(300_000))]);
    const inner = bufferSource(zip);
    const failing: RandomAccessSource = {
      size: inner.size,
      read: (position, length) => inner.read(position, length),
      createReadStream(start, end) {
        if (end - start < 200_000) return inner.createReadStream(start, end);
        const stream = new Readable({ read() {} });
        setImmediate(() => stream.destroy(new CofferError('E_CRYPT_CORRUPT', 'chunk 3 failed authentication')));
        return stream;
      },
      close: () => Promise.resolve(),
    };
    const archive = await openZip(failing, opts);
    await expectCofferError(collect(await archive.openEntry('uploadedfiles/big')), 'E_CRYPT_CORRUPT', "'uploadedfiles/big'", 'chunk 3');
    expect(await archive.readEntryBuffer('VERSION', 10)).toEqual(Buffer.from('1\n'));
    await archive.close();
  });
});

describe('openZip recognises files that are not complete zips', () => {
  let zip: Buffer;

  beforeAll(async () => {
    zip = await writeZip(async (w) => {
      await w.addBuffer('VERSION', Buffer.from('1\n'));
      await w.addBuffer('db/public.t.jsonl', Buffer.from('{"a":1}\n'.repeat(5000)));
      await w.addBuffer('manifest.json', Buffer.from('{"format":1}'));
    });
  });

  test('an empty file is E_ARCHIVE_INVALID', async () => {
    await expectCofferError(open(Buffer.alloc(0)), 'E_ARCHIVE_INVALID', 'not a zip archive', 'empty');
  });

  test('random bytes are E_ARCHIVE_INVALID', async () => {
    await expectCofferError(open(randomBytes(100_000)), 'E_ARCHIVE_INVALID', 'not a zip archive: end of central directory not found');
  });

  test('an encrypted coffer file is not mistaken for a zip', async () => {
    const crypt = Buffer.concat([Buffer.from('\x89COFFER\n', 'latin1'), randomBytes(500)]);
    await expectCofferError(open(crypt), 'E_ARCHIVE_INVALID', 'not a zip archive');
  });

  test.each([4, 30, 0.5, -23, -22, -10, -1])('a zip cut at offset %d is E_ARCHIVE_TRUNCATED', async (cut) => {
    const at = cut > 0 && cut < 1 ? Math.floor(zip.length * cut) : cut < 0 ? zip.length + cut : cut;
    const source = trackedSource(zip.subarray(0, at));
    await expectCofferError(openZip(source, opts), 'E_ARCHIVE_TRUNCATED', 'truncated');
    expect(source.closed).toBe(true);
  });

  test('a zip cut inside the first four bytes is not recognisable as a zip', async () => {
    await expectCofferError(open(zip.subarray(0, 3)), 'E_ARCHIVE_INVALID', 'not a zip archive');
  });

  test('bytes appended after the end record are E_ARCHIVE_INVALID', async () => {
    await expectCofferError(open(Buffer.concat([zip, Buffer.from('junk')])), 'E_ARCHIVE_INVALID', 'after the end of central directory');
  });

  test('a corrupt central directory is E_ARCHIVE_INVALID', async () => {
    const corrupt = Buffer.from(zip);
    const cd = corrupt.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    corrupt.writeUInt32LE(0xdeadbeef, cd);
    await expectCofferError(open(corrupt), 'E_ARCHIVE_INVALID', 'corrupt central directory');
  });

  test('a central directory offset beyond the end of the file is E_ARCHIVE_TRUNCATED', async () => {
    const corrupt = Buffer.from(zip);
    corrupt.writeUInt32LE(zip.length + 1000, zip.length - 6);
    await expectCofferError(open(corrupt), 'E_ARCHIVE_TRUNCATED', 'central directory');
  });
});

describe('ZipArchive API', () => {
  let archive: ZipArchive;

  beforeAll(async () => {
    archive = await open(
      buildZip([
        stored('VERSION', '1\n'),
        { ...stored('uploadedfiles/', ''), externalAttributes: fileAttributes(S_IFDIR | 0o755) | 0x10 },
        deflated('uploadedfiles/a.txt', Buffer.from('a'.repeat(10_000))),
      ]),
    );
  });
  afterAll(() => archive.close());

  test('entries describe names, sizes, directories and CRCs in central-directory order', () => {
    expect(archive.entries).toEqual([
      { name: 'VERSION', compressedSize: 2, uncompressedSize: 2, isDirectory: false, crc32: expect.any(Number) },
      { name: 'uploadedfiles/', compressedSize: 0, uncompressedSize: 0, isDirectory: true, crc32: 0 },
      { name: 'uploadedfiles/a.txt', compressedSize: expect.any(Number), uncompressedSize: 10_000, isDirectory: false, crc32: expect.any(Number) },
    ]);
    expect(archive.totalUncompressedSize).toBe(10_002);
    expect(archive.has('VERSION')).toBe(true);
    expect(archive.has('uploadedfiles')).toBe(false);
  });

  test('a missing entry and a directory cannot be opened', async () => {
    await expectCofferError(archive.openEntry('manifest.json'), 'E_ARCHIVE_INVALID', "no entry 'manifest.json'");
    await expectCofferError(archive.openEntry('uploadedfiles/'), 'E_USAGE', 'is a directory');
  });

  test('a reader that stops early does not disturb later reads', async () => {
    const stream = await archive.openEntry('uploadedfiles/a.txt');
    stream.destroy();
    expect((await archive.readEntryBuffer('uploadedfiles/a.txt', 10_000)).toString()).toBe('a'.repeat(10_000));
  });

  test('several entries can be read at the same time', async () => {
    const [a, b] = await Promise.all([archive.readEntryBuffer('uploadedfiles/a.txt', 10_000), archive.readEntryBuffer('VERSION', 2)]);
    expect(a.length).toBe(10_000);
    expect(b.toString()).toBe('1\n');
  });
});

describe('a small entry read whole and streamed: the same refusal', () => {
  const corrupt = deflateRawSync(Buffer.from('some text '.repeat(1000)));
  corrupt[0] = 0x07;
  test.each<[string, HandEntry, ErrorCode]>([
    ['a stored CRC-32 mismatch', stored('uploadedfiles/x', 'hello', { crc32: 0x12345678 }), 'E_ARCHIVE_CHECKSUM'],
    ['a deflated CRC-32 mismatch', deflated('uploadedfiles/x', Buffer.from('hello'.repeat(100)), { crc32: 0x12345678 }), 'E_ARCHIVE_CHECKSUM'],
    ['data past the declared size', deflated('uploadedfiles/x', Buffer.alloc(50_000), { uncompressedSize: 1000, content: Buffer.alloc(1000) }), 'E_ARCHIVE_UNSAFE_ENTRY'],
    ['data short of the declared size', deflated('uploadedfiles/x', Buffer.from('hello'), { uncompressedSize: 6 }), 'E_ARCHIVE_INVALID'],
    ['corrupt deflate data', { name: 'uploadedfiles/x', data: corrupt, method: 8, content: Buffer.alloc(10_000), uncompressedSize: 10_000 }, 'E_ARCHIVE_INVALID'],
    // A local header of the same length naming another file.
    ['a local header naming another file', stored('uploadedfiles/x', 'x', { localName: 'uploadedfiles/y' }), 'E_ARCHIVE_UNSAFE_ENTRY'],
  ])('%s', async (_what, entry, code) => {
    // Neighbours before and after, so the small read goes through the block cache as in a real walk.
    const archive = await open(buildZip([stored('uploadedfiles/a', 'a'.repeat(3000)), entry, stored('uploadedfiles/z', 'z')]));
    const whole = await expectCofferError(archive.readEntryBuffer('uploadedfiles/x', 64 * 1024), code, "'uploadedfiles/x'");
    const streamed = await expectCofferError((async () => collect(await archive.openEntry('uploadedfiles/x')))(), code, "'uploadedfiles/x'");
    expect(whole.message).toBe(streamed.message);
    expect((await archive.readEntryBuffer('uploadedfiles/z', 10)).toString()).toBe('z');
    await archive.close();
  });

  test('an entry declaring a few bytes but storing many more (deflate data, then junk) reads the same whole and streamed', async () => {
    const content = Buffer.from('0123456789');
    const data = Buffer.concat([deflateRawSync(content), Buffer.alloc(200_000, 7)]);
    const archive = await open(buildZip([{ name: 'uploadedfiles/x', data, method: 8, content }]));
    expect(await archive.readEntryBuffer('uploadedfiles/x', 100)).toEqual(content);
    expect(await collect(await archive.openEntry('uploadedfiles/x'))).toEqual(content);
    await archive.close();
  });
});

describe('fileSource', () => {
  test('reads a zip from disk through the same hardened reader and closes the file', async () => {
    const dir = await tempDir();
    try {
      const zip = await writeZip(async (w) => {
        await w.addBuffer('VERSION', Buffer.from('1\n'));
        await w.addStream('db/public.t.jsonl', Readable.from([Buffer.from('{"a":1}\n'.repeat(100_000))]));
      });
      const path = await dir.file('disk.zip', zip);
      const archive = await openZip(await fileSource(path), opts);
      expect((await archive.readEntryBuffer('db/public.t.jsonl', 1_000_000)).length).toBe(800_000);
      expect((await collect(await archive.openEntry('VERSION'))).toString()).toBe('1\n');
      await archive.close();
      await expectCofferError(archive.openEntry('VERSION'), 'E_INTERNAL', 'closed');
    } finally {
      await dir.remove();
    }
  });

  test('byte ranges are end-exclusive and checked', async () => {
    const dir = await tempDir();
    try {
      const source = await fileSource(await dir.file('bytes', Buffer.from('0123456789')));
      expect(source.size).toBe(10);
      expect((await collect(source.createReadStream(2, 5))).toString()).toBe('234');
      expect((await collect(source.createReadStream(10, 10))).length).toBe(0);
      expect(() => source.createReadStream(5, 11)).toThrow(RangeError);
      await source.close();
      await source.close();
    } finally {
      await dir.remove();
    }
  });

  test('a missing file is E_NOT_FOUND', async () => {
    await expectCofferError(fileSource('/nonexistent/coffer.zip'), 'E_NOT_FOUND', '/nonexistent/coffer.zip');
  });
});
