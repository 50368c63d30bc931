import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { measure, settleDisks } from './measure';
import { checkpoint } from './postgres';
import type { Server } from './postgres';
import { BenchError, fmtMB, fmtSeconds, max, median, min, say, table } from './util';

/**
 * The runtime section (--compare-node): coffer backup (db+files) and restore (db+files) on the Node
 * binary coffer is measured on (--node, default the bench's own) and on a second one, runs
 * interleaved (the order alternates), medians compared. Kept small: two operations, --runs each.
 */

export interface NodeBinary {
  /** As given (paths of this machine are replaced in the report). */
  bin: string;
  version: string;
}

export interface RuntimeRow {
  op: 'backup' | 'restore';
  label: string;
  /** Wall seconds and peak RSS per successful run, per runtime. */
  primary: { seconds: number[]; rss: number[] };
  compare: { seconds: number[]; rss: number[] };
  errors: string[];
}

export interface RuntimeSection {
  primary: NodeBinary;
  compare: NodeBinary;
  rows: RuntimeRow[];
  fidelity: { checks: number; failures: string[] };
}

/** `BIN --version`, refusing a binary that is not a Node. */
export function nodeVersion(bin: string): string {
  let out: string;
  try {
    out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 30_000 }).trim();
  } catch (err) {
    throw new BenchError(`${bin}: cannot run it as a Node binary (${(err as Error).message.split('\n')[0]})`);
  }
  if (!/^v\d+\.\d+\.\d+/.test(out)) throw new BenchError(`${bin} --version printed ${JSON.stringify(out.slice(0, 60))}, not a Node version`);
  return out.replace(/^v/, '');
}

export interface RuntimeOptions {
  primary: NodeBinary;
  compare: NodeBinary;
  runs: number;
  out: string;
  server: Server;
  /** coffer's command on the given Node binary. */
  coffer: (args: string[], node: string) => [string, string[]];
  backupArgs: (file: string) => string[];
  backupEnv: NodeJS.ProcessEnv;
  /** A fresh empty database and DATA_DIR for one restore; returns the args, env and a clean-up. */
  restoreTarget: () => Promise<{ args: string[]; env: NodeJS.ProcessEnv; check: () => Promise<string[]>; done: () => Promise<void> }>;
}

export async function measureRuntime(o: RuntimeOptions): Promise<RuntimeSection> {
  const rows: RuntimeRow[] = [
    { op: 'backup', label: 'coffer backup (db+files)', primary: { seconds: [], rss: [] }, compare: { seconds: [], rss: [] }, errors: [] },
    { op: 'restore', label: 'coffer restore (db+files)', primary: { seconds: [], rss: [] }, compare: { seconds: [], rss: [] }, errors: [] },
  ];
  const section: RuntimeSection = { primary: o.primary, compare: o.compare, rows, fidelity: { checks: 0, failures: [] } };
  const sides = [
    { key: 'primary' as const, node: o.primary },
    { key: 'compare' as const, node: o.compare },
  ];
  for (let runNo = 1; runNo <= o.runs; runNo++) {
    for (const side of runNo % 2 === 0 ? [...sides].reverse() : sides) {
      const file = path.join(o.out, `runtime-${side.key}.zip`);
      fs.rmSync(file, { force: true });
      const run = async (row: RuntimeRow, args: string[], env: NodeJS.ProcessEnv): Promise<boolean> => {
        const [cmd, full] = o.coffer(args, side.node.bin);
        await checkpoint(o.server);
        await settleDisks();
        say(`runtime, run ${runNo}/${o.runs}: ${row.label} on Node ${side.node.version}…`);
        const m = await measure(cmd, full, { env, cwd: o.out });
        if (m.exitCode !== 0) {
          row.errors.push(`Node ${side.node.version}, run ${runNo}: exit ${m.signal ?? m.exitCode}: ${m.outputTail}`);
          say(`  FAILED: ${m.outputTail}`);
          return false;
        }
        row[side.key].seconds.push(m.wallSeconds);
        row[side.key].rss.push(m.peakRssBytes);
        say(`  ${fmtSeconds(m.wallSeconds)}, peak RSS ${fmtMB(m.peakRssBytes, 0)}`);
        return true;
      };
      if (!(await run(rows[0], o.backupArgs(file), o.backupEnv))) continue;
      const target = await o.restoreTarget();
      try {
        const ok = await run(rows[1], ['restore', file, '--yes', ...target.args], target.env);
        // The primary runtime's restores are checked by the main runs; the second runtime's here.
        if (ok && side.key === 'compare') {
          const problems = await target.check();
          section.fidelity.checks++;
          if (problems.length) section.fidelity.failures.push(`Node ${side.node.version}, run ${runNo}: ${problems.slice(0, 5).join('; ')}`);
          say(problems.length ? `  FIDELITY CHECK FAILED: ${problems.slice(0, 3).join('; ')}` : '  fidelity check passed (database and upload files)');
        }
      } finally {
        await target.done();
      }
      fs.rmSync(file, { force: true });
    }
  }
  return section;
}

const major = (v: string) => v.split('.')[0];

export function runtimeSection(s: RuntimeSection): string {
  // Columns in version order, so the ratio is always newer / older (Node 24 / Node 20), whichever
  // of the two was --node.
  const swap = Number(major(s.compare.version)) < Number(major(s.primary.version));
  const [older, newer] = swap ? [s.compare, s.primary] : [s.primary, s.compare];
  const side = (r: RuntimeRow, which: 'older' | 'newer') => ((which === 'older') !== swap ? r.primary : r.compare);
  const a = `Node ${major(older.version)}`;
  const b = `Node ${major(newer.version)}`;
  const cell = (x: number[]) => (x.length ? fmtSeconds(median(x)) : 'n/a');
  const rows = s.rows.map((r) => {
    const [x, y] = [side(r, 'older'), side(r, 'newer')];
    return [
      r.label,
      `${x.seconds.length}/${y.seconds.length}`,
      cell(x.seconds),
      cell(y.seconds),
      x.seconds.length && y.seconds.length ? `${(median(y.seconds) / median(x.seconds)).toFixed(2)}×` : 'n/a',
      x.seconds.length && y.seconds.length ? `${(min(y.seconds) / min(x.seconds)).toFixed(2)}×` : 'n/a',
      x.rss.length ? fmtMB(max(x.rss), 0) : 'n/a',
      y.rss.length ? fmtMB(max(y.rss), 0) : 'n/a',
    ];
  });
  const errors = s.rows.flatMap((r) => r.errors.map((e) => `- ${r.label}: ${e}`));
  return [
    `coffer on ${a} (${older.version}, \`${older.bin}\`) and on ${b} (${newer.version}, \`${newer.bin}\`), same data, same server, runs interleaved; --node was Node ${s.primary.version}, --compare-node Node ${s.compare.version}.`,
    '',
    table(['operation', 'runs', `median ${a}`, `median ${b}`, `${b} / ${a} (median)`, `${b} / ${a} (min)`, `peak RSS ${a}`, `peak RSS ${b}`], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r']),
    '',
    `- fidelity of the --compare-node (Node ${s.compare.version}) restores: ${s.fidelity.failures.length ? `**FAILED**: ${s.fidelity.failures.join('; ')}` : s.fidelity.checks ? `all ${s.fidelity.checks} equal the source (database and upload files)` : 'not checked'}; the --node restores are checked in the main runs.`,
    ...errors,
    '',
  ].join('\n');
}
