import { Router, type Request, type Response } from 'express';
import { pipeline } from 'node:stream';
import { z } from 'zod';
import { safeEqual } from '../../accounts/secrets';
import { BACKUP_KEY_FAILURES, clearFailures, countAttempt } from '../../accounts/rate-limit';
import { CofferError, errorMessage, isCofferError } from '../../core/errors';
import { parseAesKey, type KeySource } from '../../crypto';
import { validatePassphrase } from '../../crypto/passphrase-policy';
import { writeBackupLog, type Actor } from '../../db/backup-log';
import { startBackup } from '../../pipeline/backup';
import { archiveFileName } from '../../pipeline/names';
import { requireUser } from '../auth';
import type { AppContext } from '../context';

const backupInput = z.object({
  key: z.string({ error: 'key is required' }).max(4096),
  aes_key: z.string().max(1024).optional(),
  passphrase: z.string().max(4096).optional(),
  check: z.boolean().optional(),
});

function parseBody(body: unknown): z.infer<typeof backupInput> {
  const parsed = backupInput.safeParse(body ?? {});
  if (!parsed.success) {
    throw new CofferError('E_VALIDATION', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  }
  return parsed.data;
}

function encryptionFrom(input: z.infer<typeof backupInput>): KeySource | undefined {
  if (input.aes_key !== undefined && input.passphrase !== undefined) {
    throw new CofferError('E_VALIDATION', 'give either aes_key or passphrase, not both');
  }
  if (input.aes_key !== undefined) return { kind: 'raw', key: parseAesKey(input.aes_key) };
  if (input.passphrase !== undefined) {
    validatePassphrase(input.passphrase);
    return { kind: 'passphrase', passphrase: input.passphrase };
  }
  return undefined;
}

/**
 * POST /api/v1/utils/backup/ (DESIGN §5). Every check happens before the first byte is sent, so each
 * refusal is a clean JSON answer; after that, a failure can only cut the connection.
 */
export function backupRoutes(ctx: AppContext): Router {
  const r = Router();

  r.post('/backup', requireUser, async (req: Request, res: Response) => {
    const user = req.user!;
    const actor: Actor = { id: user.id, username: user.username };
    const deny = async (err: CofferError): Promise<never> => {
      await writeBackupLog(ctx.pool, 'backup_denied', actor, { via: 'http', code: err.code, reason: err.message }).catch((e) =>
        req.log.error({ err: errorMessage(e) }, 'could not audit a denied backup'),
      );
      throw err;
    };

    if (!user.isSystemUser) await deny(new CofferError('E_FORBIDDEN', 'backups can only be taken by system users'));
    if (!ctx.config.backupKey) await deny(new CofferError('E_BACKUP_DISABLED', `backups are disabled: ${ctx.config.backupDisabledReason}`));
    if (!req.is('application/json')) await deny(new CofferError('E_UNSUPPORTED_MEDIA_TYPE', 'send the request body as JSON with Content-Type: application/json'));
    const input = parseBody(req.body);

    const wait = await countAttempt(ctx.pool, BACKUP_KEY_FAILURES, user.id);
    if (wait > 0) await deny(new CofferError('E_RATE_LIMITED', `too many wrong backup keys; try again in ${wait} s`, { details: { retryAfter: wait } }));
    if (!safeEqual(input.key, ctx.config.backupKey!.reveal())) await deny(new CofferError('E_BACKUP_KEY_WRONG', 'wrong backup key'));
    await clearFailures(ctx.pool, BACKUP_KEY_FAILURES, user.id);

    let encryption: KeySource | undefined;
    try {
      encryption = encryptionFrom(input);
    } catch (err) {
      if (isCofferError(err)) await deny(err);
      throw err;
    }
    if (input.check) {
      res.status(200).end();
      return;
    }

    const backup = await startBackup({ pool: ctx.pool, dataDir: ctx.config.dataDir, log: req.log, actor, via: 'http', encryption });
    res.status(200);
    res.setHeader('Content-Type', encryption ? 'application/octet-stream' : 'application/zip');
    res.setHeader('Content-Disposition', `attachment; filename="${archiveFileName(new Date(), !!encryption)}"`);
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // pipeline destroys the response on a producer error (the client sees a cut connection, never a
    // well-formed short zip) and destroys the producer when the client goes away.
    pipeline(backup.output, res, () => undefined);
    try {
      const result = await backup.result;
      req.log.info({ bytes: result.bytes, ms: result.durationMs, encrypted: result.encrypted }, 'backup sent');
    } catch (err) {
      req.log.warn({ err: errorMessage(err) }, 'backup failed after the response started');
      res.destroy();
    }
  });

  return r;
}
