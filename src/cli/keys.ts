import type { Command } from 'commander';
import fs from 'node:fs';
import { CofferError, errorMessage } from '../core/errors';
import { parseAesKey, parseIdentityFile, parseRecipient, parseRecipientsFile, uniqueRecipients, type KeySource } from '../crypto';
import { validatePassphrase } from '../crypto/passphrase-policy';
import type { Config } from '../config';
import { promptHidden } from './prompt';
import { readSecretFromStdin } from './runtime';

export interface KeyOptions {
  keyFile?: string;
  key?: string;
  passphrase?: boolean;
  /** Sealing commands only. */
  recipient?: string[];
  recipientsFile?: string[];
  /** Opening commands only. */
  identity?: string[];
}

/** Whether a command writes an archive (seals) or reads one (opens). */
export type KeyUse = 'seal' | 'open';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/**
 * Adds --key-file, --key - and --passphrase (format v1), and the age options: --recipient and
 * --recipients-file on commands that write archives, --identity on those that read them. The same on
 * every command.
 */
export function withKeyOptions(cmd: Command, use: KeyUse): Command {
  cmd
    .option('--key-file <path>', 'read the AES-256 key (64 hex characters or base64) from a file')
    .option('--key <dash>', "'-': read the AES-256 key from standard input (prompted without echo on a terminal)")
    .option('--passphrase', 'use a passphrase (prompted without echo on a terminal, else read from standard input)');
  if (use === 'seal') {
    return cmd
      .option('--recipient <age1…>', 'seal to this age recipient (public key); repeat for several, any one of whose identities opens the archive', collect)
      .option('--recipients-file <path>', 'seal to the age recipients in this file (one a line, # comments); repeatable', collect);
  }
  return cmd.option('--identity <path>', 'an age identity file (as age-keygen or coffer keygen --age write it); repeatable', collect);
}

function readTextFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CofferError('E_USAGE', `cannot read ${what} ${file}: ${errorMessage(err)}`);
  }
}

function readIdentities(files: string[]): KeySource {
  return { kind: 'identities', identities: files.flatMap((f) => parseIdentityFile(readTextFile(f, 'identity file'), `identity file ${f}`)) };
}

function readKeyFile(file: string): Buffer {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new CofferError('E_USAGE', `cannot read key file ${file}: ${errorMessage(err)}`);
  }
  // A file of exactly 32 bytes that is not text is taken as the raw key itself.
  if (data.length === 32 && !/^[\x20-\x7e\r\n]+$/.test(data.toString('latin1'))) return data;
  return parseAesKey(data.toString('utf8').trim());
}

/**
 * The key source chosen on the command line: --key-file, --key -, --passphrase, --recipient and
 * --recipients-file (sealing), --identity (opening); else from the environment: BACKUP_RECIPIENTS(_FILE)
 * when sealing, COFFER_IDENTITY_FILE when opening, COFFER_AES_KEY for both. Keys are never taken as
 * command-line values (they would show in `ps` and shell history). `confirm` asks for a new passphrase
 * twice on a terminal.
 */
export async function resolveKeySource(
  opts: KeyOptions,
  config: Config,
  how: { use: KeyUse; confirm?: boolean; stdinBusy?: boolean },
): Promise<KeySource | undefined> {
  const recipients = [...(opts.recipient ?? [])];
  const recipientFiles = opts.recipientsFile ?? [];
  const identities = opts.identity ?? [];
  const given = [
    opts.keyFile !== undefined && '--key-file',
    opts.key !== undefined && '--key -',
    !!opts.passphrase && '--passphrase',
    (recipients.length > 0 || recipientFiles.length > 0) && '--recipient/--recipients-file',
    identities.length > 0 && '--identity',
  ].filter((x): x is string => typeof x === 'string');
  if (given.length > 1) throw new CofferError('E_USAGE', `give only one kind of key: ${given.join(', ')}`);
  if (opts.key !== undefined && opts.key !== '-') {
    throw new CofferError('E_USAGE', "--key only takes '-' (read the key from standard input): keys on the command line leak into ps and shell history; use --key-file or COFFER_AES_KEY");
  }
  if ((opts.key === '-' || opts.passphrase) && how.stdinBusy && !process.stdin.isTTY) {
    throw new CofferError('E_USAGE', 'standard input already carries the archive: give the key with --key-file or COFFER_AES_KEY');
  }
  if (recipients.length > 0 || recipientFiles.length > 0) {
    const list = recipients.map((r, i) => parseRecipient(r, `--recipient ${i + 1}`));
    for (const f of recipientFiles) list.push(...parseRecipientsFile(readTextFile(f, 'recipients file'), `recipients file ${f}`));
    return { kind: 'recipients', recipients: uniqueRecipients(list) };
  }
  if (identities.length > 0) return readIdentities(identities);
  if (opts.keyFile !== undefined) return { kind: 'raw', key: readKeyFile(opts.keyFile) };
  if (opts.key === '-') {
    const text = process.stdin.isTTY ? await promptHidden('AES key (hex or base64): ') : await readSecretFromStdin();
    return { kind: 'raw', key: parseAesKey(text.trim()) };
  }
  if (opts.passphrase) {
    let passphrase: string;
    if (process.stdin.isTTY) {
      passphrase = await promptHidden('Passphrase: ');
      if (how.confirm) {
        const again = await promptHidden('Passphrase again: ');
        if (again !== passphrase) throw new CofferError('E_PASSPHRASE_INVALID', 'the two passphrases differ');
      }
    } else {
      passphrase = await readSecretFromStdin();
    }
    if (how.confirm) validatePassphrase(passphrase);
    return { kind: 'passphrase', passphrase };
  }
  const ageDefault = how.use === 'seal' ? config.backupRecipients.length > 0 && 'BACKUP_RECIPIENTS' : config.identityFile !== undefined && 'COFFER_IDENTITY_FILE';
  if (ageDefault && config.aesKey) {
    throw new CofferError('E_USAGE', `both COFFER_AES_KEY and ${ageDefault} are set: say which key to use with --key-file or --${how.use === 'seal' ? 'recipient' : 'identity'}`);
  }
  if (ageDefault) return how.use === 'seal' ? { kind: 'recipients', recipients: config.backupRecipients } : readIdentities([config.identityFile!]);
  if (config.aesKey) return { kind: 'raw', key: parseAesKey(config.aesKey.reveal().trim()) };
  return undefined;
}
