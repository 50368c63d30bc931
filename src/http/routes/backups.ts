import { pipeline } from 'node:stream/promises';
import { Router, type Request, type Response } from 'express';
import rangeParser from 'range-parser';
import { z } from 'zod';
import { CofferError, errorMessage } from '../../core/errors';
import { BACKUP_STATUSES, backupObjectSchema, FINAL_STATUSES, restoreObjectSchema } from '../../core/jobs';
import { parseInput, text } from '../../domain/input';
import type { Jobs } from '../../jobs';
import type { BackupStore } from '../../storage/backup-store';
import { authorizeBackupAction, keySourceOrDeny, type BackupAction, type KeyInput, type PolicyRequest } from '../../pipeline/policy';
import { archiveExtension } from '../../pipeline/names';
import { requireUser } from '../auth';
import type { AppContext } from '../context';
import { openKeyFields, requireJson, sealKeyFields } from './backup';

/** Request bodies and queries of the stored-backup endpoints: they validate, and they are the OpenAPI. */
const correlationField = { correlation_id: text(200).optional().describe('any text of the caller, echoed in the job object') };
export const createBackupBody = z.object({ ...sealKeyFields, ...correlationField, name: text(200).optional().describe('default backup-<time>') }).strict();
export const restoreBody = z
  .object({ ...openKeyFields, ...correlationField, safety_backup: z.boolean().optional().describe('first take a stored backup named pre-restore-<time> (default true)') })
  .strict();
export const listBackupsQuery = z.object({ status: z.enum(BACKUP_STATUSES).optional() }).strict();
export const BACKUP_KEY_HEADER = 'x-backup-key';

/** Answers that wrap the job shapes of core/jobs. */
export const backupListAnswer = z.object({ backups: z.array(backupObjectSchema) });
export const restoreListAnswer = z.object({ restores: z.array(restoreObjectSchema) });
export const storeDirectoryAnswer = z.object({ store: z.enum(['local', 's3'] satisfies BackupStore['kind'][]), path: z.string().describe('where the store keeps its objects') });

function jobs(ctx: AppContext): Jobs {
  if (!ctx.jobs) throw new CofferError('E_INTERNAL', 'stored backups are not available in this process');
  return ctx.jobs;
}

function policyFor(ctx: AppContext, req: Request, action: BackupAction, key?: string): PolicyRequest {
  return { pool: ctx.pool, config: ctx.config, user: req.user, action, key, via: 'http', log: req.log };
}

/** A POST carrying BACKUP_KEY and an archive key in its JSON body: authorized, then parsed. */
async function authorizeKeyedPost<T extends KeyInput & { key: string }>(ctx: AppContext, req: Request, action: BackupAction, schema: z.ZodType<T>, use: 'seal' | 'open') {
  let input!: T;
  const policy: PolicyRequest = {
    ...policyFor(ctx, req, action),
    readRequest: () => {
      requireJson(req);
      input = parseInput(schema, req.body);
      return input.key;
    },
  };
  const actor = await authorizeBackupAction(policy);
  return { input, key: await keySourceOrDeny(policy, actor, input, use) };
}

function headerKey(req: Request): string | undefined {
  const v = req.headers[BACKUP_KEY_HEADER];
  return typeof v === 'string' ? v : undefined;
}

function requester(req: Request) {
  return { actor: { id: req.user!.id, username: req.user!.username }, username: req.user!.username, userId: req.user!.id, via: 'http' as const };
}

/** Server-Sent Events: one `progress` event per change, then one named after the final status. */
async function streamEvents(res: Response, follow: (onUpdate: (o: { status: string }) => void, signal: AbortSignal) => Promise<unknown>): Promise<void> {
  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
  res.write('retry: 2000\n\n');
  const ctl = new AbortController();
  res.on('close', () => ctl.abort());
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
  try {
    await follow((o) => {
      const event = FINAL_STATUSES.includes(o.status) ? o.status : 'progress';
      res.write(`event: ${event}\ndata: ${JSON.stringify(o)}\n\n`);
    }, ctl.signal);
  } catch (err) {
    res.write(`event: error\ndata: ${JSON.stringify({ message: errorMessage(err) })}\n\n`);
  } finally {
    clearInterval(heartbeat);
    res.end();
  }
}

/**
 * Stored backups and restore jobs (DESIGN §8). Policy (who may, key, rate limit, audit) is
 * authorizeBackupAction's; these routes only translate HTTP.
 */
