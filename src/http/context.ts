import type pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../log';
import type { User } from '../accounts/users';
import type { Jobs } from '../jobs';

export interface AppContext {
  config: Config;
  pool: pg.Pool;
  log: Logger;
  serverVersion: string;
  /** Stored backups and their jobs (absent in tests of unrelated routes). */
  jobs?: Jobs;
}

export type AuthMethod = 'session' | 'token';

declare module 'express-serve-static-core' {
  interface Request {
    id: string;
    log: Logger;
    user?: User;
    authMethod?: AuthMethod;
    sessionId?: string;
  }
}
