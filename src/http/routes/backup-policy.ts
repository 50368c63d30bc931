import { Router } from 'express';
import { z } from 'zod';
import { authorizeBackupAction } from '../../pipeline/policy';
import { requireUser } from '../auth';
import type { AppContext } from '../context';

export const backupPolicyAnswer = z.object({
  default_encryption: z.enum(['none', 'age']).describe('what a backup given no key gets: sealed to the recipients below (age), or none'),
  recipients: z.array(z.string()).describe('the configured age recipients (BACKUP_RECIPIENTS and BACKUP_RECIPIENTS_FILE), each once'),
});

/** GET /api/v1/backup-policy: how backups are sealed when a request gives no key (system users). */
export function backupPolicyRoutes(ctx: AppContext): Router {
  const r = Router();
  r.get('/', requireUser, async (req, res) => {
    await authorizeBackupAction({ pool: ctx.pool, config: ctx.config, user: req.user, action: 'status', via: 'http', log: req.log });
    const recipients = ctx.config.backupRecipients.map((x) => x.text);
    res.json({ default_encryption: recipients.length > 0 ? 'age' : 'none', recipients } satisfies z.infer<typeof backupPolicyAnswer>);
  });
  return r;
}
