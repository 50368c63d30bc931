/** `backup-20261127T102105Z.zip` (or `.zip.crypt`): sortable, and safe in every file system. */
export function archiveFileName(at: Date, encrypted: boolean): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `backup-${stamp}.zip${encrypted ? '.crypt' : ''}`;
}
