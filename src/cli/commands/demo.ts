import type { Command } from 'commander';
import { CofferError } from '../../core/errors';
import { generateDemoData } from '../../domain/demo';
import { print, runtime, withDatabase } from '../runtime';

export function registerDemo(program: Command): void {
  program
    .command('demo-data')
    .description('add realistic projects (with demo owners and members), notes, findings, events and uploaded files, for try-outs')
    .option('--scale <n>', 'how much (1 = 20 projects, 500 findings, 2000 events, 12 files)', '1')
    .action(async (opts: { scale: string }) => {
      const scale = Number(opts.scale);
      if (!Number.isInteger(scale) || scale < 1 || scale > 100000) throw new CofferError('E_USAGE', '--scale must be a whole number from 1 to 100000');
      const rt = runtime({ quietByDefault: true });
      await withDatabase(rt, async (db) => {
        const started = Date.now();
        const s = await generateDemoData(db.pool, rt.config.dataDir, scale, (msg) => process.stderr.write(`  ${msg}\n`));
        print(`added ${s.projects} projects (owned by ${s.users} demo users, ${s.members} memberships), ${s.notes} notes, ${s.findings} findings, ${s.events} events, ${s.files} files (${s.fileBytes} bytes) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      });
    });
}
