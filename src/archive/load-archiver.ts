import { createRequire } from 'node:module';
import * as vm from 'node:vm';

export type ArchiverModule = typeof import('archiver');

let cached: ArchiverModule | undefined;

/**
 * Loads `archiver` lazily. archiver 8 and its zip dependencies (zip-stream, compress-commons,
 * crc32-stream) are ESM-only. Plain Node >= 20.19 can `require()` ES modules, which is the normal path
 * here. Test runners with their own module registry (jest 30 before Node 24.9) refuse that `require`
 * and would need to transpile node_modules; for them the module is loaded through the real process's
 * `module` builtin instead, outside the runner's registry.
 *
 * Consequence of the fallback: archiver's objects then live in another realm, so `instanceof Date`
 * checks inside archiver fail for our Dates. The writer therefore passes dates as ISO strings.
 */
export function loadArchiver(): ArchiverModule {
  if (cached !== undefined) return cached;
  let loaded: ArchiverModule;
  try {
    loaded = createRequire(__filename)('archiver') as ArchiverModule;
  } catch (normalError) {
    try {
      loaded = requireOutsideRegistry('archiver') as ArchiverModule;
    } catch {
      throw normalError;
    }
  }
  cached = loaded;
  return loaded;
}

function requireOutsideRegistry(id: string): unknown {
  // `process` as seen by the main context, not a test runner's sandboxed copy of it.
  const realProcess = vm.runInThisContext('process') as NodeJS.Process;
  const realModule = realProcess.getBuiltinModule('node:module') as typeof import('node:module');
  return realModule.createRequire(__filename)(id);
}
