/**
 * Reading a compressed model back (DESIGN.md section 2): the SSVQ parameters from the `ssvq.*`
 * metadata_props, and per compressed layer what the file really stores, found by tracing the layer's
 * decode subgraph backwards from the node that writes the weight's value (through initializers,
 * Constant nodes and the scopes of If/Loop/Scan bodies), never from the `.ssvq.json` report or from
 * tensor names. The packed planes are unpacked with the lookup tables the file itself carries.
 *
 * Pure: the model in, plain JSON-safe data out. A damaged file (metadata that is not JSON, a listed
 * layer whose subgraph is missing or malformed) gives `problem` strings, never an exception.
 */
import type { Mode } from "../ssvq/quantize.js";
import { dtypeBits, dtypeName } from "./dtype.js";
import type { ExternalDataReader } from "./external.js";
import { TensorProto_DataType as DT, type ModelProto, type NodeProto, type TensorProto } from "./proto.js";
import { buildScope, isDefaultDomain, lookup, type Producer, type Scope } from "./scopes.js";
import { declaredBytes, elementCount, rawBytes, tensorDims, tensorToFloat32 } from "./tensor-data.js";
import { nodeLabel, walkGraphs } from "./walk.js";
import { splitCodeAt, splitCodesName, type SplitOrientation } from "./split-product.js";
import { rowLayout } from "./weights.js";

/** What a stored tensor of a decode subgraph holds. */
/** "codes": a split product's codes, one per sub-vector: the codeword index and, for SSVQ, the sign bits. */
export type StoredPartKind = "codebook" | "indices" | "signs" | "codes" | "int8" | "int4" | "scales";

export interface StoredTensor {
  kind: StoredPartKind;
  /** The name the graph reads it by (for a Constant node, the node's output). */
  name: string;
  storage: "initializer" | "constant";
  /** The graph that holds it ("" is the main graph). */
  graphPath: string;
  dtype: string;
  dims: number[];
  bytes: number;
  /** Packed planes (indices, signs, INT4 values) and INT8 values: bits per field. */
  width?: number;
  /** Index planes: the plane holds bits [shift, shift + width) of each index. */
  shift?: number;
  /** Fields the subgraph reads from it. */
  fields?: number;
}

/** Bytes of a layer's stored tensors by part. `total` is the data parts; `other` (shapes, slice bounds, scalars) is not in it. */
export interface StoredBytes {
  codebook: number;
  indices: number;
  signs: number;
  /** INT8 / INT4 values. */
  values: number;
  scales: number;
  total: number;
  other: number;
}

export interface LayerBitsReadback {
  /**
   * Bits of the stored fields, counted as the report counts them: each index plane at its width per
   * sub-vector, one sign bit per padded element, the codebook at its dtype, INT values at 4 or 8 bits,
   * scales at their dtype.
   */
  fieldBits: number;
  /** The stored tensors' bytes * 8 (each plane rounds up to whole bytes). */
  storedBits: number;
  /** fieldBits / weights (padding is not a weight). */
  bitsPerWeight: number;
  storedBitsPerWeight: number;
  /** What `ssvq.layers` says, when it says it. */
  metadataBitsPerWeight?: number;
  /** bitsPerWeight equals the metadata's (to 1e-9 relative); false when the metadata has none. */
  matchesMetadata: boolean;
}

export interface SignReadback {
  /** Sign bits set (negative weights) among the real weights, padding excluded. */
  negative: number;
  weights: number;
  fraction: number;
}

export interface LayerConsumer {
  node: string;
  opType: string;
  /** The graph of the consuming node. */
  graphPath: string;
  inputIndex: number;
}

/** One entry of `ssvq.layers`, as written (fields of the wrong type are dropped). */
export interface LayerMetadata {
  name: string;
  graphPath?: string;
  mode?: string;
  k?: number;
  d?: number;
  bitsPerWeight?: number;
}

export interface LayerReadback {
  name: string;
  /** The graph that holds the weight's value ("" is the main graph). */
  graphPath: string;
  /** "subgraph": a decode subgraph writes the weight; "dense": the weight is stored as plain values (--format dense); "missing": no such weight. */
  stored: "subgraph" | "dense" | "missing";
  /** Detected from the decode subgraph; for dense weights, the metadata's. */
  mode?: Mode;
  k?: number;
  d?: number;
  /** The layer's `ssvq.layers` entry; undefined for a decode subgraph the metadata does not list. */
  metadata?: LayerMetadata;
  /** The first consumer's operator type. */
  opType?: string;
  consumers: LayerConsumer[];
  /** The weight's dims and element type as the consumers see it. */
  dims?: number[];
  dtype?: string;
  /** Row matrix [rows, cols] (cols = the reduction dimension); paddedCols = ceil(cols / d) * d. */
  rows?: number;
  cols?: number;
  paddedCols?: number;
  groups?: number;
  /** rows * cols. */
  weights?: number;
  /** The stored tensors the subgraph reads (lookup tables apart). */
  tensors: StoredTensor[];
  /** The shared lookup tables the subgraph reads. */
  lookupTables: string[];
  bytes?: StoredBytes;
  bits?: LayerBitsReadback;
  /** SSVQ/VQ: the codebook [k][d] as stored (float16/bfloat16 decoded). */
  codebook?: number[][];
  /** SSVQ/VQ: sub-vectors per codeword (padded sub-vectors included, as in the report). */
  usage?: number[];
  /** SSVQ/VQ: codewords no sub-vector uses. */
  unusedCodewords?: number[];
  /** SSVQ: the stored sign bits. */
  signs?: SignReadback;
  /** INT modes: the per-row scales' range. */
  scaleRange?: [number, number];
  /** Why the layer could not be read back fully, or how the file disagrees with its metadata. */
  problem?: string;
}

/** `ssvq.config` as written; fields of the wrong type are dropped (with a problem). */
export interface ReadbackConfig {
  mode?: string;
  k?: number;
  d?: number;
  seed?: number;
  kmeansIters?: number;
  format?: string;
  finetune?: boolean;
  [field: string]: unknown;
}

export interface CompressionReadback {
  /** `ssvq.version`: the tool version that wrote the file. */
  version?: string;
  config?: ReadbackConfig;
  layers: LayerReadback[];
  totals: {
    /** Layers stored (as a decode subgraph or dense), listed or found. */
    compressedLayers: number;
    compressedWeights: number;
    /** Data bytes of the decode subgraphs (codebooks, planes, values, scales). */
    storedBytes: number;
    /** The shared lookup tables, counted once. */
    lookupTableBytes: number;
    lookupTables: string[];
    /** Over the decode subgraphs read back: sum of fieldBits / sum of weights (the report's sizes.bitsPerWeight). */
    bitsPerWeight?: number;
  };
  /** Whole-file problems: metadata that is not JSON or not of the expected shape. */
  problems: string[];
}

const MODES: readonly string[] = ["ssvq", "vq", "int4", "int8"];
const TARGETS = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);

const isOp = (n: NodeProto, op: string): boolean => isDefaultDomain(n) && n.opType === op;

function resolveNamed(scope: Scope, name: string): { producer: Producer; name: string } | undefined {
  let p = lookup(scope, name);
  for (let hops = 0; p && p.kind === "node" && isOp(p.node, "Identity") && hops < 64; hops++) {
    name = p.node.input[0] ?? "";
    p = lookup(p.scope, name);
  }
  return p ? { producer: p, name } : undefined;
}

const resolve = (scope: Scope, name: string): Producer | undefined => resolveNamed(scope, name)?.producer;

/** A weight operand of a Conv/ConvTranspose/Gemm/MatMul: its value and who reads it. */
interface Candidate {
  name: string;
  graphPath: string;
  producer: Producer;
  consumers: LayerConsumer[];
  consumerNodes: NodeProto[];
  /** For each consumer, the one node that reads its output when that is a Mul (INT8 scaled after the product). */
  scaledBy: ({ node: NodeProto; scope: Scope } | undefined)[];
  /** A split product: the consumers are its parts, `producer` the Cast of the stored codes. */
  split: boolean;
  used: boolean;
}

