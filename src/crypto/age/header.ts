/**
 * The textual age v1 header (C2SP age spec, "Header"): parsing with every rule of the ABNF (canonical
 * unpadded base64, 64-column bodies ending in a short line, a MAC line of 43 characters), writing, and
 * the header MAC. Parsing works on a prefix of the file and says when it needs more bytes.
 */
import { createHmac, hkdfSync } from 'node:crypto';
import { CofferError } from '../../core/errors';

export const AGE_PREFIX = 'age-encryption.org/';
export const AGE_MAGIC = Buffer.from(`${AGE_PREFIX}v1\n`, 'latin1');
export const AGE_ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----';
/** A header this long is not a backup's: it would hold thousands of recipients. */
export const MAX_AGE_HEADER = 1024 * 1024;
export const AGE_NONCE_SIZE = 16;
const MAC_MARK = '---';
const BODY_COLUMNS = 64;

export interface Stanza {
  type: string;
  /** Arguments after the type. */
  args: string[];
  body: Buffer;
}

export interface AgeHeader {
  stanzas: Stanza[];
  /** The header bytes the MAC covers: up to and including `---`. */
  authenticated: Buffer;
  mac: Buffer;
  /** Header length in bytes, the MAC line's newline included: the payload nonce starts here. */
  length: number;
}

function headerError(message: string): CofferError {
  return new CofferError('E_AGE_HEADER', `invalid age header: ${message}`);
}

const BASE64 = /^[A-Za-z0-9+/]*$/;

/** Canonical unpadded base64 (RFC 4648 3.5), or null. */
export function decodeBase64(s: string): Buffer | null {
  if (!BASE64.test(s) || s.length % 4 === 1) return null;
  const buf = Buffer.from(s, 'base64');
  return buf.toString('base64').replace(/=+$/, '') === s ? buf : null;
}

export function encodeBase64(buf: Buffer): string {
  return buf.toString('base64').replace(/=+$/, '');
}

function isVchars(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 33 || c > 126) return false;
  }
  return true;
}

/**
 * Parses the header at the start of `buf`. Returns null when `buf` ends before the header does (read
 * more and call again; `final` says there is no more, which makes it truncation). Throws for anything
 * that is not a valid v1 header, naming the line.
 */
export function parseAgeHeader(buf: Buffer, final = false): AgeHeader | null {
  const limit = Math.min(buf.length, MAX_AGE_HEADER);
  let pos = 0;
  let lineNo = 0;
  const need = (): null => {
    if (buf.length >= MAX_AGE_HEADER) throw headerError(`the header is longer than ${MAX_AGE_HEADER} bytes`);
    if (final) {
      throw new CofferError('E_CRYPT_TRUNCATED', `encrypted archive is truncated: it ends inside the age header (after ${buf.length} byte${buf.length === 1 ? '' : 's'}, at line ${lineNo + 1})`);
    }
    return null;
  };
  /** The next line without its LF, or null if it has not arrived yet. */
  const nextLine = (): string | null => {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0 || nl >= limit) return null;
    const line = buf.subarray(pos, nl).toString('latin1');
    pos = nl + 1;
    lineNo += 1;
    return line;
  };

  checkAgePrefix(buf);
  const version = nextLine();
  if (version === null) return need();
  if (version !== `${AGE_PREFIX}v1`) {
    const v = version.slice(AGE_PREFIX.length);
    throw new CofferError('E_AGE_UNSUPPORTED', `unsupported age format version ${JSON.stringify(isVchars(v) ? v.slice(0, 40) : '(not printable)')} (coffer reads age-encryption.org/v1)`);
  }
  const stanzas: Stanza[] = [];
  for (;;) {
    const start = pos;
    const line = nextLine();
    if (line === null) return need();
    if (line.startsWith('-> ')) {
      const args = line.slice(3).split(' ');
      if (!args.every(isVchars)) throw headerError(`line ${lineNo}: stanza arguments must be non-empty and printable, separated by single spaces`);
      const at = lineNo;
      const chunks: string[] = [];
      for (;;) {
        const body = nextLine();
        if (body === null) return need();
        if (body.length > BODY_COLUMNS || !BASE64.test(body)) {
          throw headerError(`line ${lineNo}: a stanza body line must be at most ${BODY_COLUMNS} base64 characters`);
        }
        chunks.push(body);
        if (body.length < BODY_COLUMNS) break;
      }
      const body = decodeBase64(chunks.join(''));
      if (body === null) throw headerError(`the body of the stanza at line ${at} is not canonical unpadded base64`);
      stanzas.push({ type: args[0], args: args.slice(1), body });
      continue;
    }
    if (line.startsWith(MAC_MARK)) {
      if (stanzas.length === 0) throw headerError('it has no recipient stanzas');
      const macText = line.slice(MAC_MARK.length + 1);
      const mac = line[MAC_MARK.length] === ' ' && macText.length === 43 ? decodeBase64(macText) : null;
      if (mac === null) throw headerError(`line ${lineNo}: the MAC line must be "--- " and 43 base64 characters`);
      return { stanzas, authenticated: Buffer.from(buf.subarray(0, start + MAC_MARK.length)), mac, length: pos };
    }
    throw headerError(`line ${lineNo} is neither a stanza ("-> ") nor the MAC line ("--- ")`);
  }
}

