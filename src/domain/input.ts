import { z } from 'zod';
import { CofferError } from '../core/errors';

/**
 * Input rules shared by the domain schemas. They refuse, as E_VALIDATION, what PostgreSQL would refuse
 * later with an error that looks like a server fault: NUL characters (text and jsonb cannot hold
 * them), lone UTF-16 surrogates (jsonb cannot hold them), ids and numbers beyond their column's range,
 * and JSON nested deeper than anyone needs (PostgreSQL's parser would run out of stack).
 */

/** Deepest nesting accepted in a JSON document (settings, data); the top-level object is depth 1. */
export const MAX_JSON_DEPTH = 64;

const BIGINT_MAX = 2n ** 63n - 1n;
const INT4_MIN = -(2 ** 31);
const INT4_MAX = 2 ** 31 - 1;

function hasNul(s: string): boolean {
  return s.includes('\u0000');
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}

/** Text for a `text` column: at most `max` characters, no NUL. */
export function text(max: number) {
  return z
    .string()
    .max(max)
    .refine((s) => !hasNul(s), 'must not contain NUL (\\u0000) characters');
}

/** A positive id of a `bigint` column, as a number or as decimal text (ids above 2^53 stay text). */
export const bigintId = z.union([
  z
    .string()
    .regex(/^[1-9]\d{0,18}$/, 'must be a positive whole number')
    .refine((s) => !/^\d+$/.test(s) || BigInt(s) <= BIGINT_MAX, 'is too large for an id'),
  z.number().int().positive(),
]);

/** A whole number for an `integer` column. */
export const int4 = z.number().int().min(INT4_MIN).max(INT4_MAX);

/** Why a JSON value cannot be stored as jsonb, or null when it can. Iterative: depth is bounded anyway. */
function jsonProblem(value: unknown): string | null {
  const stack: { v: unknown; depth: number; path: string }[] = [{ v: value, depth: 1, path: '' }];
  while (stack.length > 0) {
    const { v, depth, path } = stack.pop()!;
    if (typeof v === 'string') {
      if (hasNul(v)) return `${path || 'value'}: strings must not contain NUL (\\u0000) characters`;
      if (!isWellFormed(v)) return `${path || 'value'}: strings must be well-formed Unicode (no lone surrogates)`;
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth > MAX_JSON_DEPTH) return `${path}: nested deeper than ${MAX_JSON_DEPTH} levels`;
    for (const [k, child] of Object.entries(v)) {
      const childPath = Array.isArray(v) ? `${path}[${k}]` : `${path}${path ? '.' : ''}${k}`;
      if (!Array.isArray(v) && (hasNul(k) || !isWellFormed(k))) return `${path || 'value'}: keys must be well-formed Unicode without NUL characters`;
      stack.push({ v: child, depth: depth + 1, path: childPath.slice(0, 200) });
    }
  }
  return null;
}

/** A JSON object for a `jsonb` column. */
export const jsonObject = z.record(z.string(), z.unknown()).superRefine((value, ctx) => {
  const problem = jsonProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** Parses a request body against a schema; every problem is named in one E_VALIDATION message. */
export function parseInput<T extends z.ZodTypeAny>(schema: T, body: unknown): z.infer<T> {
  const parsed = schema.safeParse(body ?? {});
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
    throw new CofferError('E_VALIDATION', msg);
  }
  return parsed.data;
}
