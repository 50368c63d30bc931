/**
 * age keys: Bech32 (BIP 173 vectors), the spec's known answer, agreement with the real age-keygen,
 * recipients and identity files, and the rule that an identity's secret never shows up in a message,
 * a log line or a JSON document.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { format, inspect, promisify } from 'node:util';
import {
  generateAgeIdentity,
  parseIdentity,
  parseIdentityFile,
  parseRecipient,
  parseRecipientsFile,
  uniqueRecipients,
} from '../../src/crypto';
import { bech32Decode, bech32Encode } from '../../src/crypto/age/bech32';
import { expectCode } from './helpers';

const execFileP = promisify(execFile);

/** The age spec's X25519 known answer (the secret is 32 bytes of 0x42). */
const SPEC_IDENTITY = 'AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX';
const SPEC_RECIPIENT = 'age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj';
const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

/** Replaces the character at `i`. */
function withChar(s: string, i: number, c: string): string {
  return s.slice(0, i) + c + s.slice(i + 1);
}

/** BIP 173's checksum, written out here independently, to build strings the decoder must refuse. */
function bip173Checksum(hrp: string, words: number[]): string {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  const values = [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31), ...words, 0, 0, 0, 0, 0, 0];
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i += 1) if ((top >>> i) & 1) chk ^= gen[i];
  }
  chk ^= 1;
  let out = '';
  for (let i = 0; i < 6; i += 1) out += CHARSET[(chk >>> (5 * (5 - i))) & 31];
  return out;
}

describe('Bech32 (BIP 173)', () => {
  const valid = [
    'A12UEL5L',
    'a12uel5l',
    'an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs',
    'abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw',
    '11' + 'q'.repeat(82) + 'c8247j',
    'split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w',
    '?1ezyfcl',
  ];

  test.each(valid)('valid: %s decodes, and encodes back to its lowercase form', (s) => {
    const decoded = bech32Decode(s);
    if (!decoded.ok) throw new Error(`${s}: ${decoded.problem}`);
    expect(decoded.hrp).toBe(s.slice(0, s.lastIndexOf('1')).toLowerCase());
    expect(bech32Encode(decoded.hrp, decoded.data)).toBe(s.toLowerCase());
  });

  test('the data of "abcdef1qpzry…" is the 32 characters in order, 0 to 31', () => {
    const decoded = bech32Decode('abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw');
    expect(decoded.ok && decoded.data.toString('hex')).toBe('00443214c74254b635cf84653a56d7c675be77df');
    expect(bech32Encode('abcdef', Buffer.from('00443214c74254b635cf84653a56d7c675be77df', 'hex'))).toBe(
      'abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw',
    );
  });

  test.each([
    ['\x201nwldj5', 'HRP character out of range (space)', /character 1 is not printable ASCII/],
    ['\x7f1axkwrx', 'HRP character out of range (DEL)', /character 1 is not printable ASCII/],
    ['\x801eym55h', 'HRP character out of range (0x80)', /character 1 is not printable ASCII/],
    ['pzry9x0s0muk', 'no separator character', /no "1" separator/],
    ['1pzry9x0s0muk', 'empty HRP', /no "1" separator after a prefix/],
    ['x1b4n0q5v', 'invalid data character', /character 3 is not a Bech32 character/],
    ['li1dgmt3', 'too short checksum', /too short to hold a checksum/],
    ['de1lg7wt\xff', 'invalid character in checksum', /character 9 is not printable ASCII/],
    ['A1G7SGD8', 'checksum calculated with the uppercase form of the HRP', /checksum does not match/],
    ['10a06t8', 'empty HRP', /no "1" separator after a prefix/],
    ['1qzzfhee', 'empty HRP', /no "1" separator after a prefix/],
    ['a12UEL5L', 'mixed case', /mixes upper and lower case/],
    ['A12uel5l', 'mixed case', /mixes upper and lower case/],
    ['abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxx', 'bad checksum', /checksum does not match/],
  ])('invalid: %j (%s)', (s, _why, problem) => {
    const decoded = bech32Decode(s);
    expect(decoded.ok).toBe(false);
    if (!decoded.ok) expect(decoded.problem).toMatch(problem);
  });

  test('every single-character substitution in a recipient is caught by the checksum', () => {
    let tried = 0;
    for (let i = 4; i < SPEC_RECIPIENT.length; i += 1) {
      for (const c of CHARSET) {
        if (c === SPEC_RECIPIENT[i]) continue;
        const decoded = bech32Decode(withChar(SPEC_RECIPIENT, i, c));
        if (decoded.ok) throw new Error(`substitution at ${i} by ${c} was accepted`);
        tried += 1;
      }
    }
    expect(tried).toBe(58 * 31);
  });

  test('a valid checksum over data with non-zero padding bits is refused', () => {
    // One 5-bit word is 5 bits: not a whole byte and not zero padding.
    expect(bech32Decode('a1p' + bip173Checksum('a', [1]))).toEqual({ ok: false, problem: 'its data has invalid padding' });
    // Two words, 10 bits: one byte and 2 padding bits, which must be zero ("qq" is 0x00 and ok).
    expect(bech32Decode('a1qq' + bip173Checksum('a', [0, 0]))).toEqual({ ok: true, hrp: 'a', data: Buffer.from([0]) });
    expect(bech32Decode('a1qp' + bip173Checksum('a', [0, 1])).ok).toBe(false);
    // age has no 90-character limit: a 74-character identity and longer strings are fine.
    const long = bech32Encode('age', Buffer.alloc(100, 3));
    expect(long.length).toBeGreaterThan(90);
    expect(bech32Decode(long)).toEqual({ ok: true, hrp: 'age', data: Buffer.alloc(100, 3) });
  });
});

