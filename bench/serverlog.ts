import fs from 'node:fs';

/**
 * Where the server spends its time during one measured command, from the throwaway cluster's log
 * (log_min_duration_statement = 0 logs every statement with its duration). The bench notes the log's
 * size before and after each command and reads the slice in between. Durations of COPY include the
 * time the server waited for the client (or the client for the server), so "COPY" is the whole
 * streaming phase, not server CPU alone; what is not in any statement (process start, connecting,
 * client-side work between statements) shows as the remainder of the wall time.
 */

export interface LoggedStatement {
  ms: number;
  app: string;
  pid: number;
  text: string;
}

export interface Breakdown {
  wallSeconds: number;
  loggedSeconds: number;
  categories: { name: string; seconds: number }[];
  top: { label: string; seconds: number }[];
}

const LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (.*?) ?LOG: {2}duration: ([\d.]+) ms {2}(statement|execute [^:]*|parse [^:]*|bind [^:]*): ?(.*)$/;
const PREFIX = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/;

export function logSize(file: string | undefined): number {
  if (!file) return 0;
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

export function readStatements(file: string, from: number, to: number): LoggedStatement[] {
  if (to <= from) return [];
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(to - from);
  try {
    fs.readSync(fd, buf, 0, buf.length, from);
  } finally {
    fs.closeSync(fd);
  }
  const out: LoggedStatement[] = [];
  let last: LoggedStatement | undefined;
  for (const line of buf.toString('utf8').split('\n')) {
    const m = LINE.exec(line);
    if (m) {
      last = undefined;
      // parse and bind steps of the extended protocol are tiny and would count a statement twice
      if (m[4].startsWith('parse') || m[4].startsWith('bind')) continue;
      last = { pid: Number(m[1]), app: m[2], ms: Number(m[3]), text: m[5] };
      out.push(last);
    } else if (last && !PREFIX.test(line) && last.text.length < 400) {
      last.text += ' ' + line.trim();
    } else if (PREFIX.test(line)) {
      last = undefined;
    }
  }
  return out;
}

function tableIn(text: string): string {
  const m = /(?:FROM|INTO|TABLE(?: ONLY)?|COPY|ON(?: ONLY)?)\s+(?:"?public"?\.)"?([A-Za-z_][\w]*)"?/i.exec(text);
  return m ? m[1] : '?';
}

function classify(s: LoggedStatement): { category: string; label: string } {
  const t = s.text.trim();
  if (/^COPY\b/i.test(t) && /\bTO STDOUT\b/i.test(t)) {
    const m = /FROM\s+"?public"?\."?(\w+)"?/i.exec(t);
    return { category: 'COPY out (table data)', label: `COPY out ${m ? m[1] : tableIn(t)}` };
  }
  if (/^COPY\b/i.test(t) && /\bFROM STDIN\b/i.test(t)) {
    if (/coffer_restore_stage/.test(t)) return { category: 'COPY into the staging table', label: 'COPY stage' };
    return { category: 'COPY into tables', label: `COPY ${tableIn(t)}` };
  }
  if (/^INSERT INTO\b/i.test(t) && /jsonb_populate_record/i.test(t)) return { category: 'INSERT … jsonb_populate_record', label: `INSERT ${tableIn(t)}` };
  if (/^CREATE (UNIQUE )?INDEX/i.test(t)) {
    const m = /INDEX\s+(?:CONCURRENTLY\s+)?"?(\w+)"?/i.exec(t);
    return { category: 'CREATE INDEX', label: `CREATE INDEX ${m ? m[1] : '?'}` };
  }
  if (/ADD CONSTRAINT/i.test(t)) {
    const m = /ADD CONSTRAINT\s+"?(\w+)"?/i.exec(t);
    if (/FOREIGN KEY/i.test(t)) return { category: 'foreign keys (validation)', label: `FK ${m ? m[1] : '?'}` };
    return { category: 'primary keys / unique / check', label: `constraint ${m ? m[1] : '?'}` };
  }
  if (/^COMMIT\b/i.test(t)) return { category: 'COMMIT', label: 'COMMIT' };
  if (/^SET CONSTRAINTS/i.test(t)) return { category: 'foreign keys (validation)', label: 'SET CONSTRAINTS ALL IMMEDIATE' };
  if (/^--|CREATE TABLE|CREATE TYPE|DROP SCHEMA|TRUNCATE/i.test(t)) return { category: 'schema: flush, migrations, truncate', label: t.slice(0, 40) };
  return { category: 'other statements', label: t.slice(0, 40) };
}

/** Statement time by category, and the longest statements, for one command. */
export function breakdown(statements: LoggedStatement[], wallSeconds: number, apps: string[]): Breakdown {
  const mine = statements.filter((s) => apps.includes(s.app));
  const byCategory = new Map<string, number>();
  const labelled: { label: string; seconds: number }[] = [];
  // coffer's restore COPYs each table into the staging table, then INSERTs from it: a COPY is named
  // after the INSERT that follows it on the same connection.
  for (let i = 0; i < mine.length; i++) {
    const s = mine[i];
    const c = classify(s);
    let label = c.label;
    if (label === 'COPY stage') {
      const next = mine.slice(i + 1).find((x) => x.pid === s.pid && /^INSERT INTO/i.test(x.text.trim()));
      label = `COPY stage (${next ? tableIn(next.text) : '?'})`;
    }
    byCategory.set(c.category, (byCategory.get(c.category) ?? 0) + s.ms / 1000);
    labelled.push({ label, seconds: s.ms / 1000 });
  }
  const loggedSeconds = mine.reduce((n, s) => n + s.ms / 1000, 0);
  const categories = [...byCategory.entries()].map(([name, seconds]) => ({ name, seconds })).sort((a, b) => b.seconds - a.seconds);
  categories.push({ name: 'outside statements (start-up, client work between statements)', seconds: Math.max(0, wallSeconds - loggedSeconds) });
  const top = labelled.sort((a, b) => b.seconds - a.seconds).slice(0, 10);
  return { wallSeconds, loggedSeconds, categories, top };
}
