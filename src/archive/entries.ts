import { deflateRawSync } from 'node:zlib';
import { DB_PREFIX } from '../core/manifest';
/**
 * Entry naming rules of archive format v1 (DESIGN.md section 3) and the name checks shared by the zip
 * writer and the hardened zip reader, so that the writer can never produce an archive the reader refuses.
 */

export const VERSION_ENTRY = 'VERSION';
export const VERSION_CONTENT = '1\n';
export const MANIFEST_ENTRY = 'manifest.json';
export { DB_PREFIX };
export const UPLOAD_FOLDERS = ['uploadedfiles', 'uploadedimages', 'uploadedassets'] as const;
export type UploadFolder = (typeof UPLOAD_FOLDERS)[number];

/**
 * Every top-level name a v1 archive may contain: pass this as `allowedTopLevel` to `openZip`. Folders
 * end in `/`, so a plain file called `db` or `uploadedfiles` is refused (see checkEntryName).
 */
export const ARCHIVE_TOP_LEVEL: readonly string[] = [
  VERSION_ENTRY,
  MANIFEST_ENTRY,
  DB_PREFIX,
  ...UPLOAD_FOLDERS.map((folder) => `${folder}/`),
];

/**
 * Percent-encodes the bytes of an identifier that could change the shape of the entry path or make
 * `<schema>.<table>` ambiguous: `%` (so decoding is unambiguous), `.` (the separator; also covers the
 * names `.` and `..`), `/`, `\`, NUL and the other C0 controls and DEL. Everything else, including
 * non-ASCII letters, is kept as is, so ordinary names read naturally (`db/public.projects.jsonl`).
 * The rule is injective, so two different tables never share an entry.
 */
function encodeIdentifier(identifier: string): string {
  // eslint-disable-next-line no-control-regex
  return identifier.replace(/[%./\\\x00-\x1f\x7f]/g, (ch) => {
    return '%' + ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0');
  });
}

/** `db/<schema>.<table>.jsonl`, always one safe path segment below `db/`. */
export function tableEntryName(schema: string, table: string): string {
  return `${DB_PREFIX}${encodeIdentifier(schema)}.${encodeIdentifier(table)}.jsonl`;
}

/**
 * Extensions of formats that are already compressed: deflating them again costs CPU and gains nothing
 * (often a few bytes are lost), so they are stored.
 */
const STORED_EXTENSIONS: ReadonlySet<string> = new Set([
  // images
  'jpg', 'jpeg', 'jpe', 'jfif', 'png', 'apng', 'gif', 'webp', 'avif', 'heic', 'heif', 'jxl', 'jp2',
  // audio and video
  'mp4', 'm4v', 'm4a', 'mov', 'webm', 'mkv', 'avi', 'wmv', 'flv', 'mpg', 'mpeg', 'mp3', 'ogg', 'oga',
  'ogv', 'opus', 'aac', 'flac', 'wma',
  // archives and compressed streams
  'zip', 'gz', 'tgz', 'bz2', 'tbz2', 'xz', 'txz', 'zst', 'lz', 'lzma', 'lz4', 'br', '7z', 'rar', 'cab',
  'jar', 'war', 'apk', 'crypt',
  // documents that are zip or deflate containers
  'pdf', 'docx', 'xlsx', 'pptx', 'odt', 'ods', 'odp', 'epub',
  // fonts
  'woff', 'woff2',
]);

/** True when the file should be stored rather than deflated, judged by its extension. */
export function shouldStore(fileName: string): boolean {
  const base = fileName.slice(fileName.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  if (dot <= 0 || dot === base.length - 1) return false;
  return STORED_EXTENSIONS.has(base.slice(dot + 1).toLowerCase());
}

/** How much of a file is looked at to decide whether deflating it is worth it. */
export const COMPRESSIBILITY_SAMPLE_BYTES = 8 * 1024;

/**
 * True when a sample of the content (its first bytes) does not shrink by a tenth under fast deflate:
 * already-compressed media, encrypted or random data. Uploads are stored under generated names with no
 * extension, so the name alone cannot tell; an 8 KiB trial costs about 50 microseconds.
 */
export function looksIncompressible(sample: Buffer): boolean {
  if (sample.length < 512) return false;
  return deflateRawSync(sample, { level: 1 }).length > sample.length * 0.9;
}

/** A zip header stores the name length in 16 bits. */
const MAX_NAME_BYTES = 0xffff;
/** UTF-8 cannot encode these, so the name written would differ from the name given. */
const SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why an entry name is unsafe to extract, or null when it is safe. A trailing `/` marks a directory
 * and is not an empty segment. `allowedTopLevel`, when given, lists the only names the first segment
 * may have: `name/` allows only a folder of that name (and everything in it), a bare `name` allows a
 * top-level file or folder of that name. The rules are deliberately stricter than "would not escape
 * the target folder": anything a well-behaved writer never produces (empty or `.` segments,
 * backslashes) is refused rather than normalised, because normalising is how two different names end
 * up as the same file.
 */
