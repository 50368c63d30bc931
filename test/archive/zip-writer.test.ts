import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { CofferError } from '../../src/core/errors';
import {
  ARCHIVE_TOP_LEVEL,
  bufferSource,
  createZipWriter,
  openZip,
  type ZipArchive,
} from '../../src/archive';
import { collect, expectCofferError, runUnzip, tempDir, writeZip, type TempDir } from './helpers';

jest.setTimeout(60_000);

/** Deterministic JSON-lines text, streamed in 64 KiB chunks, hashed as it is produced. */
function jsonLines(totalBytes: number): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256');
  let produced = 0;
  let row = 0;
  const stream = new Readable({
    read() {
      if (produced >= totalBytes) {
        this.push(null);
        return;
      }
      let text = '';
      while (text.length < 64 * 1024) {
        text += JSON.stringify({ id: row, name: `row ${row}`, score: (row * 7919) % 1000, tags: ['a', 'b', String(row % 13)] }) + '\n';
        row += 1;
      }
      const chunk = Buffer.from(text).subarray(0, Math.min(text.length, totalBytes - produced));
      produced += chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, sha256: () => hash.digest('hex') };
}

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** A stream that delivers `before` bytes and then fails with `err`. */
function failingStream(before: number, err: Error): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(randomBytes(before));
        return;
      }
      setImmediate(() => this.destroy(err));
    },
  });
}