function findCandidates(model: ModelProto): Candidate[] {
  const scopes = new Map<object, Scope>();
  const byProducer = new Map<string, Candidate>();
  walkGraphs(model, (visit) => {
    const scope = buildScope(visit, visit.parent ? scopes.get(visit.parent.graph) : undefined);
    scopes.set(visit.graph, scope);
    const readers = new Map<string, NodeProto[]>();
    for (const n of visit.graph.node)
      for (const x of n.input) {
        let list = readers.get(x);
        if (!list) readers.set(x, (list = []));
        list.push(n);
      }
    const soleMul = (n: NodeProto) => {
      const r = n.output.length === 1 ? readers.get(n.output[0]!) : undefined;
      return r?.length === 1 && isOp(r[0]!, "Mul") ? { node: r[0]!, scope } : undefined;
    };
    const producerNode = (v: string) => {
      const p = resolve(scope, v);
      return p?.kind === "node" ? p.node : undefined;
    };
    visit.graph.node.forEach((n, index) => {
      if (!isDefaultDomain(n) || !TARGETS.has(n.opType) || !n.input[1]) return;
      // A part of a split product reads a Gather of the codes; the layer is keyed by the codes.
      const codes = n.opType === "MatMul" || n.opType === "Gemm" ? splitCodesName(n.input[1], producerNode) : undefined;
      const r = resolveNamed(scope, codes ?? n.input[1]);
      if (!r || r.producer.kind === "input") return;
      const p = r.producer;
      // Keyed by the value: a name is unique within its graph, and graphs are distinct objects.
      const key = `${p.scope.visit.path}\u0000${r.name}`;
      let c = byProducer.get(key);
      if (!c) {
        c = { name: r.name, graphPath: p.scope.visit.path, producer: p, consumers: [], consumerNodes: [], scaledBy: [], split: codes !== undefined, used: false };
        byProducer.set(key, c);
      }
      c.consumers.push({ node: nodeLabel(n, index), opType: n.opType, graphPath: visit.path, inputIndex: 1 });
      c.consumerNodes.push(n);
      c.scaledBy.push(soleMul(n));
    });
  });
  return [...byProducer.values()];
}

// ---------------------------------------------------------------------------------------------------
// Reading constants.

class Malformed extends Error {}
const fail = (message: string): never => {
  throw new Malformed(message);
};

interface ConstRef {
  tensor: TensorProto;
  name: string;
  storage: "initializer" | "constant";
  graphPath: string;
}

const constRef = (p: Extract<Producer, { kind: "initializer" | "constant" }>): ConstRef => ({
  tensor: p.tensor,
  name: p.kind === "initializer" ? p.tensor.name : p.node.output[0] ?? "",
  storage: p.kind,
  graphPath: p.scope.visit.path,
});

/** Integer values of a small tensor (shapes, bounds, scalars, lookup tables). */
function intValues(t: TensorProto, readExternal?: ExternalDataReader): number[] {
  const count = elementCount(tensorDims(t));
  const raw = rawBytes(t, readExternal);
  if (raw) {
    const width = dtypeBits(t.dataType);
    if (width === undefined || raw.length * 8 < count * width) fail(`tensor ${JSON.stringify(t.name)} carries fewer bytes than its shape needs`);
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      switch (t.dataType) {
        case DT.INT64:
          out[i] = Number(v.getBigInt64(8 * i, true));
          break;
        case DT.UINT64:
          out[i] = Number(v.getBigUint64(8 * i, true));
          break;
        case DT.INT32:
          out[i] = v.getInt32(4 * i, true);
          break;
        case DT.UINT32:
          out[i] = v.getUint32(4 * i, true);
          break;
        case DT.INT16:
          out[i] = v.getInt16(2 * i, true);
          break;
        case DT.UINT16:
          out[i] = v.getUint16(2 * i, true);
          break;
        case DT.INT8:
          out[i] = v.getInt8(i);
          break;
        case DT.UINT8:
        case DT.BOOL:
          out[i] = v.getUint8(i);
          break;
        default:
          return Array.from(tensorToFloat32(t, readExternal));
      }
    }
    return out;
  }
  let out: number[];
  if (t.int64Data.length) out = t.int64Data.map(Number);
  else if (t.uint64Data.length) out = t.uint64Data.map(Number);
  else if (t.int32Data.length) out = t.int32Data.slice();
  else out = Array.from(tensorToFloat32(t, readExternal));
  if (out.length < count) fail(`tensor ${JSON.stringify(t.name)} carries ${out.length} values, fewer than its shape needs`);
  return out;
}

/** Refuses a tensor whose raw or external bytes are fewer than its shape declares (before decoding it). */
function checkCarries(t: TensorProto, readExternal?: ExternalDataReader): void {
  const raw = rawBytes(t, readExternal);
  const need = declaredBytes(t);
  if (raw && need !== undefined && raw.length < need)
    fail(`tensor ${JSON.stringify(t.name)} declares [${tensorDims(t).join(", ")}] ${dtypeName(t.dataType)} (${need} bytes) but carries ${raw.length}`);
}

/** A packed plane's elements (uint8 or int8), without copying raw data. */
function packedValues(t: TensorProto, readExternal?: ExternalDataReader): ArrayLike<number> {
  const count = elementCount(tensorDims(t));
  const raw = rawBytes(t, readExternal);
  if (raw && (t.dataType === DT.UINT8 || t.dataType === DT.INT8)) {
    if (raw.length < count) fail(`tensor ${JSON.stringify(t.name)} carries ${raw.length} bytes, fewer than its ${count} elements`);
    return t.dataType === DT.UINT8 ? raw.subarray(0, count) : new Int8Array(raw.buffer, raw.byteOffset, count);
  }
  return intValues(t, readExternal);
}

// ---------------------------------------------------------------------------------------------------
// Tracing a decode subgraph.

/** A field plane as the subgraph unpacks it: element i = lut ? lut[packed[i / per]][i % per] : packed[i]. */
interface PlaneRef {
  packed: ConstRef;
  lut?: ConstRef;
  /** Fields kept by a Slice. */
  limit?: number;
}

interface Plane {
  ref: PlaneRef;
  width: number;
  /** The smallest non-zero value a field takes (2^shift for a table with the shift baked in). */
  unit: number;
  /** Fields the plane holds (before any Slice). */
  available: number;
  value: (i: number) => number;
}

interface Traced {
  mode: Mode;
  dtype: number;
  dims: number[];
  rows: number;
  cols: number;
  paddedCols?: number;
  transposed: boolean;
  convTransposeGroups?: number;
  k?: number;
  d?: number;
  tensors: StoredTensor[];
  lookupTables: ConstRef[];
  bytes: StoredBytes;
  fieldBits: number;
  codebook?: number[][];
  usage?: number[];
  signs?: SignReadback;
  scaleRange?: [number, number];
}

class Tracer {
  /** Every constant read, to count the subgraph's overhead. */
  readonly touched = new Map<TensorProto, ConstRef>();
  private steps = 0;

  constructor(private readonly readExternal: ExternalDataReader | undefined) {}

  get readExternalData(): ExternalDataReader | undefined {
    return this.readExternal;
  }

  private step(): void {
    if (++this.steps > 10_000) fail("the decode subgraph is too deep (a cycle?)");
  }

  node(scope: Scope, name: string, what: string): { node: NodeProto; scope: Scope } {
    this.step();
    const p = resolve(scope, name);
    if (!p) return fail(`${what}: no value ${JSON.stringify(name)} in scope`);
    if (p.kind !== "node") return fail(`${what}: ${JSON.stringify(name)} is ${p.kind === "input" ? "a graph input" : "a constant"}, not computed by a node`);
    return { node: p.node, scope: p.scope };
  }

  /** The constant `name` reads, or undefined when a node computes it. */
  maybeConst(scope: Scope, name: string): ConstRef | undefined {
    this.step();
    const p = resolve(scope, name);
    if (!p || (p.kind !== "initializer" && p.kind !== "constant")) return undefined;
    const c = constRef(p);
    this.touched.set(c.tensor, c);
    return c;
  }

