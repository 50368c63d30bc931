import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { describeCommand, RssSampler } from './measure';
import { checkpoint, createDatabase, type Server } from './postgres';
import { STORED_OPS, type StoredOpId, type StoredRun, type StoredSection } from './report';
import { request, requestJson, runWithInput, startService, type Service } from './service';
import { errorText, fmtMB, fmtSeconds, runOk, say } from './util';

/**
 * The stored-backups section: coffer serve on a copy of the source database and the bench's upload
 * folders, then, per run, the streaming endpoint, a stored backup (POST, poll until finished) and its
 * download, each timed from the client's side. Stored backups are deleted after each run.
 */
export interface StoredContext {
  server: Server;
  /** The database the service runs on; created here as a copy of `sourceDatabase`. */
  database: string;
  sourceDatabase: string;
  /** DATA_DIR of the service: the folder holding the bench's upload folders. */
  dataDir: string;
  runs: number;
  coffer(args: string[]): [string, string[]];
  /** The environment coffer commands get, for this DATA_DIR. */
  env(dataDir: string): NodeJS.ProcessEnv;
  /** A command line as the report shows it: no paths of this machine, no passwords. */
  publicText(text: string): string;
  /** Told of the running service (and of its end, with undefined), so a signal handler can stop it. */
  track(service: Service | undefined): void;
}

interface BackupObject {
  id: string;
  status: string;
  size: number | null;
  sha256: string | null;
  error: { code: string; message: string } | null;
}

const POLL_MS = 100;
const FINISH_TIMEOUT_MS = 3600_000;
const FAILED = ['failed', 'canceled', 'missing'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function emptySection(): StoredSection {
  const ops = Object.fromEntries(STORED_OPS.map((d) => [d.id, { id: d.id, label: d.label, runs: [] }])) as unknown as StoredSection['ops'];
  return { command: '', ops, ratios: [] };
}

export async function measureStored(ctx: StoredContext): Promise<StoredSection> {
  const section = emptySection();
  const backupDir = path.join(ctx.dataDir, 'backups');
  let service: Service | undefined;
  let sampler: RssSampler | undefined;
  try {
    say(`stored backups: copying ${ctx.sourceDatabase} to ${ctx.database} for the service (the source stays as the fidelity reference)`);
    await createDatabase(ctx.server, ctx.database, ctx.sourceDatabase);
    if (fs.existsSync(backupDir)) {
      say(`stored backups: removing ${backupDir}, left by an interrupted bench run`);
      fs.rmSync(backupDir, { recursive: true, force: true });
    }
    const url = ctx.server.url(ctx.database);
    const key = randomBytes(24).toString('base64url');
    const cliEnv = { ...ctx.env(ctx.dataDir), DATABASE_URL: url };
    const [c1, a1] = ctx.coffer(['users', 'create', 'benchsys', '--system', '--password-stdin']);
    await runWithInput(c1, a1, randomBytes(18).toString('base64url') + '\n', cliEnv);
    const [c2, a2] = ctx.coffer(['users', 'token', 'benchsys', '--label', 'bench']);
    const token = (await runOk(c2, a2, { env: cliEnv })).stdout.trim();
    if (!/^\S+$/.test(token)) throw new Error(`coffer users token printed ${token.split('\n').length} line(s), expected one token`);

    const serviceEnv = { ...cliEnv, LOG_LEVEL: 'info', PORT: '0', HOST: '127.0.0.1', BACKUP_KEY: key };
    const [cmd, args] = ctx.coffer(['serve']);
    section.command = ctx.publicText(`DATABASE_URL=…/${ctx.database} DATA_DIR=${ctx.dataDir} PORT=0 HOST=127.0.0.1 BACKUP_KEY=… LOG_LEVEL=info ${describeCommand(cmd, args)}`);
    const started = performance.now();
    service = await startService(cmd, args, serviceEnv);
    ctx.track(service);
    say(`stored backups: coffer serve listening on ${service.url} after ${fmtSeconds((performance.now() - started) / 1000)}`);
    sampler = new RssSampler(service.pid, 100);
    sampler.start();

    const api = new Api(service.url, token, key);
    for (let runNo = 1; runNo <= ctx.runs; runNo++) {
      // Alternate the order, as the other operations do.
      const steps = [() => streamRun(ctx, api, section, runNo), () => storedRun(ctx, api, section, runNo)];
      for (const step of runNo % 2 === 0 ? steps.reverse() : steps) await step();
    }
  } catch (err) {
    section.error = errorText(err) + (service ? `\nlast lines of coffer serve:\n${service.tail()}` : '');
    say(`stored backups: FAILED: ${section.error}`);
  } finally {
    sampler?.stop();
    if (sampler) section.serviceRssBytes = sampler.peak;
    if (service) {
      await service.stop().catch((err) => {
        section.error = [section.error, errorText(err)].filter(Boolean).join('; ');
        say(`stored backups: ${errorText(err)}`);
      });
      ctx.track(undefined);
    }
    fs.rmSync(backupDir, { recursive: true, force: true });
  }
  return section;
}

class Api {
  constructor(
    readonly base: string,
    private readonly token: string,
    readonly key: string,
  ) {}

  headers(withKey = false): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, ...(withKey ? { 'x-backup-key': this.key } : {}) };
  }

  url(p: string): string {
    return this.base + p;
  }
}

