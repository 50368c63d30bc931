import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config';
import { CofferError, errorMessage } from '../core/errors';
import { openDatabase, type Database } from '../db/connect';
import { migrate } from '../db/migrate';
import type { Logger } from '../log';
import { repairAfterCrash } from '../pipeline/restore';
import { removeAbandonedUploads } from '../storage/uploads';
import { sweepRateLimits, SWEEP_INTERVAL_MS } from '../accounts/rate-limit';
import { Jobs } from '../jobs';
import { createApp } from './app';

export interface RunningServer {
  url: string;
  db: Database;
  jobs: Jobs;
  close(): Promise<void>;
}

function listen(server: http.Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') reject(new CofferError('E_PORT_IN_USE', `port ${port} on ${host} is already in use; set PORT to another port`));
      else if (err.code === 'EACCES') reject(new CofferError('E_PORT_IN_USE', `not allowed to listen on port ${port} on ${host}; set PORT to a port above 1023`));
      else reject(new CofferError('E_PORT_IN_USE', `cannot listen on ${host}:${port}: ${err.message}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Opens the database, applies pending migrations and serves HTTP until close(). */
export async function startServer(config: Config, log: Logger, hooks: { beforeListen?: (db: Database) => Promise<void> } = {}): Promise<RunningServer> {
  const started = Date.now();
  if (config.backupDisabledReason) log.warn(`backups are disabled: ${config.backupDisabledReason}`);
  const db = await openDatabase(config, log);
  let server: http.Server | undefined;
  let jobs: Jobs | undefined;
  try {
    const applied = await migrate(db.pool, { log });
    if (applied.length) log.info({ applied }, 'migrations applied');
    await repairAfterCrash(config.dataDir, db.pool, log);
    const abandoned = await removeAbandonedUploads(config.dataDir, config.uploadIdleTimeoutMs);
    if (abandoned.length) log.info({ removed: abandoned.length }, 'removed temporary files of uploads a crash interrupted');
    await hooks.beforeListen?.(db);
    // The service runs stored-backup jobs itself; a crash's leftovers are swept before the first one.
    jobs = await Jobs.open({ pool: db.pool, url: db.url, config, log });
    await jobs.startWorker();
    const app = createApp({ config, pool: db.pool, log, serverVersion: db.serverVersion, jobs });
    server = http.createServer(app);
    // Node's requestTimeout would cut long uploads: the body timeouts are per request instead
    // (bodyTimeouts in app.ts: a deadline for ordinary bodies, an idle limit for uploads). Responses,
    // such as a backup streaming for minutes, are not timed; headersTimeout still bounds the headers.
    server.requestTimeout = 0;
    const addr = await listen(server, config.port, config.host);
    const host = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
    const url = `http://${host}:${addr.port}`;
    log.info({ url, database: db.description, postgres: db.serverVersion, ms: Date.now() - started }, `coffer listening on ${url}`);
    const sweep = () =>
      sweepRateLimits(db.pool).then(
        (n) => n && log.debug({ removed: n }, 'expired rate-limit rows removed'),
        (err) => log.warn({ err: errorMessage(err) }, 'could not remove expired rate-limit rows'),
      );
    // Once at start (rows left while the service was down), then periodically; never keeps the process up.
    let sweeping = sweep();
    const sweeper = setInterval(() => (sweeping = sweep()), SWEEP_INTERVAL_MS);
    sweeper.unref();
    const srv = server;
    const runningJobs = jobs;
    return {
      url,
      db,
      jobs: runningJobs,
      async close() {
        clearInterval(sweeper);
        await sweeping;
        await runningJobs.close();
        await new Promise<void>((resolve) => {
          srv.close(() => resolve());
          srv.closeIdleConnections();
          setTimeout(() => srv.closeAllConnections(), 5000).unref();
        });
        await db.close();
      },
    };
  } catch (err) {
    server?.close();
    await jobs?.close();
    await db.close();
    throw err;
  }
}