  const(scope: Scope, name: string, what: string): ConstRef {
    return this.maybeConst(scope, name) ?? fail(`${what}: ${JSON.stringify(name)} is not a stored tensor`);
  }

  ints(c: ConstRef): number[] {
    return intValues(c.tensor, this.readExternal);
  }

  scalar(c: ConstRef, what: string): number {
    const v = this.ints(c);
    if (v.length !== 1) fail(`${what}: ${JSON.stringify(c.name)} is not a scalar`);
    return v[0]!;
  }

  /** Reshape's target shape (opset 5+: an input; earlier: an attribute). */
  reshapeShape(n: NodeProto, scope: Scope): number[] {
    if (n.input[1]) return this.ints(this.const(scope, n.input[1], "Reshape shape"));
    const a = n.attribute.find((x) => x.name === "shape");
    return a ? a.ints.map(Number) : fail("a Reshape without a shape");
  }

  /** A one-axis Slice [0, end) with step 1, as the writer emits it at any opset: its axis and end. */
  slice(n: NodeProto, scope: Scope): { axis: number; end: number } {
    let axes: number[] | undefined;
    let starts: number[];
    let ends: number[];
    let steps: number[] | undefined;
    if (n.input.length > 1) {
      starts = this.ints(this.const(scope, n.input[1]!, "Slice starts"));
      ends = this.ints(this.const(scope, n.input[2] ?? "", "Slice ends"));
      if (n.input[3]) axes = this.ints(this.const(scope, n.input[3], "Slice axes"));
      if (n.input[4]) steps = this.ints(this.const(scope, n.input[4], "Slice steps"));
    } else {
      const attr = (name: string) => n.attribute.find((a) => a.name === name)?.ints.map(Number);
      starts = attr("starts") ?? [];
      ends = attr("ends") ?? [];
      axes = attr("axes");
    }
    axes ??= starts.map((_, i) => i);
    if (axes.length !== 1 || starts.length !== 1 || ends.length !== 1 || starts[0] !== 0 || (steps && steps[0] !== 1))
      fail("a Slice the decode subgraph does not write (not one axis from 0 with step 1)");
    return { axis: axes[0]!, end: ends[0]! };
  }

  /** A one-axis strided Slice of the split product: its axis, start and step (the end is the dim's). */
  stridedSlice(n: NodeProto, scope: Scope): { axis: number; start: number; step: number } {
    if (n.input.length < 5) fail("a split product's Slice without steps");
    const one = (i: number, what: string) => {
      const v = this.ints(this.const(scope, n.input[i] ?? "", `Slice ${what}`));
      return v.length === 1 ? v[0]! : fail(`a split product's Slice with ${v.length} ${what}`);
    };
    return { start: one(1, "starts"), axis: one(3, "axes"), step: one(4, "steps") };
  }

  /** Follows Cast, Slice, Reshape([-1]) and one lookup-table Gather back to a packed tensor. */
  plane(scope: Scope, name: string, what: string): Plane {
    let limit: number | undefined;
    let lut: ConstRef | undefined;
    for (let depth = 0; depth < 16; depth++) {
      const c = this.maybeConst(scope, name);
      if (c) {
        const ref: PlaneRef = { packed: c, lut, limit };
        return this.planeReader(ref, what);
      }
      const { node: n, scope: s } = this.node(scope, name, what);
      scope = s;
      if (isOp(n, "Cast")) name = n.input[0] ?? "";
      else if (isOp(n, "Slice")) {
        const { axis, end } = this.slice(n, scope);
        if (axis !== 0 && axis !== -1) fail(`${what}: a Slice on axis ${axis} of a flat plane`);
        limit = limit === undefined ? end : Math.min(limit, end);
        name = n.input[0] ?? "";
      } else if (isOp(n, "Reshape")) {
        const shape = this.reshapeShape(n, scope);
        if (shape.length !== 1) fail(`${what}: a Reshape to [${shape.join(", ")}] inside the unpacking`);
        name = n.input[0] ?? "";
      } else if (isOp(n, "Gather")) {
        if (lut) fail(`${what}: two lookup-table Gathers`);
        lut = this.const(scope, n.input[0] ?? "", `${what} lookup table`);
        name = n.input[1] ?? "";
      } else return fail(`${what}: unexpected ${n.opType} node ${JSON.stringify(n.name || n.output[0])}`);
    }
    return fail(`${what}: too many unpacking steps`);
  }

  private planeReader(ref: PlaneRef, what: string): Plane {
    const packed = packedValues(ref.packed.tensor, this.readExternal);
    if (!ref.lut) {
      const width = dtypeBits(ref.packed.tensor.dataType) ?? fail(`${what}: ${JSON.stringify(ref.packed.name)} has no fixed width`);
      return { ref, width, unit: 1, available: packed.length, value: (i) => packed[i]! };
    }
    const lutDims = tensorDims(ref.lut.tensor);
    const per = lutDims.length === 1 ? 1 : lutDims[1] ?? 0;
    if (lutDims.length < 1 || lutDims.length > 2 || lutDims[0] !== 256 || ![1, 2, 4, 8].includes(per))
      fail(`${what}: the lookup table ${JSON.stringify(ref.lut.name)} is [${lutDims.join(", ")}], not [256, 1|2|4|8] or [256]`);
    if (ref.packed.tensor.dataType !== DT.UINT8) fail(`${what}: ${JSON.stringify(ref.packed.name)} is ${dtypeName(ref.packed.tensor.dataType)}, not packed uint8`);
    const table = this.ints(ref.lut);
    let unit = Infinity;
    for (const v of table) if (v > 0) unit = Math.min(unit, v);
    return { ref, width: 8 / per, unit: unit === Infinity ? 1 : unit, available: packed.length * per, value: (i) => table[packed[Math.floor(i / per)]! * per + (i % per)]! };
  }

  /** An index expression: a sum of planes, each possibly multiplied by a constant 2^shift. */
  indexTerms(scope: Scope, name: string, depth = 0): { plane: Plane; mult: number }[] {
    if (depth > 32) fail("the index expression is too deep");
    const c = this.maybeConst(scope, name);
    if (!c) {
      const { node: n, scope: s } = this.node(scope, name, "index");
      if (isOp(n, "Add")) return [...this.indexTerms(s, n.input[0] ?? "", depth + 1), ...this.indexTerms(s, n.input[1] ?? "", depth + 1)];
      if (isOp(n, "Mul")) {
        const [a, b] = [n.input[0] ?? "", n.input[1] ?? ""];
        const ca = this.maybeConst(s, a);
        const cb = this.maybeConst(s, b);
        const k = cb ?? ca ?? fail("index: a Mul by a computed value");
        const m = this.scalar(k, "index shift");
        return this.indexTerms(s, k === cb ? a : b, depth + 1).map((t) => ({ plane: t.plane, mult: t.mult * m }));
      }
    }
    return [{ plane: this.plane(scope, name, "index plane"), mult: 1 }];
  }
}

const part = (kind: StoredPartKind, c: ConstRef, extra: Partial<StoredTensor> = {}): StoredTensor => ({
  kind,
  name: c.name,
  storage: c.storage,
  graphPath: c.graphPath,
  dtype: dtypeName(c.tensor.dataType),
  dims: tensorDims(c.tensor),
  bytes: declaredBytes(c.tensor) ?? 0,
  ...extra,
});

const sameInts = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Reads the decode subgraph whose last node is `out` (in `scope`). Throws Malformed when it is not one.
 * Both formats: the first (a row matrix Reshape [rows, paddedCols] or an INT Mul of a Reshape [rows, cols],
 * then Transpose and Reshape to the weight's dims) and the lean one (the codebook Gather reshaped straight
 * to the weight's dims, signs joined to the index, INT values in the weight's own layout, their scales
 * shaped to broadcast along the output channels).
 */