describe('zip writer round trip', () => {
  const unicodeName = 'uploadedimages/ünïcödé 日本語 😀.png';
  const photo = randomBytes(100_000);
  const unicodeBytes = randomBytes(1234);
  let zip: Buffer;
  let bigSha: string;
  let dir: TempDir;
  let zipPath: string;
  let archive: ZipArchive;

  beforeAll(async () => {
    const big = jsonLines(20 * 1024 * 1024);
    zip = await writeZip(async (w) => {
      await w.addBuffer('VERSION', Buffer.from('1\n'));
      await w.addStream('db/public.projects.jsonl', big.stream);
      await w.addStream('db/public.empty.jsonl', Readable.from([]));
      await w.addDirectory('uploadedfiles');
      await w.addStream('uploadedfiles/ab/photo.jpg', Readable.from([photo]), { store: true });
      await w.addBuffer(unicodeName, unicodeBytes, { store: true });
      await w.addBuffer('uploadedassets/empty', Buffer.alloc(0));
      await w.addBuffer('manifest.json', Buffer.from('{"format":1}'));
    });
    bigSha = big.sha256();
    dir = await tempDir();
    zipPath = await dir.file('round-trip.zip', zip);
    archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
  });

  afterAll(async () => {
    await archive.close();
    await dir.remove();
  });

  test('the reader lists every entry in the order they were added, with directories marked', () => {
    expect(archive.entries.map((e) => [e.name, e.isDirectory])).toEqual([
      ['VERSION', false],
      ['db/public.projects.jsonl', false],
      ['db/public.empty.jsonl', false],
      ['uploadedfiles/', true],
      ['uploadedfiles/ab/photo.jpg', false],
      [unicodeName, false],
      ['uploadedassets/empty', false],
      ['manifest.json', false],
    ]);
  });

  test('a 20 MB streamed entry reads back byte for byte and is deflated', async () => {
    const info = archive.entries.find((e) => e.name === 'db/public.projects.jsonl');
    expect(info?.uncompressedSize).toBe(20 * 1024 * 1024);
    expect(info?.compressedSize).toBeLessThan((info?.uncompressedSize ?? 0) / 4);
    const data = await collect(await archive.openEntry('db/public.projects.jsonl'));
    expect(sha256(data)).toBe(bigSha);
  });

  test('stored entries keep their size and content, including a unicode name', async () => {
    const jpg = archive.entries.find((e) => e.name === 'uploadedfiles/ab/photo.jpg');
    expect(jpg?.compressedSize).toBe(photo.length);
    expect((await collect(await archive.openEntry('uploadedfiles/ab/photo.jpg'))).equals(photo)).toBe(true);
    expect((await archive.readEntryBuffer(unicodeName, 10_000)).equals(unicodeBytes)).toBe(true);
  });

  test('empty entries and small buffers read back exactly', async () => {
    expect(await archive.readEntryBuffer('VERSION', 10)).toEqual(Buffer.from('1\n'));
    expect(await archive.readEntryBuffer('db/public.empty.jsonl', 10)).toEqual(Buffer.alloc(0));
    expect(await archive.readEntryBuffer('uploadedassets/empty', 10)).toEqual(Buffer.alloc(0));
    expect(await archive.readEntryBuffer('manifest.json', 100)).toEqual(Buffer.from('{"format":1}'));
  });

  test('Info-ZIP unzip -t finds no errors', async () => {
    const result = await runUnzip(['-t', zipPath]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('No errors detected');
  });

  test('Info-ZIP unzip -l lists the same entries and sizes', async () => {
    const result = await runUnzip(['-l', zipPath]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/20971520\s+\S+\s+\S+\s+db\/public\.projects\.jsonl/);
    expect(result.stdout).toMatch(/100000\s+\S+\s+\S+\s+uploadedfiles\/ab\/photo\.jpg/);
    expect(result.stdout).toMatch(/\s8 files\s*$/);
  });
});

describe('zip writer ordering and options', () => {
  test('entries appear in the central directory in the order of the add calls', async () => {
    const names = ['VERSION', 'db/z.jsonl', 'db/a.jsonl', 'uploadedfiles/m', 'uploadedfiles/b', 'manifest.json'];
    const zip = await writeZip(async (w) => {
      for (const name of names) await w.addStream(name, Readable.from([Buffer.from(name)]));
    });
    const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
    expect(archive.entries.map((e) => e.name)).toEqual(names);
    const dir = await tempDir();
    try {
      const listed = await runUnzip(['-Z1', await dir.file('order.zip', zip)]);
      expect(listed.stdout.trim().split('\n')).toEqual(names);
    } finally {
      await dir.remove();
      await archive.close();
    }
  });

  test('deflate level 0 and store both produce entries Info-ZIP verifies', async () => {
    const text = Buffer.from('hello '.repeat(1000));
    const zip = await writeZip(
      async (w) => {
        await w.addBuffer('db/a.jsonl', text);
        await w.addBuffer('db/b.jsonl', text, { store: true, date: new Date('2020-01-02T03:04:06Z'), mode: 0o600 });
      },
      { level: 0 },
    );
    const dir = await tempDir();
    try {
      const path = await dir.file('levels.zip', zip);
      expect((await runUnzip(['-t', path])).code).toBe(0);
      const verbose = await runUnzip(['-Z', path]);
      expect(verbose.stdout).toMatch(/-rw-------.*stor 20-Jan-02 03:04 db\/b\.jsonl/);
    } finally {
      await dir.remove();
    }
  });

  test('a consumer that does not read holds the source back (memory stays bounded)', async () => {
    const block = randomBytes(64 * 1024);
    let produced = 0;
    const source = new Readable({
      read() {
        produced += block.length;
        this.push(produced > 32 * 1024 * 1024 ? null : block);
      },
    });
    const writer = createZipWriter();
    let settled = false;
    const pending = writer.addStream('uploadedfiles/big.bin', source, { store: true }).then(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled).toBe(false);
    expect(produced).toBeLessThan(8 * 1024 * 1024);
    const output = collect(writer.output);
    await pending;
    await writer.finalize();
    expect((await output).length).toBeGreaterThan(32 * 1024 * 1024);
  });

  test('bytesWritten grows as entries are written and equals the final size', async () => {
    const writer = createZipWriter();
    const output = collect(writer.output);
    expect(writer.bytesWritten).toBe(0);
    await writer.addBuffer('VERSION', Buffer.from('1\n'));
    const afterFirst = writer.bytesWritten;
    expect(afterFirst).toBeGreaterThan(0);
    const { bytes } = await writer.finalize();
    expect(bytes).toBe(writer.bytesWritten);
    expect((await output).length).toBe(bytes);
  });
});

describe('zip writer refuses names and misuse without breaking the archive', () => {
  test.each([
    ['../evil', "'..' path segment"],
    ['/etc/passwd', 'absolute path'],
    ['uploadedfiles\\..\\x', 'backslash'],
    ['C:\\x', 'backslash'],
    ['C:x', 'drive letter'],
    ['uploadedfiles//x', 'empty path segment'],
    ['uploadedfiles/./x', "'.' path segment"],
    ['a\0b', 'NUL'],
    ['', 'empty name'],
  ])('refuses %j (%s) and still writes a valid zip', async (name, reason) => {
    const zip = await writeZip(async (w) => {
      await w.addBuffer('VERSION', Buffer.from('1\n'));
      const source = Readable.from([Buffer.from('x')]);
      await expectCofferError(w.addStream(name, source), 'E_ARCHIVE_UNSAFE_ENTRY', reason);
      expect(source.destroyed).toBe(true);
      await w.addBuffer('manifest.json', Buffer.from('{}'));
    });
    const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
    expect(archive.entries.map((e) => e.name)).toEqual(['VERSION', 'manifest.json']);
    await archive.close();
  });

  test('refuses a duplicate name and a file/directory clash', async () => {
    await writeZip(async (w) => {
      await w.addBuffer('uploadedfiles/a', Buffer.from('1'));
      await expectCofferError(w.addBuffer('uploadedfiles/a', Buffer.from('2')), 'E_ARCHIVE_UNSAFE_ENTRY', 'duplicate name');
      await expectCofferError(w.addDirectory('uploadedfiles/a'), 'E_ARCHIVE_UNSAFE_ENTRY', "clashes with file 'uploadedfiles/a'");
      await expectCofferError(w.addBuffer('uploadedfiles/a/b', Buffer.from('3')), 'E_ARCHIVE_UNSAFE_ENTRY', "parent 'uploadedfiles/a' is a file");
    });
  });

  test('adding an entry while another is still being written is refused; the first completes', async () => {
    const zip = await writeZip(async (w) => {
      const first = w.addStream('db/a.jsonl', Readable.from([Buffer.from('a\n')]));
      await expectCofferError(w.addBuffer('db/b.jsonl', Buffer.from('b')), 'E_INTERNAL', "entry 'db/a.jsonl' is still being written");
      await expectCofferError(w.finalize(), 'E_INTERNAL', 'still being written');
      await first;
    });
    const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
    expect(archive.entries.map((e) => e.name)).toEqual(['db/a.jsonl']);
    await archive.close();
  });

  test('a source stream that has already ended is refused instead of hanging', async () => {
    const source = Readable.from([Buffer.from('x')]);
    await collect(source);
    await writeZip(async (w) => {
      await expectCofferError(w.addStream('db/a.jsonl', source), 'E_INTERNAL', 'already consumed');
    });
  });

  test('invalid dates and modes are refused before anything is written; the name stays available', async () => {
    const zip = await writeZip(async (w) => {
      await expectCofferError(w.addBuffer('VERSION', Buffer.from('1\n'), { date: new Date('nope') }), 'E_INTERNAL', 'invalid date');
      await expectCofferError(w.addBuffer('VERSION', Buffer.from('1\n'), { mode: 0o100644 }), 'E_INTERNAL', 'mode');
      const used = Readable.from([Buffer.from('x')]);
      await collect(used);
      await expectCofferError(w.addStream('VERSION', used), 'E_INTERNAL', 'already consumed');
      await w.addBuffer('VERSION', Buffer.from('1\n'), { mode: 0o640 });
    });
    const archive = await openZip(bufferSource(zip), { allowedTopLevel: ARCHIVE_TOP_LEVEL });
    expect(archive.entries.map((e) => e.name)).toEqual(['VERSION']);
    await archive.close();
  });

  test('adding after finalize is refused', async () => {
    const writer = createZipWriter();
    const output = collect(writer.output);
    await writer.finalize();
    await expectCofferError(writer.addBuffer('VERSION', Buffer.from('1\n')), 'E_INTERNAL', 'already been finalized');
    await expectCofferError(writer.finalize(), 'E_INTERNAL', 'already been finalized');
    await output;
  });
});

describe('zip writer failures reach both the caller and the output', () => {
  /** Starts a writer whose output is consumed; returns the bytes seen before the output failed. */
  function consume(writer: ReturnType<typeof createZipWriter>): { received: Buffer[]; ended: Promise<unknown> } {
    const received: Buffer[] = [];
    writer.output.on('data', (c: Buffer) => received.push(c));
    const ended = new Promise((resolve, reject) => {
      writer.output.on('end', () => resolve('end'));
      writer.output.on('error', reject);
    });
    return { received, ended };
  }

  test('an input stream that errors mid-way rejects addStream, errors the output and poisons the writer', async () => {
    const writer = createZipWriter();
    const { received, ended } = consume(writer);
    await writer.addBuffer('VERSION', Buffer.from('1\n'));
    const failure = await expectCofferError(
      writer.addStream('db/public.t.jsonl', failingStream(200_000, new Error('connection reset'))),
      'E_BACKUP_FAILED',
      "entry 'db/public.t.jsonl'",
      'connection reset',
    );
    await expect(ended).rejects.toBe(failure);
    await expect(writer.finalize()).rejects.toBe(failure);
    await expect(writer.addBuffer('manifest.json', Buffer.from('{}'))).rejects.toBe(failure);
    // What the consumer did receive is not a readable zip.
    await expectCofferError(openZip(bufferSource(Buffer.concat(received)), { allowedTopLevel: ARCHIVE_TOP_LEVEL }), 'E_ARCHIVE_TRUNCATED');
  });

  test('a CofferError from the input keeps its code', async () => {
    const writer = createZipWriter();
    const { ended } = consume(writer);
    const dbError = new CofferError('E_DATABASE_UNAVAILABLE', 'database went away');
    await expect(writer.addStream('db/public.t.jsonl', failingStream(10, dbError))).rejects.toBe(dbError);
    await expect(ended).rejects.toBe(dbError);
  });

  test('an input stream destroyed without an error still fails the entry', async () => {
    const writer = createZipWriter();
    const { ended } = consume(writer);
    const source = new Readable({ read() {} });
    source.push(Buffer.from('partial'));
    const pending = writer.addStream('db/public.t.jsonl', source);
    setImmediate(() => source.destroy());
    await expectCofferError(pending, 'E_BACKUP_FAILED', 'db/public.t.jsonl', 'Premature close');
    await expect(ended).rejects.toBeInstanceOf(CofferError);
  });

  test('abort rejects the pending entry and errors the output', async () => {
    const writer = createZipWriter();
    const { ended } = consume(writer);
    const source = new Readable({ read() {} });
    const pending = writer.addStream('db/public.t.jsonl', source);
    writer.abort();
    await expectCofferError(pending, 'E_ABORTED', 'aborted');
    await expect(ended).rejects.toBeInstanceOf(CofferError);
    expect(source.destroyed).toBe(true);
  });

  test('a consumer that destroys the output stops the writer instead of leaving it hanging', async () => {
    const writer = createZipWriter();
    writer.output.on('error', () => undefined);
    const source = new Readable({ read() {} });
    const pending = writer.addStream('db/public.t.jsonl', source);
    writer.output.destroy();
    await expectCofferError(pending, 'E_ABORTED', 'output was closed');
    expect(source.destroyed).toBe(true);
  });
});
