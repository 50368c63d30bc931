import type { ErrorRequestHandler, Request, Response } from 'express';
import { z } from 'zod';
import { CofferError, ERROR_CODES, isCofferError, type ErrorCode } from '../core/errors';

/** Every error answer's body (sendError writes it); the OpenAPI document's `Error`. */
export const errorBody = z.object({
  code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]).describe('stable error code (README: Error codes)'),
  message: z.string().describe('one line: what is wrong and, where there is one, the fix'),
});

type Mapped = { status: number; code: ErrorCode; message: string; expected: boolean };

/** A PostgreSQL error's SQLSTATE (pg's DatabaseError carries `code` and `severity`), if it is one. */
function sqlState(err: unknown): string | undefined {
  const e = err as { code?: unknown; severity?: unknown };
  return err instanceof Error && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && typeof e.severity === 'string' ? e.code : undefined;
}

/** The only place where errors become HTTP answers: `{code, message}`, never a stack trace. */
export function toHttpError(err: unknown): Mapped {
  if (isCofferError(err)) return { status: err.httpStatus, code: err.code, message: err.message, expected: err.httpStatus < 500 };
  const e = err as { type?: string; status?: number; expose?: boolean; errno?: number; message?: string };
  if (e?.type === 'entity.parse.failed') return { status: 400, code: 'E_VALIDATION', message: 'request body is not valid JSON', expected: true };
  if (e?.type === 'entity.too.large') return { status: 413, code: 'E_PAYLOAD_TOO_LARGE', message: 'request body is too large', expected: true };
  if (e?.type === 'request.aborted') return { status: 400, code: 'E_ABORTED', message: 'the client closed the request before its body was in', expected: true };
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') return { status: 415, code: 'E_UNSUPPORTED_MEDIA_TYPE', message: 'unsupported request encoding', expected: true };
  // The body parser's own 4xx errors (http-errors, `expose`): a Content-Encoding body that does not
  // decompress carries zlib's errno, the rest (aborted, wrong length) are the client's too.
  if (e?.expose === true && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    if (typeof e.errno === 'number') return { status: 400, code: 'E_VALIDATION', message: 'request body does not decompress as its Content-Encoding says', expected: true };
    if (e.status === 413) return { status: 413, code: 'E_PAYLOAD_TOO_LARGE', message: 'request body is too large', expected: true };
    if (e.status === 415) return { status: 415, code: 'E_UNSUPPORTED_MEDIA_TYPE', message: 'unsupported request body', expected: true };
    return { status: 400, code: 'E_VALIDATION', message: 'request body could not be read', expected: true };
  }
  // Safety net: PostgreSQL refused a value (class 22, data exception: out of range, bad encoding,
  // malformed text). The input rules should have said so first; either way it is the client's value.
  if (sqlState(err)?.startsWith('22')) return { status: 400, code: 'E_VALIDATION', message: 'a value in the request is malformed or out of range', expected: true };
  return { status: 500, code: 'E_INTERNAL', message: 'internal error (see the server log for details)', expected: false };
}

export const errorHandler: ErrorRequestHandler = (err, req: Request, res, _next) => {
  const mapped = toHttpError(err);
  if (mapped.expected) {
    const cause = isCofferError(err) ? undefined : { sqlState: sqlState(err), reason: (err as Error | undefined)?.message };
    req.log?.info({ code: mapped.code, status: mapped.status, ...cause }, mapped.message);
  } else {
    req.log?.error({ err }, 'request failed');
  }
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
  res.status(mapped.status).json({ code: mapped.code, message: mapped.message } satisfies z.infer<typeof errorBody>);
}
