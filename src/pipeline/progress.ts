import path from 'node:path';
import type pg from 'pg';
import { UPLOAD_FOLDERS } from '../archive';
import type { Manifest } from '../core/manifest';
import type { Progress } from '../core/jobs';
import { tableEstimates, type TableEstimate } from '../db/introspect';
import { isUploadInProgress } from '../storage/uploads';
import { folderUsage } from '../storage/walk';
import type { BackupProgress } from './backup';
import type { RestoreProgress } from './restore';

/**
 * Percent and ETA that mean something on a first run: measured against PostgreSQL's own estimates
 * (pg_class.reltuples, pg_table_size) and the upload folders' sizes for a backup, and against the
 * manifest for a restore. Work is weighed in bytes: a table counts for its size on disk, a file for
 * its length.
 */
export interface Estimate {
  tables: Map<string, TableEstimate>;
  fileBytes: number;
}

export async function estimateBackup(pool: pg.Pool, dataDir: string): Promise<Estimate> {
  const client = await pool.connect();
  let tables: Map<string, TableEstimate>;
  try {
    tables = await tableEstimates(client);
  } finally {
    client.release();
  }
  let fileBytes = 0;
  for (const folder of UPLOAD_FOLDERS) fileBytes += (await folderUsage(path.join(dataDir, folder), folder, { skip: isUploadInProgress })).bytes;
  return { tables, fileBytes };
}

function eta(fraction: number, startedAt: number): number | null {
  const elapsed = (Date.now() - startedAt) / 1000;
  if (fraction < 0.02 || elapsed < 0.5) return null;
  return Math.max(0, Math.round((elapsed * (1 - fraction)) / fraction));
}

function clampPercent(fraction: number): number {
  return Math.round(Math.min(0.99, Math.max(0, fraction)) * 1000) / 10;
}

/** Turns a running backup's counts into a Progress. Remembers what finished tables weighed. */
export class BackupProgressMeter {
  private readonly dbTotal: number;
  private readonly total: number;
  private finishedWeight = 0;
  private finishedRows = 0;
  /** Tables being dumped at the last update, with their rows then. */
  private current = new Map<string, number>();

  constructor(
    private readonly estimate: Estimate,
    private readonly startedAt = Date.now(),
  ) {
    // An empty table still costs a round trip: at least 8 KiB each, so a database of empty tables moves.
    this.dbTotal = [...estimate.tables.values()].reduce((n, t) => n + Math.max(8192, t.bytes), 0);
    this.total = Math.max(1, this.dbTotal + estimate.fileBytes);
  }

  private table(qualified: string | undefined): TableEstimate {
    const name = qualified?.split('.').slice(1).join('.') ?? '';
    return this.estimate.tables.get(name) ?? { name, rows: null, bytes: 0 };
  }

  update(p: BackupProgress): Progress {
    // Several tables may be dumped at once (jobs); one that is no longer listed is done.
    const active = p.phase !== 'database' ? [] : (p.active ?? (p.table ? [{ table: p.table, rows: p.rows, bytes: p.tableBytes ?? 0 }] : []));
    const now = new Map(active.map((a) => [a.table, a.rows]));
    for (const [name, rows] of this.current) {
      if (now.has(name)) continue;
      this.finishedWeight += Math.max(8192, this.table(name).bytes);
      this.finishedRows += rows;
    }
    this.current = now;
    let done: number;
    let activeRows = 0;
    if (p.phase === 'database') {
      done = this.finishedWeight;
      for (const a of active) {
        activeRows += a.rows;
        const t = this.table(a.table);
        const part = t.rows && t.rows > 0 ? a.rows / t.rows : a.bytes / Math.max(1, t.bytes * 1.5);
        done += Math.min(0.99, part) * Math.max(8192, t.bytes);
      }
    } else {
      done = this.dbTotal + p.fileBytes;
    }
    const fraction = p.phase === 'finishing' ? 0.99 : done / this.total;
    return {
      phase: p.phase,
      percent: clampPercent(fraction),
      rows: this.finishedRows + activeRows,
      bytes: p.bytesOut,
      eta_s: p.phase === 'finishing' ? 0 : eta(fraction, this.startedAt),
    };
  }
}

/** Turns a running restore's counts into a Progress, weighed by the manifest's sizes. */
export class RestoreProgressMeter {
  private readonly tableBytes: number;
  private readonly fileBytes: number;

  constructor(
    private readonly manifest: Manifest,
    private readonly startedAt = Date.now(),
  ) {
    this.tableBytes = manifest.tables.reduce((n, t) => n + Math.max(1024, t.bytes), 0);
    this.fileBytes = Object.values(manifest.files).reduce((n, f) => n + f.bytes, 0);
  }

  update(p: RestoreProgress): Progress {
    const total = Math.max(1, this.tableBytes + this.fileBytes);
    let done = p.fileBytes;
    let rows = 0;
    if (p.phase !== 'files') {
      // Tables load side by side: p.rows counts the rows of all of them, and stands for the bytes.
      const totalRows = this.manifest.tables.reduce((n, t) => n + t.rows, 0);
      const allLoaded = p.tablesDone >= p.tablesTotal;
      rows = p.phase === 'database' ? Math.min(p.rows, totalRows) : allLoaded ? totalRows : 0;
      done = this.fileBytes + (totalRows > 0 ? (rows / totalRows) * this.tableBytes : allLoaded ? this.tableBytes : 0);
    }
    const fraction = p.phase === 'constraints' || p.phase === 'swap' ? 0.99 : (done / total) * 0.95;
    return { phase: p.phase, percent: clampPercent(fraction), rows, bytes: done, eta_s: eta(fraction, this.startedAt) };
  }
}
