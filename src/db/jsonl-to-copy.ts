import { isUtf8 } from 'node:buffer';
import { Transform, type TransformCallback } from 'node:stream';
import { CofferError } from '../core/errors';
import type { TableInfo } from './introspect';

/**
 * Turns JSONL rows (as row_to_json wrote them) into PostgreSQL COPY text rows, so a restore can COPY
 * straight into the table instead of staging lines and converting them with jsonb_populate_record.
 *
 * Nothing goes through JSON.parse: values are sliced out of the line as bytes. Numbers are carried as
 * their exact text (numeric and bigint keep every digit), json/jsonb values are copied verbatim, and
 * JSON string escapes are rewritten into COPY escapes (most are the same bytes: \n \r \t \b \f \\).
 */

export type ColumnKind = 'scalar' | 'json' | 'array';

export interface CopyColumn {
  name: string;
  kind: ColumnKind;
  /** json/jsonb NOT NULL: a JSON null there can only have been a jsonb 'null'. */
  jsonNullIsValue?: boolean;
}

/**
 * How the JSONL-to-COPY converter writes each column. A type it cannot write itself (the populate
 * path's tables) is read as verbatim JSON: the line's structure and column names are still checked.
 */
export function copyColumns(table: TableInfo): CopyColumn[] {
  return table.columns.map((c) => ({ name: c.name, kind: c.kind ?? 'json', jsonNullIsValue: c.kind === 'json' && c.notNull }));
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
const NEWLINE = 0x0a;
const TAB = 0x09;

const NULL_FIELD = Buffer.from('\\N');

class RowError extends Error {}

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

/** The converter's output buffers (a chunk of rows is at most a few hundred KiB). */
const OUT_SIZE = 1024 * 1024;
const EMPTY = Buffer.alloc(0);

/**
 * Growable output buffer: rows are appended as byte slices without intermediate strings. What is
 * taken is a view of the buffer, and the next rows go into the space after it: a new buffer is
 * allocated only when the rest is too small, not for every chunk (on a restore the chunks come as
 * zlib and the decryptor hand them over, often much smaller than the buffer, and every buffer that
 * waits for a collection is memory held and collection work).
 */
class Out {
  buf = EMPTY;
  /** Where the bytes not taken yet begin. */
  start = 0;
  len = 0;

  constructor() {
    // Assigned twice from the start, so V8 never takes `buf` for a constant: code compiled while it
    // was one would be thrown away when the buffer is first replaced (see `canonicalRow`).
    this.buf = Buffer.allocUnsafe(OUT_SIZE);
  }

  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const pending = this.pending;
    const next = Buffer.allocUnsafe(Math.max(OUT_SIZE, 2 * pending + n));
    this.buf.copy(next, 0, this.start, this.len);
    this.buf = next;
    this.start = 0;
    this.len = pending;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  slice(src: Buffer, start: number, end: number): void {
    const n = end - start;
    this.ensure(n);
    if (n < 48) {
      // Short fields are most fields: a loop beats the native copy's call overhead.
      const buf = this.buf;
      let o = this.len;
      for (let i = start; i < end; i++) buf[o++] = src[i];
      this.len = o;
      return;
    }
    src.copy(this.buf, this.len, start, end);
    this.len += n;
  }

  bytes(b: Buffer): void {
    this.slice(b, 0, b.length);
  }

  /** Bytes written since the last take. */
  get pending(): number {
    return this.len - this.start;
  }

  /** Hands over what was written since the last take (a view, no copy); later rows go after it. */
  take(): Buffer {
    const out = this.buf.subarray(this.start, this.len);
    this.start = this.len;
    return out;
  }
}

export class JsonlToCopy extends Transform {
  private readonly columnIndex = new Map<string, number>();
  /** Each column's key as it appears in a line ("name" with its quotes), to match without decoding. */
  private readonly keys: Buffer[];
  private readonly starts: Int32Array;
  private readonly ends: Int32Array;
  private readonly out = new Out();
  /** Pieces of a line that has not ended yet (joined once, when its newline arrives). */
  private rest: Buffer[] = [];
  private lineNo = 0;

  /**
   * `fast: false` converts every line with the general reader alone (the tests compare the two
   * readers on the same lines); restore and verify always take the default.
   */
  constructor(
    private readonly columns: CopyColumn[],
    private readonly entry: string,
    private readonly fast = true,
  ) {
    super({ readableHighWaterMark: 1024 * 1024 });
    columns.forEach((c, i) => this.columnIndex.set(c.name, i));
    this.keys = columns.map((c) => Buffer.from(JSON.stringify(c.name), 'utf8'));
    this.starts = new Int32Array(columns.length);
    this.ends = new Int32Array(columns.length);
  }

  _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      const data = chunk;
      let pos = 0;
      if (this.rest.length > 0) {
        // Only the line that straddles the chunks is joined; the rest is read in place.
        const nl = data.indexOf(NEWLINE);
        if (nl === -1) {
          this.rest.push(Buffer.from(data));
          return cb();
        }
        this.rest.push(data.subarray(0, nl));
        const line = Buffer.concat(this.rest);
        this.rest = [];
        this.row(line, 0, line.length, true);
        pos = nl + 1;
      }
      // The whole lines of the chunk are checked as UTF-8 at once (a newline byte is never inside a
      // multibyte character); only when that fails is each line checked, to name the first bad one.
      const last = data.lastIndexOf(NEWLINE);
      const eachLine = last > pos && !isUtf8(data.subarray(pos, last));
      for (let nl = data.indexOf(NEWLINE, pos); nl !== -1; nl = data.indexOf(NEWLINE, pos)) {
        this.row(data, pos, nl, eachLine);
        pos = nl + 1;
      }
      if (pos < data.length) this.rest.push(Buffer.from(data.subarray(pos)));
      if (this.out.pending > 0) this.push(this.out.take());
      cb();
    } catch (err) {
      cb(this.rowFailure(err));
    }
  }

  _flush(cb: TransformCallback): void {
    if (this.rest.length > 0) {
      return cb(new CofferError('E_ARCHIVE_BAD_ROW', `${this.entry}: line ${this.lineNo + 1} does not end with a newline (truncated entry)`));
    }
    cb();
  }

  private rowFailure(err: unknown): Error {
    if (err instanceof RowError) return new CofferError('E_ARCHIVE_BAD_ROW', `${this.entry}: line ${this.lineNo} is not a valid row: ${err.message}`);
    return err as Error;
  }

  /**
   * One line → one COPY row (fields in column order, missing keys as NULL). The text must be UTF-8,
   * as JSON requires: PostgreSQL would refuse anything else, and only after the load had begun.
   */
  private row(buf: Buffer, start: number, end: number, checkUtf8: boolean): void {
    this.lineNo++;
    if (checkUtf8 && !isUtf8(buf.subarray(start, end))) throw new RowError('not valid UTF-8');
    if (this.fast) {
      // Room for the row is made here, not in the one pass: see `canonicalRow`.
      this.out.ensure(2 * (end - start) + 2);
      if (this.canonicalRow(buf, start, end)) return;
    }
    this.anyRow(buf, start, end);
  }

  /**
   * The row as row_to_json writes it, in one pass: every column's key, in column order, no whitespace
   * between tokens, strings without \u escapes or raw control characters, no array columns. Output is
   * written straight into the buffer and kept only if the whole line matched; anything else (including
   * every malformed line) returns false and goes to `anyRow`, which alone decides what a line means
   * and which error it gets. The two give the same COPY text for every line this one accepts.
   *
   * It is most of a restore's conversion time, and it is kept free of paths that run once in a long
   * while (growing the buffer): V8 in Node 20 deoptimizes a function when such a path first runs, and
   * when that happens while the function also has code compiled on stack replacement, every later call
   * runs unoptimized up to the loop the replacement starts at. Measured on the bench's events table,
   * that doubled the conversion time in about one process of four.
   */
  private canonicalRow(buf: Buffer, start: number, end: number): boolean {
    const columns = this.columns;
    const keys = this.keys;
    const n = columns.length;
    const ob = this.out.buf;
    let o = this.out.len;
    let p = start;
    if (buf[p++] !== LBRACE) return false;
    for (let i = 0; i < n; i++) {
      if (i > 0) {
        if (buf[p++] !== COMMA) return false;
        ob[o++] = TAB;
      }
      const k = keys[i];
      if (p + k.length >= end) return false;
      for (let j = 0; j < k.length; j++) if (buf[p + j] !== k[j]) return false;
      p += k.length;
      if (buf[p++] !== COLON) return false;
      const col = columns[i];
      const first = buf[p];
      if (first === 0x6e /* n */) {
        if (p + 4 > end || buf[p + 1] !== 0x75 || buf[p + 2] !== 0x6c || buf[p + 3] !== 0x6c) return false;
        if (col.kind === 'json' && col.jsonNullIsValue) {
          ob[o++] = 0x6e;
          ob[o++] = 0x75;
          ob[o++] = 0x6c;
          ob[o++] = 0x6c;
        } else {
          ob[o++] = BACKSLASH;
          ob[o++] = 0x4e;
        }
        p += 4;
      } else if (col.kind === 'scalar') {
        if (first === QUOTE) {
          // A string: the escapes COPY text shares are copied, \" and \/ become the character.
          for (p++; ; ) {
            if (p >= end) return false;
            const c = buf[p];
            if (c === QUOTE) break;
            if (c === BACKSLASH) {
              const e = buf[p + 1];
              if (SAME_IN_COPY[e] === 1) {
                ob[o++] = BACKSLASH;
                ob[o++] = e;
              } else if (e === QUOTE || e === 0x2f) {
                ob[o++] = e;
              } else {
                return false;
              }
              p += 2;
              continue;
            }
            if (c < 0x20) return false;
            ob[o++] = c;
            p++;
          }
          p++;
        } else if (first === 0x74 /* t */ || first === 0x66 /* f */) {
          const word = first === 0x74 ? TRUE : FALSE;
          if (p + word.length > end || !sameBytes(buf, p, word)) return false;
          ob[o++] = first;
          p += word.length;
        } else {
          let q = p;
          while (q < end && buf[q] !== COMMA && buf[q] !== RBRACE) q++;
          if (!isNumber(buf, p, q)) return false;
          while (p < q) ob[o++] = buf[p++];
        }
      } else if (col.kind === 'json' && (first === LBRACE || first === LBRACKET || first === QUOTE)) {
        // Verbatim, with the backslash doubled for COPY; a control character (JSON whitespace) falls back.
        let depth = 0;
        for (;;) {
          if (p >= end) return false;
          const c = buf[p];
          if (c === QUOTE) {
            ob[o++] = QUOTE;
            for (p++; ; ) {
              if (p >= end) return false;
              const s = buf[p];
              if (s === QUOTE) break;
              if (s === BACKSLASH) {
                const e = buf[p + 1];
                if (p + 1 >= end || e < 0x20) return false;
                ob[o++] = BACKSLASH;
                ob[o++] = BACKSLASH;
                if (e === BACKSLASH) ob[o++] = BACKSLASH;
                ob[o++] = e;
                p += 2;
                continue;
              }
              if (s < 0x20) return false;
              ob[o++] = s;
              p++;
            }
            ob[o++] = QUOTE;
            p++;
            if (depth === 0) break;
            continue;
          }
          if (c === LBRACE || c === LBRACKET) depth++;
          else if (c === RBRACE || c === RBRACKET) depth--;
          else if (c < 0x20) return false;
          ob[o++] = c;
          p++;
          if (depth === 0) break;
        }
      } else if (col.kind === 'json') {
        // A number, true or false at the top of a json value: its text.
        let q = p;
        while (q < end && buf[q] !== COMMA && buf[q] !== RBRACE) q++;
        if (!isLiteral(buf, p, q) && !isNumber(buf, p, q)) return false;
        while (p < q) ob[o++] = buf[p++];
      } else {
        return false;
      }
    }
    if (buf[p] !== RBRACE || p + 1 !== end) return false;
    ob[o++] = NEWLINE;
    this.out.len = o;
    return true;
  }

  /** Any line: keys in any order or missing, whitespace between tokens, every escape; or the error. */
  private anyRow(buf: Buffer, start: number, end: number): void {
    this.starts.fill(-1);
    let p = skip(buf, start, end);
    if (buf[p] !== LBRACE) throw new RowError('not a JSON object');
    p = skip(buf, p + 1, end);
    if (buf[p] === RBRACE) {
      p++;
    } else {
      let expect = 0;
      for (;;) {
        if (buf[p] !== QUOTE) throw new RowError('expected a key');
        let col: number | undefined;
        let keyEnd: number;
        // row_to_json writes the keys in column order: try the expected one before decoding anything.
        const k = expect < this.keys.length ? this.keys[expect] : undefined;
        if (k !== undefined && p + k.length <= end && sameBytes(buf, p, k)) {
          col = expect;
          keyEnd = p + k.length;
        } else {
          keyEnd = stringEnd(buf, p, end);
          const raw = buf.toString('utf8', p + 1, keyEnd - 1);
          const key = raw.includes('\\') ? jsonStringText(buf, p, keyEnd) : raw;
          col = this.columnIndex.get(key);
          if (col === undefined) throw new RowError(`unknown column ${JSON.stringify(key)}`);
        }
        expect = col + 1;
        p = skip(buf, keyEnd, end);
        if (buf[p] !== COLON) throw new RowError('expected ":"');
        p = skip(buf, p + 1, end);
        const valueEnd = valueEndAt(buf, p, end);
        this.starts[col] = p;
        this.ends[col] = valueEnd;
        p = skip(buf, valueEnd, end);
        if (buf[p] === COMMA) {
          p = skip(buf, p + 1, end);
          continue;
        }
        if (buf[p] === RBRACE) {
          p++;
          break;
        }
        throw new RowError('expected "," or "}"');
      }
    }
    if (skip(buf, p, end) !== end) throw new RowError('data after the object');
    for (let i = 0; i < this.columns.length; i++) {
      if (i > 0) this.out.byte(TAB);
      const s = this.starts[i];
      if (s < 0) this.out.bytes(NULL_FIELD);
      else this.field(this.columns[i], buf, s, this.ends[i]);
    }
    this.out.byte(NEWLINE);
  }

  private field(col: CopyColumn, buf: Buffer, s: number, e: number): void {
    const first = buf[s];
    if (first === 0x6e /* n */) {
      if (col.kind === 'json' && col.jsonNullIsValue) this.out.slice(buf, s, e);
      else this.out.bytes(NULL_FIELD);
      return;
    }
    if (col.kind === 'json') return copyEscapedVerbatim(this.out, buf, s, e);
    if (col.kind === 'array') {
      if (first !== LBRACKET) throw new RowError(`column ${col.name}: expected an array`);
      const literal = arrayLiteral(buf, s, e);
      return copyEscapedVerbatim(this.out, Buffer.from(literal, 'utf8'), 0, Buffer.byteLength(literal, 'utf8'));
    }
    if (first === QUOTE) return stringToCopy(this.out, buf, s + 1, e - 1);
    if (first === 0x74 /* t */) return this.out.byte(0x74);
    if (first === 0x66 /* f */) return this.out.byte(0x66);
    if (first === LBRACE || first === LBRACKET) throw new RowError(`column ${col.name}: unexpected ${first === LBRACE ? 'object' : 'array'}`);
    // A number: its exact text.
    this.out.slice(buf, s, e);
  }
}

