import { Router } from 'express';
import { errorMessage } from '../../core/errors';
import { APP_VERSION } from '../../core/manifest';
import type { AppContext } from '../context';

export function healthRoutes(ctx: AppContext): Router {
  const r = Router();
  r.get('/', async (req, res) => {
    try {
      const v = await ctx.pool.query<{ server_version: string }>('SHOW server_version');
      res.json({ status: 'ok', version: APP_VERSION, database: { status: 'up', server_version: v.rows[0].server_version }, backups: ctx.config.backupKey ? 'enabled' : 'disabled' });
    } catch (err) {
      req.log.warn({ err: errorMessage(err) }, 'health check: database down');
      res.status(503).json({ status: 'degraded', database: { status: 'down' } });
    }
  });
  return r;
}
