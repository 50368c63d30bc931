import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BenchError, fmtMB, say } from './util';

/**
 * The upload folders of the data set: deterministic files written from Node with streaming (never a
 * whole file in memory), cached per scale under the work folder and reused while their manifest
 * (`files.json`, written last) says they are complete and of this generator's version.
 *
 * Files are stored the way coffer stores uploads: `<folder>/<2 hex>/<uuid>`, without an extension, so
 * what a backup does with them is what it does with real uploads. Kinds (by index modulo 20):
 *   30% CSV scan results, 10% log text      uploadedfiles   compressible (deflate ~3-5x)
 *    5% PDF-like random bytes               uploadedfiles   incompressible
 *   10% SVG                                uploadedassets  compressible
 *   30% PNG-like, 15% JPEG-like random      uploadedimages  incompressible
 * Sizes are log-uniform between 4 kB and 800 kB (mean ~150 kB, so 2,000 files make ~300 MB).
 */

export const FILES_VERSION = 2;
type FileKind = 'file' | 'image' | 'asset';
const FOLDER: Record<FileKind, string> = { file: 'uploadedfiles', image: 'uploadedimages', asset: 'uploadedassets' };
export const UPLOAD_FOLDERS = Object.values(FOLDER);

export interface GeneratedFile {
  n: number;
  id: string;
  kind: FileKind;
  name: string;
  storage_path: string;
  content_type: string;
  size: number;
  sha256: string;
}

export interface FileSet {
  dir: string;
  files: GeneratedFile[];
  bytes: number;
  /** Bytes of the kinds that deflate well (text, CSV, SVG). */
  compressibleBytes: number;
  reused: boolean;
}

