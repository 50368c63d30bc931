import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CofferError } from '../../core/errors';
import { createDecryptStream, createEncryptStream, generateKey, keyIdOf } from '../../crypto';
import { createAtomicFile } from '../../core/atomic-file';
import { resolveKeySource, withKeyOptions, type KeyOptions } from '../keys';
import { print, runtime } from '../runtime';

function inputStream(file: string): NodeJS.ReadableStream {
  if (file === '-') {
    if (process.stdin.isTTY) throw new CofferError('E_USAGE', "pipe the input in when IN is '-'");
    return process.stdin;
  }
  if (!fs.existsSync(file)) throw new CofferError('E_USAGE', `no such file: ${file}`);
  return fs.createReadStream(file);
}

async function transformFile(input: string, output: string, transform: NodeJS.ReadWriteStream): Promise<void> {
  if (output === '-') throw new CofferError('E_USAGE', 'OUT must be a file: it appears under its name only once complete and authenticated');
  const out = createAtomicFile(output);
  try {
    await pipeline(inputStream(input), transform, out.stream);
    await out.commit();
  } catch (err) {
    await out.abort();
    throw err;
  }
}

export function registerKeyCommands(program: Command): void {
  program
    .command('keygen')
    .description('print a new random AES-256 key (hex) on standard output and its key id on standard error')
    .action(() => {
      const key = generateKey();
      print(key.toString('hex'));
      process.stderr.write(`key id: ${keyIdOf(key).toString('hex')}\n`);
    });

  withKeyOptions(program.command('encrypt').description('encrypt a file (e.g. a plain backup zip) into the .zip.crypt format'))
    .argument('<in>', "file to encrypt, or '-' for standard input")
    .argument('<out>', 'encrypted file to write (written as OUT.partial, renamed when complete)')
    .action(async (input: string, output: string, opts: KeyOptions) => {
      const rt = runtime({ quietByDefault: true });
      const key = await resolveKeySource(opts, rt.config, { confirm: true, stdinBusy: input === '-' });
      if (!key) throw new CofferError('E_CRYPT_KEY_REQUIRED', 'give a key: --key-file, --key -, --passphrase or COFFER_AES_KEY');
      await transformFile(input, output, await createEncryptStream(key));
    });

  withKeyOptions(program.command('decrypt').description('decrypt a .zip.crypt file; OUT appears only after the final chunk authenticated'))
    .argument('<in>', "encrypted file, or '-' for standard input")
    .argument('<out>', 'plain file to write (written as OUT.partial, renamed when complete)')
    .action(async (input: string, output: string, opts: KeyOptions) => {
      const rt = runtime({ quietByDefault: true });
      const key = await resolveKeySource(opts, rt.config, { stdinBusy: input === '-' });
      await transformFile(input, output, createDecryptStream(key));
    });
}
