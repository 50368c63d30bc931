import fs from 'node:fs';
import path from 'node:path';
import { ERROR_CODES } from '../src/core/errors';
import { buildProgram } from '../src/cli/main';
import { CONFIG_VARIABLES } from '../src/config';

const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');

describe('README matches the code', () => {
  test('every error code is documented with its exit status and HTTP status', () => {
    for (const [code, { exit, http }] of Object.entries(ERROR_CODES)) {
      expect(readme).toContain(`| \`${code}\` | ${exit} | ${http} |`);
    }
    const documented = [...readme.matchAll(/^\| `(E_[A-Z_]+)` \| \d+ \| \d+ \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  test('every configuration variable is documented', () => {
    for (const name of CONFIG_VARIABLES) expect(readme).toContain(`| \`${name}\` |`);
  });

  test('every CLI command is in the CLI reference', () => {
    const program = buildProgram();
    const names: string[] = [];
    for (const cmd of program.commands) {
      if (cmd.commands.length === 0 || cmd.name() === 'migrate') names.push(cmd.name());
      for (const sub of cmd.commands) names.push(`${cmd.name()} ${sub.name()}`);
    }
    for (const name of names) expect(readme).toMatch(new RegExp('\\| `coffer ' + name + '[ `]'));
  });
});
