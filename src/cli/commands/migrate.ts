import type { Command } from 'commander';
import { migrate, migrationStatus } from '../../db/migrate';
import { resolveDatabaseUrl, withDatabaseUrlOptions, type DatabaseUrlOptions } from '../database-url';
import { print, runtime, withDatabase } from '../runtime';

export function registerMigrate(program: Command): void {
  const cmd = withDatabaseUrlOptions(program.command('migrate').description('apply pending database migrations').option('--to <name>', 'stop after this migration'), 'database to migrate')
    .action(async (opts: { to?: string } & DatabaseUrlOptions) => {
      const rt = runtime({ quietByDefault: true });
      const url = resolveDatabaseUrl(opts);
      await withDatabase(
        rt,
        async (db) => {
          const applied = await migrate(db.pool, { to: opts.to, log: rt.log });
          print(applied.length ? `applied: ${applied.join(', ')}` : 'nothing to apply: the database is up to date');
        },
        { migrate: false, url },
      );
    });
  withDatabaseUrlOptions(cmd.command('status').description('list migrations and whether each is applied'), 'database to inspect')
    .action(async (_opts: DatabaseUrlOptions, command: Command) => {
      const rt = runtime({ quietByDefault: true });
      // `migrate` defines the same options and commander gives them to it when they follow `status`.
      const url = resolveDatabaseUrl(command.optsWithGlobals<DatabaseUrlOptions>());
      await withDatabase(
        rt,
        async (db) => {
          const status = await migrationStatus(db.pool);
          for (const m of status.migrations) print(`${m.appliedAt ? 'applied' : 'pending'}  ${m.name}${m.appliedAt ? '  ' + m.appliedAt.toISOString() : ''}`);
          for (const n of status.unknownApplied) print(`unknown  ${n}  (applied by a newer coffer)`);
        },
        { migrate: false, url },
      );
    });
}
