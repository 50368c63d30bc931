#!/usr/bin/env node
'use strict';
// `npm run bench -- [--scale N] [--runs 3] [--database-url URL]` (see bench/README.md).
// The benchmark is TypeScript under bench/; it is compiled with the project's own TypeScript into
// dist/bench (ignored by git and eslint like the rest of dist/), so nothing beyond `npm install` is needed.
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
const compiled = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'bench', 'tsconfig.json')], { stdio: 'inherit' });
if (compiled.status !== 0) {
  console.error('bench: compiling bench/ failed (see above)');
  process.exitCode = compiled.status || 1;
} else {
  require(path.join(root, 'dist', 'bench', 'main.js'))
    .main(process.argv.slice(2))
    .then((code) => {
      process.exitCode = code;
    })
    .catch((err) => {
      console.error(`bench: ${err && err.stack ? err.stack : err}`);
      process.exitCode = 1;
    });
}
