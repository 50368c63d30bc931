import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A new random credential (session id, API token, generated password). */
export function randomSecret(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** What the database stores in place of a credential. */
export function credentialHash(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Constant-time string comparison (hashes first, so lengths do not leak either). */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(credentialHash(a), credentialHash(b));
}