describe('age X25519 keys', () => {
  test('the spec known answer: identity AGE-SECRET-KEY-1GFPYYSJZ… has recipient age1zvkyg2lq…', () => {
    const identity = parseIdentity(SPEC_IDENTITY, 'test');
    expect(identity.recipient.text).toBe(SPEC_RECIPIENT);
    expect(identity.reveal()).toBe(SPEC_IDENTITY);
    const recipient = parseRecipient(SPEC_RECIPIENT, 'test');
    expect(recipient.text).toBe(SPEC_RECIPIENT);
    expect(recipient.publicKey.equals(identity.recipient.publicKey)).toBe(true);
    const secret = bech32Decode(SPEC_IDENTITY);
    expect(secret.ok && secret.data.equals(Buffer.alloc(32, 0x42))).toBe(true);
  });

  test('surrounding whitespace is ignored and an all-uppercase recipient is the same key', () => {
    expect(parseIdentity(`  ${SPEC_IDENTITY}\r\n`, 'test').recipient.text).toBe(SPEC_RECIPIENT);
    expect(parseRecipient(`\t${SPEC_RECIPIENT}\n`, 'test').text).toBe(SPEC_RECIPIENT);
    expect(parseRecipient(SPEC_RECIPIENT.toUpperCase(), 'test').text).toBe(SPEC_RECIPIENT);
  });

  test('generated identities have the text forms age uses and are all different', () => {
    const a = generateAgeIdentity();
    const b = generateAgeIdentity();
    expect(a.reveal()).toMatch(new RegExp(`^AGE-SECRET-KEY-1[${CHARSET.toUpperCase()}]{58}$`));
    expect(a.recipient.text).toMatch(new RegExp(`^age1[${CHARSET}]{58}$`));
    expect(parseIdentity(a.reveal(), 'test').recipient.text).toBe(a.recipient.text);
    expect(a.reveal()).not.toBe(b.reveal());
    expect(a.recipient.text).not.toBe(b.recipient.text);
  });

  test('uniqueRecipients keeps the first of each, in order', () => {
    const [a, b] = [generateAgeIdentity().recipient, generateAgeIdentity().recipient];
    const again = parseRecipient(a.text, 'test');
    expect(uniqueRecipients([a, b, again, b]).map((r) => r.text)).toEqual([a.text, b.text]);
  });

  describe('agreement with the real age-keygen', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'coffer-age-keys-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    test('age-keygen -o: parseIdentityFile gives the recipient that age-keygen -y prints', async () => {
      const file = path.join(dir, 'keygen.txt');
      await execFileP('age-keygen', ['-o', file]);
      const text = await readFile(file, 'utf8');
      const identities = parseIdentityFile(text, file);
      expect(identities).toHaveLength(1);
      const { stdout } = await execFileP('age-keygen', ['-y', file]);
      expect(identities[0].recipient.text).toBe(stdout.trim());
      // age-keygen also writes the recipient in a comment line.
      expect(text).toContain(`# public key: ${identities[0].recipient.text}\n`);
      expect(identities[0].reveal()).toBe(text.split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1')));
    });

    test('age-keygen -y derives the same recipient from identities coffer generates', async () => {
      const ours = [generateAgeIdentity(), generateAgeIdentity()];
      const file = path.join(dir, 'ours.txt');
      await writeFile(file, `# coffer test identities\n${ours.map((i) => i.reveal()).join('\n')}\n`, { mode: 0o600 });
      const { stdout } = await execFileP('age-keygen', ['-y', file]);
      expect(stdout.trim().split('\n')).toEqual(ours.map((i) => i.recipient.text));
    });
  });
});

