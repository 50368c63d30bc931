import { CofferError } from '../core/errors';

export const MIN_PASSPHRASE_LENGTH = 12;
export const MAX_PASSPHRASE_LENGTH = 1024;

/** An archive kept offsite is open to offline guessing: refuse passphrases too short to resist it. */
export function validatePassphrase(passphrase: string): void {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new CofferError('E_PASSPHRASE_INVALID', `passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters (got ${passphrase.length})`);
  }
  if (passphrase.length > MAX_PASSPHRASE_LENGTH) {
    throw new CofferError('E_PASSPHRASE_INVALID', `passphrase must be at most ${MAX_PASSPHRASE_LENGTH} characters`);
  }
}
