import { JsonlToCopy, type CopyColumn } from '../src/db/jsonl-to-copy';
import { seededRandom as rng } from './crypto/helpers';

/**
 * The converter reads a line row_to_json could have written in one pass (`canonicalRow`) and any
 * other line with the general reader (`anyRow`). These tests hold the two to the same answer: the same
 * COPY text, or the same error, for canonical lines, for lines the one pass hands over, and for
 * random corruptions of both.
 */

const columns: CopyColumn[] = [
  { name: 'id', kind: 'scalar' },
  { name: 'title', kind: 'scalar' },
  { name: 'score', kind: 'scalar' },
  { name: 'ok', kind: 'scalar' },
  { name: 'data', kind: 'json', jsonNullIsValue: true },
  { name: 'extra', kind: 'json' },
  { name: 'tags', kind: 'array' },
  { name: 'note "q"', kind: 'scalar' },
];

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];

/** String content as JSON writes it: plain text, the escapes COPY shares, \" and \/, UTF-8. */
function jsonString(r: Rand, withUnicodeEscapes: boolean): string {
  const parts = ['a', 'Zq', ' ', 'ü', '中文', '😀', '\\"', '\\\\', '\\n', '\\t', '\\r', '\\b', '\\f', '\\/', '/', "'", '{', ']', ',', ':', 'null', '\x7f'];
  if (withUnicodeEscapes) parts.push('\\u00e9', '\\u0001', '\\u005c', '\\ud83d\\ude00', '\\u001f');
  let s = '';
  const n = Math.floor(r() * 12);
  for (let i = 0; i < n; i++) s += pick(r, parts);
  return `"${s}"`;
}

function jsonNumber(r: Rand): string {
  return pick(r, ['0', '-0', '7', '-12', '3.25', '1e10', '-2.5E-3', '123456789012345678901234567890.000000000000000000001', '6.97']);
}

function jsonValue(r: Rand, depth: number, withUnicodeEscapes: boolean): string {
  const k = r();
  if (depth > 0 && k < 0.2) return `{${Array.from({ length: Math.floor(r() * 3) }, () => `${jsonString(r, withUnicodeEscapes)}:${jsonValue(r, depth - 1, withUnicodeEscapes)}`).join(pick(r, [',', ', ']))}}`;
  if (depth > 0 && k < 0.35) return `[${Array.from({ length: Math.floor(r() * 3) }, () => jsonValue(r, depth - 1, withUnicodeEscapes)).join(pick(r, [',', ', ']))}]`;
  if (k < 0.6) return jsonString(r, withUnicodeEscapes);
  if (k < 0.8) return jsonNumber(r);
  return pick(r, ['true', 'false', 'null']);
}

/** A line as row_to_json writes it: every column, in order, no whitespace between tokens. */
function canonicalLine(r: Rand, withUnicodeEscapes: boolean, arraysNull = false): string {
  const value = (c: CopyColumn): string => {
    if (r() < 0.15 || (arraysNull && c.kind === 'array')) return 'null';
    if (c.kind === 'json') return pick(r, ['{}', '[]', '{"a": 1}', '"s"', jsonValue(r, 3, withUnicodeEscapes)]);
    if (c.kind === 'array') return `[${Array.from({ length: Math.floor(r() * 3) }, () => pick(r, [jsonString(r, false), 'null', '1'])).join(',')}]`;
    if (c.name === 'ok') return pick(r, ['true', 'false']);
    if (c.name === 'id' || c.name === 'score') return jsonNumber(r);
    return jsonString(r, withUnicodeEscapes);
  };
  return `{${columns.map((c) => `${JSON.stringify(c.name)}:${value(c)}`).join(',')}}`;
}

/** Damage of the kinds that matter to a byte reader: a byte gone, one added, a piece repeated. */
function corrupt(r: Rand, line: string): string {
  const at = Math.floor(r() * (line.length + 1));
  const k = r();
  if (k < 0.35) return line.slice(0, at) + line.slice(at + 1);
  if (k < 0.75) return line.slice(0, at) + pick(r, ['{', '}', '[', ']', '"', '\\', ',', ':', ' ', '\t', 'n', 't', 'f', '0', '-', 'x', '\r', 'é']) + line.slice(at);
  const len = Math.floor(r() * 12);
  return line.slice(0, at) + line.slice(at, at + len) + line.slice(at);
}

type Outcome = { text: string } | { error: string };

