import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { CofferError } from '../core/errors';
import { parseRecipient, parseRecipientsFile, uniqueRecipients, type AgeRecipient } from '../crypto/age/keys';
import { Secret } from './secret';

export { Secret } from './secret';

export const MIN_BACKUP_KEY_LENGTH = 20;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Names express's `trust proxy` understands for groups of addresses. */
const PROXY_NAMES = ['loopback', 'linklocal', 'uniquelocal'];

function isProxyAddress(item: string): boolean {
  if (PROXY_NAMES.includes(item)) return true;
  const [addr, mask, ...rest] = item.split('/');
  const family = net.isIP(addr);
  if (!family || rest.length) return false;
  if (mask === undefined) return true;
  if (/^\d{1,3}$/.test(mask)) return Number(mask) <= (family === 4 ? 32 : 128);
  // An IPv4 netmask (255.255.0.0) as express accepts it.
  return family === 4 && net.isIPv4(mask);
}

/**
 * TRUST_PROXY: how many proxy hops, or which proxy addresses, to believe X-Forwarded-For from. Never
 * "every hop": then the client picks its own address and rate limits count nothing. `true` is one hop
 * (one reverse proxy in front), `false` none. Returns the value for express, or what is wrong.
 */
export function parseTrustProxy(value: string): TrustProxy | string {
  const v = value.trim().toLowerCase();
  if (v === 'false' || v === '0') return false;
  if (v === 'true') return 1;
  if (/^\d+$/.test(v)) {
    const hops = Number(v);
    return hops <= 100 ? hops : 'a hop count must be at most 100';
  }
  const items = v.split(',').map((i) => i.trim());
  if (items.some((i) => i === '')) return 'empty entry in the list';
  const bad = items.filter((i) => !isProxyAddress(i));
  if (bad.length) {
    // Proxy addresses are not secret: naming the entry helps.
    return `must be true, false, a hop count, or a comma-separated list of proxy addresses, CIDRs or loopback/linklocal/uniquelocal (not ${bad.map((b) => JSON.stringify(b)).join(', ')})`;
  }
  return items;
}

/** What express's `trust proxy` gets: no hops, a hop count, or the proxy addresses to trust. */
export type TrustProxy = false | number | string[];

const schema = z.object({
  DATABASE_URL: z
    .string()
    .trim()
    .min(1)
    .refine((v) => /^postgres(ql)?:\/\//.test(v), 'must start with postgres:// or postgresql://')
    .optional(),
  DATA_DIR: z.string().trim().min(1).default('./var'),
  BACKUP_DIR: z.string().trim().min(1).optional(),
  PORT: z.coerce.number().int().min(0).max(65535).default(8000),
  HOST: z.string().trim().min(1).default('127.0.0.1'),
  BACKUP_KEY: z.string().optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
  UPLOAD_MAX_BYTES: z.coerce.number().int().positive().default(100 * 1024 * 1024),
  REQUEST_BODY_TIMEOUT_MS: z.coerce.number().int().positive().default(60_000),
  UPLOAD_IDLE_TIMEOUT_MS: z.coerce.number().int().positive().default(60_000),
  SESSION_TTL_HOURS: z.coerce.number().positive().default(24 * 14),
  COOKIE_SECURE: z.enum(['auto', 'true', 'false']).default('auto'),
  TRUST_PROXY: z
    .string()
    .trim()
    .default('false')
    .transform((v, ctx) => {
      const parsed = parseTrustProxy(v);
      if (typeof parsed === 'string') {
        ctx.addIssue({ code: 'custom', message: parsed });
        return z.NEVER;
      }
      return parsed;
    }),
  COFFER_AES_KEY: z.string().optional(),
  BACKUP_RECIPIENTS: z.string().optional(),
  BACKUP_RECIPIENTS_FILE: z.string().trim().min(1).optional(),
  COFFER_IDENTITY_FILE: z.string().trim().min(1).optional(),
  USER: z.string().trim().min(1).max(200).optional(),
});

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  /** Undefined: use the embedded PostgreSQL under `<dataDir>/pg`. */
  databaseUrl?: Secret;
  /** Absolute path. */
  dataDir: string;
  /** BACKUP_DIR: the local store of stored backups (absolute; default DATA_DIR/backups). */
  backupDir: string;
  port: number;
  host: string;
  /** Set only when it is usable (at least 20 characters). */
  backupKey?: Secret;
  /** Why backups are disabled, when they are. */
  backupDisabledReason?: string;
  logLevel: LogLevel;
  /** Whether LOG_LEVEL was set (CLI commands are quiet by default otherwise). */
  logLevelExplicit: boolean;
  uploadMaxBytes: number;
  /** REQUEST_BODY_TIMEOUT_MS: the whole body of an ordinary request must arrive within this. */
  requestBodyTimeoutMs: number;
  /** UPLOAD_IDLE_TIMEOUT_MS: an upload may not stall longer than this. */
  uploadIdleTimeoutMs: number;
  sessionTtlMs: number;
  cookieSecure: 'auto' | boolean;
  /** TRUST_PROXY: false, a hop count (true is 1), or proxy addresses/CIDRs/names; never "all". */
  trustProxy: TrustProxy;
  /** COFFER_AES_KEY: a raw archive key (hex or base64) for the CLI's encrypt/decrypt paths. */
  aesKey?: Secret;
  /**
   * BACKUP_RECIPIENTS and BACKUP_RECIPIENTS_FILE together (each once): when set, backups that are not
   * given a key are sealed to these age recipients, so the service needs no secret able to read them.
   */
  backupRecipients: AgeRecipient[];
  /** COFFER_IDENTITY_FILE: the age identity file the CLI's restore, verify and decrypt use by default. */
  identityFile?: string;
  /** USER: who runs CLI commands, for backup_log (falls back to the OS account). */
  operator?: string;
}

