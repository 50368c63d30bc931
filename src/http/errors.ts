import type { ErrorRequestHandler, Request, Response } from 'express';
import { CofferError, isCofferError } from '../core/errors';

/** The only place where errors become HTTP answers: `{code, message}`, never a stack trace. */
export function toHttpError(err: unknown): { status: number; code: string; message: string; expected: boolean } {
  if (isCofferError(err)) return { status: err.httpStatus, code: err.code, message: err.message, expected: err.httpStatus < 500 };
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.parse.failed') return { status: 400, code: 'E_VALIDATION', message: 'request body is not valid JSON', expected: true };
  if (e?.type === 'entity.too.large') return { status: 413, code: 'E_PAYLOAD_TOO_LARGE', message: 'request body is too large', expected: true };
  if (e?.type === 'request.aborted') return { status: 400, code: 'E_ABORTED', message: 'the client closed the request before its body was in', expected: true };
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') return { status: 415, code: 'E_UNSUPPORTED_MEDIA_TYPE', message: 'unsupported request encoding', expected: true };
  return { status: 500, code: 'E_INTERNAL', message: 'internal error (see the server log for details)', expected: false };
}

export const errorHandler: ErrorRequestHandler = (err, req: Request, res, _next) => {
  const mapped = toHttpError(err);
  if (mapped.expected) req.log?.info({ code: mapped.code, status: mapped.status }, mapped.message);
  else req.log?.error({ err }, 'request failed');
  if (res.headersSent) {
    // Part of an answer is out; the only honest thing left is to cut the connection.
    res.destroy();
    return;
  }
  sendError(res, err);
};

/** Writes the JSON answer for an error (headers not sent yet): `{code, message}` with its status. */
export function sendError(res: Response, err: unknown): void {
  const mapped = toHttpError(err);
  if (err instanceof CofferError && err.code === 'E_RATE_LIMITED' && typeof err.details?.retryAfter === 'number') {
    res.setHeader('Retry-After', String(err.details.retryAfter));
  }
  res.status(mapped.status).json({ code: mapped.code, message: mapped.message });
}
