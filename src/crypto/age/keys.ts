/**
 * age X25519 recipients (`age1…`) and identities (`AGE-SECRET-KEY-1…`): their text forms, the files
 * that hold them, and wrapping a file key to a recipient (C2SP age spec, "The X25519 recipient type").
 * Built on Node's crypto only. An identity's secret never leaves its object by accident: it has no
 * enumerable fields, and printing or JSON-encoding it shows only its recipient.
 */
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import { CofferError } from '../../core/errors';
import { bech32Decode, bech32Encode } from './bech32';

const RECIPIENT_HRP = 'age';
const IDENTITY_HRP = 'age-secret-key-';
const X25519_INFO = 'age-encryption.org/v1/X25519';
/** DER prefixes of an X25519 key: Node imports raw keys through these. */
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const ZERO_NONCE = Buffer.alloc(12);
export const FILE_KEY_SIZE = 16;

function publicKeyObject(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

function privateKeyObject(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function rawPublicKey(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length));
}

export class AgeRecipient {
  readonly text: string;
  constructor(readonly publicKey: Buffer) {
    this.text = bech32Encode(RECIPIENT_HRP, publicKey);
  }
  toString(): string {
    return this.text;
  }
}

export class AgeIdentity {
  readonly #secret: Buffer;
  readonly #key: KeyObject;
  readonly recipient: AgeRecipient;

