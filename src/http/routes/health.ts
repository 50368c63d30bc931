import { Router } from 'express';
import { z } from 'zod';
import { errorMessage } from '../../core/errors';
import { APP_VERSION } from '../../core/manifest';
import type { AppContext } from '../context';

export const healthAnswer = z.object({
  status: z.literal('ok'),
  version: z.string().describe('coffer version'),
  database: z.object({ status: z.literal('up'), server_version: z.string() }),
  backups: z.enum(['enabled', 'disabled']).describe('whether BACKUP_KEY is set'),
});
export const degradedAnswer = z.object({ status: z.literal('degraded'), database: z.object({ status: z.literal('down') }) });

export function healthRoutes(ctx: AppContext): Router {
  const r = Router();
  r.get('/', async (req, res) => {
    try {
      const v = await ctx.pool.query<{ server_version: string }>('SHOW server_version');
      res.json({
        status: 'ok',
        version: APP_VERSION,
        database: { status: 'up', server_version: v.rows[0].server_version },
        backups: ctx.config.backupKey ? 'enabled' : 'disabled',
      } satisfies z.infer<typeof healthAnswer>);
    } catch (err) {
      req.log.warn({ err: errorMessage(err) }, 'health check: database down');
      res.status(503).json({ status: 'degraded', database: { status: 'down' } } satisfies z.infer<typeof degradedAnswer>);
    }
  });
  return r;
}