/** buf[p..] starts with `word` (short words: a loop beats Buffer.compare's call overhead). */
function sameBytes(buf: Buffer, p: number, word: Buffer): boolean {
  for (let j = 0; j < word.length; j++) if (buf[p + j] !== word[j]) return false;
  return true;
}

function skip(buf: Buffer, p: number, end: number): number {
  while (p < end && isSpace(buf[p])) p++;
  return p;
}

/**
 * Index just past the closing quote of the string starting at p (buf[p] is the opening quote). A raw
 * control character inside is refused, as JSON and PostgreSQL's JSON parser refuse it: in COPY text a
 * raw tab would split the field, and json/jsonb would refuse the value on the server.
 */
function stringEnd(buf: Buffer, p: number, end: number): number {
  let q = p + 1;
  for (;;) {
    const i = buf.indexOf(QUOTE, q);
    if (i === -1 || i >= end) throw new RowError('unterminated string');
    let backslashes = 0;
    for (let k = i - 1; k > p && buf[k] === BACKSLASH; k--) backslashes++;
    if (backslashes % 2 === 0) {
      for (let k = p + 1; k < i; k++) if (buf[k] < 0x20) throw new RowError('unescaped control character in a string');
      return i + 1;
    }
    q = i + 1;
  }
}

/** Index just past the JSON value starting at p. */
function valueEndAt(buf: Buffer, p: number, end: number): number {
  const b = buf[p];
  if (b === QUOTE) return stringEnd(buf, p, end);
  if (b === LBRACE || b === LBRACKET) {
    let depth = 0;
    let q = p;
    while (q < end) {
      const c = buf[q];
      if (c === QUOTE) {
        q = stringEnd(buf, q, end);
        continue;
      }
      if (c === LBRACE || c === LBRACKET) depth++;
      else if (c === RBRACE || c === RBRACKET) {
        depth--;
        if (depth === 0) return q + 1;
      }
      q++;
    }
    throw new RowError('unterminated object or array');
  }
  let q = p;
  while (q < end) {
    const c = buf[q];
    if (c === COMMA || c === RBRACE || c === RBRACKET || isSpace(c)) break;
    q++;
  }
  if (q === p) throw new RowError('missing value');
  if (!isLiteral(buf, p, q) && !isNumber(buf, p, q)) throw new RowError(`invalid value ${JSON.stringify(buf.toString('latin1', p, Math.min(q, p + 40)))}`);
  return q;
}

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

