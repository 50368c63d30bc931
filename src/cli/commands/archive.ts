import type { Command } from 'commander';
import { registerBackup } from './backup';
import { registerKeyCommands } from './keys';
import { registerRestore } from './restore';
import { registerVerify } from './verify';

/** backup, restore, verify and key commands. */
export function registerArchiveCommands(program: Command): void {
  registerBackup(program);
  registerRestore(program);
  registerVerify(program);
  registerKeyCommands(program);
}