/** The environment variables coffer reads; everything else is ignored. */
export const CONFIG_VARIABLES = Object.keys(schema.shape);

/**
 * Reads and validates the configuration. This is the only place that reads process.env (callers pass
 * it in); every problem is reported at once, and values are never echoed back (they may be secrets).
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Record<string, string>> = {}): Config {
  const input: Record<string, string | undefined> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = overrides[name] ?? env[name];
    // An empty variable counts as unset, as docker-compose writes `VAR=` for absent values.
    input[name] = value === '' ? undefined : value;
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'config'}: ${issue.message}`);
    throw new CofferError('E_CONFIG', `invalid configuration: ${problems.join('; ')}`, { details: { problems } });
  }
  const v = parsed.data;
  const config: Config = {
    dataDir: path.resolve(v.DATA_DIR),
    backupDir: v.BACKUP_DIR ? path.resolve(v.BACKUP_DIR) : path.join(path.resolve(v.DATA_DIR), 'backups'),
    port: v.PORT,
    host: v.HOST,
    logLevel: v.LOG_LEVEL,
    logLevelExplicit: input.LOG_LEVEL !== undefined,
    uploadMaxBytes: v.UPLOAD_MAX_BYTES,
    requestBodyTimeoutMs: v.REQUEST_BODY_TIMEOUT_MS,
    uploadIdleTimeoutMs: v.UPLOAD_IDLE_TIMEOUT_MS,
    sessionTtlMs: v.SESSION_TTL_HOURS * 3600_000,
    cookieSecure: v.COOKIE_SECURE === 'auto' ? 'auto' : v.COOKIE_SECURE === 'true',
    trustProxy: v.TRUST_PROXY,
    backupRecipients: configuredRecipients(v.BACKUP_RECIPIENTS, v.BACKUP_RECIPIENTS_FILE),
  };
  if (v.COFFER_IDENTITY_FILE) config.identityFile = path.resolve(v.COFFER_IDENTITY_FILE);
  if (v.DATABASE_URL) config.databaseUrl = new Secret(v.DATABASE_URL);
  if (v.USER) config.operator = v.USER;
  if (v.COFFER_AES_KEY) config.aesKey = new Secret(v.COFFER_AES_KEY);
  if (v.BACKUP_KEY === undefined) {
    config.backupDisabledReason = 'BACKUP_KEY is not set';
  } else if (v.BACKUP_KEY.length < MIN_BACKUP_KEY_LENGTH) {
    config.backupDisabledReason = `BACKUP_KEY is shorter than ${MIN_BACKUP_KEY_LENGTH} characters`;
  } else {
    config.backupKey = new Secret(v.BACKUP_KEY);
  }
  return config;
}

/** BACKUP_RECIPIENTS (separated by commas, spaces or newlines) and the recipients file, checked now. */
function configuredRecipients(list: string | undefined, file: string | undefined): AgeRecipient[] {
  const out: AgeRecipient[] = [];
  try {
    const items = (list ?? '').split(/[\s,]+/).filter((x) => x !== '');
    items.forEach((item, i) => out.push(parseRecipient(item, `BACKUP_RECIPIENTS entry ${i + 1}`)));
    if (file !== undefined) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        throw new CofferError('E_CONFIG', `BACKUP_RECIPIENTS_FILE: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      out.push(...parseRecipientsFile(text, `BACKUP_RECIPIENTS_FILE ${file}`));
    }
  } catch (err) {
    if (err instanceof CofferError && err.code !== 'E_CONFIG') throw new CofferError('E_CONFIG', `invalid configuration: ${err.message}`);
    throw err;
  }
  return uniqueRecipients(out);
}

/** Variables a child process such as PostgreSQL may see: locale, time zone and PATH, nothing else. */
const CHILD_VARIABLE = /^(PATH|LANG|LANGUAGE|LC_[A-Z]+|TZ|PGTZ)$/;

/**
 * The environment for the embedded PostgreSQL (initdb, postgres): a child would otherwise inherit
 * coffer's whole environment, secrets included, readable in /proc/<pid>/environ and, through
 * pg_read_binary_file, by a database superuser.
 */
export function childProcessEnvironment(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (value !== undefined && CHILD_VARIABLE.test(name)) out[name] = value;
  return out;
}
