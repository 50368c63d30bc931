import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { crc32, deflateRawSync } from 'node:zlib';
import { isCofferError, type ErrorCode } from '../../src/core/errors';
import { createZipWriter, type ZipWriter, type ZipWriterOptions } from '../../src/archive';

export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** Runs `build` against a fresh writer while collecting its output; returns the finished zip. */
export async function writeZip(build: (w: ZipWriter) => Promise<void>, opts?: ZipWriterOptions): Promise<Buffer> {
  const writer = createZipWriter(opts);
  const output = collect(writer.output);
  await build(writer);
  const { bytes } = await writer.finalize();
  const zip = await output;
  expect(zip.length).toBe(bytes);
  return zip;
}

export interface TempDir {
  path: string;
  file(name: string, data: Buffer): Promise<string>;
  remove(): Promise<void>;
}

export async function tempDir(): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), 'coffer-archive-'));
  return {
    path,
    async file(name, data) {
      const p = join(path, name);
      await writeFile(p, data);
      return p;
    },
    remove: () => rm(path, { recursive: true, force: true }),
  };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs Info-ZIP `unzip` (the independent reader used to cross-check the writer). */
export function runUnzip(args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('unzip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}

/** Asserts that `promise` rejects with a CofferError of `code` whose message contains every fragment. */
export async function expectCofferError(promise: Promise<unknown>, code: ErrorCode, ...fragments: string[]): Promise<Error> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  if (caught === undefined) throw new Error(`expected a CofferError ${code}, but it resolved`);
  if (!isCofferError(caught)) throw new Error(`expected a CofferError ${code}, got ${String(caught)}`);
  expect({ code: caught.code, message: caught.message }).toEqual({ code, message: expect.any(String) });
  for (const fragment of fragments) expect(caught.message).toContain(fragment);
  return caught;
}

// ---------------------------------------------------------------------------------------------------
// A tiny zip builder for hostile archives. coffer's writer refuses unsafe names and always writes
// consistent headers, so it cannot produce the archives the reader must refuse.

export interface HandEntry {
  name: string | Buffer;
  /** The bytes stored as file data (already deflated when method is 8). */
  data?: Buffer;
  /** The uncompressed content, used for the default CRC and uncompressed size. Default: `data`. */
  content?: Buffer;
  method?: number;
  crc32?: number;
  compressedSize?: number;
  uncompressedSize?: number;
  /** Unix mode in the high 16 bits, DOS attributes in the low 16. Default: regular file 0644. */
  externalAttributes?: number;
  flags?: number;
  /** Name written in the local header, when it should differ from the central directory. */
  localName?: string | Buffer;
  /** Central directory offset of the local header, when it should point elsewhere. */
  localHeaderOffset?: (realOffsets: number[]) => number;
  /** Extra field of the central directory record (none by default). */
  centralExtra?: Buffer;
}

export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;

export function fileAttributes(mode: number): number {
  return (mode << 16) >>> 0;
}

export function deflated(name: string | Buffer, content: Buffer, extra: Partial<HandEntry> = {}): HandEntry {
  return { name, data: deflateRawSync(content), content, method: 8, ...extra };
}

export function stored(name: string | Buffer, content: Buffer | string, extra: Partial<HandEntry> = {}): HandEntry {
  const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return { name, data, method: 0, ...extra };
}

function nameBytes(name: string | Buffer): Buffer {
  return Buffer.isBuffer(name) ? name : Buffer.from(name, 'utf8');
}

interface Resolved {
  name: Buffer;
  localName: Buffer;
  data: Buffer;
  method: number;
  crc: number;
  csize: number;
  usize: number;
  attrs: number;
  flags: number;
  centralExtra: Buffer;
}

function resolveEntry(e: HandEntry): Resolved {
  const data = e.data ?? Buffer.alloc(0);
  const content = e.content ?? data;
  const name = nameBytes(e.name);
  return {
    name,
    localName: e.localName === undefined ? name : nameBytes(e.localName),
    data,
    method: e.method ?? 0,
    crc: e.crc32 ?? crc32(content),
    csize: e.compressedSize ?? data.length,
    usize: e.uncompressedSize ?? content.length,
    attrs: e.externalAttributes ?? fileAttributes(S_IFREG | 0o644),
    flags: e.flags ?? 0x800,
    centralExtra: e.centralExtra ?? Buffer.alloc(0),
  };
}

function localHeader(r: Resolved): Buffer {
  const h = Buffer.alloc(30);
  h.writeUInt32LE(0x04034b50, 0);
  h.writeUInt16LE(20, 4);
  h.writeUInt16LE(r.flags, 6);
  h.writeUInt16LE(r.method, 8);
  h.writeUInt16LE(0, 10);
  h.writeUInt16LE(0x21, 12);
  h.writeUInt32LE(r.crc >>> 0, 14);
  h.writeUInt32LE(r.csize >>> 0, 18);
  h.writeUInt32LE(r.usize >>> 0, 22);
  h.writeUInt16LE(r.localName.length, 26);
  h.writeUInt16LE(0, 28);
  return Buffer.concat([h, r.localName]);
}

function centralHeader(r: Resolved, offset: number): Buffer {
  const h = Buffer.alloc(46);
  h.writeUInt32LE(0x02014b50, 0);
  h.writeUInt16LE((3 << 8) | 30, 4);
  h.writeUInt16LE(20, 6);
  h.writeUInt16LE(r.flags, 8);
  h.writeUInt16LE(r.method, 10);
  h.writeUInt16LE(0, 12);
  h.writeUInt16LE(0x21, 14);
  h.writeUInt32LE(r.crc >>> 0, 16);
  h.writeUInt32LE(r.csize >>> 0, 20);
  h.writeUInt32LE(r.usize >>> 0, 24);
  h.writeUInt16LE(r.name.length, 28);
  h.writeUInt16LE(r.centralExtra.length, 30);
  h.writeUInt16LE(0, 32);
  h.writeUInt16LE(0, 34);
  h.writeUInt16LE(0, 36);
  h.writeUInt32LE(r.attrs >>> 0, 38);
  h.writeUInt32LE(offset >>> 0, 42);
  return Buffer.concat([h, r.name, r.centralExtra]);
}

function endOfCentralDirectory(count: number, cdSize: number, cdOffset: number): Buffer {
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(count, 8);
  e.writeUInt16LE(count, 10);
  e.writeUInt32LE(cdSize, 12);
  e.writeUInt32LE(cdOffset, 16);
  return e;
}

/** Writes local headers + data, the central directory and the end record, exactly as described. */
export function buildZip(entries: HandEntry[]): Buffer {
  const resolved = entries.map(resolveEntry);
  const parts: Buffer[] = [];
  const offsets: number[] = [];
  let position = 0;
  for (const r of resolved) {
    offsets.push(position);
    const local = Buffer.concat([localHeader(r), r.data]);
    parts.push(local);
    position += local.length;
  }
  const cdOffset = position;
  const central = resolved.map((r, i) => {
    const custom = entries[i].localHeaderOffset;
    return centralHeader(r, custom === undefined ? offsets[i] : custom(offsets));
  });
  const cd = Buffer.concat(central);
  return Buffer.concat([...parts, cd, endOfCentralDirectory(resolved.length, cd.length, cdOffset)]);
}
