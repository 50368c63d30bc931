import type pg from 'pg';
import { safeEqual } from '../accounts/secrets';
import { BACKUP_KEY_FAILURES, clearFailures, countAttempt } from '../accounts/rate-limit';
import type { User } from '../accounts/users';
import type { Config } from '../config';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { parseAesKey, parseIdentity, parseRecipient, uniqueRecipients, type KeySource } from '../crypto';
import { validatePassphrase } from '../crypto/passphrase-policy';
import { writeBackupLog, type Actor } from '../db/backup-log';
import type { Logger } from '../log';

/**
 * Who may do what with backups (DESIGN §5, §8): one function for the streaming endpoint, the stored
 * backup endpoints and the job runner, so the rule cannot drift between them.
 *
 * - Every action needs an active system user (superusers administer users, they do not take backups).
 * - Actions that read or change backup contents (`keyed`) also need BACKUP_KEY, compared in constant
 *   time, with failures rate-limited per user. Listing and status do not.
 * - Every refusal is written to backup_log as `backup_denied`.
 */
export type BackupAction = 'stream' | 'create' | 'download' | 'restore' | 'delete' | 'list' | 'status' | 'cancel';

const KEYED: ReadonlySet<BackupAction> = new Set(['stream', 'create', 'download', 'restore', 'delete']);

export interface PolicyRequest {
  pool: pg.Pool;
  config: Config;
  user: User | undefined;
  action: BackupAction;
  /** The BACKUP_KEY as given (body or X-Backup-Key); undefined when not given. */
  key?: string;
  via: 'http' | 'cli' | 'job';
  log: Logger;
  /**
   * Checks of the request itself (media type, body), run after the role checks and before the key is
   * looked at, so that a refusal says the most basic thing wrong first. Returns the key given.
   */
  readRequest?: () => string | undefined;
}

export function actorOf(user: User): Actor {
  return { id: user.id, username: user.username };
}

export async function authorizeBackupAction(req: PolicyRequest): Promise<Actor> {
  if (!req.user) throw new CofferError('E_UNAUTHENTICATED', 'authentication required: log in or send Authorization: Bearer <token>');
  const user = req.user;
  const actor = actorOf(user);
  const deny = async (err: CofferError): Promise<never> => {
    await writeBackupLog(req.pool, 'backup_denied', actor, { via: req.via, action: req.action, code: err.code, reason: err.message }).catch((e) =>
      req.log.error({ err: errorMessage(e) }, 'could not audit a denied backup action'),
    );
    throw err;
  };
  if (!user.isActive) await deny(new CofferError('E_FORBIDDEN', 'this account is deactivated'));
  if (!user.isSystemUser) await deny(new CofferError('E_FORBIDDEN', 'backups can only be taken and managed by system users'));
  if (!KEYED.has(req.action)) return actor;

  if (!req.config.backupKey) await deny(new CofferError('E_BACKUP_DISABLED', `backups are disabled: ${req.config.backupDisabledReason}`));
  if (req.readRequest) {
    try {
      req.key = req.readRequest();
    } catch (err) {
      if (isCofferError(err)) await deny(err);
      throw err;
    }
  }
  if (req.key === undefined) await deny(new CofferError('E_VALIDATION', req.action === 'download' || req.action === 'delete' ? 'the X-Backup-Key header is required' : 'key is required'));
  const wait = await countAttempt(req.pool, BACKUP_KEY_FAILURES, user.id);
  if (wait > 0) await deny(new CofferError('E_RATE_LIMITED', `too many wrong backup keys; try again in ${wait} s`, { details: { retryAfter: wait } }));
  if (!safeEqual(req.key!, req.config.backupKey!.reveal())) await deny(new CofferError('E_BACKUP_KEY_WRONG', 'wrong backup key'));
  await clearFailures(req.pool, BACKUP_KEY_FAILURES, user.id);
  return actor;
}

/** The key fields of a request body (which of them a body has depends on whether it seals or opens). */
export interface KeyInput {
  aes_key?: string;
  passphrase?: string;
  recipients?: string[];
  identities?: string[];
}

/**
 * The key a request gives: a raw AES key (hex/base64), a passphrase, age recipients (sealing) or age
 * identities (opening), one kind only. A backup given none is sealed to the configured recipients
 * (BACKUP_RECIPIENTS) when there are any, so the service never needs a secret that reads its backups.
 */
export function keySourceFrom(input: KeyInput, use: 'seal' | 'open', config: Pick<Config, 'backupRecipients'>): KeySource | undefined {
  const given = (['aes_key', 'passphrase', 'recipients', 'identities'] as const).filter((f) => input[f] !== undefined);
  if (given.length > 1) throw new CofferError('E_VALIDATION', `give only one of ${given.join(', ')}`);
  if (input.aes_key !== undefined) return { kind: 'raw', key: parseAesKey(input.aes_key) };
  if (input.passphrase !== undefined) {
    validatePassphrase(input.passphrase);
    return { kind: 'passphrase', passphrase: input.passphrase };
  }
  if (input.recipients !== undefined) {
    return { kind: 'recipients', recipients: uniqueRecipients(input.recipients.map((r, i) => parseRecipient(r, `recipients[${i}]`))) };
  }
  if (input.identities !== undefined) {
    return { kind: 'identities', identities: input.identities.map((r, i) => parseIdentity(r, `identities[${i}]`)) };
  }
  if (use === 'seal' && config.backupRecipients.length > 0) return { kind: 'recipients', recipients: config.backupRecipients };
  return undefined;
}

/** As keySourceFrom, but a bad key is audited as a denial like the other refusals. */
export async function keySourceOrDeny(req: PolicyRequest, actor: Actor, input: KeyInput, use: 'seal' | 'open'): Promise<KeySource | undefined> {
  try {
    return keySourceFrom(input, use, req.config);
  } catch (err) {
    if (isCofferError(err)) {
      await writeBackupLog(req.pool, 'backup_denied', actor, { via: req.via, action: req.action, code: err.code, reason: err.message }).catch(() => undefined);
    }
    throw err;
  }
}

/** At run time a job still needs its creator to be an active system user (CLI jobs have no user). */
export async function authorizeJobRun(pool: pg.Pool, createdById: string | null): Promise<void> {
  if (createdById === null) return;
  const res = await pool.query<{ is_active: boolean; is_system_user: boolean }>('SELECT is_active, is_system_user FROM users WHERE id = $1', [createdById]);
  const row = res.rows[0];
  // A user row that a restore removed is not a refusal: the job was authorized when it was accepted.
  if (row && (!row.is_active || !row.is_system_user)) {
    throw new CofferError('E_FORBIDDEN', 'the user who queued this job is no longer an active system user');
  }
}