function traceDecode(out: NodeProto, scope: Scope, readExternal: ExternalDataReader | undefined, c?: Candidate): Traced {
  const tr = new Tracer(readExternal);
  let n = out;
  let s = scope;
  const next = (what: string) => ({ node: n, scope: s } = tr.node(s, n.input[0] ?? "", what));
  let dtype: number = DT.FLOAT;
  // INT8 scaled after the product: the weight is Cast(stored q), each consumer's output goes through a Mul.
  const unscaled = isOp(n, "Cast") && c && c.scaledBy.length > 0 && c.scaledBy.every((m) => m) ? tr.maybeConst(s, n.input[0] ?? "") : undefined;
  if (isOp(n, "Cast") && !unscaled) {
    dtype = Number(n.attribute.find((a) => a.name === "to")?.i ?? 0);
    next("weight");
  }
  let dims: number[] | undefined;
  if (isOp(n, "Reshape")) {
    dims = tr.reshapeShape(n, s);
    next("layout");
  }
  let transposed = false;
  let convTransposeGroups: number | undefined;
  if (isOp(n, "Transpose")) {
    const perm = n.attribute.find((a) => a.name === "perm")?.ints.map(Number) ?? [];
    transposed = true;
    if (sameInts(perm, [0, 2, 1])) {
      next("layout");
      if (!isOp(n, "Reshape")) fail("a ConvTranspose layout without its group Reshape");
      const g = tr.reshapeShape(n, s);
      if (g.length !== 3) fail(`a group Reshape to [${g.join(", ")}]`);
      convTransposeGroups = g[0]!;
    } else if (!sameInts(perm, [1, 0])) fail(`a Transpose with perm [${perm.join(", ")}]`);
    next("row matrix");
  }
  let sliceCols: number | undefined;
  if (isOp(n, "Slice")) {
    const { axis, end } = tr.slice(n, s);
    if (axis !== 1 && axis !== -1) fail(`the padding is cut on axis ${axis}, not 1`);
    sliceCols = end;
    next("row matrix");
  }
  const bytes: StoredBytes = { codebook: 0, indices: 0, signs: 0, values: 0, scales: 0, total: 0, other: 0 };
  const tensors: StoredTensor[] = [];
  const luts = new Map<TensorProto, ConstRef>();
  const parts = new Set<TensorProto>();
  const add = (t: StoredTensor, c: ConstRef, field: keyof StoredBytes) => {
    parts.add(c.tensor);
    tensors.push(t);
    bytes[field] += t.bytes;
    bytes.total += t.bytes;
  };
  const usePlane = (p: Plane, count: number, what: string) => {
    if (p.available < count || (p.ref.limit !== undefined && p.ref.limit < count))
      fail(`${what} ${JSON.stringify(p.ref.packed.name)} holds ${Math.min(p.available, p.ref.limit ?? Infinity)} fields, fewer than the ${count} the weight needs`);
    if (p.ref.lut) luts.set(p.ref.lut.tensor, p.ref.lut);
  };
  let result: Omit<Traced, "dims" | "dtype" | "transposed" | "convTransposeGroups" | "tensors" | "lookupTables" | "bytes">;

  const isGather = (name: string) => {
    const p = resolve(s, name);
    return p?.kind === "node" && isOp(p.node, "Gather") ? { node: p.node, scope: p.scope } : undefined;
  };
  const isVqValues = isOp(n, "Gather") || (isOp(n, "Mul") && (isGather(n.input[0] ?? "") || isGather(n.input[1] ?? "")) !== undefined);
  // INT values and their scales: the stored tensors read, and what the report counts.
  const intValues = (scalesRef: ConstRef, rows: number, cols: number, qName: string, qScope: Scope): typeof result => {
    checkCarries(scalesRef.tensor, readExternal);
    const scales = tensorToFloat32(scalesRef.tensor, readExternal);
    if (scales.length !== rows) fail(`${scales.length} scales for ${rows} rows`);
    let offset = 0;
    const sub = resolve(qScope, qName);
    if (sub?.kind === "node" && isOp(sub.node, "Sub")) {
      offset = tr.scalar(tr.const(sub.scope, sub.node.input[1] ?? "", "INT4 offset"), "INT4 offset");
      qName = sub.node.input[0] ?? "";
      qScope = sub.scope;
    }
    const plane = tr.plane(qScope, qName, "the quantized values");
    const elements = rows * cols;
    usePlane(plane, elements, "the quantized values");
    let mode: Mode;
    const signedNibbles = plane.ref.lut?.tensor.dataType === DT.INT8;
    if (plane.width === 8 && offset === 0 && plane.ref.packed.tensor.dataType === DT.INT8) mode = "int8";
    else if (plane.width === 4 && (offset === 8 || (offset === 0 && signedNibbles))) mode = "int4";
    else return fail(`quantized values of ${plane.width} bits with offset ${offset}: neither INT8 nor INT4`);
    add(part(mode, plane.ref.packed, { width: plane.width, fields: elements }), plane.ref.packed, "values");
    add(part("scales", scalesRef), scalesRef, "scales");
    const fieldBits = plane.width * elements + scales.length * (dtypeBits(scalesRef.tensor.dataType) ?? 32);
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of scales) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    return { mode, rows, cols, fieldBits, scaleRange: [lo, hi] };
  };
  if (unscaled && c) {
    // Scaled after the product (MatMul, Gemm): q in the weight's layout, scales [rows] on each consumer's output.
    dims = tensorDims(unscaled.tensor);
    if (dims.length !== 2) fail(`INT8 values scaled after the product of shape [${dims.join(", ")}], not 2-D`);
    let scalesRef: ConstRef | undefined;
    for (const [i, m] of c.scaledBy.entries()) {
      const product = c.consumerNodes[i]!.output[0];
      const other = m!.node.input[0] === product ? m!.node.input[1] : m!.node.input[1] === product ? m!.node.input[0] : undefined;
      const ref = other === undefined ? undefined : tr.maybeConst(m!.scope, other);
      if (!ref) fail(`the Mul after ${c.consumers[i]!.node} does not multiply its output by stored scales`);
      if (scalesRef && ref!.tensor !== scalesRef.tensor) fail("the consumers' outputs are multiplied by different scales");
      scalesRef = ref;
    }
    const first = c.consumerNodes[0]!;
    transposed = !(first.opType === "Gemm" && Number(first.attribute.find((a) => a.name === "transB")?.i ?? 0) === 1);
    const rows = transposed ? dims[1]! : dims[0]!;
    if (!sameInts(tensorDims(scalesRef!.tensor), [rows])) fail(`scales [${tensorDims(scalesRef!.tensor).join(", ")}] for an output of ${rows} channels`);
    result = intValues(scalesRef!, rows, elementCount(dims) / rows, n.input[0] ?? "", s);
  } else if (isOp(n, "Reshape") || isVqValues) {
    // SSVQ / VQ: values [count, d] (or [..., d]), reshaped to the row matrix [rows, paddedCols] or, in the
    // lean format when nothing is transposed or cut, straight to the weight's dims.
    let rowShape: [number, number] | undefined;
    if (isOp(n, "Reshape")) {
      const shape = tr.reshapeShape(n, s);
      if (shape.length !== 2 || !(shape[0]! > 0 && shape[1]! > 0)) fail(`the row matrix Reshape to [${shape.join(", ")}]`);
      rowShape = shape as [number, number];
      next("values");
    } else if (transposed || sliceCols !== undefined) fail("a transposed or cut weight without its row matrix Reshape");
    let gather: { node: NodeProto; scope: Scope } | undefined;
    let signName: string | undefined;
    if (isOp(n, "Gather")) gather = { node: n, scope: s };
    else if (isOp(n, "Mul")) {
      // values = Gather(codebook, index) * Reshape(signs, [count, d])
      const g0 = isGather(n.input[0] ?? "");
      const g1 = isGather(n.input[1] ?? "");
      const pick = g0 ? 0 : g1 ? 1 : fail("the signed values are not a codebook Gather times signs");
      gather = pick === 0 ? g0 : g1;
      signName = n.input[1 - pick] ?? "";
    } else fail(`the values come from a ${n.opType} node, not a codebook Gather`);
    const gn = gather!.node;
    if (Number(gn.attribute.find((a) => a.name === "axis")?.i ?? 0n) !== 0) fail("the codebook Gather is not on axis 0");
    const { cb, patterns } = codebookOf(tr, gather!.scope, gn.input[0] ?? "");
    const cbDims = tensorDims(cb.tensor);
    if (cbDims.length !== 2) fail(`the codebook ${JSON.stringify(cb.name)} is [${cbDims.join(", ")}], not [k, d]`);
    const [k, d] = cbDims as [number, number];
    if (!(k >= 1 && d >= 1)) fail(`a [${k}, ${d}] codebook`);
    let rows: number;
    let paddedCols: number;
    let cols: number;
    if (rowShape) {
      [rows, paddedCols] = rowShape;
      cols = sliceCols ?? paddedCols;
      if (!(cols > 0 && cols <= paddedCols)) fail(`${cols} columns of a ${paddedCols}-column padded row matrix`);
    } else {
      // Lean format, weight not transposed nor padded: rows are the first dim.
      if (!dims || dims.length < 2) return fail("the codebook values are reshaped to no weight shape");
      rows = dims[0]!;
      cols = elementCount(dims) / rows;
      paddedCols = cols;
    }
    if (paddedCols % d !== 0) fail(`a [${k}, ${d}] codebook for ${paddedCols}-column padded rows`);
    if (patterns && (patterns.d !== d || patterns.rows !== 2 ** d)) fail(`sign patterns for d = ${patterns.d} with a d = ${d} codebook`);
    if (patterns) luts.set(patterns.ref.tensor, patterns.ref);
    dims ??= [cols, rows];
    const count = (rows * paddedCols) / d;
    checkCarries(cb.tensor, readExternal);
    const cbValues = tensorToFloat32(cb.tensor, readExternal);
    const codebook: number[][] = [];
    for (let j = 0; j < k; j++) codebook.push(Array.from(cbValues.subarray(j * d, (j + 1) * d)));
    const cbBits = dtypeBits(cb.tensor.dataType)!;
    add(part("codebook", cb), cb, "codebook");
    let fieldBits = k * d * cbBits;

    // With sign patterns, the index is Add(codeword, k * pattern): the writer adds the sign plane last.
    let indexName = gn.input[1] ?? "";
    let signPlane: Plane | undefined;
    if (patterns) {
      const top = tr.node(gather!.scope, indexName, "signed index");
      if (!isOp(top.node, "Add")) fail(`the signed index comes from a ${top.node.opType} node, not an Add of the sign plane`);
      signPlane = tr.plane(top.scope, top.node.input[1] ?? "", "the sign plane");
      indexName = top.node.input[0] ?? "";
    }
    const terms = tr.indexTerms(gather!.scope, indexName);
    const usage = new Array<number>(k).fill(0);
    for (const t of terms) {
      usePlane(t.plane, count, "the index plane");
      const shift = Math.log2(t.mult * t.plane.unit);
      add(part("indices", t.plane.ref.packed, { width: t.plane.width, ...(Number.isInteger(shift) ? { shift } : {}), fields: count }), t.plane.ref.packed, "indices");
      fieldBits += t.plane.width * count;
    }
    if (signPlane) usePlane(signPlane, count, "the sign plane");
    const pattern = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      let idx = 0;
      for (const t of terms) idx += t.mult * t.plane.value(i);
      if (!(idx >= 0 && idx < k)) fail(`sub-vector ${i} has index ${idx}, outside the ${k}-entry codebook`);
      usage[idx]!++;
      if (signPlane) {
        const p = signPlane.value(i) / k;
        if (!(Number.isInteger(p) && p >= 0 && p < patterns!.rows)) fail(`sub-vector ${i} has sign offset ${signPlane.value(i)}, not k times one of ${patterns!.rows} patterns`);
        pattern[i] = p;
      }
    }

    let signs: SignReadback | undefined;
    const weights = rows * cols;
    const perRow = paddedCols / d;
    if (signPlane) {
      const plane = signPlane;
      const elements = count * d;
      add(part("signs", plane.ref.packed, { width: 1, fields: elements }), plane.ref.packed, "signs");
      fieldBits += elements;
      let negative = 0;
      for (let i = 0; i < count; i++) {
        const c0 = (i % perRow) * d;
        for (let t = 0; t < d && c0 + t < cols; t++) if (patterns!.negative(pattern[i]!, t)) negative++;
      }
      signs = { negative, weights, fraction: weights ? negative / weights : 0 };
    } else if (signName !== undefined) {
      const r = tr.node(s, signName, "signs");
      if (!isOp(r.node, "Reshape")) fail(`the signs come from a ${r.node.opType} node, not a Reshape to [count, d]`);
      const sshape = tr.reshapeShape(r.node, r.scope);
      if (!sameInts(sshape, [count, d])) fail(`the signs are reshaped to [${sshape.join(", ")}], not [${count}, ${d}]`);
      const plane = tr.plane(r.scope, r.node.input[0] ?? "", "the sign plane");
      const elements = count * d;
      usePlane(plane, elements, "the sign plane");
      add(part("signs", plane.ref.packed, { width: plane.width, fields: elements }), plane.ref.packed, "signs");
      fieldBits += plane.width * elements;
      let negative = 0;
      for (let r0 = 0; r0 < rows; r0++)
        for (let c = 0; c < cols; c++) if (plane.value(r0 * paddedCols + c) < 0) negative++;
      signs = { negative, weights, fraction: weights ? negative / weights : 0 };
    }
    result = { mode: signs ? "ssvq" : "vq", rows, cols, paddedCols, k, d, fieldBits, codebook, usage, signs };
  } else if (isOp(n, "Mul")) {
    const c0 = tr.maybeConst(s, n.input[0] ?? "");
    const c1 = tr.maybeConst(s, n.input[1] ?? "");
    const scalesRef = c1 ?? c0 ?? fail("the dequantizing Mul has no stored scales");
    const r = tr.node(s, (scalesRef === c1 ? n.input[0] : n.input[1]) ?? "", "quantized values");
    let rows: number;
    let cols: number;
    let qName: string;
    let qScope = r.scope;
    const scaleDims = tensorDims(scalesRef.tensor);
    if (isOp(r.node, "Reshape")) {
      // First format: Mul(Reshape(q, [rows, cols]), scales [rows, 1]).
      const shape = tr.reshapeShape(r.node, r.scope);
      if (shape.length !== 2 || !(shape[0]! > 0 && shape[1]! > 0)) fail(`the quantized values are reshaped to [${shape.join(", ")}]`);
      [rows, cols] = shape as [number, number];
      if (sliceCols !== undefined) fail("an INT decode with a padding Slice");
      qName = r.node.input[0] ?? "";
    } else if (isOp(r.node, "Cast")) {
      // Lean format: Mul(Cast(q in the weight's layout), scales broadcast along the output-channel axis).
      if (transposed || sliceCols !== undefined || dims !== undefined) fail("an INT decode in the weight's layout followed by a Transpose, Slice or Reshape");
      qName = r.node.input[0] ?? "";
      const qc = tr.maybeConst(r.scope, qName);
      if (qc) dims = tensorDims(qc.tensor);
      else {
        const q = tr.node(r.scope, qName, "quantized values");
        if (!isOp(q.node, "Reshape")) fail(`the quantized values come from a ${q.node.opType} node, not a Reshape to the weight's dims`);
        dims = tr.reshapeShape(q.node, q.scope);
        qName = q.node.input[0] ?? "";
        qScope = q.scope;
      }
      // Scales [rows, 1, ...] along the first dim, or [1, rows] along the last of a transposed 2-D weight.
      const along0 = sameInts(scaleDims, dims.map((x, i) => (i === 0 ? x : 1)));
      transposed = !along0 && dims.length === 2 && sameInts(scaleDims, [1, dims[1]!]);
      if (!along0 && !transposed) fail(`scales [${scaleDims.join(", ")}] do not broadcast along the output channels of [${dims.join(", ")}]`);
      rows = transposed ? dims[1]! : dims[0]!;
      cols = elementCount(dims) / rows;
    } else return fail(`the quantized values come from a ${r.node.opType} node, not a Reshape or Cast`);
    result = intValues(scalesRef, rows, cols, qName, qScope);
  } else return fail(`the row matrix comes from a ${n.opType} node: not a decode subgraph`);

  if (!dims) return fail("the decode subgraph gives the weight no shape");
  if (elementCount(dims) !== result.rows * result.cols)
    fail(`the weight's shape [${dims.join(", ")}] does not hold the ${result.rows} x ${result.cols} row matrix`);
  for (const tensor of tr.touched.keys()) if (!parts.has(tensor) && !luts.has(tensor)) bytes.other += declaredBytes(tensor) ?? 0;
  return { ...result, dims, dtype, transposed, convTransposeGroups, tensors, lookupTables: [...luts.values()], bytes };
}

