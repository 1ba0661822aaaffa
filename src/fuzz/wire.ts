/**
 * Protobuf wire format at the byte level, for cases the schema cannot express: length prefixes that
 * claim gigabytes, nesting far deeper than any real model, fields cut in half.
 */

export function varint(value: bigint | number): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return out;
}

export const tag = (field: number, wireType: number): number[] => varint((field << 3) | wireType);

/** A length-delimited field (wire type 2). */
export function lengthDelimited(field: number, body: Uint8Array | number[]): Uint8Array {
  const b = body instanceof Uint8Array ? body : Uint8Array.from(body);
  return concat([Uint8Array.from([...tag(field, 2), ...varint(b.length)]), b]);
}

export function varintField(field: number, value: bigint | number): Uint8Array {
  return Uint8Array.from([...tag(field, 0), ...varint(value)]);
}

export const stringField = (field: number, s: string): Uint8Array => lengthDelimited(field, new TextEncoder().encode(s));

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A length-delimited field found in a message: where its length prefix and its body are. */
export interface LengthField {
  field: number;
  /** Offset of the length varint. */
  lengthAt: number;
  lengthSize: number;
  bodyStart: number;
  bodyEnd: number;
  depth: number;
}

function readVarint(b: Uint8Array, at: number): { value: bigint; size: number } | undefined {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (at + i >= b.length) return undefined;
    const byte = b[at + i]!;
    v |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return { value: v, size: i + 1 };
  }
  return undefined;
}

/**
 * Every length-delimited field of a message, best effort: a body that parses as a message is searched
 * too (up to `maxDepth` levels); parsing stops quietly at the first byte that is not a field.
 */
export function lengthFields(b: Uint8Array, maxDepth = 6, limit = 20000): LengthField[] {
  const out: LengthField[] = [];
  const walk = (start: number, end: number, depth: number): boolean => {
    let at = start;
    while (at < end) {
      const key = readVarint(b, at);
      if (!key || key.value === 0n) return false;
      at += key.size;
      const field = Number(key.value >> 3n);
      const wt = Number(key.value & 7n);
      if (field === 0) return false;
      if (wt === 0) {
        const v = readVarint(b, at);
        if (!v) return false;
        at += v.size;
      } else if (wt === 1) at += 8;
      else if (wt === 5) at += 4;
      else if (wt === 2) {
        const len = readVarint(b, at);
        if (!len) return false;
        const bodyStart = at + len.size;
        const bodyEnd = bodyStart + Number(len.value);
        if (bodyEnd > end) return false;
        if (out.length < limit) out.push({ field, lengthAt: at, lengthSize: len.size, bodyStart, bodyEnd, depth });
        if (depth < maxDepth && bodyEnd > bodyStart) {
          const mark = out.length;
          if (!walk(bodyStart, bodyEnd, depth + 1)) out.length = mark;
        }
        at = bodyEnd;
      } else return false;
      if (at > end) return false;
    }
    return true;
  };
  walk(0, b.length, 0);
  return out;
}

/** The message with one field's length prefix replaced by `claimed` (the body stays as it was). */
export function withLength(b: Uint8Array, f: LengthField, claimed: bigint): Uint8Array {
  return concat([b.subarray(0, f.lengthAt), Uint8Array.from(varint(claimed)), b.subarray(f.lengthAt + f.lengthSize)]);
}