  constructor(secret: Buffer) {
    this.#secret = Buffer.from(secret);
    this.#key = privateKeyObject(this.#secret);
    this.recipient = new AgeRecipient(rawPublicKey(createPublicKey(this.#key)));
  }

  /** The `AGE-SECRET-KEY-1…` form: for writing an identity file, never for messages or logs. */
  reveal(): string {
    return bech32Encode(IDENTITY_HRP, this.#secret).toUpperCase();
  }

  /** X25519(identity, share). */
  sharedSecret(share: Buffer): Buffer {
    return diffieHellman({ privateKey: this.#key, publicKey: publicKeyObject(share) });
  }

  toString(): string {
    return `[age identity for ${this.recipient.text}]`;
  }
  toJSON(): string {
    return this.toString();
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

export function generateAgeIdentity(): AgeIdentity {
  const { privateKey } = generateKeyPairSync('x25519');
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  return new AgeIdentity(der.subarray(PKCS8_PREFIX.length));
}

/** `where` names the source (a flag, a file and line, a request field) in the message. */
export function parseRecipient(text: string, where: string): AgeRecipient {
  const s = text.trim();
  const bad = (why: string) => new CofferError('E_AGE_RECIPIENT_INVALID', `${where}: not an age recipient: ${why}`);
  if (s.length === 0) throw bad('it is empty');
  if (s.startsWith('ssh-')) throw bad('SSH keys are not supported; give an X25519 recipient (age1…, from age-keygen or coffer keygen --age)');
  if (s.toUpperCase().startsWith('AGE-SECRET-KEY-')) throw bad('this is an identity (a secret key), not a recipient: give its public key (age1…), and keep the identity secret');
  if (!s.toLowerCase().startsWith('age1')) throw bad('it does not start with "age1"');
  const decoded = bech32Decode(s);
  if (!decoded.ok) throw bad(decoded.problem);
  if (decoded.hrp !== RECIPIENT_HRP) {
    if (decoded.hrp.startsWith('age1')) throw bad(`recipient type "${decoded.hrp}" (a plugin or post-quantum recipient) is not supported; coffer seals to X25519 recipients (age1…)`);
    throw bad(`it starts with "${decoded.hrp}1", not "age1"`);
  }
  if (decoded.data.length !== 32) throw bad(`it holds ${decoded.data.length} bytes, an X25519 recipient holds 32`);
  return new AgeRecipient(decoded.data);
}

export function parseIdentity(text: string, where: string): AgeIdentity {
  const s = text.trim();
  const bad = (why: string) => new CofferError('E_AGE_IDENTITY_INVALID', `${where}: not an age identity: ${why}`);
  if (s.length === 0) throw bad('it is empty');
  if (s.toLowerCase().startsWith('age1')) throw bad('this is a recipient (a public key); restore, verify and decrypt need the identity (AGE-SECRET-KEY-1…)');
  if (s.toUpperCase().startsWith('AGE-PLUGIN-')) throw bad('plugin identities are not supported; coffer reads X25519 identities (AGE-SECRET-KEY-1…)');
  if (s.startsWith('-----BEGIN')) throw bad('SSH and PEM keys are not supported; give an X25519 identity (AGE-SECRET-KEY-1…)');
  const decoded = bech32Decode(s);
  if (!decoded.ok) throw bad(decoded.problem);
  if (decoded.hrp !== IDENTITY_HRP) throw bad('it does not start with "AGE-SECRET-KEY-1"');
  if (decoded.data.length !== 32) throw bad(`it holds ${decoded.data.length} bytes, an X25519 identity holds 32`);
  return new AgeIdentity(decoded.data);
}

/** The meaningful lines of an age recipients or identity file: `#` comments and blank lines skipped. */
function keyLines(text: string): Array<{ line: number; value: string }> {
  return text
    .split('\n')
    .map((raw, i) => ({ line: i + 1, value: raw.replace(/\r$/, '').trim() }))
    .filter((l) => l.value !== '' && !l.value.startsWith('#'));
}

/** A recipients file as `age -R` reads it: one recipient a line. */
export function parseRecipientsFile(text: string, where: string): AgeRecipient[] {
  const lines = keyLines(text);
  if (lines.length === 0) throw new CofferError('E_AGE_RECIPIENT_INVALID', `${where}: holds no recipients`);
  return lines.map((l) => parseRecipient(l.value, `${where} line ${l.line}`));
}

/** An identity file as age-keygen writes it (comments, then AGE-SECRET-KEY-1… lines). */
export function parseIdentityFile(text: string, where: string): AgeIdentity[] {
  const lines = keyLines(text);
  if (lines.length === 0) throw new CofferError('E_AGE_IDENTITY_INVALID', `${where}: holds no identities`);
  return lines.map((l) => parseIdentity(l.value, `${where} line ${l.line}`));
}

/** The same recipients once each, in the order first given. */
export function uniqueRecipients(list: readonly AgeRecipient[]): AgeRecipient[] {
  const seen = new Map<string, AgeRecipient>();
  for (const r of list) if (!seen.has(r.text)) seen.set(r.text, r);
  return [...seen.values()];
}

function wrapKeyFor(shared: Buffer, share: Buffer, recipientKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([share, recipientKey]), X25519_INFO, 32));
}

/** An X25519 stanza's share and body for a recipient. */
export function wrapFileKey(fileKey: Buffer, recipient: AgeRecipient): { share: Buffer; body: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const share = rawPublicKey(publicKey);
  const shared = diffieHellman({ privateKey, publicKey: publicKeyObject(recipient.publicKey) });
  const cipher = createCipheriv('chacha20-poly1305', wrapKeyFor(shared, share, recipient.publicKey), ZERO_NONCE, { authTagLength: 16 });
  const body = Buffer.concat([cipher.update(fileKey), cipher.final(), cipher.getAuthTag()]);
  return { share, body };
}

/**
 * The file key in an X25519 stanza, or null when it is not addressed to this identity. A share whose
 * shared secret is all zero is refused (the spec requires it: such a share is a low-order point).
 */
export function unwrapFileKey(identity: AgeIdentity, share: Buffer, body: Buffer, stanzaNumber: number): Buffer | null {
  let shared: Buffer;
  try {
    shared = identity.sharedSecret(share);
  } catch {
    shared = Buffer.alloc(32);
  }
  if (shared.every((b) => b === 0)) {
    throw new CofferError('E_AGE_HEADER', `age header stanza ${stanzaNumber} (X25519) has an invalid ephemeral share (a low-order point)`);
  }
  const decipher = createDecipheriv('chacha20-poly1305', wrapKeyFor(shared, share, identity.recipient.publicKey), ZERO_NONCE, { authTagLength: 16 });
  decipher.setAuthTag(body.subarray(FILE_KEY_SIZE));
  const fileKey = decipher.update(body.subarray(0, FILE_KEY_SIZE));
  try {
    decipher.final();
  } catch {
    return null;
  }
  return fileKey;
}
