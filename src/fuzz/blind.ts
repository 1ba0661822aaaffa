/**
 * Blind byte damage: bit flips, bytes set to edge values, inserted, deleted and duplicated ranges, cuts.
 * Positions are drawn as raw 32-bit numbers and taken modulo the current length when applied, half of
 * them aimed near the start of a protobuf field (where damage changes structure, not weight values), so
 * that any subset of the drawn operations can be applied again when a finding is shrunk.
 */
import type { FuzzRng } from "./rng.js";
import { lengthFields } from "./wire.js";

export type BlindOp =
  | { kind: "flip"; pos: number; aim: number; bit: number }
  | { kind: "set"; pos: number; aim: number; value: number }
  | { kind: "insert"; pos: number; aim: number; bytes: Uint8Array }
  | { kind: "delete"; pos: number; aim: number; len: number }
  | { kind: "truncate"; fraction: number }
  | { kind: "duplicate"; pos: number; aim: number; len: number; to: number }
  | { kind: "varint"; pos: number; aim: number; bytes: Uint8Array };

const EDGE_BYTES = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x08, 0x0a, 0x12, 0x1a, 0x22, 0x3a, 0x42];

export function drawBlindOps(rng: FuzzRng): BlindOp[] {
  const n = rng.weighted([
    [40, 1],
    [25, 2],
    [15, 3],
    [10, 5],
    [10, 10],
  ] as const);
  const ops: BlindOp[] = [];
  for (let i = 0; i < n; i++) {
    const pos = rng.u32();
    const aim = rng.chance(0.5) ? rng.u32() : -1;
    const kind = rng.weighted([
      [25, "flip"],
      [15, "set"],
      [12, "insert"],
      [15, "delete"],
      [8, "truncate"],
      [10, "duplicate"],
      [15, "varint"],
    ] as const);
    switch (kind) {
      case "flip":
        ops.push({ kind, pos, aim, bit: rng.int(8) });
        break;
      case "set":
        ops.push({ kind, pos, aim, value: rng.chance(0.7) ? rng.pick(EDGE_BYTES) : rng.int(256) });
        break;
      case "insert":
        ops.push({ kind, pos, aim, bytes: rng.bytes(rng.range(1, rng.chance(0.8) ? 16 : 512)) });
        break;
      case "delete":
        ops.push({ kind, pos, aim, len: rng.chance(0.7) ? rng.range(1, 16) : rng.range(17, 65536) });
        break;
      case "truncate":
        ops.push({ kind, fraction: rng.float() });
        break;
      case "duplicate":
        ops.push({ kind, pos, aim, len: rng.range(1, rng.chance(0.7) ? 64 : 100000), to: rng.u32() });
        break;
      case "varint": {
        // A run of continuation bytes (an endless or huge varint) or a 10-byte maximal one.
        const b = rng.chance(0.5) ? new Uint8Array(rng.range(2, 12)).fill(0xff) : Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        ops.push({ kind, pos, aim, bytes: b });
        break;
      }
    }
  }
  return ops;
}

function position(b: Uint8Array, pos: number, aim: number): number {
  if (b.length === 0) return 0;
  if (aim >= 0) {
    const fields = lengthFields(b, 4, 5000);
    if (fields.length > 0) {
      const f = fields[aim % fields.length]!;
      // The field's key (just before the length), its length prefix, or the first bytes of its body.
      const near = f.lengthAt - 1 + (pos % (f.lengthSize + 3));
      return Math.max(0, Math.min(b.length - 1, near));
    }
  }
  return pos % b.length;
}

function splice(b: Uint8Array, at: number, remove: number, insert: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(b.length - remove + insert.length);
  out.set(b.subarray(0, at), 0);
  out.set(insert, at);
  out.set(b.subarray(at + remove), at + insert.length);
  return out;
}

export function describeBlindOp(op: BlindOp): string {
  switch (op.kind) {
    case "flip":
      return `flip bit ${op.bit}${op.aim >= 0 ? " near a field start" : ""}`;
    case "set":
      return `set a byte to 0x${op.value.toString(16)}${op.aim >= 0 ? " near a field start" : ""}`;
    case "insert":
      return `insert ${op.bytes.length} random bytes${op.aim >= 0 ? " near a field start" : ""}`;
    case "delete":
      return `delete ${op.len} bytes${op.aim >= 0 ? " near a field start" : ""}`;
    case "truncate":
      return `truncate to ${(op.fraction * 100).toFixed(1)}%`;
    case "duplicate":
      return `duplicate a ${op.len}-byte range`;
    case "varint":
      return `write a ${op.bytes.length}-byte runaway varint${op.aim >= 0 ? " near a field start" : ""}`;
  }
}

export function applyBlindOp(b: Uint8Array, op: BlindOp): Uint8Array {
  if (op.kind === "truncate") return b.subarray(0, Math.floor(b.length * op.fraction)).slice();
  if (b.length === 0) return op.kind === "insert" || op.kind === "varint" ? op.bytes.slice() : b;
  const at = position(b, op.pos, op.aim);
  switch (op.kind) {
    case "flip": {
      const out = b.slice();
      out[at] = out[at]! ^ (1 << op.bit);
      return out;
    }
    case "set": {
      const out = b.slice();
      out[at] = op.value;
      return out;
    }
    case "insert":
      return splice(b, at, 0, op.bytes);
    case "delete":
      return splice(b, at, Math.min(op.len, b.length - at));
    case "duplicate": {
      const range = b.slice(at, Math.min(b.length, at + op.len));
      return splice(b, op.to % b.length, 0, range);
    }
    case "varint":
      return splice(b, at, Math.min(op.bytes.length, b.length - at), op.bytes);
  }
}