/** mulberry32: a tiny seeded PRNG, good enough for file contents and sizes. */
export function prng(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedOf(text: string): Buffer {
  return createHash('sha256').update(`coffer-bench:${text}`).digest();
}

/** The uuid PostgreSQL's md5(text)::uuid gives, so SQL and Node agree on file ids. */
export function md5Uuid(text: string): string {
  const h = createHash('md5').update(text).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

type Shape = { kind: FileKind; ext: string; type: string; content: 'csv' | 'log' | 'svg' | 'random'; magic?: Buffer };

function shapeOf(n: number): Shape {
  const k = n % 20;
  if (k < 6) return { kind: 'file', ext: 'csv', type: 'text/csv', content: 'csv' };
  if (k < 8) return { kind: 'file', ext: 'log', type: 'text/plain', content: 'log' };
  if (k < 9) return { kind: 'file', ext: 'pdf', type: 'application/pdf', content: 'random', magic: Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n', 'latin1') };
  if (k < 11) return { kind: 'asset', ext: 'svg', type: 'image/svg+xml', content: 'svg' };
  if (k < 17) return { kind: 'image', ext: 'png', type: 'image/png', content: 'random', magic: Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex') };
  return { kind: 'image', ext: 'jpg', type: 'image/jpeg', content: 'random', magic: Buffer.from('ffd8ffe000104a46494600010100000100010000', 'hex') };
}

function sizeOf(n: number): number {
  const r = prng(seedOf(`size:${n}`).readUInt32BE(0))();
  return Math.round(Math.exp(Math.log(4_000) + r * (Math.log(800_000) - Math.log(4_000))));
}

const CHUNK = 64 * 1024;

/** Incompressible bytes: an AES-256-CTR keystream keyed by the file number (fast and deterministic). */
function* randomChunks(n: number, size: number, magic: Buffer): Generator<Buffer> {
  const cipher = createCipheriv('aes-256-ctr', seedOf(`random:${n}`), Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  let left = size;
  const head = magic.subarray(0, Math.min(magic.length, left));
  if (head.length) yield head;
  left -= head.length;
  while (left > 0) {
    const len = Math.min(CHUNK, left);
    yield cipher.update(zeros.subarray(0, len));
    left -= len;
  }
}

const WORDS = ['open', 'closed', 'filtered', 'nginx', 'Apache/2.4.58', 'OpenSSH_9.6', 'Microsoft-IIS/10.0', 'Prüfung', 'naïve', '“quoted”', 'SELECT', 'admin', 'login', 'export'];

function textLine(kind: 'csv' | 'log' | 'svg', rnd: () => number, i: number): string {
  const r = () => Math.floor(rnd() * 1_000_000);
  if (kind === 'csv') {
    return `${i},host-${r() % 500}.example.com,10.${r() % 256}.${r() % 256}.${r() % 256},${r() % 65536},tcp,${WORDS[r() % WORDS.length]},"banner ""${WORDS[r() % WORDS.length]}"" v${r() % 10}.${r() % 20}",2024-0${1 + (r() % 9)}-1${r() % 10}T${10 + (r() % 14)}:${10 + (r() % 50)}:00Z\n`;
  }
  if (kind === 'log') {
    return `2024-05-${10 + (r() % 20)}T${10 + (r() % 14)}:${10 + (r() % 50)}:${10 + (r() % 50)}.${r() % 1000}Z ${['INFO', 'WARN', 'DEBUG', 'ERROR'][r() % 4]} [worker-${r() % 8}] ${['GET', 'POST', 'PUT'][r() % 3]} /api/v1/projects/${r()}/findings?page=${r() % 50} ${[200, 200, 201, 404, 500][r() % 5]} ${r() % 900}ms "${WORDS[r() % WORDS.length]}" req=${r().toString(16)}${r().toString(16)}\n`;
  }
  return `  <path d="M${r() % 1000} ${r() % 1000} L${r() % 1000} ${r() % 1000} Q${r() % 1000} ${r() % 1000} ${r() % 1000} ${r() % 1000}Z" fill="#${(r() % 0xffffff).toString(16).padStart(6, '0')}" stroke-width="${(r() % 50) / 10}"/>\n`;
}

function* textChunks(n: number, size: number, kind: 'csv' | 'log' | 'svg'): Generator<Buffer> {
  const rnd = prng(seedOf(`text:${n}`).readUInt32BE(0));
  let left = size;
  let line = 0;
  let first = kind === 'csv' ? 'n,host,ip,port,proto,state,banner,seen\n' : kind === 'svg' ? '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 1000">\n' : '';
  while (left > 0) {
    let text = first;
    first = '';
    while (text.length < CHUNK) text += textLine(kind, rnd, line++);
    let buf = Buffer.from(text, 'utf8');
    if (buf.length > left) buf = buf.subarray(0, left);
    left -= buf.length;
    yield buf;
  }
}

async function writeFile(abs: string, chunks: Iterable<Buffer>): Promise<string> {
  const hash = createHash('sha256');
  const tmp = `${abs}.tmp`;
  await pipeline(
    Readable.from(
      (function* () {
        for (const c of chunks) {
          hash.update(c);
          yield c;
        }
      })(),
    ),
    fs.createWriteStream(tmp, { mode: 0o644 }),
  );
  fs.renameSync(tmp, abs);
  return hash.digest('hex');
}

export function fileCount(scale: number): number {
  return Math.max(1, Math.round(2000 * scale));
}

/** The cached upload folders for this scale, generating them when missing or outdated. */
export async function ensureFiles(workDir: string, scale: number): Promise<FileSet> {
  const dir = path.join(workDir, `files-scale${scale}`);
  const manifestFile = path.join(dir, 'files.json');
  const count = fileCount(scale);
  try {
    const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as { version: number; files: GeneratedFile[] };
    if (m.version === FILES_VERSION && m.files.length === count && m.files.every((f) => fs.statSync(path.join(dir, f.storage_path)).size === f.size)) {
      const set = summarise(dir, m.files, true);
      say(`upload files: reusing ${count} files (${fmtMB(set.bytes)}) in ${dir}`);
      return set;
    }
  } catch {
    // missing, unreadable or incomplete: generate
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  say(`upload files: generating ${count} files in ${dir}`);
  const files: GeneratedFile[] = [];
  let bytes = 0;
  let lastReport = Date.now();
  for (let n = 0; n < count; n++) {
    const shape = shapeOf(n);
    const id = md5Uuid(`file${n}`);
    const storagePath = `${FOLDER[shape.kind]}/${id.slice(0, 2)}/${id}`;
    const abs = path.join(dir, storagePath);
    fs.mkdirSync(path.dirname(abs), { recursive: true, mode: 0o755 });
    const size = sizeOf(n);
    const chunks = shape.content === 'random' ? randomChunks(n, size, shape.magic!) : textChunks(n, size, shape.content);
    const sha256 = await writeFile(abs, chunks);
    const name = `${shape.kind === 'image' ? 'screenshot' : shape.kind === 'asset' ? 'logo' : shape.content === 'csv' ? 'scan' : 'report'}-${n}.${shape.ext}`;
    files.push({ n, id, kind: shape.kind, name, storage_path: storagePath, content_type: shape.type, size, sha256 });
    bytes += size;
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      say(`upload files: ${n + 1}/${count} (${fmtMB(bytes)})`);
    }
  }
  fs.writeFileSync(manifestFile, JSON.stringify({ version: FILES_VERSION, files }) + '\n');
  const set = summarise(dir, files, false);
  say(`upload files: ${count} files, ${fmtMB(set.bytes)} (${fmtMB(set.compressibleBytes)} compressible)`);
  return set;
}

function summarise(dir: string, files: GeneratedFile[], reused: boolean): FileSet {
  const bytes = files.reduce((s, f) => s + f.size, 0);
  const compressibleBytes = files.filter((f) => /^(text\/|image\/svg)/.test(f.content_type)).reduce((s, f) => s + f.size, 0);
  return { dir, files, bytes, compressibleBytes, reused };
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file), hash);
  return hash.digest('hex');
}

/** Differences between restored upload folders and the generated files (empty when they are equal). */
export async function compareFiles(dataDir: string, expected: GeneratedFile[]): Promise<string[]> {
  const problems: string[] = [];
  const want = new Map(expected.map((f) => [f.storage_path, f]));
  const seen = new Set<string>();
  const walk = async (rel: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(dataDir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(r);
      else {
        const f = want.get(r);
        if (!f) problems.push(`unexpected file ${r}`);
        else {
          seen.add(r);
          const sha = await sha256File(path.join(dataDir, r));
          if (sha !== f.sha256) problems.push(`${r}: sha256 differs`);
        }
      }
    }
  };
  for (const folder of UPLOAD_FOLDERS) await walk(folder);
  for (const f of expected) if (!seen.has(f.storage_path)) problems.push(`missing file ${f.storage_path}`);
  if (problems.length > 20) return [...problems.slice(0, 20), `… and ${problems.length - 20} more`];
  return problems;
}

export function assertScale(scale: number): void {
  if (!(scale > 0) || !Number.isFinite(scale)) throw new BenchError(`--scale must be a positive number, got ${scale}`);
}
