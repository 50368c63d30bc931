import { Router, type Request, type Response } from 'express';
import { pipeline } from 'node:stream';
import { z } from 'zod';
import { CofferError, errorMessage } from '../../core/errors';
import { parseInput } from '../../domain/input';
import { encryptionFor } from '../../crypto';
import { startBackup } from '../../pipeline/backup';
import { authorizeBackupAction, keySourceOrDeny, type PolicyRequest } from '../../pipeline/policy';
import { archiveFileName } from '../../pipeline/names';
import { requireUser } from '../auth';
import type { AppContext } from '../context';

const ageKeyList = (what: string) => z.array(z.string().max(200)).min(1, `give at least one ${what}`).max(100);

/** BACKUP_KEY and the archive key, the same on every endpoint that takes them. */
const backupKeyFields = {
  key: z.string({ error: 'key is required' }).max(4096).describe('BACKUP_KEY'),
  aes_key: z.string().max(1024).optional().describe('raw 256-bit key, hex or base64: encrypts (backup) or decrypts (restore) with format v1'),
  passphrase: z.string().max(4096).optional().describe('passphrase (argon2id), instead of aes_key'),
};

/** The key fields of bodies that write an archive: format v1 keys or age recipients. */
export const sealKeyFields = {
  ...backupKeyFields,
  recipients: ageKeyList('recipient')
    .optional()
    .describe('age recipients (age1…): the archive is an age file any one of their identities opens; without any key field, BACKUP_RECIPIENTS when set'),
};

/** The key fields of bodies that read an archive: format v1 keys or age identities. */
export const openKeyFields = {
  ...backupKeyFields,
  identities: ageKeyList('identity').optional().describe('age identities (AGE-SECRET-KEY-1…) to open an archive sealed to recipients'),
};

/** The streaming endpoint's body: it validates, and it is the OpenAPI document's. */
export const backupInput = z.object({ ...sealKeyFields, check: z.boolean().optional() });

export function requireJson(req: Request): void {
  if (!req.is('application/json')) throw new CofferError('E_UNSUPPORTED_MEDIA_TYPE', 'send the request body as JSON with Content-Type: application/json');
}


/**
 * POST /api/v1/utils/backup/ (DESIGN §5). Every check happens before the first byte is sent, so each
 * refusal is a clean JSON answer; after that, a failure can only cut the connection.
 */
export function backupRoutes(ctx: AppContext): Router {
  const r = Router();

  r.post('/backup', requireUser, async (req: Request, res: Response) => {
    let input!: z.infer<typeof backupInput>;
    const policy: PolicyRequest = {
      pool: ctx.pool, config: ctx.config, user: req.user, action: 'stream', via: 'http', log: req.log,
      readRequest: () => {
        requireJson(req);
        input = parseInput(backupInput, req.body);
        return input.key;
      },
    };
    const actor = await authorizeBackupAction(policy);
    const encryption = await keySourceOrDeny(policy, actor, input, 'seal');
    if (input.check) {
      res.status(200).end();
      return;
    }

    const backup = await startBackup({ pool: ctx.pool, dataDir: ctx.config.dataDir, log: req.log, actor, via: 'http', encryption });
    res.status(200);
    res.setHeader('Content-Type', encryption ? 'application/octet-stream' : 'application/zip');
    res.setHeader('Content-Disposition', `attachment; filename="${archiveFileName(new Date(), encryptionFor(encryption))}"`);
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
