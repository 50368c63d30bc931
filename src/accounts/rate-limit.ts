import type pg from 'pg';

export interface RateLimitRule {
  bucket: string;
  limit: number;
  windowMs: number;
}

export const LOGIN_FAILURES: RateLimitRule = { bucket: 'login', limit: 10, windowMs: 15 * 60_000 };
export const BACKUP_KEY_FAILURES: RateLimitRule = { bucket: 'backup-key', limit: 5, windowMs: 15 * 60_000 };

const RULES = [LOGIN_FAILURES, BACKUP_KEY_FAILURES];

/** How often the running service removes expired rate-limit rows. */
export const SWEEP_INTERVAL_MS = 10 * 60_000;

/**
 * Counts an attempt before it is checked, in one statement, so parallel requests cannot all slip
 * under the limit; returns the seconds to wait when this attempt is over it (0: go ahead). A
 * successful attempt then clears the count with clearFailures.
 */
export async function countAttempt(db: pg.Pool, rule: RateLimitRule, subject: string): Promise<number> {
  const res = await db.query<{ hits: number; window_start: Date }>(
    `INSERT INTO rate_limits (bucket, subject, hits, window_start) VALUES ($1, $2, 1, now())
     ON CONFLICT (bucket, subject) DO UPDATE SET
       hits = CASE WHEN rate_limits.window_start < now() - make_interval(secs => $3::double precision / 1000) THEN 1 ELSE rate_limits.hits + 1 END,
       window_start = CASE WHEN rate_limits.window_start < now() - make_interval(secs => $3::double precision / 1000) THEN now() ELSE rate_limits.window_start END
     RETURNING hits, window_start`,
    [rule.bucket, subject, rule.windowMs],
  );
  const row = res.rows[0];
  if (row.hits <= rule.limit) return 0;
  return Math.max(1, Math.ceil((row.window_start.getTime() + rule.windowMs - Date.now()) / 1000));
}

export async function clearFailures(db: pg.Pool, rule: RateLimitRule, subject: string): Promise<void> {
  await db.query(`DELETE FROM rate_limits WHERE bucket = $1 AND subject = $2`, [rule.bucket, subject]);
}

/**
 * Removes the rows whose window has passed (they count for nothing: the next attempt starts a new
 * window); without it every client address and user name ever tried stays in the table. A bucket no
 * rule knows any more is kept for the longest window, then removed too. Returns the rows removed.
 */
export async function sweepRateLimits(db: pg.Pool, rules: RateLimitRule[] = RULES): Promise<number> {
  const longest = Math.max(...rules.map((r) => r.windowMs));
  const res = await db.query(
    `DELETE FROM rate_limits r
      WHERE r.window_start < now() - make_interval(secs => coalesce(
              (SELECT w.ms FROM unnest($1::text[], $2::double precision[]) AS w(bucket, ms) WHERE w.bucket = r.bucket),
              $3::double precision) / 1000)`,
    [rules.map((r) => r.bucket), rules.map((r) => r.windowMs), longest],
  );
  return res.rowCount ?? 0;
}
