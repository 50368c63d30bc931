/**
 * Bech32 (BIP 173) as the age spec uses it: no length limit on the data part, all-lowercase or
 * all-uppercase only, checksum over the lowercase form. Errors say what is wrong and where, never
 * which characters were given (an identity is a secret).
 */
const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GENERATORS[i];
  }
  return chk;
}

function hrpExpand(hrp: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) >>> 5);
  out.push(0);
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) & 31);
  return out;
}

/** Regroups bits (8 → 5 to encode, 5 → 8 to decode); decoding refuses non-zero or excess padding. */
function convertBits(data: ArrayLike<number>, from: number, to: number, pad: boolean): number[] | null {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const maxv = (1 << to) - 1;
  for (let i = 0; i < data.length; i++) {
    acc = (acc << from) | data[i];
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >>> bits) & maxv);
    }
    acc &= (1 << bits) - 1;
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & maxv);
  } else if (bits >= from || acc !== 0) {
    return null;
  }
  return out;
}

export function bech32Encode(hrp: string, data: Buffer): string {
  const lower = hrp.toLowerCase();
  const words = convertBits(data, 8, 5, true)!;
  const chk = polymod([...hrpExpand(lower), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  let out = lower + '1';
  for (const w of words) out += CHARSET[w];
  for (let i = 0; i < 6; i++) out += CHARSET[(chk >>> (5 * (5 - i))) & 31];
  return out;
}

export type Bech32Result = { ok: true; hrp: string; data: Buffer } | { ok: false; problem: string };

/** Decodes a Bech32 string; `hrp` comes back lowercase. */
export function bech32Decode(text: string): Bech32Result {
  const fail = (problem: string): Bech32Result => ({ ok: false, problem });
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 33 || c > 126) return fail(`character ${i + 1} is not printable ASCII`);
  }
  const lower = text.toLowerCase();
  if (text !== lower && text !== text.toUpperCase()) return fail('it mixes upper and lower case');
  const sep = lower.lastIndexOf('1');
  if (sep < 1) return fail('it has no "1" separator after a prefix');
  if (lower.length - sep - 1 < 6) return fail('it is too short to hold a checksum');
  const hrp = lower.slice(0, sep);
  const words: number[] = [];
  for (let i = sep + 1; i < lower.length; i++) {
    const v = CHARSET.indexOf(lower[i]);
    if (v < 0) return fail(`character ${i + 1} is not a Bech32 character`);
    words.push(v);
  }
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) return fail('its checksum does not match (a typo, or a truncated copy)');
  const bytes = convertBits(words.slice(0, -6), 5, 8, false);
  if (bytes === null) return fail('its data has invalid padding');
  return { ok: true, hrp, data: Buffer.from(bytes) };
}