function agreesAsFarAsItGoes(buf: Buffer, text: string): boolean {
  const n = Math.min(buf.length, text.length);
  return n > 0 && buf.subarray(0, n).toString('latin1') === text.slice(0, n);
}

/** True when `buf` starts like an age file, binary or armored, as far as it goes. */
export function mayBeAge(buf: Buffer): boolean {
  return agreesAsFarAsItGoes(buf, AGE_PREFIX) || agreesAsFarAsItGoes(buf, AGE_ARMOR_BEGIN);
}

/** Throws unless `buf` starts like a binary age file (as far as it goes); armor gets its own message. */
export function checkAgePrefix(buf: Buffer): void {
  if (buf.length >= AGE_ARMOR_BEGIN.length && agreesAsFarAsItGoes(buf, AGE_ARMOR_BEGIN)) {
    throw new CofferError('E_AGE_UNSUPPORTED', 'this is an ASCII-armored age file (age -a); coffer reads binary age files: decode it first (strip the BEGIN and END lines and base64 -d, or age -d)');
  }
  if (agreesAsFarAsItGoes(buf, AGE_ARMOR_BEGIN)) return; // perhaps armored: wait for more
  if (!agreesAsFarAsItGoes(buf, AGE_PREFIX)) {
    throw new CofferError('E_AGE_NOT_AGE', 'not an age file (it does not start with "age-encryption.org/")');
  }
}

export function headerMacKey(fileKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', fileKey, Buffer.alloc(0), 'header', 32));
}

/** payload key = HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload"). */
export function agePayloadKey(fileKey: Buffer, nonce: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32));
}

export function ageHeaderMac(fileKey: Buffer, authenticated: Buffer): Buffer {
  return createHmac('sha256', headerMacKey(fileKey)).update(authenticated).digest();
}

/** The header for these stanzas, MAC included. */
export function encodeAgeHeader(stanzas: Stanza[], fileKey: Buffer): Buffer {
  let text = `${AGE_PREFIX}v1\n`;
  for (const s of stanzas) {
    text += `-> ${[s.type, ...s.args].join(' ')}\n`;
    const b64 = encodeBase64(s.body);
    for (let i = 0; i + BODY_COLUMNS <= b64.length; i += BODY_COLUMNS) text += b64.slice(i, i + BODY_COLUMNS) + '\n';
    text += b64.slice(b64.length - (b64.length % BODY_COLUMNS)) + '\n';
  }
  text += MAC_MARK;
  const authenticated = Buffer.from(text, 'latin1');
  return Buffer.concat([authenticated, Buffer.from(` ${encodeBase64(ageHeaderMac(fileKey, authenticated))}\n`, 'latin1')]);
}
