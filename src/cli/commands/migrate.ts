import type { Command } from 'commander';
import { migrate, migrationStatus } from '../../db/migrate';
import { print, runtime, withDatabase } from '../runtime';

export function registerMigrate(program: Command): void {
  const cmd = program
    .command('migrate')
    .description('apply pending database migrations')
    .option('--to <name>', 'stop after this migration')
    .option('--database-url <url>', 'database to migrate (default: DATABASE_URL or the embedded server)')
    .action(async (opts: { to?: string; databaseUrl?: string }) => {
      const rt = runtime({ quietByDefault: true });
      await withDatabase(
        rt,
        async (db) => {
          const applied = await migrate(db.pool, { to: opts.to, log: rt.log });
          print(applied.length ? `applied: ${applied.join(', ')}` : 'nothing to apply: the database is up to date');
        },
        { migrate: false, url: opts.databaseUrl },
      );
    });
  cmd
    .command('status')
    .description('list migrations and whether each is applied')
    .option('--database-url <url>', 'database to inspect')
    .action(async (opts: { databaseUrl?: string }) => {
      const rt = runtime({ quietByDefault: true });
      await withDatabase(
        rt,
        async (db) => {
          const status = await migrationStatus(db.pool);
          for (const m of status.migrations) print(`${m.appliedAt ? 'applied' : 'pending'}  ${m.name}${m.appliedAt ? '  ' + m.appliedAt.toISOString() : ''}`);
          for (const n of status.unknownApplied) print(`unknown  ${n}  (applied by a newer coffer)`);
        },
        { migrate: false, url: opts.databaseUrl },
      );
    });
}
