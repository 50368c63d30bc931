import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { CofferError } from '../core/errors';
import type { KeySource } from './keys';

/**
 * A queued job needs the archive key (raw key or passphrase) when it runs, possibly in another coffer
 * process. It is never stored as given: the job row holds it sealed with AES-256-GCM under a key
 * derived (HKDF-SHA-256) from a secret every coffer process on the database shares (BACKUP_KEY), or,
 * without one, from a secret of this process only. The job's row is deleted when it ends.
 */
const INFO = Buffer.from('coffer job secret v1');

function derive(secret: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, salt, INFO, 32));
}

type Serialized = { kind: 'raw'; key: string } | { kind: 'passphrase'; passphrase: string };

export function sealKeySource(secret: Buffer, source: KeySource): string {
  const plain: Serialized = source.kind === 'raw' ? { kind: 'raw', key: source.key.toString('base64') } : { kind: 'passphrase', passphrase: source.passphrase };
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', derive(secret, salt), iv);
  const ct = Buffer.concat([cipher.update(JSON.stringify(plain), 'utf8'), cipher.final()]);
  return Buffer.concat([salt, iv, cipher.getAuthTag(), ct]).toString('base64');
}

export function openSealedKeySource(secret: Buffer, sealed: string): KeySource {
  const buf = Buffer.from(sealed, 'base64');
  try {
    const salt = buf.subarray(0, 16);
    const iv = buf.subarray(16, 28);
    const tag = buf.subarray(28, 44);
    const decipher = createDecipheriv('aes-256-gcm', derive(secret, salt), iv);
    decipher.setAuthTag(tag);
    const plain = JSON.parse(Buffer.concat([decipher.update(buf.subarray(44)), decipher.final()]).toString('utf8')) as Serialized;
    return plain.kind === 'raw' ? { kind: 'raw', key: Buffer.from(plain.key, 'base64') } : { kind: 'passphrase', passphrase: plain.passphrase };
  } catch {
    throw new CofferError('E_JOB_FAILED', 'the key of this job was sealed by a coffer process with another BACKUP_KEY (or without one), so this process cannot run it');
  }
}