function isLiteral(buf: Buffer, p: number, q: number): boolean {
  const n = q - p;
  const word = n === 4 ? (buf[p] === 0x74 ? TRUE : NULL) : n === 5 ? FALSE : undefined;
  return word !== undefined && sameBytes(buf, p, word);
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** JSON number grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
function isNumber(buf: Buffer, p: number, q: number): boolean {
  let i = p;
  if (buf[i] === 0x2d) i++;
  if (i >= q || !isDigit(buf[i])) return false;
  if (buf[i] === 0x30) i++;
  else while (i < q && isDigit(buf[i])) i++;
  if (i < q && buf[i] === 0x2e) {
    i++;
    if (i >= q || !isDigit(buf[i])) return false;
    while (i < q && isDigit(buf[i])) i++;
  }
  if (i < q && (buf[i] === 0x65 || buf[i] === 0x45)) {
    i++;
    if (i < q && (buf[i] === 0x2b || buf[i] === 0x2d)) i++;
    if (i >= q || !isDigit(buf[i])) return false;
    while (i < q && isDigit(buf[i])) i++;
  }
  return i === q;
}

/**
 * Text as a COPY field, verbatim: backslashes doubled; tabs, carriage returns and newlines (legal JSON
 * whitespace between tokens, or decoded array elements) written as COPY escapes. A plain loop: values
 * are short, and per-value native searches cost more than they save.
 */
function copyEscapedVerbatim(out: Out, buf: Buffer, s: number, e: number): void {
  let from = s;
  for (let i = s; i < e; i++) {
    const c = buf[i];
    if (c !== BACKSLASH && c !== TAB && c !== 0x0d && c !== NEWLINE) continue;
    out.slice(buf, from, i);
    out.byte(BACKSLASH);
    out.byte(c === BACKSLASH ? BACKSLASH : c === TAB ? 0x74 : c === NEWLINE ? 0x6e : 0x72);
    from = i + 1;
  }
  out.slice(buf, from, e);
}

/** The value of exactly four hex digits at p (all before e), or an error. */
function hex4(buf: Buffer, p: number, e: number): number {
  if (p + 4 > e) throw new RowError('invalid \\u escape');
  let v = 0;
  for (let k = p; k < p + 4; k++) {
    const c = buf[k];
    const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
    if (d < 0) throw new RowError('invalid \\u escape');
    v = v * 16 + d;
  }
  return v;
}

/**
 * The next backslash in [from, e), or e. Bounded: an unbounded indexOf would scan the rest of the
 * chunk for every string that has none. Short ranges are looped, long ones searched natively.
 */
function nextBackslash(buf: Buffer, from: number, e: number): number {
  if (e - from < 256) {
    for (let i = from; i < e; i++) if (buf[i] === BACKSLASH) return i;
    return e;
  }
  const i = buf.subarray(from, e).indexOf(BACKSLASH);
  return i === -1 ? e : from + i;
}

/** Escape letters that mean the same after a backslash in JSON and in COPY text: \\ b f n r t. */
const SAME_IN_COPY = new Uint8Array(256);
for (const c of [BACKSLASH, 0x62, 0x66, 0x6e, 0x72, 0x74]) SAME_IN_COPY[c] = 1;

/** Where the escape `unicodeEscape` read last ends (a scratch value, to return two numbers without allocating). */
let escapeEnd = 0;

/**
 * The code point of the \u escape at buf[i] (a surrogate pair is read as one), ending at `escapeEnd`;
 * or the error restore gives for it: a lone surrogate and \u0000, as PostgreSQL refuses them in text.
 */
function unicodeEscape(buf: Buffer, i: number, e: number): number {
  let cp = hex4(buf, i + 2, e);
  let next = i + 6;
  if (cp >= 0xdc00 && cp <= 0xdfff) throw new RowError('unpaired surrogate in \\u escape');
  if (cp >= 0xd800 && cp <= 0xdbff) {
    // A high surrogate must be followed by a low one, as PostgreSQL's JSON parser requires.
    const lo = buf[next] === BACKSLASH && buf[next + 1] === 0x75 ? hex4(buf, next + 2, e) : -1;
    if (lo < 0xdc00 || lo > 0xdfff) throw new RowError('unpaired surrogate in \\u escape');
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    next += 6;
  }
  if (cp === 0) throw new RowError('\\u0000 cannot be stored in PostgreSQL text');
  escapeEnd = next;
  return cp;
}

/**
 * The text of the JSON string buf[s, e) (its quotes included), with the checks a text field gets:
 * every escape valid, no lone surrogate, no \u0000 (raw control characters are refused by `stringEnd`).
 */
function jsonStringText(buf: Buffer, s: number, e: number): string {
  for (let i = nextBackslash(buf, s + 1, e - 1); i < e - 1; ) {
    const c = buf[i + 1];
    let next = i + 2;
    if (c === 0x75 /* u */) {
      unicodeEscape(buf, i, e - 1);
      next = escapeEnd;
    } else if (SAME_IN_COPY[c] !== 1 && c !== QUOTE && c !== 0x2f /* / */) {
      throw new RowError('invalid escape in string');
    }
    i = nextBackslash(buf, next, e - 1);
  }
  return JSON.parse(buf.toString('utf8', s, e)) as string;
}

/** The content of a JSON string (between the quotes) as a COPY text field. */
function stringToCopy(out: Out, buf: Buffer, s: number, e: number): void {
  let from = s;
  for (let i = nextBackslash(buf, s, e); i < e; ) {
    const c = buf[i + 1];
    if (SAME_IN_COPY[c] === 1) {
      // \\ \n \r \t \b \f are the same two bytes in COPY text: they stay in the run being copied.
      i = nextBackslash(buf, i + 2, e);
      continue;
    }
    out.slice(buf, from, i);
    if (c === QUOTE || c === 0x2f /* / */) {
      out.byte(c);
      from = i + 2;
    } else if (c === 0x75 /* u */) {
      const cp = unicodeEscape(buf, i, e);
      const next = escapeEnd;
      if (cp < 0x20 || cp === 0x7f || cp === BACKSLASH) {
        // Control characters and the backslash as COPY hex escapes: written raw, a backslash would
        // escape whatever follows it in the COPY text.
        out.byte(BACKSLASH);
        out.byte(0x78);
        out.bytes(Buffer.from(cp.toString(16).padStart(2, '0'), 'latin1'));
      } else {
        out.bytes(Buffer.from(String.fromCodePoint(cp), 'utf8'));
      }
      from = next;
    } else {
      throw new RowError('invalid escape in string');
    }
    i = nextBackslash(buf, from, e);
  }
  out.slice(buf, from, e);
}

/**
 * A JSON array as a PostgreSQL array literal: {"a",NULL,"b\"c"} with elements quoted and escaped
 * for the array parser; nested arrays become nested braces. Numbers keep their exact text.
 */
export function arrayLiteral(buf: Buffer, s: number, e: number): string {
  const p = { i: s };
  const literal = arrayAt(buf, p, e);
  return literal;
}

function arrayAt(buf: Buffer, p: { i: number }, end: number): string {
  p.i++; // [
  const parts: string[] = [];
  p.i = skip(buf, p.i, end);
  if (buf[p.i] === RBRACKET) {
    p.i++;
    return '{}';
  }
  for (;;) {
    p.i = skip(buf, p.i, end);
    const b = buf[p.i];
    if (b === LBRACKET) {
      parts.push(arrayAt(buf, p, end));
    } else if (b === LBRACE) {
      throw new RowError('object inside an array column');
    } else {
      const ve = valueEndAt(buf, p.i, end);
      if (b === QUOTE) {
        const text = jsonStringText(buf, p.i, ve);
        parts.push('"' + text.replace(/[\\"]/g, (m) => '\\' + m) + '"');
      } else {
        const word = buf.toString('latin1', p.i, ve);
        parts.push(word === 'null' ? 'NULL' : word === 'true' ? 't' : word === 'false' ? 'f' : word);
      }
      p.i = ve;
    }
    p.i = skip(buf, p.i, end);
    if (buf[p.i] === COMMA) {
      p.i++;
      continue;
    }
    if (buf[p.i] === RBRACKET) {
      p.i++;
      return '{' + parts.join(',') + '}';
    }
    throw new RowError('expected "," or "]" in array');
  }
}
