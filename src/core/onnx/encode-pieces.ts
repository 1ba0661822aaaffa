/**
 * A model's encoding as a list of pieces whose concatenation is exactly `encodeModel(model)`, with the
 * large raw tensors of the main graph as views of their data instead of copies: a writer puts the pieces
 * to a file one by one, so a single-file output is never held whole in memory beside the model (the
 * protobuf writer would hold its own copy of every tensor and then the whole buffer).
 *
 * How: @bufbuild/protobuf writes a message's fields in field-number order and its unknown fields last, so
 * a message's encoding is the encoding of its fields below a number, then that field, then the rest. The
 * model is cut around `graph` (7), the graph around `initializer` (5), and each large tensor around
 * `raw_data` (9); the cut fields are framed here (tag and length) and everything else is encoded by the
 * library.
 */
import { toBinary, type DescMessage } from "@bufbuild/protobuf";
import { encodeModel, GraphProtoSchema, ModelProtoSchema, TensorProtoSchema, type ModelProto, type TensorProto } from "./proto.js";

export interface EncodedModel {
  /** The encoding's length in bytes (may pass the protobuf limit: then only external data can hold it). */
  bytes: number;
  /** In order; large tensors' data are views of the model's own buffers. */
  pieces: Uint8Array[];
}

/** Tensors with at least this many raw bytes are cut out as views; smaller ones are encoded whole. */
export const PIECE_THRESHOLD = 1 << 16;

const WIRE_LEN = 2;
const GRAPH_FIELD = 7;
const INITIALIZER_FIELD = 5;
const RAW_DATA_FIELD = 9;

export function encodeModelPieces(model: ModelProto, threshold = PIECE_THRESHOLD): EncodedModel {
  const g = model.graph;
  const large = (t: TensorProto) => Object.hasOwn(t, "rawData") && t.rawData.length >= threshold;
  if (!g || !g.initializer.some(large)) {
    const whole = encodeModel(model);
    return { bytes: whole.length, pieces: [whole] };
  }
  const graph: Uint8Array[] = [part(GraphProtoSchema, g, 0, INITIALIZER_FIELD, false)];
  for (const t of g.initializer) {
    if (!large(t)) {
      const bytes = toBinary(TensorProtoSchema, t, { writeUnknownFields: true });
      graph.push(header(INITIALIZER_FIELD, bytes.length), bytes);
      continue;
    }
    const before = part(TensorProtoSchema, t, 0, RAW_DATA_FIELD, false);
    const raw = header(RAW_DATA_FIELD, t.rawData.length);
    const after = part(TensorProtoSchema, t, RAW_DATA_FIELD + 1, Infinity, true);
    graph.push(header(INITIALIZER_FIELD, before.length + raw.length + t.rawData.length + after.length), before, raw, t.rawData, after);
  }
  graph.push(part(GraphProtoSchema, g, INITIALIZER_FIELD + 1, Infinity, true));
  const graphBytes = total(graph);
  const pieces = [part(ModelProtoSchema, model, 0, GRAPH_FIELD, false), header(GRAPH_FIELD, graphBytes), ...graph, part(ModelProtoSchema, model, GRAPH_FIELD + 1, Infinity, true)];
  return { bytes: total(pieces), pieces };
}

/** The pieces as one buffer. */
export function joinPieces(e: EncodedModel): Uint8Array {
  if (e.pieces.length === 1) return e.pieces[0]!;
  const out = new Uint8Array(e.bytes);
  let at = 0;
  for (const p of e.pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const total = (pieces: readonly Uint8Array[]): number => {
  let n = 0;
  for (const p of pieces) n += p.length;
  return n;
};

/** The encoding of `msg`'s fields numbered in [from, to), and its unknown fields when `unknown`. */
function part(schema: DescMessage, msg: object, from: number, to: number, unknown: boolean): Uint8Array {
  if (schema.oneofs.length > 0) throw new Error(`${schema.typeName} has oneofs: it cannot be cut by field number`);
  const src = msg as Record<string, unknown>;
  // Same prototype (it holds the defaults of fields with explicit presence): only own properties are set.
  const out = Object.create(Object.getPrototypeOf(msg) as object) as Record<string, unknown>;
  out["$typeName"] = schema.typeName;
  for (const f of schema.fields) {
    const inRange = f.number >= from && f.number < to;
    if (f.fieldKind === "list") out[f.localName] = inRange ? src[f.localName] : [];
    else if (f.fieldKind === "map") out[f.localName] = inRange ? src[f.localName] : {};
    else if (inRange && Object.hasOwn(src, f.localName)) out[f.localName] = src[f.localName];
  }
  if (unknown && src["$unknown"] !== undefined) out["$unknown"] = src["$unknown"];
  return toBinary(schema, out as never, { writeUnknownFields: true });
}

/** The tag of a length-delimited field and its length, as varints. */
function header(field: number, length: number): Uint8Array {
  const bytes: number[] = [];
  varint(field * 8 + WIRE_LEN, bytes);
  varint(length, bytes);
  return Uint8Array.from(bytes);
}

/** Base-128 varint of a non-negative integer up to 2^53 (lengths may pass 2^31: no 32-bit shifts). */
function varint(value: number, out: number[]): void {
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}
