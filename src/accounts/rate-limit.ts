import type pg from 'pg';

export interface RateLimitRule {
  bucket: string;
  limit: number;
  windowMs: number;
}

export const LOGIN_FAILURES: RateLimitRule = { bucket: 'login', limit: 10, windowMs: 15 * 60_000 };
export const BACKUP_KEY_FAILURES: RateLimitRule = { bucket: 'backup-key', limit: 5, windowMs: 15 * 60_000 };

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