/** Every 8 characters of a secret's data part: none may appear in a message. */
function secretWindows(text: string): string[] {
  const data = text.trim().slice('AGE-SECRET-KEY-1'.length);
  const windows: string[] = [];
  for (let i = 0; i + 8 <= data.length; i += 1) windows.push(data.slice(i, i + 8));
  return windows;
}

function expectNoEcho(message: string, given: string): void {
  if (given.trim().length > 0) expect(message).not.toContain(given.trim());
  for (const w of secretWindows(given)) {
    if (message.toUpperCase().includes(w.toUpperCase())) throw new Error(`message ${JSON.stringify(message)} echoes ${w}`);
  }
}

describe('malformed identities', () => {
  const where = '--identity /etc/coffer/backup.key line 3';
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /it is empty/],
    ['only whitespace', ' \t\r\n', /it is empty/],
    ['a wrong checksum character', withChar(SPEC_IDENTITY, SPEC_IDENTITY.length - 1, 'Y'), /checksum does not match/],
    ['a character outside Bech32', withChar(SPEC_IDENTITY, 30, 'B'), /character 31 is not a Bech32 character/],
    ['a space inside', withChar(SPEC_IDENTITY, 40, ' '), /character 41 is not printable ASCII/],
    ['a non-ASCII character', withChar(SPEC_IDENTITY, 50, 'É'), /character 51 is not printable ASCII/],
    ['mixed case', SPEC_IDENTITY.slice(0, 30) + SPEC_IDENTITY.slice(30).toLowerCase(), /mixes upper and lower case/],
    ['its last 5 characters missing', SPEC_IDENTITY.slice(0, -5), /checksum does not match/],
    ['31 bytes', bech32Encode('age-secret-key-', Buffer.alloc(31, 0x42)).toUpperCase(), /holds 31 bytes, an X25519 identity holds 32/],
    ['33 bytes', bech32Encode('age-secret-key-', Buffer.alloc(33, 0x42)).toUpperCase(), /holds 33 bytes/],
    ['another prefix', bech32Encode('age-secret-kez-', Buffer.alloc(32, 0x42)).toUpperCase(), /does not start with "AGE-SECRET-KEY-1"/],
    ['a plugin identity', bech32Encode('age-plugin-yubikey-', Buffer.alloc(32, 0x42)).toUpperCase(), /plugin identities are not supported/],
    ['an SSH private key', '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----', /SSH and PEM keys are not supported/],
    ['a recipient', SPEC_RECIPIENT, /this is a recipient \(a public key\); .*need the identity \(AGE-SECRET-KEY-1…\)/],
  ];

  test.each(cases)('%s: E_AGE_IDENTITY_INVALID naming where, without echoing the input', (_what, text, why) => {
    const err = thrown(() => parseIdentity(text, where));
    expectCode(err, 'E_AGE_IDENTITY_INVALID', why);
    const message = (err as Error).message;
    expect(message.startsWith(`${where}: not an age identity: `)).toBe(true);
    expectNoEcho(message, text);
    expectNoEcho(inspect(err), text);
    expect(message).not.toContain('\n');
  });
});

