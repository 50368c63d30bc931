import type { Command } from 'commander';
import { registerBackup } from './backup';

/** backup, restore, verify and key commands. */
export function registerArchiveCommands(program: Command): void {
  registerBackup(program);
}
