import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { CofferError } from '../core/errors';
import { userForSession, userForToken } from '../accounts/sessions';
import type { AppContext } from './context';

export const SESSION_COOKIE = 'sessionid';
const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) {
      const raw = part.slice(eq + 1).trim();
      try {
        return decodeURIComponent(raw);
      } catch {
        return raw;
      }
    }
  }
  return undefined;
}

/**
 * Resolves `Authorization: Bearer` or the session cookie to a user (req.user). Cookie-authenticated
 * state-changing requests must carry a JSON body or X-Requested-With: cross-site forms can send
 * neither without a CORS preflight, so a cookie alone cannot trigger an action.
 */
export function authenticate(ctx: AppContext): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    try {
      const authz = req.headers.authorization;
      if (authz !== undefined) {
        const m = /^Bearer\s+(\S+)$/i.exec(authz);
        if (!m) throw new CofferError('E_UNAUTHENTICATED', 'Authorization header must be "Bearer <token>"');
        const user = await userForToken(ctx.pool, m[1]);
        if (!user) throw new CofferError('E_UNAUTHENTICATED', 'invalid or expired API token');
        req.user = user;
        req.authMethod = 'token';
        return next();
      }
      const sessionId = readCookie(req.headers.cookie, SESSION_COOKIE);
      if (sessionId) {
        const user = await userForSession(ctx.pool, sessionId);
        if (user) {
          if (UNSAFE_METHODS.has(req.method) && !req.is('application/json') && !req.headers['x-requested-with']) {
            throw new CofferError('E_FORBIDDEN', 'cookie-authenticated requests that change state need Content-Type: application/json (or X-Requested-With)');
          }
          req.user = user;
          req.authMethod = 'session';
          req.sessionId = sessionId;
        }
      }
      next();
    } catch (err) {
      next(err);
    }
  };
}

export const requireUser: RequestHandler = (req, _res, next) => {
  if (!req.user) return next(new CofferError('E_UNAUTHENTICATED', 'authentication required: log in or send Authorization: Bearer <token>'));
  if (!req.user.isActive) return next(new CofferError('E_FORBIDDEN', 'this account is deactivated'));
  next();
};

export const requireSuperuser: RequestHandler = (req, res, next) =>
  requireUser(req, res, (err?: unknown) => {
    if (err) return next(err);
    if (!req.user!.isSuperuser) return next(new CofferError('E_FORBIDDEN', 'superuser required'));
    next();
  });
