import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAtomicFile, writeFileAtomic } from '../src/core/atomic-file';
import { encryptFile } from '../src/crypto';
import { writeJournal } from '../src/storage/restore-files';
import { runCoffer } from './support/cli';
import { createTestDatabase, type TestDatabase } from './support/db';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-output-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const KEY_HEX = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

let n = 0;
function freshDir(): string {
  const d = path.join(tmp, `case-${++n}`);
  fs.mkdirSync(d);
  return d;
}

const modeOf = (file: string) => fs.statSync(file).mode & 0o777;

/** A world-writable file someone else left at the partial name. */
function plantPartial(file: string): void {
  fs.writeFileSync(file, 'planted');
  fs.chmodSync(file, 0o666);
  if (isRoot) fs.chownSync(file, NOBODY, NOBODY);
}

/** A symbolic link at the partial name, pointing at a file that must not change. */
function plantLink(partial: string): string {
  const victim = path.join(path.dirname(partial), 'victim.txt');
  fs.writeFileSync(victim, 'victim content');
  fs.symlinkSync(victim, partial);
  return victim;
}

describe('write-then-rename helper', () => {
  test('an existing partial file is refused by name and neither it nor the target changes', () => {
    const dir = freshDir();
    const target = path.join(dir, 'out.bin');
    fs.writeFileSync(target, 'old');
    plantPartial(`${target}.partial`);
    expect(() => createAtomicFile(target)).toThrow(expect.objectContaining({ code: 'E_OUTPUT', message: expect.stringContaining(`${target}.partial`) }));
    expect(() => writeFileAtomic(target, 'new')).toThrow(expect.objectContaining({ code: 'E_OUTPUT' }));
    expect(fs.readFileSync(target, 'utf8')).toBe('old');
    expect(fs.readFileSync(`${target}.partial`, 'utf8')).toBe('planted');
  });

  test('a symbolic link at the partial name is refused and its target is left alone', () => {
    const dir = freshDir();
    const target = path.join(dir, 'out.bin');
    const victim = plantLink(`${target}.partial`);
    expect(() => createAtomicFile(target)).toThrow(expect.objectContaining({ code: 'E_OUTPUT' }));
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim content');
    expect(fs.existsSync(target)).toBe(false);
  });

  test('the file gets exactly the mode asked for, whatever the umask', async () => {
    const dir = freshDir();
    const old = process.umask(0);
    try {
      const f = createAtomicFile(path.join(dir, 'a'));
      f.stream.end('data');
      await new Promise((r) => f.stream.on('finish', r));
      await f.commit();
      writeFileAtomic(path.join(dir, 'b'), 'data');
    } finally {
      process.umask(old);
    }
    expect(modeOf(path.join(dir, 'a'))).toBe(0o600);
    expect(modeOf(path.join(dir, 'b'))).toBe(0o600);
    expect(fs.readdirSync(dir).sort()).toEqual(['a', 'b']);
  });

  test('encryptFile refuses a planted OUT.partial link and does not write through it', async () => {
    const dir = freshDir();
    const input = path.join(dir, 'in');
    fs.writeFileSync(input, 'plain');
    const out = path.join(dir, 'out.crypt');
    const victim = plantLink(`${out}.partial`);
    await expect(encryptFile(input, out, { kind: 'raw', key: Buffer.alloc(32, 1) })).rejects.toMatchObject({ code: 'E_OUTPUT' });
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim content');
  });

  test('the restore journal is not written through a link at its old temporary name', () => {
    const dir = freshDir();
    const victim = plantLink(path.join(dir, '.coffer-restore.json.tmp'));
    writeJournal(dir, { id: 'x', staging: path.join(dir, 'staging'), phase: 'prepared', database: true });
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim content');
    expect(JSON.parse(fs.readFileSync(path.join(dir, '.coffer-restore.json'), 'utf8')).id).toBe('x');
    expect(modeOf(path.join(dir, '.coffer-restore.json'))).toBe(0o600);
  });
});

describe('CLI output files', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  afterAll(async () => db.drop());

  const backup = (dir: string, out: string, opts: { umask?: number } = {}) =>
    runCoffer(['backup', '-o', out], { env: { DATABASE_URL: db.url, DATA_DIR: path.join(dir, 'data') }, cwd: dir, ...opts });

  test('coffer backup -o FILE refuses an existing FILE.partial, names it, and leaves FILE alone', async () => {
    const dir = freshDir();
    const out = path.join(dir, 'b.zip');
    plantPartial(`${out}.partial`);
    const r = await backup(dir, out);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${out}.partial`);
    expect(r.stderr).toContain('[E_OUTPUT]');
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readFileSync(`${out}.partial`, 'utf8')).toBe('planted');
  });

  test('coffer backup -o FILE does not write through a link at FILE.partial', async () => {
    const dir = freshDir();
    const out = path.join(dir, 'b.zip');
    const victim = plantLink(`${out}.partial`);
    const r = await backup(dir, out);
    expect(r.code).toBe(2);
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim content');
    expect(fs.existsSync(out)).toBe(false);
  });

  test('coffer backup -o FILE writes a 0600 archive under umask 0', async () => {
    const dir = freshDir();
    const out = path.join(dir, 'b.zip');
    const r = await backup(dir, out, { umask: 0 });
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(modeOf(out)).toBe(0o600);
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
  });

  test('coffer encrypt and decrypt refuse an existing OUT.partial and write 0600 files under umask 0', async () => {
    const dir = freshDir();
    const keyFile = path.join(dir, 'k');
    fs.writeFileSync(keyFile, KEY_HEX, { mode: 0o600 });
    const plain = path.join(dir, 'plain');
    fs.writeFileSync(plain, 'some plain bytes');
    const enc = path.join(dir, 'enc');
    plantPartial(`${enc}.partial`);
    const refused = await runCoffer(['encrypt', plain, enc, '--key-file', keyFile], { cwd: dir });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${enc}.partial`);
    expect(fs.readFileSync(`${enc}.partial`, 'utf8')).toBe('planted');
    fs.rmSync(`${enc}.partial`);

    expect((await runCoffer(['encrypt', plain, enc, '--key-file', keyFile], { cwd: dir, umask: 0 })).code).toBe(0);
    expect(modeOf(enc)).toBe(0o600);
    const dec = path.join(dir, 'dec');
    const victim = plantLink(`${dec}.partial`);
    expect((await runCoffer(['decrypt', enc, dec, '--key-file', keyFile], { cwd: dir })).code).toBe(2);
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim content');
    fs.rmSync(`${dec}.partial`);
    expect((await runCoffer(['decrypt', enc, dec, '--key-file', keyFile], { cwd: dir, umask: 0 })).code).toBe(0);
    expect(modeOf(dec)).toBe(0o600);
    expect(fs.readFileSync(dec, 'utf8')).toBe('some plain bytes');
  });
});