/**
 * Reads a split product (split-product.ts): the Cast of the stored codes, and for each part (a consumer
 * of `c`) its weight Gather(table, codes), the table a codebook column (through a field table when codes
 * share a byte) and its A a strided Slice. The parts must cover t = f * d + j for every field f and
 * column j of one codebook, in the orientation the consumers read.
 */
function traceSplit(c: Candidate, readExternal: ExternalDataReader | undefined): Traced {
  const tr = new Tracer(readExternal);
  if (c.producer.kind !== "node" || !isOp(c.producer.node, "Cast")) return fail("a split product's codes are not a Cast of stored codes");
  const codesRef = tr.const(c.producer.scope, c.producer.node.input[0] ?? "", "split product codes");
  const codeDims = tensorDims(codesRef.tensor);
  const codeType = codesRef.tensor.dataType;
  if (codeDims.length !== 2 || (codeType !== DT.UINT8 && codeType !== DT.UINT16)) fail(`split product codes ${dtypeName(codeType)} [${codeDims.join(", ")}], not 2-D uint8 or uint16`);
  const first = c.consumerNodes[0]!;
  const orientation: SplitOrientation = first.opType === "Gemm" && Number(first.attribute.find((a) => a.name === "transB")?.i ?? 0) !== 0 ? "nk" : "kn";
  let cb: ConstRef | undefined;
  let patterns: SignPatterns | undefined;
  let dtype: number = DT.FLOAT;
  let fieldBits: number | undefined;
  let step: number | undefined;
  // Parts by the input they slice (a weight may feed several products), then by slice start.
  const products = new Map<string, Map<number, { f: number; j: number }>>();
  const luts = new Map<TensorProto, ConstRef>();
  for (const [i, p] of c.consumerNodes.entries()) {
    const what = c.consumers[i]!.node;
    const o = p.opType === "Gemm" && Number(p.attribute.find((a) => a.name === "transB")?.i ?? 0) !== 0 ? "nk" : "kn";
    if (o !== orientation) fail(`${what} reads the codes ${o === "nk" ? "" : "un"}transposed, unlike ${c.consumers[0]!.node}`);
    const scope = c.producer.scope;
    const g = tr.node(scope, p.input[1] ?? "", `${what} weight`);
    let t = tr.node(g.scope, g.node.input[0] ?? "", `${what} table`);
    if (isOp(t.node, "Cast")) {
      dtype = Number(t.node.attribute.find((a) => a.name === "to")?.i ?? 0);
      t = tr.node(t.scope, t.node.input[0] ?? "", `${what} table`);
    }
    let f = 0;
    const lutRef = isOp(t.node, "Gather") ? tr.maybeConst(t.scope, t.node.input[1] ?? "") : undefined;
    if (lutRef && tensorDims(lutRef.tensor).length === 1) {
      // A field table [256]: entry v = (v >> f * b) & (2^b - 1).
      const lut = tr.ints(lutRef);
      const bits = Math.log2(Math.max(...lut) + 1);
      if (lut.length !== 256 || !Number.isInteger(bits) || 8 % bits !== 0) fail(`${what}: a field table of ${lut.length} entries up to ${Math.max(...lut)}`);
      while (f < 8 / bits && lut[1 << (f * bits)] !== 1) f++;
      if (lut.some((x, v) => x !== ((v >>> (f * bits)) & ((1 << bits) - 1)))) fail(`${what}: a field table that does not read one field of a byte`);
      if (fieldBits !== undefined && fieldBits !== bits) fail("the split product's parts read fields of different widths");
      fieldBits = bits;
      luts.set(lutRef.tensor, lutRef);
      t = tr.node(t.scope, t.node.input[0] ?? "", `${what} codebook column`);
    }
    if (!isOp(t.node, "Gather") || Number(t.node.attribute.find((a) => a.name === "axis")?.i ?? 0) !== 1) fail(`${what}: the table is not a codebook column (a Gather on axis 1)`);
    const j = tr.scalar(tr.const(t.scope, t.node.input[1] ?? "", `${what} column`), `${what} column`);
    const book = codebookOf(tr, t.scope, t.node.input[0] ?? "");
    if (cb && book.cb.tensor !== cb.tensor) fail("the split product's parts read different codebooks");
    cb = book.cb;
    patterns = book.patterns;
    const a = tr.node(c.producer.scope, p.input[0] ?? "", `${what} input`);
    if (!isOp(a.node, "Slice")) fail(`${what} reads its input through a ${a.node.opType} node, not a strided Slice`);
    const sl = tr.stridedSlice(a.node, a.scope);
    if (step !== undefined && sl.step !== step) fail("the split product's slices have different steps");
    step = sl.step;
    const input = a.node.input[0] ?? "";
    let seen = products.get(input);
    if (!seen) products.set(input, (seen = new Map()));
    if (seen.has(sl.start)) fail(`two parts read slice ${sl.start} of ${JSON.stringify(input)}`);
    seen.set(sl.start, { f, j });
  }
  const cbDims = tensorDims(cb!.tensor);
  if (cbDims.length !== 2) fail(`the codebook ${JSON.stringify(cb!.name)} is [${cbDims.join(", ")}], not [k, d]`);
  const [k, d] = cbDims as [number, number];
  if (patterns) luts.set(patterns.ref.tensor, patterns.ref);
  const per = fieldBits === undefined ? 1 : 8 / fieldBits;
  for (const seen of products.values()) {
    if (step !== d * per || seen.size !== step) fail(`${seen.size} parts with step ${step} for d = ${d} and ${per} codes per element`);
    for (const [t, { f, j }] of seen) if (t !== f * d + j) fail(`the part reading slice ${t} takes field ${f}, column ${j}`);
  }
  const [rows, r] = orientation === "kn" ? [codeDims[1]!, codeDims[0]!] : [codeDims[0]!, codeDims[1]!];
  const cols = r * step!;
  const perRow = cols / d;
  const count = rows * perRow;
  const bits = fieldBits ?? (codeType === DT.UINT16 ? 16 : 8);
  const layout = { orientation, bits, per, dims: codeDims as [number, number] };
  const values = packedValues(codesRef.tensor, readExternal);
  checkCarries(cb!.tensor, readExternal);
  const cbValues = tensorToFloat32(cb!.tensor, readExternal);
  const codebook: number[][] = [];
  for (let e = 0; e < k; e++) codebook.push(Array.from(cbValues.subarray(e * d, (e + 1) * d)));
  const usage = new Array<number>(k).fill(0);
  let negative = 0;
  const rowsOfPatterns = patterns ? patterns.rows : 1;
  for (let n = 0; n < rows; n++)
    for (let g = 0; g < perRow; g++) {
      const code = splitCodeAt(layout, values, n, g);
      const idx = code % k;
      const pattern = Math.floor(code / k);
      if (pattern >= rowsOfPatterns) fail(`sub-vector ${n * perRow + g} has code ${code}, outside the ${k * rowsOfPatterns}-entry ${patterns ? "signed " : ""}codebook`);
      usage[idx]!++;
      if (patterns) for (let t = 0; t < d; t++) if (patterns.negative(pattern, t)) negative++;
    }
  const indexBitsPer = Math.max(1, Math.ceil(Math.log2(k)));
  const signBitsPer = patterns ? d : 0;
  const bytes: StoredBytes = { codebook: 0, indices: 0, signs: 0, values: 0, scales: 0, total: 0, other: 0 };
  const codesPart = part("codes", codesRef, { width: bits, fields: count });
  const cbPart = part("codebook", cb!);
  bytes.codebook = cbPart.bytes;
  bytes.signs = (codesPart.bytes * signBitsPer) / (indexBitsPer + signBitsPer);
  bytes.indices = codesPart.bytes - bytes.signs;
  bytes.total = cbPart.bytes + codesPart.bytes;
  for (const tensor of tr.touched.keys()) if (tensor !== codesRef.tensor && tensor !== cb!.tensor && !luts.has(tensor)) bytes.other += declaredBytes(tensor) ?? 0;
  const weights = rows * cols;
  const fieldBitsTotal = k * d * dtypeBits(cb!.tensor.dataType)! + count * (indexBitsPer + signBitsPer);
  return {
    mode: patterns ? "ssvq" : "vq",
    dtype,
    dims: orientation === "kn" ? [cols, rows] : [rows, cols],
    rows,
    cols,
    paddedCols: cols,
    transposed: orientation === "kn",
    k,
    d,
    tensors: [cbPart, codesPart],
    lookupTables: [...luts.values()],
    bytes,
    fieldBits: fieldBitsTotal,
    codebook,
    usage,
    ...(patterns ? { signs: { negative, weights, fraction: weights ? negative / weights : 0 } } : {}),
  };
}

