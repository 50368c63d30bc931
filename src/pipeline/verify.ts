import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ndjson from 'ndjson';
import { UPLOAD_FOLDERS } from '../archive';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import type { ManifestTable } from '../core/manifest';
import { Meter } from './meter';
import { checkMigrationsKnown, type OpenedArchive } from './open-archive';

export interface VerifiedTable {
  entry: string;
  table: string;
  rows: number;
  bytes: number;
  ok: boolean;
  problem?: string;
}

export interface VerifyReport {
  ok: boolean;
  encrypted: boolean;
  keyId?: string;
  format: number;
  appVersion: string;
  postgres: string;
  createdAt: string;
  migrations: string[];
  unknownMigrations: string[];
  tables: VerifiedTable[];
  files: Record<string, { files: number; bytes: number; ok: boolean; problem?: string }>;
  fileErrorsAtBackup: number;
  problems: string[];
}

/** Streams one table entry: every line must be a JSON object; bytes, lines and sha256 must match. */
async function verifyTable(archive: OpenedArchive, t: ManifestTable): Promise<VerifiedTable> {
  const result: VerifiedTable = { entry: t.entry, table: `${t.schema}.${t.name}`, rows: 0, bytes: 0, ok: false };
  const meter = new Meter({ lines: true });
  let objects = 0;
  try {
    await pipeline(
      await archive.zip.openEntry(t.entry),
      meter,
      ndjson.parse({ strict: true }).on('error', () => undefined),
      new Writable({
        objectMode: true,
        write(row: unknown, _enc, cb) {
          objects++;
          if (row === null || typeof row !== 'object' || Array.isArray(row)) return cb(new CofferError('E_ARCHIVE_BAD_ROW', `line ${objects} is not a JSON object`));
          cb();
        },
      }),
    );
  } catch (err) {
    result.problem = isCofferError(err) ? err.message : /Could not parse row/.test(errorMessage(err)) ? `line ${objects + 1} is not valid JSON` : errorMessage(err);
    return result;
  }
  result.rows = meter.lines;
  result.bytes = meter.bytes;
  if (meter.bytes !== t.bytes || meter.sha256 !== t.sha256) result.problem = `sha256 ${meter.sha256.slice(0, 12)}… does not match manifest.json`;
  else if (meter.lines !== t.rows || objects !== t.rows) result.problem = `${meter.lines} rows, manifest.json says ${t.rows}`;
  else result.ok = true;
  return result;
}

/**
 * Every check restore makes, without writing anything: structure and manifest (done when the archive
 * was opened), known migrations, every table entry line by line, and every file's size and CRC-32.
 */
export async function verifyArchive(archive: OpenedArchive, onEntry?: (name: string) => void): Promise<VerifyReport> {
  const m = archive.manifest;
  const problems: string[] = [];
  const unknownMigrations = checkMigrationsKnown(m, true).unknown;
  if (unknownMigrations.length) {
    problems.push(`archive was made by a newer coffer: migrations ${unknownMigrations.join(', ')} are unknown to this build`);
  }
  const tables: VerifiedTable[] = [];
  for (const t of m.tables) {
    onEntry?.(t.entry);
    const v = await verifyTable(archive, t);
    if (v.problem) problems.push(`${t.entry}: ${v.problem}`);
    tables.push(v);
  }
  const files: VerifyReport['files'] = {};
  for (const folder of UPLOAD_FOLDERS) {
    const f = { files: 0, bytes: 0, ok: true as boolean, problem: undefined as string | undefined };
    for (const e of archive.zip.entries.filter((x) => x.name.startsWith(folder + '/') && !x.isDirectory)) {
      onEntry?.(e.name);
      try {
        await pipeline(await archive.zip.openEntry(e.name), new Writable({ write: (_c, _e, cb) => cb() }));
        f.files++;
        f.bytes += e.uncompressedSize;
      } catch (err) {
        f.ok = false;
        f.problem = `${e.name}: ${errorMessage(err)}`;
        problems.push(f.problem);
      }
    }
    files[folder] = f;
  }
  return {
    ok: problems.length === 0,
    encrypted: archive.encrypted,
    keyId: archive.keyId,
    format: m.format,
    appVersion: m.app.version,
    postgres: m.postgres.server_version,
    createdAt: m.started_at,
    migrations: m.migrations,
    unknownMigrations,
    tables,
    files,
    fileErrorsAtBackup: m.file_errors.length,
    problems,
  };
}
