import type { Command } from 'commander';
import fs from 'node:fs';
import { CofferError, errorMessage } from '../core/errors';
import { parseAesKey, type KeySource } from '../crypto';
import { validatePassphrase } from '../crypto/passphrase-policy';
import type { Config } from '../config';
import { promptHidden } from './prompt';
import { readSecretFromStdin } from './runtime';

export interface KeyOptions {
  keyFile?: string;
  key?: string;
  passphrase?: boolean;
}

/** Adds --key-file, --key - and --passphrase, the same on every command that takes a key. */
export function withKeyOptions(cmd: Command): Command {
  return cmd
    .option('--key-file <path>', 'read the AES-256 key (64 hex characters or base64) from a file')
    .option('--key <dash>', "'-': read the AES-256 key from standard input (prompted without echo on a terminal)")
    .option('--passphrase', 'use a passphrase (prompted without echo on a terminal, else read from standard input)');
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
 * The key source chosen on the command line: --key-file, --key -, --passphrase, or COFFER_AES_KEY.
 * Keys are never taken as command-line values (they would show in `ps` and shell history).
 * `confirm` asks for a new passphrase twice on a terminal.
 */
export async function resolveKeySource(opts: KeyOptions, config: Config, how: { confirm?: boolean; stdinBusy?: boolean } = {}): Promise<KeySource | undefined> {
  const chosen = [opts.keyFile !== undefined, opts.key !== undefined, !!opts.passphrase].filter(Boolean).length;
  if (chosen > 1) throw new CofferError('E_USAGE', 'give only one of --key-file, --key - and --passphrase');
  if (opts.key !== undefined && opts.key !== '-') {
    throw new CofferError('E_USAGE', "--key only takes '-' (read the key from standard input): keys on the command line leak into ps and shell history; use --key-file or COFFER_AES_KEY");
  }
  if ((opts.key === '-' || opts.passphrase) && how.stdinBusy && !process.stdin.isTTY) {
    throw new CofferError('E_USAGE', 'standard input already carries the archive: give the key with --key-file or COFFER_AES_KEY');
  }
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
  if (config.aesKey) return { kind: 'raw', key: parseAesKey(config.aesKey.reveal().trim()) };
  return undefined;
}
