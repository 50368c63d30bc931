import { randomUUID } from 'node:crypto';
import express, { type Express, type Router } from 'express';
import { CofferError } from '../core/errors';
import { authenticate } from './auth';
import type { AppContext } from './context';
import { errorHandler } from './errors';
import { bodyTimeouts } from './timeouts';
import { backupPolicyRoutes } from './routes/backup-policy';
import { authRoutes } from './routes/auth';
import { healthRoutes } from './routes/health';
import { projectRoutes } from './routes/projects';
import { backupRoutes } from './routes/backup';
import { backupsRoutes, restoresRoutes } from './routes/backups';
import { openapiRoutes } from './routes/openapi';

/**
 * Where each router is mounted. createApp mounts exactly these, in this order; the OpenAPI coverage
 * test reads the same list, since Express keeps no mount path a test could read back.
 */
export const ROUTER_MOUNTS: readonly (readonly [prefix: string, routes: (ctx: AppContext) => Router])[] = [
  ['/api/v1/health', healthRoutes],
  ['/api/v1/auth', authRoutes],
  ['/api/v1/projects', projectRoutes],
  ['/api/v1/utils', backupRoutes],
  ['/api/v1/backups', backupsRoutes],
  ['/api/v1/restores', restoresRoutes],
  ['/api/v1/backup-policy', backupPolicyRoutes],
  ['/api/v1/openapi.json', openapiRoutes],
];

export function createApp(ctx: AppContext): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', ctx.config.trustProxy);

  app.use((req, res, next) => {
    const given = req.headers['x-request-id'];
    req.id = typeof given === 'string' && /^[\w.-]{1,64}$/.test(given) ? given : randomUUID();
    req.log = ctx.log.child({ reqId: req.id });
    res.setHeader('X-Request-Id', req.id);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      req.log.info({ method: req.method, path: req.originalUrl.split('?')[0], status: res.statusCode, ms: Math.round(ms) }, 'request');
    });
    next();
  });
  app.use(bodyTimeouts({ bodyMs: ctx.config.requestBodyTimeoutMs, uploadIdleMs: ctx.config.uploadIdleTimeoutMs }));
  app.use(express.json({ limit: '1mb' }));
  app.use(authenticate(ctx));

  for (const [prefix, routes] of ROUTER_MOUNTS) app.use(prefix, routes(ctx));

  app.use((req, _res, next) => next(new CofferError('E_NOT_FOUND', `no route ${req.method} ${req.path}`)));
  app.use(errorHandler);
  return app;
}
