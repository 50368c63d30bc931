/** Advisory lock keys (pg_advisory_lock's bigint space), one per kind of exclusive work. */
export const LOCKS = {
  migrate: 0x436f666665720001n,
  backup: 0x436f666665720002n,
  restore: 0x436f666665720003n,
} as const;

export function lockKey(name: keyof typeof LOCKS): string {
  // bigint keys above 2^63 would overflow int8; these are below it. pg takes them as text.
  return LOCKS[name].toString();
}
