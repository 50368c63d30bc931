import type pg from 'pg';
import { CofferError } from '../core/errors';
import { hashPassword, MIN_PASSWORD_LENGTH } from './passwords';

export type Role = 'regular' | 'superuser' | 'system';

export interface User {
  id: string;
  username: string;
  isActive: boolean;
  isSuperuser: boolean;
  isSystemUser: boolean;
  createdAt: Date;
  lastLoginAt: Date | null;
}

interface UserRow {
  id: string;
  username: string;
  password_hash: string;
  is_active: boolean;
  is_superuser: boolean;
  is_system_user: boolean;
  created_at: Date;
  last_login_at: Date | null;
}

export const USER_COLUMNS = 'id, username, password_hash, is_active, is_superuser, is_system_user, created_at, last_login_at';

export function toUser(row: UserRow): User {
  return {
    id: String(row.id),
    username: row.username,
    isActive: row.is_active,
    isSuperuser: row.is_superuser,
    isSystemUser: row.is_system_user,
    createdAt: row.created_at,
    lastLoginAt: row.last_login_at,
  };
}

const USERNAME_RE = /^[A-Za-z0-9_.@+-]{1,150}$/;

export function validateUsername(username: string): void {
  if (!USERNAME_RE.test(username)) {
    throw new CofferError('E_VALIDATION', 'username must be 1-150 characters of letters, digits and _ . @ + -');
  }
}

export function validatePassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new CofferError('E_VALIDATION', `password must be at least ${MIN_PASSWORD_LENGTH} characters`);
  }
}

export async function createUser(db: pg.Pool, input: { username: string; password: string; role: Role }): Promise<User> {
  validateUsername(input.username);
  validatePassword(input.password);
  const hash = await hashPassword(input.password);
  try {
    const res = await db.query<UserRow>(
      `INSERT INTO users (username, password_hash, is_superuser, is_system_user) VALUES ($1, $2, $3, $4) RETURNING ${USER_COLUMNS}`,
      [input.username, hash, input.role === 'superuser', input.role === 'system'],
    );
    return toUser(res.rows[0]);
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw new CofferError('E_CONFLICT', `user '${input.username}' already exists`);
    throw err;
  }
}

export async function findUserWithHash(db: pg.Pool, username: string): Promise<{ user: User; passwordHash: string } | undefined> {
  const res = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE username = $1`, [username]);
  return res.rows[0] ? { user: toUser(res.rows[0]), passwordHash: res.rows[0].password_hash } : undefined;
}

export async function getUser(db: pg.Pool, username: string): Promise<User> {
  const found = await findUserWithHash(db, username);
  if (!found) throw new CofferError('E_NOT_FOUND', `no user '${username}'`);
  return found.user;
}

export async function listUsers(db: pg.Pool): Promise<User[]> {
  const res = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users ORDER BY username`);
  return res.rows.map(toUser);
}

export async function setPassword(db: pg.Pool, username: string, password: string): Promise<void> {
  validatePassword(password);
  const hash = await hashPassword(password);
  const res = await db.query(`UPDATE users SET password_hash = $2 WHERE username = $1 RETURNING id`, [username, hash]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no user '${username}'`);
  // A new password ends every session of the user: whoever knew the old one is logged out.
  await db.query(`DELETE FROM sessions WHERE user_id = $1`, [res.rows[0].id]);
}

export async function deactivateUser(db: pg.Pool, username: string): Promise<void> {
  const res = await db.query(`UPDATE users SET is_active = false WHERE username = $1 RETURNING id`, [username]);
  if (res.rowCount === 0) throw new CofferError('E_NOT_FOUND', `no user '${username}'`);
  await db.query(`DELETE FROM sessions WHERE user_id = $1`, [res.rows[0].id]);
}
