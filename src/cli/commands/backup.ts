import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { CofferError } from '../../core/errors';
import { DEFAULT_COMPRESSION_LEVEL, defaultBackupJobs, MAX_BACKUP_JOBS, startBackup, type BackupProgress } from '../../pipeline/backup';
import { encryptionFor } from '../../crypto';
import { archiveFileName } from '../../pipeline/names';
import { createAtomicFile } from '../../core/atomic-file';
import { resolveDatabaseUrl, withDatabaseUrlOptions, type DatabaseUrlOptions } from '../database-url';
import { resolveKeySource, withKeyOptions, type KeyOptions } from '../keys';
import { formatBytes, formatDuration, ProgressLine } from '../progress';
import { cliActor, runtime, withDatabase } from '../runtime';

interface BackupOptions extends KeyOptions, DatabaseUrlOptions {
  output?: string;
  compressionLevel?: string;
  jobs?: string;
}

function describeProgress(p: BackupProgress, startedAt: number, expected?: number): string {
  const elapsed = (Date.now() - startedAt) / 1000;
  const eta = expected && p.bytesOut > 0 && p.bytesOut < expected ? ` ETA ${formatDuration((elapsed * (expected - p.bytesOut)) / p.bytesOut)}` : '';
  const where =
    p.phase === 'database'
      ? `tables ${p.tablesDone}/${p.tablesTotal}${p.table ? ` ${p.table} ${p.rows} rows` : ''}`
      : p.phase === 'files'
        ? `files ${p.files} (${formatBytes(p.fileBytes)})`
        : 'writing manifest';
  return `backup: ${where} | ${formatBytes(p.bytesOut)} written, ${formatDuration(elapsed)}${eta}`;
}

export function registerBackup(program: Command): void {
  withDatabaseUrlOptions(withKeyOptions(program.command('backup'), 'seal'), 'database to back up')
    .description('write a backup archive (zip; .zip.crypt with a key or passphrase, .zip.age sealed to age recipients) directly from the database')
    .option('-o, --output <file>', "archive file, or '-' for standard output (default: backup-<UTC time>.zip in the current folder)")
    .option('--compression-level <n>', `deflate level 0-9 for what is not already compressed (default ${DEFAULT_COMPRESSION_LEVEL}: fast)`)
    .option('-j, --jobs <n>', `tables dumped at once, over that many connections sharing one snapshot, 1-${MAX_BACKUP_JOBS} (default min(4, CPU cores), here ${defaultBackupJobs()})`)
    .action(async (opts: BackupOptions) => {
      const rt = runtime({ quietByDefault: true });
      const databaseUrl = resolveDatabaseUrl(opts);
      const level = opts.compressionLevel === undefined ? undefined : Number(opts.compressionLevel);
      if (level !== undefined && !(Number.isInteger(level) && level >= 0 && level <= 9)) {
        throw new CofferError('E_USAGE', '--compression-level must be a whole number from 0 to 9');
      }
      const jobs = opts.jobs === undefined ? defaultBackupJobs() : /^\d+$/.test(opts.jobs) ? Number(opts.jobs) : NaN;
      if (!(Number.isInteger(jobs) && jobs >= 1 && jobs <= MAX_BACKUP_JOBS)) {
        throw new CofferError('E_USAGE', `--jobs must be a whole number from 1 to ${MAX_BACKUP_JOBS}`);
      }
      const toStdout = opts.output === '-';
      if (toStdout && process.stdout.isTTY) {
        throw new CofferError('E_USAGE', 'refusing to write a binary archive to a terminal; redirect standard output or use -o FILE');
      }
      const encryption = await resolveKeySource(opts, rt.config, { use: 'seal', confirm: true });
      const target = opts.output && !toStdout ? opts.output : archiveFileName(new Date(), encryptionFor(encryption));
      // Created first: a refused output file (an existing FILE.partial) stops the command before it starts a backup.
      const file = toStdout ? undefined : createAtomicFile(target);
      let committed = false;
      try {
        await withDatabase(
          rt,
          async (db) => {
            const progress = new ProgressLine();
            const startedAt = Date.now();
            // Known once the backup has started: the size of the previous one, for the ETA.
            const eta: { expected?: number } = {};
            const backup = await startBackup({
              pool: db.pool,
              dataDir: rt.config.dataDir,
              log: rt.log,
              via: 'cli',
              actor: cliActor(rt.config),
              encryption,
              compressionLevel: level,
              jobs,
              onProgress: (p) => progress.update(describeProgress(p, startedAt, eta.expected)),
            });
            eta.expected = backup.previousBytes;
            try {
              await pipeline(backup.output, file ? file.stream : process.stdout);
            } catch (err) {
              progress.done();
              backup.output.destroy();
              await backup.result.catch(() => undefined);
              throw err;
            }
            // Every byte is written; a failure now (the audit row, say) is reported but the archive stays.
            await file?.commit();
            committed = true;
            const result = await backup.result;
            const m = result.manifest;
            const rows = m.tables.reduce((n, t) => n + t.rows, 0);
            const files = Object.values(m.files).reduce((n, f) => n + f.files, 0);
            progress.done();
            process.stderr.write(
              `backup ${toStdout ? 'written to standard output' : `written to ${target}`}: ${formatBytes(result.bytes)}, ${m.tables.length} tables, ${rows} rows, ${files} files` +
                `${m.file_errors.length ? `, ${m.file_errors.length} unreadable files (see manifest file_errors)` : ''}, ${formatDuration(result.durationMs / 1000)}${encryption?.kind === 'recipients' ? `, sealed to ${encryption.recipients.length} age recipient${encryption.recipients.length === 1 ? '' : 's'}` : result.encrypted ? ', encrypted' : ''}\n` +
                `sha256 ${result.sha256}\n`,
            );
          },
          // A backup never changes the database it reads: no migrations here.
          // The pool holds every job's connection and two for the audit log.
          { url: databaseUrl, migrate: false, poolMax: jobs + 2 },
        );
      } finally {
        if (!committed) await file?.abort();
      }
    });
}
