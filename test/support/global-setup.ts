import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEmbedded, type EmbeddedServer } from '../../src/db/embedded';
import { silentLogger } from '../../src/log';

declare global {
  var __cofferTestServer: { server: EmbeddedServer; dir: string } | undefined;
}

/**
 * One PostgreSQL for the whole run: TEST_DATABASE_URL when given (a server where we may create
 * databases), else an embedded server in a temporary folder. Each test file makes its own database.
 */
export default async function globalSetup(): Promise<void> {
  if (process.env.TEST_DATABASE_URL) {
    process.env.COFFER_TEST_ADMIN_URL = process.env.TEST_DATABASE_URL;
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coffer-test-pg-'));
  fs.chmodSync(dir, 0o755);
  const server = await startEmbedded(dir, silentLogger());
  globalThis.__cofferTestServer = { server, dir };
  process.env.COFFER_TEST_ADMIN_URL = server.url;
}
