import type { Encryption } from '../core/types';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SMALL_ENTRY_BYTES, UPLOAD_FOLDERS } from '../archive';
import { errorMessage, isCofferError } from '../core/errors';
import type { ManifestTable } from '../core/manifest';
import type { TableInfo } from '../db/introspect';
import { copyColumns, JsonlToCopy } from '../db/jsonl-to-copy';
import { migrationLevelProblem, planTables, schemaForArchive, sequenceProblems } from './archive-plan';
import { Meter } from './meter';
import { checkMigrationsKnown, type OpenedArchive } from './open-archive';

export interface VerifiedTable {
  entry: string;
  table: string;
  rows: number;
  bytes: number;
  ok: boolean;
  problem?: string;
  /** The error code restore gives for the same problem (E_ARCHIVE_BAD_ROW, E_ARCHIVE_CHECKSUM, …). */
  code?: string;
}

export interface VerifyReport {
  ok: boolean;
  encrypted: boolean;
  encryption: Encryption;
  keyId?: string;
  /** age: how many recipients the archive is sealed to. */
  recipients?: number;
  format: number;
  appVersion: string;
  postgres: string;
  createdAt: string;
  migrations: string[];
  unknownMigrations: string[];
  tables: VerifiedTable[];
  files: Record<string, { files: number; bytes: number; ok: boolean; problem?: string }>;
  fileErrorsAtBackup: number;
  /** What only a restore into a database can check. */
  notChecked: string;
  problems: string[];
}

/**
 * Streams one table entry through restore's own row converter (output discarded), so a row verify
 * passes is a row restore can read: an object per line, known columns only, values of the right
 * shape. Bytes, lines and sha256 must match the manifest.
 */
async function verifyTable(archive: OpenedArchive, t: ManifestTable, table: TableInfo | undefined): Promise<VerifiedTable> {
  const result: VerifiedTable = { entry: t.entry, table: `${t.schema}.${t.name}`, rows: 0, bytes: 0, ok: false };
  const meter = new Meter({ lines: true });
  // A table restore does not know is already a problem; its lines are still read as JSON objects.
  const columns = table ? copyColumns(table) : t.columns.map((c) => ({ name: c.name, kind: 'json' as const }));
  try {
    await pipeline(await archive.zip.openEntry(t.entry), meter, new JsonlToCopy(columns, t.entry), new Writable({ write: (_c, _e, cb) => cb() }));
  } catch (err) {
    result.problem = errorMessage(err).replace(`${t.entry}: `, '');
    result.code = isCofferError(err) ? err.code : undefined;
    return result;
  }
  result.rows = meter.lines;
  result.bytes = meter.bytes;
  // The same checks, in the same order, as restore's loadEntry after the load.
  if (meter.bytes !== t.bytes || meter.sha256 !== t.sha256) {
    result.problem = `sha256 ${meter.sha256.slice(0, 12)}… does not match manifest.json`;
    result.code = 'E_ARCHIVE_CHECKSUM';
  } else if (meter.lines !== t.rows) {
    result.problem = `${meter.lines} rows, manifest.json says ${t.rows}`;
    result.code = 'E_ARCHIVE_ROWS';
  } else result.ok = true;
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
  const levelProblem = migrationLevelProblem(m);
  if (levelProblem) problems.push(levelProblem);
  // The same comparison with the schema that restore makes before it touches the database.
  const known = schemaForArchive(m);
  const where = known ? `the schema at migration ${known.level}` : 'the schema';
  const planned = new Map<string, TableInfo>();
  if (known) {
    const { plan, problems: tableProblems } = planTables(m, known.schema.tables, { force: false, where });
    problems.push(...tableProblems);
    for (const p of plan) planned.set(p.entry.entry, p.table);
  }
  problems.push(...sequenceProblems(m, known?.schema.sequences, where));
  const tables: VerifiedTable[] = [];
  for (const t of m.tables) {
    onEntry?.(t.entry);
    const v = await verifyTable(archive, t, planned.get(t.entry));
    if (v.problem) problems.push(`${t.entry}: ${v.problem}`);
    tables.push(v);
  }
  // One pass in archive order (reads stay sequential through the reader's block cache); problems are
  // reported folder by folder.
  const files: VerifyReport['files'] = {};
  const fileProblems: Record<string, string[]> = {};
  for (const folder of UPLOAD_FOLDERS) {
    files[folder] = { files: 0, bytes: 0, ok: true, problem: undefined };
    fileProblems[folder] = [];
  }
  for (const e of archive.zip.list()) {
    if (e.isDirectory) continue;
    const slash = e.name.indexOf('/');
    const f = slash === -1 ? undefined : files[e.name.slice(0, slash)];
    if (f === undefined) continue;
    onEntry?.(e.name);
    try {
      // Restore's own reads, with its checks (declared size, CRC-32): whole for small entries, streamed otherwise.
      if (e.uncompressedSize <= SMALL_ENTRY_BYTES) await archive.zip.readEntryBuffer(e.name, SMALL_ENTRY_BYTES);
      else await pipeline(await archive.zip.openEntry(e.name), new Writable({ write: (_c, _e, cb) => cb() }));
      f.files++;
      f.bytes += e.uncompressedSize;
    } catch (err) {
      f.ok = false;
      f.problem = `${e.name}: ${errorMessage(err)}`;
      fileProblems[e.name.slice(0, slash)].push(f.problem);
    }
  }
  for (const folder of UPLOAD_FOLDERS) problems.push(...fileProblems[folder]);
  return {
    ok: problems.length === 0,
    encrypted: archive.encrypted,
    encryption: archive.encryption,
    keyId: archive.keyId,
    recipients: archive.recipients,
    format: m.format,
    appVersion: m.app.version,
    postgres: m.postgres.server_version,
    createdAt: m.started_at,
    migrations: m.migrations,
    unknownMigrations,
    tables,
    files,
    fileErrorsAtBackup: m.file_errors.length,
    notChecked: 'rows not checked against constraints (foreign keys, unique keys, value ranges and types need the database: restore checks them)',
    problems,
  };
}
