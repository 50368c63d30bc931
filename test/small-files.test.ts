import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { createTestDatabase, type TestDatabase } from './support/db';
import { backupToFile, restoreFile } from './support/archive';
import { readZip } from './support/zip';
import { openArchive } from '../src/pipeline/open-archive';
import { verifyArchive } from '../src/pipeline/verify';
import { stageFiles } from '../src/storage/restore-files';
import { createLogger } from '../src/log';
import { treeOf } from './support/seed';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-small-files-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Thousands of small uploads (text and random, empty to 64 KiB) and a few larger ones. */
function writeManySmallFiles(dataDir: string, count: number): void {
  const folders = ['uploadedfiles', 'uploadedimages', 'uploadedassets'];
  for (let i = 0; i < count; i++) {
    const rel = `${folders[i % 3]}/${(i % 37).toString(16).padStart(2, '0')}/${createHash('md5').update(String(i)).digest('hex')}`;
    const size = i % 500 === 0 ? 64 * 1024 + (i % 3) : i % 1500;
    const data = i % 2 ? randomBytes(size) : Buffer.from(`line ${i} of a small upload\n`.repeat(Math.ceil(size / 24) + 1)).subarray(0, size);
    fs.mkdirSync(path.join(dataDir, path.dirname(rel)), { recursive: true });
    fs.writeFileSync(path.join(dataDir, rel), data);
  }
  fs.writeFileSync(path.join(dataDir, 'uploadedfiles', 'large.bin'), randomBytes(300_000));
}

describe('many small upload files', () => {
  let source: TestDatabase;
  let sourceDir: string;
  let archive: string;

  beforeAll(async () => {
    source = await createTestDatabase({ migrated: true });
    sourceDir = path.join(tmp, 'source');
    writeManySmallFiles(sourceDir, 3000);
    archive = path.join(tmp, 'small.zip');
    await backupToFile(source.pool, sourceDir, archive);
  });
  afterAll(async () => source.drop());

  test('back up, verify and restore give the same files byte for byte', async () => {
    const entries = await readZip(archive);
    const files = entries.filter((e) => !e.name.startsWith('db/') && !e.name.endsWith('/') && e.name.includes('/'));
    expect(files.length).toBe(3001);
    // Random uploads of 512 bytes or more are stored, text deflated.
    expect(files.filter((e) => e.compressionMethod === 0).length).toBeGreaterThan(900);
    expect(files.filter((e) => e.compressionMethod === 8).length).toBeGreaterThan(1400);

    const opened = await openArchive(archive, undefined);
    try {
      const report = await verifyArchive(opened);
      expect(report.problems).toEqual([]);
      expect(Object.values(report.files).reduce((n, f) => n + f.files, 0)).toBe(3001);
    } finally {
      await opened.close();
    }

    const target = await createTestDatabase();
    const dir = path.join(tmp, 'target');
    fs.mkdirSync(dir);
    try {
      const summary = await restoreFile(archive, target.pool, dir);
      expect(summary.files).toBe(3001);
      expect(treeOf(dir)).toEqual(treeOf(sourceDir));
      // Nothing of the staging is left behind.
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('.coffer-restore'))).toEqual([]);
    } finally {
      await target.drop();
    }
  });

  test('verify and restore refuse a small file whose bytes were changed', async () => {
    const bad = path.join(tmp, 'flipped.zip');
    const zip = fs.readFileSync(archive);
    const entries = await readZip(archive);
    const victim = entries.find((e) => e.name.startsWith('uploadedimages/') && e.compressionMethod === 0 && e.data.length > 100)!;
    // Stored: the file's bytes appear as they are in the archive.
    const at = zip.indexOf(victim.data);
    zip[at + 50] ^= 0xff;
    fs.writeFileSync(bad, zip);
    const opened = await openArchive(bad, undefined);
    try {
      const report = await verifyArchive(opened);
      expect(report.ok).toBe(false);
      expect(report.problems.join('\n')).toContain(`${victim.name}: zip entry '${victim.name}' CRC-32 mismatch`);
    } finally {
      await opened.close();
    }
    const dir = path.join(tmp, 'target-flipped');
    fs.mkdirSync(dir);
    await expect(restoreFile(bad, undefined, dir, { skipDatabase: true })).rejects.toMatchObject({ code: 'E_ARCHIVE_CHECKSUM' });
    expect(fs.readdirSync(dir).filter((n) => !n.startsWith('.coffer-restore.lock'))).toEqual([]);
  });

  test('without sync -f, staged files are flushed one by one and the log says so', async () => {
    const lines: string[] = [];
    const log = createLogger('warn', new Writable({ write: (chunk, _e, cb) => (lines.push(String(chunk)), cb()) }));
    const opened = await openArchive(archive, undefined);
    const dir = path.join(tmp, 'target-nosync');
    const savedPath = process.env.PATH;
    process.env.PATH = path.join(tmp, 'no-such-bin');
    try {
      const staged = await stageFiles(opened.zip, dir, { log });
      expect(staged.files).toBe(3001);
      expect(treeOf(path.join(staged.staging, 'new'))).toEqual(treeOf(sourceDir));
    } finally {
      process.env.PATH = savedPath;
      await opened.close();
    }
    expect(lines.join('')).toContain('sync -f');
  });
});
