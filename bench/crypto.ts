/**
 * Encryption throughput, format v1 beside age, on the same file (the db+files archive of the run):
 * `coffer encrypt` and `coffer decrypt` as an operator runs them, so process start-up is included.
 */
import fs from 'node:fs';
import path from 'node:path';
import { measure } from './measure';
import { fmtMB, fmtSeconds, max, mb, median, min, say, table } from './util';

export interface CryptoRow {
  format: 'format v1 (AES-256-GCM, raw key)' | 'age (X25519, ChaCha20-Poly1305)';
  op: 'encrypt' | 'decrypt';
  command: string;
  seconds: number[];
  peakRssBytes: number[];
  errors: string[];
}

export interface CryptoSection {
  plaintextBytes: number;
  rows: CryptoRow[];
}

export interface CryptoBenchOptions {
  input: string;
  workDir: string;
  runs: number;
  keyFile: string;
  identityFile: string;
  recipient: string;
  coffer: (args: string[]) => [string, string[]];
  env: NodeJS.ProcessEnv;
}

export async function measureCrypto(o: CryptoBenchOptions): Promise<CryptoSection> {
  const formats = [
    { format: 'format v1 (AES-256-GCM, raw key)' as const, ext: 'crypt', seal: ['--key-file', o.keyFile], open: ['--key-file', o.keyFile] },
    { format: 'age (X25519, ChaCha20-Poly1305)' as const, ext: 'age', seal: ['--recipient', o.recipient], open: ['--identity', o.identityFile] },
  ];
  const rows: CryptoRow[] = formats.flatMap((f) => (['encrypt', 'decrypt'] as const).map((op) => ({ format: f.format, op, command: '', seconds: [], peakRssBytes: [], errors: [] })));
  for (let runNo = 1; runNo <= o.runs; runNo++) {
    for (const f of runNo % 2 === 0 ? [...formats].reverse() : formats) {
      const sealed = path.join(o.workDir, `crypto.zip.${f.ext}`);
      const opened = path.join(o.workDir, `crypto-${f.ext}.zip`);
      for (const op of ['encrypt', 'decrypt'] as const) {
        const out = op === 'encrypt' ? sealed : opened;
        fs.rmSync(out, { force: true });
        const [cmd, args] = o.coffer(op === 'encrypt' ? ['encrypt', o.input, sealed, ...f.seal] : ['decrypt', sealed, opened, ...f.open]);
        const row = rows.find((r) => r.format === f.format && r.op === op)!;
        row.command = `coffer ${op} … ${(op === 'encrypt' ? f.seal : f.open)[0]} …`;
        say(`run ${runNo}/${o.runs}: ${op} (${f.format})…`);
        const m = await measure(cmd, args, { env: o.env, cwd: o.workDir });
        if (m.exitCode !== 0) {
          row.errors.push(`exit ${m.signal ?? m.exitCode}: ${m.outputTail}`);
          continue;
        }
        row.seconds.push(m.wallSeconds);
        row.peakRssBytes.push(m.peakRssBytes);
        say(`  ${fmtSeconds(m.wallSeconds)}, ${(mb(fs.statSync(o.input).size) / m.wallSeconds).toFixed(0)} MB/s`);
      }
      if (!fs.readFileSync(opened).equals(fs.readFileSync(o.input))) rows.find((r) => r.format === f.format && r.op === 'decrypt')!.errors.push('decrypted file differs from the input');
      fs.rmSync(sealed, { force: true });
      fs.rmSync(opened, { force: true });
    }
  }
  return { plaintextBytes: fs.statSync(o.input).size, rows };
}

export function cryptoSection(s: CryptoSection): string {
  const rate = (secs: number) => (mb(s.plaintextBytes) / secs).toFixed(0);
  const rows = s.rows.map((r) => [
    r.format,
    r.op,
    `${r.seconds.length}${r.errors.length ? ` (+${r.errors.length} failed)` : ''}`,
    r.seconds.length ? fmtSeconds(min(r.seconds)) : 'n/a',
    r.seconds.length ? fmtSeconds(median(r.seconds)) : 'n/a',
    r.seconds.length ? rate(median(r.seconds)) : 'n/a',
    r.seconds.length ? rate(min(r.seconds)) : 'n/a',
    r.peakRssBytes.length ? fmtMB(max(r.peakRssBytes), 0) : 'n/a',
  ]);
  const ratio = (op: 'encrypt' | 'decrypt') => {
    const [v1, age] = [s.rows.find((r) => r.op === op && r.format.startsWith('format v1')), s.rows.find((r) => r.op === op && r.format.startsWith('age'))];
    return v1?.seconds.length && age?.seconds.length ? (median(age.seconds) / median(v1.seconds)).toFixed(2) : 'n/a';
  };
  const errors = s.rows.flatMap((r) => r.errors.map((e) => `- ${r.op} (${r.format}): ${e}`));
  return [
    `The db+files archive of this run (${fmtMB(s.plaintextBytes)}), file to file; MB/s of plaintext, process start-up included.`,
    '',
    table(['format', 'op', 'runs', 'min', 'median', 'MB/s (median)', 'MB/s (min)', 'peak RSS'], rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r']),
    '',
    `age / format v1 wall time: encrypt ${ratio('encrypt')}×, decrypt ${ratio('decrypt')}×.`,
    ...(errors.length ? ['', ...errors] : []),
    '',
  ].join('\n');
}
