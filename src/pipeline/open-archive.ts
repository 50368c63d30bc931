import { ARCHIVE_TOP_LEVEL, DB_PREFIX, fileSource, MANIFEST_ENTRY, openZip, UPLOAD_FOLDERS, VERSION_CONTENT, VERSION_ENTRY, type ZipArchive } from '../archive';
import { CofferError, errorMessage } from '../core/errors';
import type { RandomAccessSource } from '../core/types';
import { ARCHIVE_FORMAT, manifestSchema, type Manifest } from '../core/manifest';
import { EncryptedFileReader, encryptionOf, type Encryption, type KeySource, SNIFF_BYTES } from '../crypto';
import { knownMigrations } from '../db/migrate';

const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export interface OpenedArchive {
  zip: ZipArchive;
  manifest: Manifest;
  encrypted: boolean;
  encryption: Encryption;
  /** Key id of a format v1 archive (hex). */
  keyId?: string;
  /** How many recipients an age archive is sealed to. */
  recipients?: number;
  close(): Promise<void>;
}

/**
 * Opens an archive (a file, or any random-access source, which it then owns) for reading, plain,
 * format v1 or age (told apart by the first bytes, never by the name): an encrypted one is read through the random-access decryptor, so no plaintext copy is ever
 * written. Checks structure, VERSION and manifest, and that manifest and entries agree.
 */
export async function openArchive(file: string | RandomAccessSource, key: KeySource | undefined): Promise<OpenedArchive> {
  const raw = typeof file === 'string' ? await fileSource(file).catch((err: unknown) => {
    throw new CofferError('E_USAGE', `cannot open archive ${file}: ${errorMessage(err)}`);
  }) : file;
  let source: RandomAccessSource;
  let encryption: Encryption;
  try {
    encryption = encryptionOf(await raw.read(0, Math.min(SNIFF_BYTES, raw.size)));
    source = encryption !== 'none' ? await EncryptedFileReader.open(raw, key) : raw;
  } catch (err) {
    await raw.close().catch(() => undefined);
    throw err;
  }
  const envelope = source instanceof EncryptedFileReader ? source.envelope : undefined;
  const encrypted = encryption !== 'none';
  const keyId = envelope?.keyIdHex;
  const recipients = envelope?.recipients;
  const zip = await openZip(source, { allowedTopLevel: ARCHIVE_TOP_LEVEL });
  try {
    const manifest = await readManifest(zip);
    checkEntriesAgainstManifest(zip, manifest);
    return { zip, manifest, encrypted, encryption, keyId, recipients, close: () => zip.close() };
  } catch (err) {
    await zip.close().catch(() => undefined);
    throw err;
  }
}

async function readManifest(zip: ZipArchive): Promise<Manifest> {
  if (!zip.has(VERSION_ENTRY)) throw new CofferError('E_ARCHIVE_INVALID', 'archive has no VERSION entry: not a coffer archive');
  const version = (await zip.readEntryBuffer(VERSION_ENTRY, 64)).toString('utf8');
  if (version !== VERSION_CONTENT) {
    throw new CofferError('E_ARCHIVE_VERSION', `archive format version ${JSON.stringify(version.trim())} is not supported (this build reads version 1)`);
  }
  if (!zip.has(MANIFEST_ENTRY)) throw new CofferError('E_ARCHIVE_INVALID', 'archive has no manifest.json: the backup did not finish');
  let raw: unknown;
  try {
    raw = JSON.parse((await zip.readEntryBuffer(MANIFEST_ENTRY, MAX_MANIFEST_BYTES)).toString('utf8'));
  } catch (err) {
    if (err instanceof CofferError) throw err;
    throw new CofferError('E_ARCHIVE_INVALID', `manifest.json is not valid JSON: ${errorMessage(err)}`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CofferError('E_ARCHIVE_INVALID', `manifest.json is malformed: ${issue.path.join('.')}: ${issue.message}`);
  }
  if (parsed.data.format !== ARCHIVE_FORMAT) {
    throw new CofferError('E_ARCHIVE_VERSION', `manifest format ${parsed.data.format} is not supported (this build reads format ${ARCHIVE_FORMAT})`);
  }
  return parsed.data;
}

function checkEntriesAgainstManifest(zip: ZipArchive, m: Manifest): void {
  const listed = new Map<string, number>();
  const seen = new Set<string>();
  for (const t of m.tables) {
    const key = `${t.schema}.${t.name}`;
    if (seen.has(key)) throw new CofferError('E_ARCHIVE_INVALID', `manifest lists table ${key} twice`);
    seen.add(key);
    if (listed.has(t.entry)) throw new CofferError('E_ARCHIVE_INVALID', `manifest uses entry ${t.entry} for two tables`);
    listed.set(t.entry, t.bytes);
  }
  const folderCounts = new Map<string, { files: number; bytes: number }>();
  for (const folder of UPLOAD_FOLDERS) folderCounts.set(folder, { files: 0, bytes: 0 });
  for (const e of zip.list()) {
    if (e.isDirectory) continue;
    if (e.name.startsWith(DB_PREFIX)) {
      const bytes = listed.get(e.name);
      if (bytes === undefined) throw new CofferError('E_ARCHIVE_INVALID', `entry ${e.name} is not listed in manifest.json`);
      if (e.uncompressedSize !== bytes) {
        throw new CofferError('E_ARCHIVE_CHECKSUM', `entry ${e.name} is ${e.uncompressedSize} bytes, manifest.json says ${bytes}`);
      }
      listed.delete(e.name);
    }
    const slash = e.name.indexOf('/');
    const c = slash === -1 ? undefined : folderCounts.get(e.name.slice(0, slash));
    if (c !== undefined) {
      c.files++;
      c.bytes += e.uncompressedSize;
    }
  }
  if (listed.size > 0) throw new CofferError('E_ARCHIVE_INVALID', `manifest.json lists ${[...listed.keys()].join(', ')}, missing from the archive`);
  for (const folder of UPLOAD_FOLDERS) {
    const want = m.files[folder] ?? { files: 0, bytes: 0 };
    const have = folderCounts.get(folder) ?? { files: 0, bytes: 0 };
    if (want.files !== have.files || want.bytes !== have.bytes) {
      throw new CofferError('E_ARCHIVE_INVALID', `${folder}: manifest.json says ${want.files} files (${want.bytes} bytes), the archive holds ${have.files} (${have.bytes} bytes)`);
    }
  }
}

/** Refuses an archive made by a newer build (migrations this build does not know) unless forced. */
export function checkMigrationsKnown(m: Manifest, force: boolean): { unknown: string[] } {
  const known = new Set(knownMigrations().map((x) => x.name));
  const unknown = m.migrations.filter((n) => !known.has(n));
  if (unknown.length > 0 && !force) {
    throw new CofferError('E_ARCHIVE_NEWER', `archive was made by a newer coffer: migrations ${unknown.join(', ')} are unknown to this build (upgrade coffer, or --force to try anyway)`);
  }
  return { unknown };
}
