import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import { isoTime } from '../../core/time';
import { CofferError } from '../../core/errors';
import { verifyPassword } from '../../accounts/passwords';
import { clearFailures, countAttempt, LOGIN_FAILURES } from '../../accounts/rate-limit';
import { createSession, deleteSession } from '../../accounts/sessions';
import { findUserWithHash, type User } from '../../accounts/users';
import { parseInput, text } from '../../domain/input';
import { requireUser, SESSION_COOKIE } from '../auth';
import type { AppContext, AuthMethod } from '../context';

export const loginInput = z.object({ username: text(150).min(1), password: z.string().min(1).max(1024) });


/** A user as the API shows it (publicUser's keys are checked against it). */
export const publicUserSchema = z.object({
  id: z.string().describe('bigint id, as decimal text'),
  username: z.string(),
  is_active: z.boolean(),
  is_superuser: z.boolean(),
  is_system_user: z.boolean(),
  created_at: isoTime,
  last_login_at: isoTime.nullable(),
});
export const loginAnswer = z.object({ user: publicUserSchema, expires_at: isoTime.describe('when the session cookie expires') });
export const meAnswer = z.object({ user: publicUserSchema, auth: z.enum(['session', 'token'] satisfies AuthMethod[]) });

export function publicUser(u: User) {
  return {
    id: u.id,
    username: u.username,
    is_active: u.isActive,
    is_superuser: u.isSuperuser,
    is_system_user: u.isSystemUser,
    created_at: u.createdAt,
    last_login_at: u.lastLoginAt,
  } satisfies Record<keyof z.infer<typeof publicUserSchema>, unknown>;
}

function cookieIsSecure(ctx: AppContext, req: Request): boolean {
  return ctx.config.cookieSecure === 'auto' ? req.secure : ctx.config.cookieSecure;
}

export function authRoutes(ctx: AppContext): Router {
  const r = Router();

  r.post('/login', async (req: Request, res: Response) => {
    const input = parseInput(loginInput, req.body);
    const subject = `${req.ip}|${input.username.toLowerCase()}`;
    const wait = await countAttempt(ctx.pool, LOGIN_FAILURES, subject);
    if (wait > 0) throw new CofferError('E_RATE_LIMITED', `too many failed logins; try again in ${wait} s`, { details: { retryAfter: wait } });
    const found = await findUserWithHash(ctx.pool, input.username);
    // Unknown users are checked against a dummy hash so both answers take the same time.
    const ok = await verifyPassword(found?.passwordHash, input.password);
    if (!found || !ok || !found.user.isActive) throw new CofferError('E_BAD_CREDENTIALS', 'wrong username or password');
    await clearFailures(ctx.pool, LOGIN_FAILURES, subject);
    const { sessionId, expiresAt } = await createSession(ctx.pool, found.user.id, ctx.config.sessionTtlMs);
    await ctx.pool.query(`UPDATE users SET last_login_at = now() WHERE id = $1`, [found.user.id]);
    res.cookie(SESSION_COOKIE, sessionId, {
      httpOnly: true,
      sameSite: 'strict',
      secure: cookieIsSecure(ctx, req),
      expires: expiresAt,
      path: '/',
    });
    res.json({ user: publicUser(found.user), expires_at: expiresAt });
  });

  r.post('/logout', requireUser, async (req: Request, res: Response) => {
    if (req.sessionId) await deleteSession(ctx.pool, req.sessionId);
    res.clearCookie(SESSION_COOKIE, { httpOnly: true, sameSite: 'strict', secure: cookieIsSecure(ctx, req), path: '/' });
    res.status(204).end();
  });

  r.get('/me', requireUser, (req: Request, res: Response) => {
    res.json({ user: publicUser(req.user!), auth: req.authMethod });
  });

  return r;
}
