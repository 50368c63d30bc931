import { Command, CommanderError } from 'commander';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { APP_VERSION } from '../core/version';

type Register = (program: Command) => void;

/*
 * Each command's module is loaded only when the command can run or be shown. The modules pull in
 * most of coffer (pg, zod, pino, the crypto and archive code: ~300 modules, ~0.3 s and ~30 MB), and a
 * command needs only its own. Synchronous `require` keeps buildProgram synchronous.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const serve = (): Register => (require('./commands/serve') as typeof import('./commands/serve')).registerServe;
const migrate = (): Register => (require('./commands/migrate') as typeof import('./commands/migrate')).registerMigrate;
const users = (): Register => (require('./commands/users') as typeof import('./commands/users')).registerUsers;
const demo = (): Register => (require('./commands/demo') as typeof import('./commands/demo')).registerDemo;
const backup = (): Register => (require('./commands/backup') as typeof import('./commands/backup')).registerBackup;
const restore = (): Register => (require('./commands/restore') as typeof import('./commands/restore')).registerRestore;
const verify = (): Register => (require('./commands/verify') as typeof import('./commands/verify')).registerVerify;
const keys = (): Register => (require('./commands/keys') as typeof import('./commands/keys')).registerKeyCommands;
const backups = (): Register => (require('./commands/backups') as typeof import('./commands/backups')).registerBackups;
/* eslint-enable @typescript-eslint/no-require-imports */

/** Top-level commands in help order, with the function that registers each (keys registers three). */
const COMMANDS: ReadonlyArray<readonly [name: string, register: () => Register]> = [
  ['serve', serve],
  ['migrate', migrate],
  ['users', users],
  ['demo-data', demo],
  ['backup', backup],
  ['restore', restore],
  ['verify', verify],
  ['keygen', keys],
  ['encrypt', keys],
  ['decrypt', keys],
  ['backups', backups],
];

/**
 * The program with every command (help, usage errors and the docs test see them all), or, given the
 * command about to run, with that one alone: commander dispatches, checks options and prints that
 * command's help the same either way. `only: null` registers none (`--version`).
 */
export function buildProgram(only?: string | null): Command {
  const program = new Command();
  program
    .name('coffer')
    .description('coffer: consistent, optionally encrypted backups of a PostgreSQL-backed service')
    .version(APP_VERSION)
    .showHelpAfterError()
    .exitOverride();
  if (only === null) return program;
  const chosen = COMMANDS.find(([name]) => name === only);
  const registers = chosen ? [chosen[1]] : COMMANDS.map(([, register]) => register);
  for (const register of new Set(registers)) register()(program);
  return program;
}

/** Which commands `argv` needs: the named one, none for a bare --version, else all (help, errors). */
function commandOf(argv: string[]): string | null | undefined {
  const args = argv.slice(2);
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) return null;
  const first = args[0];
  return first !== undefined && COMMANDS.some(([name]) => name === first) ? first : undefined;
}

/** The only place where errors become exit codes and messages. */
export async function main(argv: string[]): Promise<void> {
  // A fixed title: argv may hold file names an operator typed, never secrets, but keep ps output short.
  process.title = ['coffer', argv[2]].filter(Boolean).join(' ');
  // `coffer verify x | head` closes the pipe early: the reader's choice, so text output just stops.
  // A command streaming data to stdout (`backup -o -`) sees the failure in its own pipeline and exits
  // non-zero, so a cut archive is never reported as a success.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  try {
    const program = buildProgram(commandOf(argv));
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version print and exit 0; usage errors were already printed by commander
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    if (isCofferError(err)) {
      process.stderr.write(`coffer: ${err.message} [${err.code}]\n`);
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`coffer: unexpected error: ${errorMessage(err)}\n`);
    process.stderr.write('coffer: this is a bug; please report it with the command and the log (LOG_LEVEL=debug)\n');
    process.exitCode = new CofferError('E_INTERNAL', '').exitCode;
  }
}
