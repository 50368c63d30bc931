/**
 * Typed errors with stable codes. Library code throws these; `src/cli` maps them to exit codes and
 * `src/http` maps them to HTTP statuses, each in exactly one place. Messages are one line, name the
 * thing that is wrong and, where there is one, the fix. They never contain secrets.
 */

export const ERROR_CODES = {
  // configuration and start-up
  E_CONFIG: { exit: 2, http: 500 },
  E_PORT_IN_USE: { exit: 3, http: 500 },
  E_DATA_DIR: { exit: 3, http: 500 },
  E_DATABASE_UNAVAILABLE: { exit: 3, http: 503 },
  // usage
  E_USAGE: { exit: 2, http: 400 },
  E_VALIDATION: { exit: 2, http: 400 },
  E_NOT_FOUND: { exit: 4, http: 404 },
  E_CONFLICT: { exit: 5, http: 409 },
  E_PAYLOAD_TOO_LARGE: { exit: 2, http: 413 },
  E_UNSUPPORTED_MEDIA_TYPE: { exit: 2, http: 415 },
  E_REQUEST_TIMEOUT: { exit: 2, http: 408 },
  // auth
  E_UNAUTHENTICATED: { exit: 6, http: 401 },
  E_FORBIDDEN: { exit: 6, http: 403 },
  E_BAD_CREDENTIALS: { exit: 6, http: 401 },
  E_RATE_LIMITED: { exit: 6, http: 429 },
  // backup
  E_BACKUP_DISABLED: { exit: 7, http: 403 },
  E_BACKUP_KEY_WRONG: { exit: 7, http: 400 },
  E_BACKUP_RUNNING: { exit: 8, http: 409 },
  E_BACKUP_FAILED: { exit: 9, http: 500 },
  E_AES_KEY_INVALID: { exit: 2, http: 400 },
  E_PASSPHRASE_INVALID: { exit: 2, http: 400 },
  E_OUTPUT: { exit: 2, http: 500 },
  // archive reading and restore
  E_ARCHIVE_INVALID: { exit: 10, http: 400 },
  E_ARCHIVE_TRUNCATED: { exit: 10, http: 400 },
  E_ARCHIVE_UNSAFE_ENTRY: { exit: 10, http: 400 },
  E_ARCHIVE_CHECKSUM: { exit: 10, http: 400 },
  E_ARCHIVE_ROWS: { exit: 10, http: 400 },
  E_ARCHIVE_BAD_ROW: { exit: 10, http: 400 },
  E_ARCHIVE_VERSION: { exit: 10, http: 400 },
  E_ARCHIVE_NEWER: { exit: 11, http: 400 },
  E_RESTORE_RUNNING: { exit: 8, http: 409 },
  E_RESTORE_FAILED: { exit: 12, http: 500 },
  E_ABORTED: { exit: 13, http: 400 },
  // encryption format
  E_CRYPT_NOT_COFFER: { exit: 14, http: 400 },
  E_CRYPT_UNSUPPORTED: { exit: 14, http: 400 },
  E_CRYPT_HEADER: { exit: 14, http: 400 },
  E_CRYPT_PARAMS: { exit: 14, http: 400 },
  E_CRYPT_KEY_REQUIRED: { exit: 15, http: 400 },
  E_CRYPT_KEY_MISMATCH: { exit: 15, http: 400 },
  E_CRYPT_WRONG_PASSPHRASE: { exit: 15, http: 400 },
  E_CRYPT_TRUNCATED: { exit: 16, http: 400 },
  E_CRYPT_TRAILING_DATA: { exit: 16, http: 400 },
  E_CRYPT_CORRUPT: { exit: 16, http: 400 },
  // age files and keys
  E_AGE_NOT_AGE: { exit: 14, http: 400 },
  E_AGE_HEADER: { exit: 14, http: 400 },
  E_AGE_UNSUPPORTED: { exit: 14, http: 400 },
  E_AGE_NO_MATCH: { exit: 15, http: 400 },
  E_AGE_HEADER_MAC: { exit: 16, http: 400 },
  E_AGE_RECIPIENT_INVALID: { exit: 2, http: 400 },
  E_AGE_IDENTITY_INVALID: { exit: 2, http: 400 },
  // stored backups and jobs
  E_STORE: { exit: 17, http: 500 },
  E_BACKUP_MISSING: { exit: 17, http: 410 },
  E_NOT_FINISHED: { exit: 5, http: 409 },
  E_INTERRUPTED: { exit: 18, http: 500 },
  E_CANCELED: { exit: 13, http: 409 },
  E_JOB_FAILED: { exit: 18, http: 500 },
  E_RANGE: { exit: 2, http: 416 },
  // anything else
  E_INTERNAL: { exit: 1, http: 500 },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class CofferError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'CofferError';
    this.code = code;
    this.details = options?.details;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }
}

export function isCofferError(err: unknown, code?: ErrorCode): err is CofferError {
  return err instanceof CofferError && (code === undefined || err.code === code);
}

/**
 * The message of anything thrown, without a stack; also of errors from another realm (a worker, a test
 * sandbox), which are not `instanceof Error` here.
 */
export function errorMessage(err: unknown): string {
  const message = (err as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' ? message : String(err);
}
