import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CofferError } from '../../core/errors';
import { createDecryptStream, createEncryptStream, generateAgeIdentity, generateKey, keyIdOf } from '../../crypto';
import { createAtomicFile, writeFileAtomic } from '../../core/atomic-file';
import { resolveKeySource, withKeyOptions, type KeyOptions } from '../keys';
import { print, runtime } from '../runtime';

function inputStream(file: string): NodeJS.ReadableStream {
  if (file === '-') {
    if (process.stdin.isTTY) throw new CofferError('E_USAGE', "pipe the input in when IN is '-'");
    return process.stdin;
  }
  if (!fs.existsSync(file)) throw new CofferError('E_USAGE', `no such file: ${file}`);
  // Large reads: fewer system calls, and whole sealed chunks for the decryptor to open in place.
  return fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
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
    .description(
      'make a new random AES-256 key (hex), or with --age an age identity: written to FILE (mode 0600) with -o, else printed on standard output. ' +
        'The key id goes to standard error; an identity\'s recipient (age1…) goes to standard output with -o, else to standard error',
    )
    .option('-o, --output <file>', 'write the key to this new file, readable only by you (an existing file is never overwritten)')
    .option('--age', 'make an age X25519 identity (AGE-SECRET-KEY-1…, in the file format of age-keygen) instead of an AES key')
    .action((opts: { output?: string; age?: boolean }) => {
      const toFile = opts.output !== undefined && opts.output !== '-';
      // Overwriting a key could make every archive encrypted with it unreadable.
      if (toFile && fs.lstatSync(opts.output!, { throwIfNoEntry: false })) {
        throw new CofferError('E_OUTPUT', `${opts.output} already exists; a key file is never overwritten: choose another name`);
      }
      if (opts.age) {
        const identity = generateAgeIdentity();
        const recipient = identity.recipient.text;
        const text = `# created: ${new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')}\n# public key: ${recipient}\n${identity.reveal()}\n`;
        if (toFile) {
          writeFileAtomic(opts.output!, text, { mode: 0o600 });
          process.stderr.write(`identity written to ${opts.output}; its recipient (public key) is:\n`);
          print(recipient);
        } else {
          process.stdout.write(text);
          process.stderr.write(`recipient: ${recipient}\n`);
        }
        return;
      }
      const key = generateKey();
      if (toFile) {
        writeFileAtomic(opts.output!, key.toString('hex') + '\n', { mode: 0o600 });
        process.stderr.write(`key written to ${opts.output}\n`);
      } else {
        print(key.toString('hex'));
      }
      process.stderr.write(`key id: ${keyIdOf(key).toString('hex')}\n`);
    });

  withKeyOptions(program.command('encrypt').description('encrypt a file (e.g. a plain backup zip): .zip.crypt with a key or passphrase, an age file (.zip.age) for recipients'), 'seal')
    .argument('<in>', "file to encrypt, or '-' for standard input")
    .argument('<out>', 'encrypted file to write (written as OUT.partial, renamed when complete)')
    .action(async (input: string, output: string, opts: KeyOptions) => {
      const rt = runtime({ quietByDefault: true });
      const key = await resolveKeySource(opts, rt.config, { use: 'seal', confirm: true, stdinBusy: input === '-' });
      if (!key) throw new CofferError('E_CRYPT_KEY_REQUIRED', 'give a key: --key-file, --key -, --passphrase, --recipient, --recipients-file, COFFER_AES_KEY or BACKUP_RECIPIENTS');
      await transformFile(input, output, await createEncryptStream(key));
    });

  withKeyOptions(program.command('decrypt').description('decrypt a .zip.crypt or age file (told apart by their first bytes); OUT appears only after the final chunk authenticated'), 'open')
    .argument('<in>', "encrypted file, or '-' for standard input")
    .argument('<out>', 'plain file to write (written as OUT.partial, renamed when complete)')
    .action(async (input: string, output: string, opts: KeyOptions) => {
      const rt = runtime({ quietByDefault: true });
      const key = await resolveKeySource(opts, rt.config, { use: 'open', stdinBusy: input === '-' });
      await transformFile(input, output, createDecryptStream(key));
    });
}