export function backupsRoutes(ctx: AppContext): Router {
  const r = Router();

  r.post('/', requireUser, async (req, res) => {
    const { input, key: encryption } = await authorizeKeyedPost(ctx, req, 'create', createBackupBody, 'seal');
    const backup = await jobs(ctx).createBackup({ ...requester(req), name: input.name, encryption, correlationId: input.correlation_id });
    res.status(202).location(`/api/v1/backups/${backup.id}`).json(backup);
  });

  r.get('/', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'list'));
    const q = parseInput(listBackupsQuery, req.query);
    res.json({ backups: await jobs(ctx).listBackups(q.status) } satisfies z.infer<typeof backupListAnswer>);
  });

  r.get('/directory', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'status'));
    const store = jobs(ctx).store;
    res.json({ store: store.kind, path: store.location } satisfies z.infer<typeof storeDirectoryAnswer>);
  });

  r.get('/:id', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'status'));
    res.json(await jobs(ctx).getBackup(String(req.params.id)));
  });

  r.get('/:id/events', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'status'));
    const id = String(req.params.id);
    await jobs(ctx).getBackup(id); // 404 before the stream starts
    await streamEvents(res, (onUpdate, signal) => jobs(ctx).waitFor('backup', id, { onUpdate, signal, intervalMs: 300 }));
  });

  r.get('/:id/download', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'download', headerKey(req)));
    const { backup, source } = await jobs(ctx).openDownload(String(req.params.id));
    try {
      const size = source.size;
      const etag = `"${backup.sha256}"`;
      res.setHeader('ETag', etag);
      res.setHeader('Accept-Ranges', 'bytes');
      res.setHeader('Cache-Control', 'no-store');
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('Content-Type', backup.encrypted ? 'application/octet-stream' : 'application/zip');
      res.setHeader('Content-Disposition', `attachment; filename="${backup.id}${archiveExtension(backup.encryption)}"`);
      if (req.headers['if-none-match'] === etag) {
        res.status(304).end();
        return;
      }
      let start = 0;
      let end = size; // exclusive
      const range = req.headers.range;
      const ifRange = req.headers['if-range'];
      if (range && (ifRange === undefined || ifRange === etag)) {
        const parsed = rangeParser(size, range, { combine: true });
        if (parsed === -1) {
          res.setHeader('Content-Range', `bytes */${size}`);
          throw new CofferError('E_RANGE', `range ${range} is outside the ${size}-byte archive`);
        }
        // A malformed header (-2) is ignored, as RFC 9110 allows; several ranges get the whole file.
        if (parsed !== -2 && parsed.type === 'bytes' && parsed.length === 1) {
          start = parsed[0].start;
          end = parsed[0].end + 1;
          res.status(206);
          res.setHeader('Content-Range', `bytes ${start}-${end - 1}/${size}`);
        }
      }
      res.setHeader('Content-Length', String(end - start));
      if (req.method === 'HEAD' || end === start) {
        res.end();
        return;
      }
      await pipeline(source.createReadStream(start, end), res).catch((err: unknown) => {
        req.log.warn({ err: errorMessage(err) }, 'download ended early');
        res.destroy();
      });
    } finally {
      await source.close();
    }
  });

  r.delete('/:id', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'delete', headerKey(req)));
    await jobs(ctx).deleteBackup(String(req.params.id));
    res.status(204).end();
  });

  r.post('/:id/restore', requireUser, async (req, res) => {
    const { input, key } = await authorizeKeyedPost(ctx, req, 'restore', restoreBody, 'open');
    const restore = await jobs(ctx).createRestore({
      ...requester(req),
      backupId: String(req.params.id),
      key,
      safetyBackup: input.safety_backup ?? true,
      correlationId: input.correlation_id,
    });
    res.status(202).location(`/api/v1/restores/${restore.id}`).json(restore);
  });

  return r;
}

export function restoresRoutes(ctx: AppContext): Router {
  const r = Router();

  r.get('/', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'list'));
    res.json({ restores: await jobs(ctx).listRestores() } satisfies z.infer<typeof restoreListAnswer>);
  });

  r.get('/:id', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'status'));
    res.json(await jobs(ctx).getRestore(String(req.params.id)));
  });

  r.get('/:id/events', requireUser, async (req, res) => {
    await authorizeBackupAction(policyFor(ctx, req, 'status'));
    const id = String(req.params.id);
    await jobs(ctx).getRestore(id);
    await streamEvents(res, (onUpdate, signal) => jobs(ctx).waitFor('restore', id, { onUpdate, signal, intervalMs: 300 }));
  });

  return r;
}
