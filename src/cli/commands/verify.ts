import type { Command } from 'commander';
import { CofferError } from '../../core/errors';
import { openArchive } from '../../pipeline/open-archive';
import { verifyArchive } from '../../pipeline/verify';
import { withArchiveFile } from '../archive-file';
import { resolveKeySource, withKeyOptions, type KeyOptions } from '../keys';
import { formatBytes, ProgressLine } from '../progress';
import { print, runtime } from '../runtime';

export function registerVerify(program: Command): void {
  withKeyOptions(program.command('verify'), 'open')
    .description('check that an archive is complete and restorable, without writing anything')
    .argument('[file]', "archive (.zip or .zip.crypt), or '-' for standard input")
    .action(async (file: string | undefined, opts: KeyOptions) => {
      const rt = runtime({ quietByDefault: true });
      const key = await resolveKeySource(opts, rt.config, { use: 'open', stdinBusy: file === undefined || file === '-' });
      await withArchiveFile(rt, file, async (archivePath, label) => {
        const archive = await openArchive(archivePath, key);
        const progress = new ProgressLine();
        try {
          const r = await verifyArchive(archive, (name) => progress.update(`verify: ${name}`));
          progress.done();
          const how = r.encryption === 'age' ? ` (age, sealed to ${r.recipients} recipient${r.recipients === 1 ? '' : 's'})` : r.encrypted ? ` (encrypted, key id ${r.keyId})` : '';
          print(`archive     ${label}${how}`);
          print(`format      ${r.format}, made by coffer ${r.appVersion} on PostgreSQL ${r.postgres} at ${r.createdAt}`);
          print(`migrations  ${r.migrations.join(', ')}${r.unknownMigrations.length ? `  (unknown to this build: ${r.unknownMigrations.join(', ')})` : ''}`);
          print('');
          print(`${'TABLE'.padEnd(32)} ${'ROWS'.padStart(10)} ${'BYTES'.padStart(12)}  CHECK`);
          for (const t of r.tables) print(`${t.table.padEnd(32)} ${String(t.rows).padStart(10)} ${formatBytes(t.bytes).padStart(12)}  ${t.ok ? 'ok' : t.problem}`);
          print('');
          print(`${'FOLDER'.padEnd(32)} ${'FILES'.padStart(10)} ${'BYTES'.padStart(12)}  CHECK`);
          for (const [folder, f] of Object.entries(r.files)) print(`${folder.padEnd(32)} ${String(f.files).padStart(10)} ${formatBytes(f.bytes).padStart(12)}  ${f.ok ? 'ok' : f.problem}`);
          if (r.fileErrorsAtBackup) print(`\nnote: ${r.fileErrorsAtBackup} files could not be read when the backup was taken (manifest file_errors)`);
          print('');
          print(`note: ${r.notChecked}`);
          if (!r.ok) throw new CofferError('E_ARCHIVE_INVALID', `archive is NOT restorable: ${r.problems.length} problem(s): ${r.problems.join('; ')}`);
          print('archive is restorable');
        } finally {
          progress.done();
          await archive.close();
        }
      });
    });
}