interface SignPatterns {
  /** The shared table (counted with the lookup tables). */
  ref: ConstRef;
  d: number;
  rows: number;
  negative: (pattern: number, t: number) => boolean;
}

/**
 * The codebook a Gather reads: stored (maybe Cast), or the lean format's signed codebook
 * Reshape(Mul(Reshape(codebook, [1, k, d]), patterns [2^d, 1, d]), [2^d * k, d]).
 */
function codebookOf(tr: Tracer, scope: Scope, name: string): { cb: ConstRef; patterns?: SignPatterns } {
  const stored = (sc: Scope, nm: string): ConstRef => {
    const c = tr.maybeConst(sc, nm);
    if (c) return c;
    const p = tr.node(sc, nm, "codebook");
    if (!isOp(p.node, "Cast")) fail(`the codebook comes from a ${p.node.opType} node`);
    return tr.const(p.scope, p.node.input[0] ?? "", "codebook");
  };
  const direct = tr.maybeConst(scope, name);
  if (direct) return { cb: direct };
  const top = tr.node(scope, name, "codebook");
  if (isOp(top.node, "Cast")) return { cb: stored(scope, name) };
  if (!isOp(top.node, "Reshape")) return fail(`the codebook comes from a ${top.node.opType} node`);
  const mul = tr.node(top.scope, top.node.input[0] ?? "", "signed codebook");
  if (!isOp(mul.node, "Mul")) fail(`the signed codebook comes from a ${mul.node.opType} node, not a Mul by sign patterns`);
  const a = tr.maybeConst(mul.scope, mul.node.input[0] ?? "");
  const b = tr.maybeConst(mul.scope, mul.node.input[1] ?? "");
  const pat = b ?? a ?? fail("the signed codebook has no stored sign patterns");
  const inner = tr.node(mul.scope, (pat === b ? mul.node.input[0] : mul.node.input[1]) ?? "", "codebook");
  if (!isOp(inner.node, "Reshape")) fail(`the codebook reaches the sign patterns through a ${inner.node.opType} node`);
  const cb = stored(inner.scope, inner.node.input[0] ?? "");
  const pd = tensorDims(pat.tensor);
  if (pd.length !== 3 || pd[1] !== 1) fail(`sign patterns [${pd.join(", ")}], not [2^d, 1, d]`);
  const values = tensorToFloat32(pat.tensor, tr.readExternalData);
  const d = pd[2]!;
  return { cb, patterns: { ref: pat, d, rows: pd[0]!, negative: (p, t) => values[p * d + t]! < 0 } };
}

