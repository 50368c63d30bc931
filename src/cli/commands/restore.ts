import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { Command } from 'commander';
import { CofferError } from '../../core/errors';
import { openDatabase } from '../../db/connect';
import { describeUrl } from '../../db/pool';
import { openArchive } from '../../pipeline/open-archive';
import { defaultRestoreJobs, MAX_RESTORE_JOBS, restoreArchive, type RestoreProgress } from '../../pipeline/restore';
import { withArchiveFile } from '../archive-file';
import { resolveDatabaseUrl, withDatabaseUrlOptions, type DatabaseUrlOptions } from '../database-url';
import { resolveKeySource, withKeyOptions, type KeyOptions } from '../keys';
import { formatBytes, formatDuration, ProgressLine } from '../progress';
import { confirm } from '../prompt';
import { cliActor, print, runtime } from '../runtime';

interface RestoreOptions extends KeyOptions, DatabaseUrlOptions {
  skipFiles?: boolean;
  skipDatabase?: boolean;
  force?: boolean;
  yes?: boolean;
  jobs?: string;
}

async function sha256File(file: string, signal: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024, signal })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function describeProgress(p: RestoreProgress, startedAt: number): string {
  const t = formatDuration((Date.now() - startedAt) / 1000);
  if (p.phase === 'files') return `restore: staging files ${p.files} (${formatBytes(p.fileBytes)}) ${t}`;
  if (p.phase === 'database') return `restore: tables ${p.tablesDone}/${p.tablesTotal}${p.table ? ` ${p.table} ${p.rows} rows` : ''} ${t}`;
  if (p.phase === 'constraints') return `restore: building indexes and checking constraints ${t}`;
  return `restore: swapping in upload folders ${t}`;
}

export function registerRestore(program: Command): void {
  withDatabaseUrlOptions(withKeyOptions(program.command('restore'), 'open'), 'database to replace')
    .description('replace the database and upload folders with an archive, all or nothing')
    .argument('[file]', "archive (.zip or .zip.crypt), or '-' for standard input")
    .option('--skip-files', 'restore only the database')
    .option('--skip-database', 'restore only the upload folders')
    .option('--force', 'restore an archive from a newer build, or one missing tables')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--jobs <n>', 'connections that load tables and build indexes side by side (default: min(4, CPU cores))')
    .action(async (file: string | undefined, opts: RestoreOptions) => {
      if (opts.skipFiles && opts.skipDatabase) throw new CofferError('E_USAGE', '--skip-files and --skip-database together leave nothing to restore');
      const jobs = opts.jobs === undefined ? defaultRestoreJobs() : Number(opts.jobs);
      if (!(/^\d+$/.test(opts.jobs ?? '1') && Number.isInteger(jobs) && jobs >= 1 && jobs <= MAX_RESTORE_JOBS)) {
        throw new CofferError('E_USAGE', `--jobs must be a whole number from 1 to ${MAX_RESTORE_JOBS}`);
      }
      const rt = runtime({ quietByDefault: true });
      const databaseUrl = resolveDatabaseUrl(opts);
      const fromStdin = file === undefined || file === '-';
      const key = await resolveKeySource(opts, rt.config, { use: 'open', stdinBusy: fromStdin });
      await withArchiveFile(rt, file, async (archivePath, label) => {
        const archive = await openArchive(archivePath, key);
        try {
          const target = databaseUrl ? describeUrl(databaseUrl) : rt.config.databaseUrl ? describeUrl(rt.config.databaseUrl.reveal()) : `the embedded database in ${rt.config.dataDir}`;
          const what = [opts.skipDatabase ? undefined : `ALL data in ${target}`, opts.skipFiles ? undefined : `the upload folders in ${rt.config.dataDir}`].filter(Boolean).join(' and ');
          if (!opts.yes && process.stdin.isTTY && process.stderr.isTTY) {
            const ok = await confirm(`This replaces ${what} with the archive from ${archive.manifest.started_at}. Type 'yes' to continue: `);
            if (!ok) throw new CofferError('E_ABORTED', 'restore cancelled; nothing was changed');
          }
          // One connection coordinates, `jobs` load beside it.
          const db = opts.skipDatabase ? undefined : await openDatabase(rt.config, rt.log, { url: databaseUrl, poolMax: Math.max(10, jobs + 1) });
          // Stops the archive's hash when the restore ends first (it failed): nothing waits for it then.
          const hashing = new AbortController();
          try {
            const archiveBytes = fs.statSync(archivePath).size;
            const progress = new ProgressLine();
            const startedAt = Date.now();
            const summary = await restoreArchive({
              archive,
              pool: db?.pool,
              dataDir: rt.config.dataDir,
              log: rt.log,
              actor: cliActor(rt.config),
              skipFiles: opts.skipFiles,
              skipDatabase: opts.skipDatabase,
              force: opts.force,
              jobs,
              // The sha256 of the archive as a file: it matches the backup_finished row of the backup it came
              // from. Hashed while the restore runs: only the database's swap needs it, for its log row.
              source: opts.skipDatabase ? undefined : sha256File(archivePath, hashing.signal).then((sha256) => ({ archive: label, archive_bytes: archiveBytes, archive_sha256: sha256 })),
              onProgress: (p) => progress.update(describeProgress(p, startedAt)),
            });
            progress.done();
            const parts = [
              opts.skipDatabase ? undefined : `${summary.tables} tables, ${summary.rows} rows into ${db!.description}`,
              opts.skipFiles ? undefined : `${summary.files} files (${formatBytes(summary.fileBytes)}) into ${rt.config.dataDir}`,
            ].filter(Boolean);
            print(`restored ${parts.join('; ')} in ${formatDuration(summary.durationMs / 1000)}`);
            if (summary.unknownMigrations.length) print(`warning: forced past unknown migrations ${summary.unknownMigrations.join(', ')}`);
          } finally {
            hashing.abort();
            await db?.close();
          }
        } finally {
          await archive.close();
        }
      });
    });
}
