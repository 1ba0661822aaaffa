/**
 * A check of a protobuf message's length prefixes before it is decoded. The decoder reads a length as a
 * 32-bit varint and drops any higher bits, so a damaged prefix claiming 2^32 + 7 bytes is read as 7 and
 * the file decodes as something it is not. Here every length-delimited field of the known message types
 * (and the unknown fields beside them) is checked: its prefix must fit in 32 bits and in its message.
 * One pass over the fields; bytes fields (raw_data) are skipped, not read.
 */
import type { DescField, DescMessage } from "@bufbuild/protobuf";

/** What is wrong with the first bad length prefix, or undefined when every one is sound. */
export function badLengthPrefix(bytes: Uint8Array, schema: DescMessage, maxDepth = 100): string | undefined {
  try {
    walk(bytes, 0, bytes.length, schema, 0, maxDepth);
    return undefined;
  } catch (e) {
    if (e instanceof WireProblem) return e.message;
    throw e;
  }
}

class WireProblem extends Error {}

const subMessages = new WeakMap<DescMessage, Map<number, DescMessage>>();

/** The message type of each field number of `desc` that holds messages (single or repeated). */
function messageFields(desc: DescMessage): Map<number, DescMessage> {
  let m = subMessages.get(desc);
  if (!m) {
    m = new Map();
    for (const f of desc.fields as readonly DescField[]) {
      if (f.fieldKind === "message") m.set(f.number, f.message);
      else if (f.fieldKind === "list" && f.listKind === "message") m.set(f.number, f.message);
    }
    subMessages.set(desc, m);
  }
  return m;
}

/** Reads a varint at `pos`: its value (exact up to 2^53) and the position after it. */
function varint(buf: Uint8Array, pos: number, end: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new WireProblem("a varint runs past the end of its message");
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
  throw new WireProblem("a varint longer than 10 bytes");
}

function walk(buf: Uint8Array, start: number, end: number, desc: DescMessage | undefined, depth: number, maxDepth: number): void {
  const fields = desc ? messageFields(desc) : undefined;
  let pos = start;
  while (pos < end) {
    const [tag, afterTag] = varint(buf, pos, end);
    pos = afterTag;
    const wireType = tag % 8;
    const field = Math.floor(tag / 8);
    if (wireType === 0) pos = varint(buf, pos, end)[1];
    else if (wireType === 1) pos += 8;
    else if (wireType === 5) pos += 4;
    else if (wireType === 2) {
      const [len, body] = varint(buf, pos, end);
      if (len > 0xffffffff) throw new WireProblem(`a length prefix claims ${len} bytes, more than a 32-bit length can say`);
      if (len > end - body) throw new WireProblem(`a length prefix claims ${len} bytes where ${end - body} remain`);
      const sub = fields?.get(field);
      if (sub && depth + 1 < maxDepth) walk(buf, body, body + len, sub, depth + 1, maxDepth);
      pos = body + len;
    } else if (wireType === 3 || wireType === 4) {
      // A group's start or end (unknown fields only, in ONNX): the fields between are checked in turn.
    } else return; // an invalid wire type: the decoder says what it is
    if (pos > end) throw new WireProblem("a field runs past the end of its message");
  }
}