function record(section: StoredSection, id: StoredOpId, run: StoredRun): void {
  section.ops[id].runs.push(run);
  const mbps = run.seconds > 0 ? ` (${(run.bytes / 1e6 / run.seconds).toFixed(1)} MB/s)` : '';
  say(run.error ? `  FAILED: ${run.error}` : `  ${fmtSeconds(run.seconds)}, ${fmtMB(run.bytes)}${mbps}${run.sha256Match === undefined ? '' : run.sha256Match ? ', sha256 matches' : ', SHA256 DIFFERS'}`);
}

async function streamRun(ctx: StoredContext, api: Api, section: StoredSection, runNo: number): Promise<void> {
  await checkpoint(ctx.server);
  say(`run ${runNo}/${ctx.runs}: ${section.ops.stream.label}…`);
  try {
    const res = await request(api.url('/api/v1/utils/backup/'), { method: 'POST', headers: api.headers(), json: { key: api.key } });
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${(res.text ?? '').slice(0, 300)}`);
    if (res.bytes === 0) throw new Error('HTTP 200 with an empty body');
    record(section, 'stream', { run: runNo, seconds: res.seconds, bytes: res.bytes });
  } catch (err) {
    record(section, 'stream', { run: runNo, seconds: 0, bytes: 0, error: errorText(err) });
  }
}

/** POST, poll until finished, download (checking the sha256), delete: two measurements. */
async function storedRun(ctx: StoredContext, api: Api, section: StoredSection, runNo: number): Promise<void> {
  await checkpoint(ctx.server);
  say(`run ${runNo}/${ctx.runs}: ${section.ops.stored.label}…`);
  let id: string | undefined;
  let phase: StoredOpId = 'stored';
  try {
    const t0 = performance.now();
    const created = await requestJson<BackupObject>(api.url('/api/v1/backups'), { method: 'POST', headers: api.headers(), json: { key: api.key }, expect: 202 });
    id = created.id;
    if (created.status !== 'queued') say(`  note: POST answered status ${created.status}, not queued`);
    let obj = created;
    while (obj.status !== 'finished') {
      if (FAILED.includes(obj.status)) throw new Error(`stored backup ${id} ended ${obj.status}${obj.error ? `: ${obj.error.code} ${obj.error.message}` : ''}`);
      if (performance.now() - t0 > FINISH_TIMEOUT_MS) throw new Error(`stored backup ${id} not finished after ${FINISH_TIMEOUT_MS / 1000} s (status ${obj.status})`);
      await sleep(POLL_MS);
      obj = await requestJson<BackupObject>(api.url(`/api/v1/backups/${id}`), { method: 'GET', headers: api.headers(), expect: 200 });
    }
    const seconds = (performance.now() - t0) / 1000;
    if (obj.size === null || obj.sha256 === null) throw new Error(`stored backup ${id} is finished without size or sha256`);
    record(section, 'stored', { run: runNo, seconds, bytes: obj.size });

    phase = 'download';
    await checkpoint(ctx.server);
    say(`run ${runNo}/${ctx.runs}: ${section.ops.download.label}…`);
    const dl = await request(api.url(`/api/v1/backups/${id}/download`), { method: 'GET', headers: api.headers(true), sha256: true });
    if (dl.status !== 200) throw new Error(`HTTP ${dl.status}: ${(dl.text ?? '').slice(0, 300)}`);
    const sha256Match = dl.sha256 === obj.sha256;
    const short = dl.bytes !== obj.size ? `received ${dl.bytes} bytes, the object's size is ${obj.size}` : undefined;
    record(section, 'download', { run: runNo, seconds: dl.seconds, bytes: dl.bytes, sha256Match, error: short ?? (sha256Match ? undefined : `sha256 of the download ${dl.sha256} differs from the object's ${obj.sha256}`) });
  } catch (err) {
    record(section, phase, { run: runNo, seconds: 0, bytes: 0, error: errorText(err) });
  } finally {
    if (id) {
      // Deleted after each run so that BACKUP_DIR holds at most one archive.
      await requestJson(api.url(`/api/v1/backups/${id}`), { method: 'DELETE', headers: api.headers(true), expect: 204 }).catch((err) => say(`  could not delete stored backup ${id}: ${errorText(err)}`));
    }
  }
}