describe('malformed recipients', () => {
  const where = '--recipient (argument 2)';
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /it is empty/],
    ['an SSH public key', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@example', /SSH keys are not supported/],
    ['a wrong checksum character', withChar(SPEC_RECIPIENT, 20, SPEC_RECIPIENT[20] === 'q' ? 'p' : 'q'), /checksum does not match/],
    ['mixed case', SPEC_RECIPIENT.slice(0, 10) + SPEC_RECIPIENT.slice(10).toUpperCase(), /mixes upper and lower case/],
    ['another prefix', bech32Encode('agf', Buffer.alloc(32, 1)), /it does not start with "age1"/],
    ['31 bytes', bech32Encode('age', Buffer.alloc(31, 1)), /holds 31 bytes, an X25519 recipient holds 32/],
    ['a plugin recipient', bech32Encode('age1yubikey', Buffer.alloc(33, 1)), /recipient type "age1yubikey" \(a plugin or post-quantum recipient\) is not supported/],
    ['a character outside Bech32', 'age1bbbbbbbbbbbb', /character 5 is not a Bech32 character/],
    ['too short', 'age1qqqqq', /too short to hold a checksum/],
    ['no separator', 'agezvkyg2lqzraa2', /it does not start with "age1"/],
  ];

  test.each(cases)('%s: E_AGE_RECIPIENT_INVALID naming where', (_what, text, why) => {
    const err = thrown(() => parseRecipient(text, where));
    expectCode(err, 'E_AGE_RECIPIENT_INVALID', why);
    expect((err as Error).message.startsWith(`${where}: not an age recipient: `)).toBe(true);
  });

  test.each([
    ['as age prints it', () => SPEC_IDENTITY],
    ['lowercase', () => SPEC_IDENTITY.toLowerCase()],
    ['freshly generated', () => generateAgeIdentity().reveal()],
  ])('an identity (%s) given as a recipient is refused as a secret, which the message does not repeat', (_what, make) => {
    const secret = make();
    const err = thrown(() => parseRecipient(secret, where));
    expectCode(err, 'E_AGE_RECIPIENT_INVALID', /this is an identity \(a secret key\), not a recipient: give its public key \(age1…\), and keep the identity secret/);
    expectNoEcho((err as Error).message, secret);
    expectNoEcho(inspect(err), secret);
  });
});

