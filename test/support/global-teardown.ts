import fs from 'node:fs';

export default async function globalTeardown(): Promise<void> {
  const t = globalThis.__cofferTestServer;
  if (!t) return;
  await t.server.stop();
  fs.rmSync(t.dir, { recursive: true, force: true });
}
