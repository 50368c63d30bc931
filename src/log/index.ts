import pino, { type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from '../config';

export type { Logger } from 'pino';

/** Paths whose values are replaced before a log line is written: credentials and keys. */
export const REDACT_PATHS = [
  'req.headers.cookie',
  'req.headers.authorization',
  'res.headers["set-cookie"]',
  'headers.cookie',
  'headers.authorization',
  '*.password',
  '*.key',
  '*.aes_key',
  '*.passphrase',
  '*.token',
  '*.sessionid',
  '*.backupKey',
  '*.databaseUrl',
  'password',
  'key',
  'aes_key',
  'passphrase',
  'token',
];

/**
 * The logger factory. Loggers are passed to the code that uses them, never imported as a global.
 * Logs go to stderr, so that commands that write an archive to stdout stay clean.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { app: 'coffer' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that drops everything, for tests and library callers that want silence. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
