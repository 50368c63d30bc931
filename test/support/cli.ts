import { spawn } from 'node:child_process';
import path from 'node:path';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export const COFFER_BIN = path.join(__dirname, '..', '..', 'bin', 'coffer.js');

/**
 * Runs the built CLI (`npm test` builds first) in a child process with only the environment given
 * (plus PATH), optionally under another umask, feeding `input` on stdin.
 */
export function runCoffer(
  args: string[],
  opts: { env?: Record<string, string>; input?: string | Buffer; cwd?: string; umask?: number; bin?: string; nodeArgs?: string[] } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...opts.env };
    const script = [...(opts.nodeArgs ?? []), opts.bin ?? COFFER_BIN, ...args];
    const [cmd, argv] =
      opts.umask === undefined
        ? [process.execPath, script]
        : ['/bin/sh', ['-c', `umask ${opts.umask.toString(8).padStart(3, '0')} && exec "$0" "$@"`, process.execPath, ...script]];
    const child = spawn(cmd, argv, { env, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    // A child that exits without reading its input closes the pipe: EPIPE here is not the test's failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}
