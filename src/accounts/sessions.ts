import type pg from 'pg';
import { credentialHash, randomSecret } from './secrets';
import { toUser, USER_COLUMNS, type User } from './users';

export const TOKEN_PREFIX = 'cft_';

export async function createSession(db: pg.Pool, userId: string, ttlMs: number): Promise<{ sessionId: string; expiresAt: Date }> {
  const sessionId = randomSecret();
  const expiresAt = new Date(Date.now() + ttlMs);
  await db.query(`INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, $3)`, [credentialHash(sessionId), userId, expiresAt]);
  // Expired sessions are swept on login rather than by a timer: no background work to manage.
  await db.query(`DELETE FROM sessions WHERE expires_at < now()`);
  return { sessionId, expiresAt };
}

export async function userForSession(db: pg.Pool, sessionId: string): Promise<User | undefined> {
  const res = await db.query(
    `SELECT ${USER_COLUMNS.split(', ').map((c) => 'u.' + c).join(', ')}
       FROM sessions s JOIN users u ON u.id = s.user_id
      WHERE s.id_hash = $1 AND s.expires_at > now()`,
    [credentialHash(sessionId)],
  );
  return res.rows[0] ? toUser(res.rows[0]) : undefined;
}

export async function deleteSession(db: pg.Pool, sessionId: string): Promise<void> {
  await db.query(`DELETE FROM sessions WHERE id_hash = $1`, [credentialHash(sessionId)]);
}

export async function createToken(db: pg.Pool, userId: string, name = ''): Promise<string> {
  const token = TOKEN_PREFIX + randomSecret();
  await db.query(`INSERT INTO api_tokens (user_id, token_hash, name) VALUES ($1, $2, $3)`, [userId, credentialHash(token), name]);
  return token;
}

export async function userForToken(db: pg.Pool, token: string): Promise<User | undefined> {
  const res = await db.query(
    `UPDATE api_tokens t SET last_used_at = now()
       FROM users u
      WHERE t.token_hash = $1 AND u.id = t.user_id AND (t.expires_at IS NULL OR t.expires_at > now())
      RETURNING ${USER_COLUMNS.split(', ').map((c) => 'u.' + c).join(', ')}`,
    [credentialHash(token)],
  );
  return res.rows[0] ? toUser(res.rows[0]) : undefined;
}