export function checkEntryName(name: string, allowedTopLevel?: readonly string[]): string | null {
  if (name.length === 0) return 'empty name';
  // The lookaround pattern is slow; most names have no surrogate at all.
  if (SURROGATE.test(name) && LONE_SURROGATE.test(name)) return 'name is not valid Unicode (lone surrogate)';
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `name is longer than ${MAX_NAME_BYTES} bytes`;
  if (name.includes('\0')) return 'name contains a NUL byte';
  if (name.includes('\\')) return 'name contains a backslash';
  if (name.startsWith('/')) return 'absolute path';
  if (/^[A-Za-z]:/.test(name)) return 'name starts with a drive letter';
  // Windows reads `x:` as a drive or stream designator; many unzip tools strip or misread such a prefix.
  if (/^\w+:/.test(name)) return "name starts with a 'prefix:' designator";
  const path = name.endsWith('/') ? name.slice(0, -1) : name;
  for (const segment of path.split('/')) {
    if (segment === '') return 'empty path segment';
    if (segment === '..') return "'..' path segment";
    if (segment === '.') return "'.' path segment";
  }
  return allowedTopLevel === undefined ? null : topLevelProblem(name, allowedTopLevel);
}

function topLevelProblem(name: string, allowedTopLevel: readonly string[]): string | null {
  const slash = name.indexOf('/');
  const top = slash === -1 ? name : name.slice(0, slash);
  if (allowedTopLevel.includes(top)) return null;
  if (allowedTopLevel.includes(`${top}/`)) {
    return slash === -1 ? `'${top}' must be a folder, not a file` : null;
  }
  return `top-level name '${top}' is not one of ${allowedTopLevel.join(', ')}`;
}

/**
 * Tracks the names of an archive to refuse exact duplicates and file/directory clashes (a file `a`
 * beside a directory `a/` or a file `a/b`): extracting either would silently overwrite or fail half-way.
 * Names are compared exactly (case-sensitive filesystems). Memory is one map entry per name and per
 * directory, which is no more than the central directory itself holds.
 */
export class EntryNameRegistry {
  private readonly files = new Set<string>();
  /** Directory path (no trailing slash) → whether an explicit directory entry named it. */
  private readonly dirs = new Map<string, boolean>();

  /** Records `name`; returns why it clashes with an earlier name, or null. `name` must pass checkEntryName. */
  add(name: string): string | null {
    const isDir = name.endsWith('/');
    const path = isDir ? name.slice(0, -1) : name;
    const reason = isDir ? this.clashOfDirectory(path) : this.clashOfFile(path);
    if (reason !== null) return reason;
    const parentReason = this.clashOfParents(path);
    if (parentReason !== null) return parentReason;
    if (isDir) this.dirs.set(path, true);
    else this.files.add(path);
    this.addParents(path);
    return null;
  }

  private clashOfFile(path: string): string | null {
    if (this.files.has(path)) return 'duplicate name';
    if (this.dirs.has(path)) return `file clashes with directory '${path}/'`;
    return null;
  }

  private clashOfDirectory(path: string): string | null {
    if (this.dirs.get(path) === true) return 'duplicate name';
    if (this.files.has(path)) return `directory clashes with file '${path}'`;
    return null;
  }

  private clashOfParents(path: string): string | null {
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      const parent = path.slice(0, i);
      if (this.files.has(parent)) return `parent '${parent}' is a file`;
    }
    return null;
  }

  private addParents(path: string): void {
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      const parent = path.slice(0, i);
      if (!this.dirs.has(parent)) this.dirs.set(parent, false);
    }
  }
}
