import type pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../log';
import { startEmbedded, type EmbeddedServer } from './embedded';
import { checkConnection, createPool, describeUrl } from './pool';

export interface Database {
  pool: pg.Pool;
  /** Connection URL (contains a password: never log it). */
  url: string;
  /** "dbname on host:port", safe to print. */
  description: string;
  serverVersion: string;
  embedded?: EmbeddedServer;
  close(): Promise<void>;
}

/**
 * Opens the configured database: DATABASE_URL (or an explicit URL), else the embedded server under
 * DATA_DIR/pg, reusing a running one or starting one for as long as this process needs it.
 */
export async function openDatabase(config: Config, log: Logger, opts: { url?: string; poolMax?: number } = {}): Promise<Database> {
  let embedded: EmbeddedServer | undefined;
  let url = opts.url ?? config.databaseUrl?.reveal();
  if (!url) {
    embedded = await startEmbedded(config.dataDir, log);
    url = embedded.url;
  }
  const pool = createPool(url, log, { max: opts.poolMax });
  const description = describeUrl(url);
  let serverVersion: string;
  try {
    serverVersion = await checkConnection(pool, description);
  } catch (err) {
    await pool.end().catch(() => undefined);
    await embedded?.stop();
    throw err;
  }
  return {
    pool,
    url,
    description,
    serverVersion,
    embedded,
    async close() {
      await pool.end().catch(() => undefined);
      await embedded?.stop();
    },
  };
}
