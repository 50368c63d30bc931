import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { CofferError } from '../core/errors';
import { parseIdentity, parseRecipient } from './age/keys';
import type { KeySource } from './keys';

/**
 * A queued job needs the archive key (raw key, passphrase, recipients or identities) when it runs, possibly in another coffer
 * process. It is never stored as given: the job row holds it sealed with AES-256-GCM under a key
 * derived (HKDF-SHA-256) from a secret every coffer process on the database shares (BACKUP_KEY), or,
 * without one, from a secret of this process only. The job's row is deleted when it ends.
 */
const INFO = Buffer.from('coffer job secret v1');

function derive(secret: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, salt, INFO, 32));
}

type Serialized =
  | { kind: 'raw'; key: string }
  | { kind: 'passphrase'; passphrase: string }
  | { kind: 'recipients'; recipients: string[] }
  | { kind: 'identities'; identities: string[] };

function serialize(source: KeySource): Serialized {
  switch (source.kind) {
    case 'raw':
      return { kind: 'raw', key: source.key.toString('base64') };
    case 'passphrase':
      return { kind: 'passphrase', passphrase: source.passphrase };
    case 'recipients':
      return { kind: 'recipients', recipients: source.recipients.map((r) => r.text) };
    case 'identities':
      return { kind: 'identities', identities: source.identities.map((i) => i.reveal()) };
  }
}

function deserialize(plain: Serialized): KeySource {
  switch (plain.kind) {
    case 'raw':
      return { kind: 'raw', key: Buffer.from(plain.key, 'base64') };
    case 'passphrase':
      return { kind: 'passphrase', passphrase: plain.passphrase };
    case 'recipients':
      return { kind: 'recipients', recipients: plain.recipients.map((r) => parseRecipient(r, 'sealed job key')) };
    case 'identities':
      return { kind: 'identities', identities: plain.identities.map((i) => parseIdentity(i, 'sealed job key')) };
  }
}

export function sealKeySource(secret: Buffer, source: KeySource): string {
  const plain = serialize(source);
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
    return deserialize(JSON.parse(Buffer.concat([decipher.update(buf.subarray(44)), decipher.final()]).toString('utf8')) as Serialized);
  } catch {
    throw new CofferError('E_JOB_FAILED', 'the key of this job was sealed by a coffer process with another BACKUP_KEY (or without one), so this process cannot run it');
  }
}
