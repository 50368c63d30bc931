import type { Command } from 'commander';

/** backup, restore, verify and key commands. */
export function registerArchiveCommands(_program: Command): void {}
