import type { Command } from 'commander';
import { runtime } from '../runtime';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the HTTP service (embedded PostgreSQL unless DATABASE_URL is set)')
    .action(async () => {
      const rt = runtime();
      // Loaded here, not at the top: the HTTP stack (express and its dependencies, about 15 MB) is only
      // needed by `serve`, and every other command starts faster and smaller without it.
      const { startServer } = await import('../../http/server');
      const server = await startServer(rt.config, rt.log);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          rt.log.info({ signal }, 'shutting down');
          server.close().then(resolve, (err) => {
            rt.log.error({ err }, 'error during shutdown');
            resolve();
          });
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      rt.log.info('stopped');
    });
}
