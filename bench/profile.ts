import fs from 'node:fs';
import path from 'node:path';
import { createDatabase, dropDatabase, type Server } from './postgres';
import { fmtSeconds, run, say, table } from './util';

/**
 * `--profile`: one more coffer backup and restore (db only), not timed, under `node --cpu-prof`, and a
 * summary of where the main thread spent its time: idle (waiting for the database, the disk or the
 * zlib thread pool), garbage collection, and self time by module and by function. Work on libuv's
 * thread pool (zlib deflate/inflate, file reads) does not show in a main-thread profile.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function moduleOf(node: ProfileNode): string {
  const { functionName, url } = node.callFrame;
  if (!url) {
    if (functionName === '(idle)') return '(idle: waiting for I/O)';
    if (functionName === '(garbage collector)') return '(garbage collector)';
    if (functionName === '(program)') return '(program: native code outside JS)';
    return `(native) ${functionName}`;
  }
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (nm) return `npm ${nm[1]}`;
  const dist = /\/dist\/([^/]+)\//.exec(url);
  if (dist) return `coffer ${dist[1]}/`;
  if (/^node:internal\/(modules|bootstrap)\//.test(url)) return 'node module loading (start-up)';
  const internal = /^node:(?:internal\/)?([^/]+)/.exec(url);
  if (internal) return `node ${internal[1]}`;
  return path.basename(url);
}

function shortUrl(url: string): string {
  const i = url.lastIndexOf('/node_modules/');
  if (i >= 0) return url.slice(i + '/node_modules/'.length);
  const d = url.lastIndexOf('/dist/');
  if (d >= 0) return url.slice(d + 1);
  return url.replace(/^file:\/\//, '');
}

export function summariseProfile(file: string): string {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let total = 0;
  prof.samples.forEach((id, i) => {
    const dt = prof.timeDeltas[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
    total += dt;
  });
  const byModule = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const mod = moduleOf(node);
    byModule.set(mod, (byModule.get(mod) ?? 0) + us);
    if (!mod.startsWith('(')) {
      const fn = `${node.callFrame.functionName || '(anonymous)'} ${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    }
  }
  const pct = (us: number) => `${((100 * us) / total).toFixed(1)}%`;
  const top = (m: Map<string, number>, n: number) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n);
  return [
    `main thread sampled for ${fmtSeconds(total / 1e6)}`,
    '',
    table(['module (self time)', 'seconds', 'share'], top(byModule, 12).map(([k, us]) => [k, (us / 1e6).toFixed(2), pct(us)]), ['l', 'r', 'r']),
    '',
    table(['function (self time)', 'seconds', 'share'], top(byFunction, 12).map(([k, us]) => [k, (us / 1e6).toFixed(2), pct(us)]), ['l', 'r', 'r']),
  ].join('\n');
}

export interface ProfileContext {
  profDir: string;
  server: Server;
  coffer(args: string[]): [string, string[]];
  env(dataDir: string): NodeJS.ProcessEnv;
  sourceUrl: string;
  archive: string;
  fullArchive: string;
  noFilesDir: string;
  freshDir(prefix: string): string;
  keep: boolean;
}

async function profiled(ctx: ProfileContext, name: string, args: string[], dataDir: string): Promise<string> {
  const dir = path.join(ctx.profDir, name);
  fs.mkdirSync(dir, { recursive: true });
  const [node, cofferArgs] = ctx.coffer(args);
  say(`profile: coffer ${args[0]} under --cpu-prof (${name})`);
  const res = await run(node, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...cofferArgs], { env: ctx.env(dataDir) });
  if (res.code !== 0) return `### ${name}\n\nfailed: ${res.stderr.trim().split('\n').slice(-3).join(' ')}\n`;
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) return `### ${name}\n\nno profile written\n`;
  const keptAt = path.join(dir, file);
  return `### ${name}\n\n${summariseProfile(keptAt)}\n\nprofile: ${keptAt}${ctx.keep ? '' : ' (deleted with the work folder; use --keep to open it in Chrome DevTools)'}\n`;
}

export async function profileRuns(ctx: ProfileContext): Promise<string[]> {
  const sections: string[] = [];
  const backupFile = path.join(ctx.profDir, 'profiled-db.zip');
  sections.push(await profiled(ctx, 'coffer backup (db only)', ['backup', '-o', backupFile, '--database-url', ctx.sourceUrl], ctx.noFilesDir));
  fs.rmSync(backupFile, { force: true });
  for (const [name, archive] of [
    ['coffer restore (db only)', ctx.archive],
    ['coffer restore (db+files)', ctx.fullArchive],
  ] as const) {
    if (!fs.existsSync(archive)) continue;
    const db = 'coffer_bench_profile';
    await createDatabase(ctx.server, db);
    const dataDir = ctx.freshDir('profile-data-');
    try {
      sections.push(await profiled(ctx, name, ['restore', archive, '--yes', '--database-url', ctx.server.url(db)], dataDir));
    } finally {
      await dropDatabase(ctx.server, db);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }
  return sections;
}
