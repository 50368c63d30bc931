import type pg from 'pg';

export interface RateLimitRule {
  bucket: string;
  limit: number;
  windowMs: number;
}

export const LOGIN_FAILURES: RateLimitRule = { bucket: 'login', limit: 10, windowMs: 15 * 60_000 };
export const BACKUP_KEY_FAILURES: RateLimitRule = { bucket: 'backup-key', limit: 5, windowMs: 15 * 60_000 };

/** Seconds until the subject may try again, or 0 when it is under its limit. */
export async function retryAfter(db: pg.Pool, rule: RateLimitRule, subject: string): Promise<number> {
  const res = await db.query<{ hits: number; window_start: Date }>(
    `SELECT hits, window_start FROM rate_limits WHERE bucket = $1 AND subject = $2`,
    [rule.bucket, subject],
  );
  const row = res.rows[0];
  if (!row) return 0;
  const ends = row.window_start.getTime() + rule.windowMs;
  if (ends <= Date.now() || row.hits < rule.limit) return 0;
  return Math.ceil((ends - Date.now()) / 1000);
}

/** Counts one failure in a fixed window (a new window starts when the old one has passed). */
export async function recordFailure(db: pg.Pool, rule: RateLimitRule, subject: string): Promise<void> {
  await db.query(
    `INSERT INTO rate_limits (bucket, subject, hits, window_start) VALUES ($1, $2, 1, now())
     ON CONFLICT (bucket, subject) DO UPDATE SET
       hits = CASE WHEN rate_limits.window_start < now() - make_interval(secs => $3::double precision / 1000) THEN 1 ELSE rate_limits.hits + 1 END,
       window_start = CASE WHEN rate_limits.window_start < now() - make_interval(secs => $3::double precision / 1000) THEN now() ELSE rate_limits.window_start END`,
    [rule.bucket, subject, rule.windowMs],
  );
}

export async function clearFailures(db: pg.Pool, rule: RateLimitRule, subject: string): Promise<void> {
  await db.query(`DELETE FROM rate_limits WHERE bucket = $1 AND subject = $2`, [rule.bucket, subject]);
}
