import type { Encryption } from '../core/types';

/** `.zip`, `.zip.crypt` (format v1) or `.zip.age`. Only a name: readers go by the first bytes. */
export function archiveExtension(encryption: Encryption): string {
  return { none: '.zip', 'aes-256-gcm': '.zip.crypt', age: '.zip.age' }[encryption];
}

/** `backup-20261127T102105Z.zip` (or `.zip.crypt`, `.zip.age`): sortable, and safe in every file system. */
export function archiveFileName(at: Date, encryption: Encryption): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `backup-${stamp}${archiveExtension(encryption)}`;
}