// ---------------------------------------------------------------------------------------------------
// Metadata.

function parseJson(text: string, key: string, problems: string[]): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    problems.push(`${key} is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
    return undefined;
  }
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

function parseConfig(text: string, problems: string[]): ReadbackConfig | undefined {
  const raw = parseJson(text, "ssvq.config", problems);
  if (raw === undefined) return undefined;
  if (!isRecord(raw)) {
    problems.push("ssvq.config is not a JSON object");
    return undefined;
  }
  const config: ReadbackConfig = { ...raw };
  const expect: Record<string, "string" | "number" | "boolean"> = { mode: "string", k: "number", d: "number", seed: "number", kmeansIters: "number", format: "string", finetune: "boolean" };
  for (const [key, type] of Object.entries(expect))
    if (key in config && typeof config[key] !== type) {
      problems.push(`ssvq.config's ${key} is ${JSON.stringify(config[key])}, not a ${type}`);
      delete config[key];
    }
  return config;
}

function parseLayers(text: string, problems: string[]): LayerMetadata[] {
  const raw = parseJson(text, "ssvq.layers", problems);
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    problems.push("ssvq.layers is not a JSON array");
    return [];
  }
  const out: LayerMetadata[] = [];
  raw.forEach((e, i) => {
    if (!isRecord(e) || typeof e["name"] !== "string") {
      problems.push(`ssvq.layers entry ${i} names no layer`);
      return;
    }
    const m: LayerMetadata = { name: e["name"] };
    if (typeof e["graphPath"] === "string") m.graphPath = e["graphPath"];
    if (typeof e["mode"] === "string") m.mode = e["mode"];
    for (const key of ["k", "d", "bitsPerWeight"] as const) if (typeof e[key] === "number" && Number.isFinite(e[key])) m[key] = e[key] as number;
    out.push(m);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * What a compressed model stores, read back from its `ssvq.*` metadata and its decode subgraphs;
 * undefined for a model without `ssvq.*` metadata. Never throws for a damaged file.
 */
export function readBackCompression(model: ModelProto, readExternal?: ExternalDataReader): CompressionReadback | undefined {
  const meta = new Map(model.metadataProps.filter((p) => p.key.startsWith("ssvq.")).map((p) => [p.key, p.value]));
  if (meta.size === 0) return undefined;
  const problems: string[] = [];
  const version = meta.get("ssvq.version");
  if (version === undefined) problems.push("ssvq.version is missing");
  const configText = meta.get("ssvq.config");
  const config = configText === undefined ? (problems.push("ssvq.config is missing"), undefined) : parseConfig(configText, problems);
  const layersText = meta.get("ssvq.layers");
  const entries = layersText === undefined ? (problems.push("ssvq.layers is missing"), []) : parseLayers(layersText, problems);

  let candidates: Candidate[] = [];
  try {
    candidates = model.graph ? findCandidates(model) : [];
  } catch (e) {
    problems.push(`the graph could not be scanned: ${message(e)}`);
  }
  const layers: LayerReadback[] = [];
  const layerLuts = new Map<LayerReadback, ConstRef[]>();
  for (const entry of entries) {
    const c = candidates.find((x) => !x.used && x.name === entry.name && (entry.graphPath === undefined || x.graphPath === entry.graphPath));
    if (!c) {
      layers.push({
        name: entry.name,
        graphPath: entry.graphPath ?? "",
        stored: "missing",
        ...metadataFacts(entry),
        metadata: entry,
        consumers: [],
        tensors: [],
        lookupTables: [],
        problem: `ssvq.layers lists ${JSON.stringify(entry.name)}, but no Conv, ConvTranspose, Gemm or MatMul reads a weight of that name`,
      });
      continue;
    }
    c.used = true;
    layers.push(readLayer(c, entry, config, readExternal, layerLuts));
  }
  // Decode subgraphs the metadata does not list (or all of them, when ssvq.layers is unreadable).
  for (const c of candidates) {
    if (c.used || c.producer.kind !== "node") continue;
    let traced: Traced;
    try {
      traced = c.split ? traceSplit(c, readExternal) : traceDecode(c.producer.node, c.producer.scope, readExternal, c);
    } catch {
      continue; // a weight computed by other nodes, not a decode subgraph
    }
    const layer = fromTraced(c, traced, undefined, config, layerLuts);
    layer.problem = joinProblems(layer.problem, "a decode subgraph that ssvq.layers does not list");
    layers.push(layer);
  }

  const luts = new Map<TensorProto, { name: string; bytes: number }>();
  let storedBytes = 0;
  let weights = 0;
  let fieldBits = 0;
  let fieldWeights = 0;
  let compressedLayers = 0;
  for (const l of layers) {
    if (l.stored === "missing") continue;
    compressedLayers++;
    weights += l.weights ?? 0;
    storedBytes += l.bytes?.total ?? 0;
    if (l.bits && l.weights) {
      fieldBits += l.bits.fieldBits;
      fieldWeights += l.weights;
    }
    for (const ref of layerLuts.get(l) ?? []) luts.set(ref.tensor, { name: ref.name, bytes: declaredBytes(ref.tensor) ?? 0 });
  }
  return {
    ...(version !== undefined ? { version } : {}),
    ...(config ? { config } : {}),
    layers,
    totals: {
      compressedLayers,
      compressedWeights: weights,
      storedBytes,
      lookupTableBytes: [...luts.values()].reduce((a, l) => a + l.bytes, 0),
      lookupTables: [...luts.values()].map((l) => l.name),
      ...(fieldWeights ? { bitsPerWeight: fieldBits / fieldWeights } : {}),
    },
    problems,
  };
}

const joinProblems = (...p: (string | undefined)[]): string | undefined => p.filter((x) => x).join("; ") || undefined;

/** What the metadata alone says of a layer: its mode, k and d. */
function metadataFacts(entry: LayerMetadata): Pick<LayerReadback, "mode" | "k" | "d"> {
  return {
    ...(entry.mode !== undefined && MODES.includes(entry.mode) ? { mode: entry.mode as Mode } : {}),
    ...(entry.k !== undefined ? { k: entry.k } : {}),
    ...(entry.d !== undefined ? { d: entry.d } : {}),
  };
}

/** The row layout the first consumer reads the weight in, or why there is none. */
function consumerLayout(c: Candidate, dims: number[]) {
  const node = c.consumerNodes[0];
  return node ? rowLayout(node.opType, node, dims) : "no consumer";
}

function readLayer(
  c: Candidate,
  entry: LayerMetadata,
  config: ReadbackConfig | undefined,
  readExternal: ExternalDataReader | undefined,
  layerLuts: Map<LayerReadback, ConstRef[]>,
): LayerReadback {
  const base = {
    name: c.name,
    graphPath: c.graphPath,
    ...metadataFacts(entry),
    metadata: entry,
    opType: c.consumers[0]?.opType,
    consumers: c.consumers,
    tensors: [],
    lookupTables: [],
  };
  const p = c.producer;
  if (p.kind === "initializer" || p.kind === "constant") {
    const dims = tensorDims(p.tensor);
    const layout = consumerLayout(c, dims);
    const shape = typeof layout === "string" ? {} : { rows: layout.rows, cols: layout.cols, groups: layout.groups, weights: layout.rows * layout.cols };
    return {
      ...base,
      stored: "dense",
      dims,
      dtype: dtypeName(p.tensor.dataType),
      ...shape,
      problem: joinProblems(
        typeof layout === "string" ? layout : undefined,
        config?.format !== undefined && config.format !== "dense" ? `ssvq.config says format ${config.format}, but the weight is stored dense (no decode subgraph)` : undefined,
      ),
    };
  }
  if (p.kind !== "node") return { ...base, stored: "missing", problem: "the weight is a graph input" };
  try {
    return fromTraced(c, c.split ? traceSplit(c, readExternal) : traceDecode(p.node, p.scope, readExternal, c), entry, config, layerLuts);
  } catch (e) {
    return { ...base, stored: "subgraph", problem: `the decode subgraph cannot be read: ${message(e)}` };
  }
}

function fromTraced(
  c: Candidate,
  t: Traced,
  entry: LayerMetadata | undefined,
  config: ReadbackConfig | undefined,
  layerLuts: Map<LayerReadback, ConstRef[]>,
): LayerReadback {
  const problems: string[] = [];
  const layout = consumerLayout(c, t.dims);
  let groups = t.convTransposeGroups ?? 1;
  if (typeof layout === "string") problems.push(layout);
  else {
    groups = layout.groups;
    if (layout.rows !== t.rows || layout.cols !== t.cols)
      problems.push(`${c.consumers[0]!.node} reads the weight as ${layout.rows} x ${layout.cols}, the decode subgraph writes ${t.rows} x ${t.cols}`);
    if (layout.transposed !== t.transposed) problems.push(`${c.consumers[0]!.node} reads the weight ${layout.transposed ? "" : "un"}transposed, the decode subgraph writes it otherwise`);
    if (t.convTransposeGroups !== undefined && t.convTransposeGroups !== layout.groups)
      problems.push(`the decode subgraph writes ${t.convTransposeGroups} groups, ${c.consumers[0]!.node} has ${layout.groups}`);
  }
  const weights = t.rows * t.cols;
  const bitsPerWeight = t.fieldBits / weights;
  const mbpw = entry?.bitsPerWeight;
  const matches = mbpw !== undefined && Math.abs(bitsPerWeight - mbpw) <= 1e-9 * Math.max(1, Math.abs(mbpw));
  if (entry) {
    if (entry.mode !== undefined && entry.mode !== t.mode) problems.push(`ssvq.layers says mode ${entry.mode}, the decode subgraph is ${t.mode}`);
    if (entry.k !== undefined && t.k !== undefined && entry.k !== t.k) problems.push(`ssvq.layers says k=${entry.k}, the codebook has ${t.k} entries`);
    if (entry.d !== undefined && t.d !== undefined && entry.d !== t.d) problems.push(`ssvq.layers says d=${entry.d}, the codebook's sub-vectors have ${t.d}`);
    if (mbpw !== undefined && !matches) problems.push(`ssvq.layers says ${mbpw} bits/weight, the stored tensors make ${bitsPerWeight}`);
  }
  if (config?.format === "dense") problems.push("ssvq.config says format dense, but the weight has a decode subgraph");
  const unused: number[] = [];
  t.usage?.forEach((u, j) => {
    if (u === 0) unused.push(j);
  });
  const layer: LayerReadback = {
    name: c.name,
    graphPath: c.graphPath,
    stored: "subgraph",
    mode: t.mode,
    ...(t.k !== undefined ? { k: t.k, d: t.d } : {}),
    ...(entry ? { metadata: entry } : {}),
    opType: c.consumers[0]?.opType,
    consumers: c.consumers,
    dims: t.dims,
    dtype: dtypeName(t.dtype),
    rows: t.rows,
    cols: t.cols,
    ...(t.paddedCols !== undefined ? { paddedCols: t.paddedCols } : {}),
    groups,
    weights,
    tensors: t.tensors,
    lookupTables: t.lookupTables.map((l) => l.name),
    bytes: t.bytes,
    bits: {
      fieldBits: t.fieldBits,
      storedBits: 8 * t.bytes.total,
      bitsPerWeight,
      storedBitsPerWeight: (8 * t.bytes.total) / weights,
      ...(mbpw !== undefined ? { metadataBitsPerWeight: mbpw } : {}),
      matchesMetadata: matches,
    },
    ...(t.codebook ? { codebook: t.codebook, usage: t.usage, unusedCodewords: unused } : {}),
    ...(t.signs ? { signs: t.signs } : {}),
    ...(t.scaleRange ? { scaleRange: t.scaleRange } : {}),
    ...(problems.length ? { problem: problems.join("; ") } : {}),
  };
  layerLuts.set(layer, t.lookupTables);
  return layer;
}
