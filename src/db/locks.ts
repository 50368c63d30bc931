/** Advisory lock keys (pg_advisory_lock's bigint space), one per kind of exclusive work. */
export const LOCKS = {
  migrate: 0x436f666665720001n,
  backup: 0x436f666665720002n,
  restore: 0x436f666665720003n,
  /** Creating or upgrading the operational schema (coffer_ops). */
  ops: 0x436f666665720004n,
  /** Held shared by every process that runs jobs, so a command can tell whether a worker is up. */
  worker: 0x436f666665720005n,
} as const;

/** A per-job advisory key (held by the process running the job, so a dead owner shows). */
export function jobLockKey(id: string): string {
  // 48 bits of the uuid under a fixed 16-bit prefix: distinct from LOCKS, positive, inside int8.
  return ((0x4a4fn << 48n) | BigInt('0x' + id.replace(/-/g, '').slice(0, 12))).toString();
}

export function lockKey(name: keyof typeof LOCKS): string {
  // bigint keys above 2^63 would overflow int8; these are below it. pg takes them as text.
  return LOCKS[name].toString();
}