describe('recipients and identity files', () => {
  const a = generateAgeIdentity();
  const b = generateAgeIdentity();

  test('a recipients file: comments, blank lines, CRLF and indentation are skipped, order kept', () => {
    const text = `# backup recipients\n\n   ${a.recipient.text}   \r\n#${b.recipient.text} (commented out)\n\t\n${b.recipient.text}\n# trailing comment`;
    expect(parseRecipientsFile(text, 'recipients.txt').map((r) => r.text)).toEqual([a.recipient.text, b.recipient.text]);
  });

  test('a bad line in a recipients file is named by its line number', () => {
    const text = `# recipients\n${a.recipient.text}\n\nage1notarecipient\n`;
    expectCode(
      thrown(() => parseRecipientsFile(text, 'recipients.txt')),
      'E_AGE_RECIPIENT_INVALID',
      /^recipients\.txt line 4: not an age recipient: /,
    );
  });

  test('an identity in a recipients file gets the identity message with its line, without the secret', () => {
    const secret = b.reveal();
    const err = thrown(() => parseRecipientsFile(`${a.recipient.text}\n${secret}\n`, 'recipients.txt'));
    expectCode(err, 'E_AGE_RECIPIENT_INVALID', /^recipients\.txt line 2: not an age recipient: this is an identity \(a secret key\)/);
    expectNoEcho((err as Error).message, secret);
  });

  test('an empty or comments-only file holds nothing, which is an error', () => {
    expectCode(thrown(() => parseRecipientsFile('', 'r.txt')), 'E_AGE_RECIPIENT_INVALID', 'r.txt: holds no recipients');
    expectCode(thrown(() => parseRecipientsFile('# nobody\n\n', 'r.txt')), 'E_AGE_RECIPIENT_INVALID', 'r.txt: holds no recipients');
    expectCode(thrown(() => parseIdentityFile('# created: 2024\n\n', 'k.txt')), 'E_AGE_IDENTITY_INVALID', 'k.txt: holds no identities');
  });

  test('an identity file as age-keygen writes it, with two identities', () => {
    const text = [
      '# created: 2024-01-01T00:00:00Z',
      `# public key: ${a.recipient.text}`,
      a.reveal(),
      '',
      '# created: 2024-01-02T00:00:00Z',
      `# public key: ${b.recipient.text}`,
      `${b.reveal()}\r`,
      '',
    ].join('\n');
    expect(parseIdentityFile(text, 'keys.txt').map((i) => i.recipient.text)).toEqual([a.recipient.text, b.recipient.text]);
  });

  test('a damaged identity line is named by its line number and not echoed', () => {
    const damaged = withChar(b.reveal(), 40, b.reveal()[40] === 'Q' ? 'P' : 'Q');
    const err = thrown(() => parseIdentityFile(`# keys\n${a.reveal()}\n${damaged}\n`, 'keys.txt'));
    expectCode(err, 'E_AGE_IDENTITY_INVALID', /^keys\.txt line 3: not an age identity: its checksum does not match/);
    expectNoEcho((err as Error).message, damaged);
    expectNoEcho((err as Error).message, a.reveal());
  });

  test('a recipient in an identity file gets the recipient message with its line', () => {
    expectCode(
      thrown(() => parseIdentityFile(`# keys\n${a.recipient.text}\n`, 'keys.txt')),
      'E_AGE_IDENTITY_INVALID',
      /^keys\.txt line 2: not an age identity: this is a recipient \(a public key\)/,
    );
  });
});

describe('an identity never shows its secret', () => {
  const identity = generateAgeIdentity();
  const secret = identity.reveal();
  const decoded = bech32Decode(secret);
  const raw = decoded.ok ? decoded.data : Buffer.alloc(0);

  const renderings: Array<[string, () => string]> = [
    ['JSON.stringify', () => JSON.stringify(identity)],
    ['JSON.stringify of an object holding it', () => JSON.stringify({ config: { identities: [identity] } })],
    ['util.inspect', () => inspect(identity)],
    ['util.inspect with showHidden, nested', () => inspect({ a: { b: identity } }, { showHidden: true, depth: 10 })],
    ['util.format %o %O %s %j', () => format('%o %O %s %j', identity, identity, identity, identity)],
    ['String()', () => String(identity)],
    ['a template literal', () => `${identity}`],
    ['Object.entries', () => JSON.stringify(Object.entries(identity))],
    ['Object.assign into a plain object', () => JSON.stringify(Object.assign({}, identity))],
    ['spread', () => inspect({ ...identity }, { depth: 10 })],
  ];

  test.each(renderings)('%s shows the recipient, never AGE-SECRET-KEY or the key bytes', (_how, render) => {
    const out = render();
    expect(out).not.toMatch(/AGE-SECRET-KEY/i);
    expect(out).not.toContain(secret.toLowerCase());
    expect(out).not.toContain(raw.toString('hex'));
    expect(out).not.toContain(raw.toString('base64').replace(/=+$/, ''));
    expect(raw.length).toBe(32);
  });

  test('its only enumerable field is the recipient', () => {
    expect(Object.keys(identity)).toEqual(['recipient']);
    expect(String(identity)).toBe(`[age identity for ${identity.recipient.text}]`);
  });
});
