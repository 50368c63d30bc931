import type { Request, RequestHandler, Response } from 'express';
import { CofferError } from '../core/errors';
import { sendError } from './errors';

export interface BodyTimeouts {
  /** The whole body of an ordinary request must arrive within this time. */
  bodyMs: number;
  /** An upload (multipart) may take as long as it needs, but never stall longer than this. */
  uploadIdleMs: number;
}

/**
 * Bounds how long a client may take to send its request body. The server's own requestTimeout cannot
 * tell an upload from a login, so it stays off and this middleware decides per request: ordinary
 * requests get a deadline for the whole body, multipart uploads an idle timeout. Both end when the
 * body is in: a response (a backup streaming for minutes) is never timed.
 */
export function bodyTimeouts(t: BodyTimeouts): RequestHandler {
  return (req, res, next) => {
    if (req.complete) return next();
    const upload = typeof req.is('multipart/form-data') === 'string';
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const socket = req.socket;
    const onIdle = () => expire(req, res, `no upload data for ${t.uploadIdleMs} ms`);
    const finish = () => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      // The socket outlives the request (keep-alive): leave nothing attached to it.
      socket.off('close', finish);
      req.off('end', finish);
      req.off('close', finish);
      if (upload) {
        req.off('timeout', onIdle);
        socket.setTimeout(0);
      }
    };
    if (upload) {
      // A socket timeout restarts whenever data arrives (the HTTP parser touches it on every read).
      // Listening on the request (not the socket) keeps Node from destroying the socket unanswered.
      req.setTimeout(t.uploadIdleMs, onIdle);
    } else {
      timer = setTimeout(() => expire(req, res, `request body not received within ${t.bodyMs} ms`), t.bodyMs);
      timer.unref();
    }
    req.once('end', finish);
    req.once('close', finish);
    socket.once('close', finish);
    next();
  };
}

/** Answers 408 when nothing was sent yet, then closes the connection either way. */
function expire(req: Request, res: Response, why: string): void {
  if (req.complete) return;
  req.log?.info({ code: 'E_REQUEST_TIMEOUT' }, why);
  const socket = req.socket;
  if (res.headersSent || socket.destroyed) {
    socket.destroy();
    return;
  }
  res.setHeader('Connection', 'close');
  res.once('finish', () => socket.destroy());
  sendError(res, new CofferError('E_REQUEST_TIMEOUT', `${why}; the connection is closed`));
}
