import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCoffer } from './support/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-cli-startup-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Writes the modules a coffer process loaded, at its exit, to the file named by LOADED_MODULES_FILE. */
const preload = path.join(tmp, 'loaded.js');
fs.writeFileSync(preload, "process.on('exit', () => require('node:fs').writeFileSync(process.env.LOADED_MODULES_FILE, JSON.stringify(Object.keys(require.cache))));\n");

/** The modules loaded by `coffer <args>` that belong to the database driver or the restore pipeline. */
async function databaseModules(args: string[]): Promise<string[]> {
  const out = path.join(tmp, `${args[0]}.json`);
  const r = await runCoffer(args, { nodeArgs: ['--require', preload], env: { LOADED_MODULES_FILE: out, DATA_DIR: tmp }, cwd: tmp });
  expect(r.stderr).toContain('missing.zip');
  const loaded = JSON.parse(fs.readFileSync(out, 'utf8')) as string[];
  return loaded.filter((m) => /node_modules\/pg(-copy-streams)?\/|dist\/db\/(connect|embedded|pool|load)\.js$|dist\/pipeline\/restore\.js$/.test(m)).map((m) => path.basename(m));
}

describe('start-up: a command loads only what it uses', () => {
  test('coffer verify loads neither the database driver nor the restore pipeline (about 50 ms of its start-up)', async () => {
    expect(await databaseModules(['verify', 'missing.zip'])).toEqual([]);
  });

  test('coffer restore, which connects, does load them (the check above can fail)', async () => {
    const loaded = await databaseModules(['restore', 'missing.zip', '--yes']);
    expect(loaded).toEqual(expect.arrayContaining(['connect.js', 'restore.js']));
    expect(loaded.length).toBeGreaterThan(5);
  });
});