async function convert(line: string, fast: boolean): Promise<Outcome> {
  const t = new JsonlToCopy(columns, 'db/t.jsonl', fast);
  const out: Buffer[] = [];
  t.on('data', (d: Buffer) => out.push(d));
  const done = new Promise<void>((resolve, reject) => {
    t.on('end', resolve);
    t.on('error', reject);
  });
  t.end(Buffer.from(`${line}\n`));
  try {
    await done;
    return { text: Buffer.concat(out).toString('utf8') };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** How many lines of `lines` the one pass handed over to the general reader. */
async function handedOver(lines: string[]): Promise<number> {
  const spy = jest.spyOn(JsonlToCopy.prototype as unknown as { anyRow: () => void }, 'anyRow');
  try {
    for (const line of lines) await convert(line, true);
    return spy.mock.calls.length;
  } finally {
    spy.mockRestore();
  }
}

describe('JSONL to COPY: the one-pass reader and the general reader agree', () => {
  test('canonical lines without \\u escapes take the one pass and convert as the general reader does', async () => {
    const r = rng(1);
    const lines = Array.from({ length: 600 }, () => canonicalLine(r, false));
    for (const line of lines) {
      const fast = await convert(line, true);
      expect('text' in fast).toBe(true);
      expect(fast).toEqual(await convert(line, false));
    }
    // Array columns go to the general reader; every other line stays in the one pass.
    const withArrays = lines.filter((l) => !/"tags":null/.test(l)).length;
    expect(await handedOver(lines)).toBe(withArrays);
  });

  test('lines with an array column left null, and nothing else unusual, never leave the one pass', async () => {
    const r = rng(2);
    const lines = Array.from({ length: 300 }, () => canonicalLine(r, false, true));
    expect(await handedOver(lines)).toBe(0);
    for (const line of lines) expect(await convert(line, true)).toEqual(await convert(line, false));
  });

  test('lines the one pass hands over (\\u escapes, whitespace, other key orders, missing keys) convert the same', async () => {
    const r = rng(3);
    const lines: string[] = [];
    for (let i = 0; i < 300; i++) {
      const line = canonicalLine(r, true);
      lines.push(line);
      lines.push(line.replace(/,"/g, ', "'));
      lines.push(line.replace(/^\{("id":[^,]*),(.*)\}$/, '{$2,$1}'));
      lines.push(line.replace(/,"score":[^,]*/, ''));
      lines.push(`${line} `);
    }
    for (const line of lines) expect(await convert(line, true)).toEqual(await convert(line, false));
  });

  test('random corruptions of lines get the same COPY text or the same error from both', async () => {
    const r = rng(4);
    let errors = 0;
    for (let i = 0; i < 4000; i++) {
      let line = canonicalLine(r, r() < 0.3);
      for (let k = 1 + Math.floor(r() * 3); k > 0; k--) line = corrupt(r, line);
      const fast = await convert(line, true);
      expect({ line, ...fast }).toEqual({ line, ...(await convert(line, false)) });
      if ('error' in fast) errors++;
    }
    // The corpus must exercise both outcomes to mean anything.
    expect(errors).toBeGreaterThan(1000);
    expect(errors).toBeLessThan(3900);
  });

  test('both refuse what a JSON reader refuses in a string, and text that is not UTF-8, with the same error', async () => {
    const base = { id: 1, title: 'x', score: 2, ok: true, data: null, extra: null, tags: null, 'note "q"': null };
    const line = (column: string, json: string) => JSON.stringify({ ...base, [column]: '\u0001' }).replace('"\\u0001"', json);
    const cases: [string, RegExp][] = [
      [line('title', '"a\tb"'), /unescaped control character in a string/],
      [line('title', '"a\rb"'), /unescaped control character in a string/],
      [line('note "q"', '"\u0000"'), /unescaped control character in a string/],
      [line('data', '{"k":"a\tb"}'), /unescaped control character in a string/],
      [line('extra', '["a\u001fb"]'), /unescaped control character in a string/],
      [line('tags', '["a\tb"]'), /unescaped control character in a string/],
      [line('tags', '["a\\qb"]'), /invalid escape in string/],
      [line('tags', '["a\\u0000b"]'), /\\u0000 cannot be stored/],
      [line('tags', '["a\\ud800b"]'), /unpaired surrogate/],
      [line('tags', '["a\\udc00"]'), /unpaired surrogate/],
      ['{"id":1,"ti\\qtle":"x"}', /invalid escape in string/],
    ];
    for (const [text, message] of cases) {
      const fast = await convert(text, true);
      expect({ text, ...fast }).toEqual({ text, error: expect.stringMatching(message) });
      expect(await convert(text, false)).toEqual(fast);
    }
    // Escaped, the same characters are text like any other.
    expect(await convert(line('tags', '["a\\tb\\u0001","\\u00e9\\ud83d\\ude00"]'), true)).toEqual({ text: '1\tx\t2\tt\tnull\t\\N\t{"a\\tb\x01","é😀"}\t\\N\n' });
  });

  test('text that is not UTF-8 is refused on its line, wherever the chunks of the entry end', async () => {
    const good = Buffer.from('{"id":1,"title":"é"}\n');
    const bad = Buffer.concat([Buffer.from('{"id":2,"title":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]);
    // An encoded surrogate (ED A0 80) is not UTF-8 either, as PostgreSQL holds.
    const surrogate = Buffer.concat([Buffer.from('{"id":3,"title":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}\n')]);
    for (const [badLine, lineNo] of [[bad, 3], [surrogate, 2]] as const) {
      const input = lineNo === 3 ? Buffer.concat([good, good, badLine, good]) : Buffer.concat([good, badLine, good]);
      for (let cut = 0; cut <= input.length; cut += 3) {
        for (const fast of [true, false]) {
          const t = new JsonlToCopy(columns, 'db/t.jsonl', fast);
          t.resume();
          const failed = new Promise<Error | undefined>((resolve) => t.on('error', resolve).on('end', () => resolve(undefined)));
          t.write(input.subarray(0, cut));
          t.end(input.subarray(cut));
          expect((await failed)?.message).toBe(`db/t.jsonl: line ${lineNo} is not a valid row: not valid UTF-8`);
        }
      }
    }
    // Valid multibyte characters split between chunks at every byte are not refused.
    const text = Buffer.from('{"id":1,"title":"中文😀é"}\n');
    for (let cut = 0; cut <= text.length; cut++) {
      const t = new JsonlToCopy(columns, 'db/t.jsonl');
      const out: Buffer[] = [];
      t.on('data', (d: Buffer) => out.push(d));
      const done = new Promise((resolve, reject) => t.on('end', resolve).on('error', reject));
      t.write(text.subarray(0, cut));
      t.end(text.subarray(cut));
      await done;
      expect(Buffer.concat(out).toString()).toBe('1\t中文😀é\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n');
    }
  });

  test('the one pass writes what the general reader writes for the escapes they share', async () => {
    const line = '{"id":1,"title":"a\\"b\\\\c\\/d\\n\\t\\r\\b\\f","score":-2.5E-3,"ok":false,"data":{"k":["\\\\",null]},"extra":null,"tags":null,"note \\"q\\"":"x"}';
    expect(await handedOver([line])).toBe(0);
    expect(await convert(line, true)).toEqual({ text: '1\ta"b\\\\c/d\\n\\t\\r\\b\\f\t-2.5E-3\tf\t{"k":["\\\\\\\\",null]}\t\\N\t\\N\tx\n' });
  });
});

describe('JSONL to COPY: output handed over in pieces', () => {
  test('pieces already handed over stay intact while later rows are written, over many chunks of any size', async () => {
    const r = rng(41);
    const lines = Array.from({ length: 10000 }, () => canonicalLine(r, r() < 0.3));
    // A long line now and then makes the output outgrow its buffer in the middle of a chunk.
    const long = `{"id":1,"title":"${'x\\n'.repeat(800_000)}","score":2,"ok":true,"data":null,"extra":null,"tags":null,"note \\"q\\"":null}`;
    lines.splice(7000, 0, long);
    lines.splice(700, 0, long);
    const expected = (await Promise.all(lines.map((l) => convert(l, true)))).map((o) => ('text' in o ? o.text : `error: ${o.error}`)).join('');
    expect(expected).not.toContain('error:');
    const input = Buffer.from(lines.map((l) => `${l}\n`).join(''));
    const t = new JsonlToCopy(columns, 'db/t.jsonl');
    // Every piece is kept as handed over, so a later row written over one would show.
    const pieces: Buffer[] = [];
    t.on('data', (piece: Buffer) => pieces.push(piece));
    const done = new Promise((resolve, reject) => t.on('end', resolve).on('error', reject));
    for (let p = 0; p < input.length; ) {
      const n = Math.min(input.length - p, 1 + Math.floor(r() * 60_000));
      t.write(input.subarray(p, p + n));
      p += n;
    }
    t.end();
    await done;
    expect(pieces.length).toBeGreaterThan(10);
    expect(Buffer.concat(pieces).toString('utf8')).toBe(expected);
  });
});
