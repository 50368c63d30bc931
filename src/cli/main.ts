import { Command, CommanderError } from 'commander';
import { CofferError, errorMessage, isCofferError } from '../core/errors';
import { APP_VERSION } from '../core/manifest';
import { registerDemo } from './commands/demo';
import { registerMigrate } from './commands/migrate';
import { registerServe } from './commands/serve';
import { registerUsers } from './commands/users';
import { registerArchiveCommands } from './commands/archive';
import { registerBackups } from './commands/backups';


export function buildProgram(): Command {
  const program = new Command();
  program
    .name('coffer')
    .description('coffer: consistent, optionally encrypted backups of a PostgreSQL-backed service')
    .version(APP_VERSION)
    .showHelpAfterError()
    .exitOverride();
  registerServe(program);
  registerMigrate(program);
  registerUsers(program);
  registerDemo(program);
  registerArchiveCommands(program);
  registerBackups(program);
  return program;
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
  const program = buildProgram();
  try {
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
