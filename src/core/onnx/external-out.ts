/**
 * Laying out an output model with ONNX external data: which tensors leave the protobuf, at which offsets
 * of the data file, and the model file's bytes. Pure: takes a model, returns bytes and views of the
 * tensors' data in file order; src/io/write-external.ts writes them.
 *
 * A protobuf message stops at 2 GiB (and Node.js writes at most 2 GiB per call), so a model whose encoding
 * would pass `limit` keeps its large tensors (>= `threshold` bytes, as onnx's `size_threshold`) in one data
 * file beside it, each at an offset aligned to `align` bytes (onnx aligns for mmap); small tensors stay
 * inline. The main graph's initializers go first; the tensors of Constant nodes and of subgraphs only
 * when the model is still too large without them (readers that run a model from memory, as calibration
 * does, inline only main-graph initializers). Deterministic: tensors go out in graph order (main graph
 * first, then subgraphs, initializers before Constant nodes), so the same model gives the same bytes.
 */
import { InputError } from "../errors.js";
import { clearField, isFieldSet } from "@bufbuild/protobuf";
import { encodeModel, StringStringEntryProtoSchema, TensorProtoSchema, TensorProto_DataLocation, TensorProto_DataType as DT, create, type ModelProto, type TensorProto } from "./proto.js";
import { walkGraphs } from "./walk.js";
import { formatBytes } from "./tensor-data.js";

/** The largest protobuf message: 2 GiB - 1 bytes. */
export const PROTOBUF_MAX_BYTES = 2 ** 31 - 1;
/** The default limit of a model file: 2 GiB less 64 MiB of headroom (the estimate's slack, readers' margins). */
export const DEFAULT_MODEL_LIMIT = 2 ** 31 - 2 ** 26;
/** Tensors of at least this many bytes go to the data file (onnx's default `size_threshold`). */
export const DEFAULT_THRESHOLD = 1024;
/** Offsets in the data file are multiples of this (a page: the data can be memory-mapped tensor by tensor). */
export const DEFAULT_ALIGN = 4096;

export interface ExternalLayoutOptions {
  /** The data file's name as the model records it, relative to the model's folder (`X.ssvq.onnx.data`). */
  location: string;
  /** Use external data even when the model would fit in one file. */
  force?: boolean;
  /** The model file's largest size in bytes; above it the large tensors move out (default DEFAULT_MODEL_LIMIT). */
  limit?: number;
  threshold?: number;
  align?: number;
  /** Where the first moved tensor may start: the data file already holds this many bytes (default 0). */
  start?: number;
}

/** One tensor's bytes in the data file. */
export interface DataChunk {
  offset: number;
  bytes: Uint8Array;
}

export interface ExternalLayout {
  /** The model file's bytes (the whole model when `external` is false). */
  model: Uint8Array;
  /** Whether a data file is written. */
  external: boolean;
  /** The data file's tensors in file order (views of the model's data, not copies); gaps are zeros. */
  chunks: DataChunk[];
  /** The data file's length in bytes (0 without one). */
  dataBytes: number;
  /** Tensors moved out. */
  tensors: number;
}

/** A tensor the data file can take, with its little-endian bytes. */
interface Candidate {
  tensor: TensorProto;
  bytes: Uint8Array;
  /** The most its data takes encoded inline (integer typed fields are varints: up to 10 bytes a value). */
  inlineBytes: number;
}

/**
 * The output's layout. The model is changed only while it is encoded: its tensors are as they were when
 * this returns.
 */
export function layoutExternal(model: ModelProto, opts: ExternalLayoutOptions): ExternalLayout {
  const limit = opts.limit ?? DEFAULT_MODEL_LIMIT;
  const align = opts.align ?? DEFAULT_ALIGN;
  if (!(Number.isSafeInteger(align) && align >= 1)) throw new Error(`layoutExternal: align ${align}`);
  const threshold = opts.threshold ?? DEFAULT_THRESHOLD;
  const all = externalCandidates(model, threshold, true);
  if (!opts.force && encodedSizeBound(model, all) <= limit) return { model: encodeModel(model), external: false, chunks: [], dataBytes: 0, tensors: 0 };
  const main = externalCandidates(model, threshold, false);
  let smallest = Infinity;
  for (const tier of main.length > 0 && main.length < all.length ? [main, all] : [all]) {
    if (tier.length === 0) continue;
    const layout = layoutWith(model, tier, opts.location, align, opts.start ?? 0);
    if (layout.model.length <= limit) return layout;
    smallest = layout.model.length;
  }
  // Nothing large enough to move (a forced data file would be empty): one file, when it fits.
  if (all.length === 0) {
    const bytes = encodeModel(model);
    if (bytes.length <= limit) return { model: bytes, external: false, chunks: [], dataBytes: 0, tensors: 0 };
    smallest = bytes.length;
  }
  throw new InputError(
    `the output model is ${formatBytes(smallest)} even with its ${all.length} large tensors in external data, over the ${formatBytes(limit)} a protobuf file may take (its graph or small tensors alone are too large)`,
  );
}

function layoutWith(model: ModelProto, candidates: Candidate[], location: string, align: number, start: number): ExternalLayout {
  const chunks: DataChunk[] = [];
  let end = start;
  for (const c of candidates) {
    const offset = Math.ceil(end / align) * align;
    chunks.push({ offset, bytes: c.bytes });
    end = offset + c.bytes.length;
  }
  const bytes = withDetached(candidates, (c, i) => setExternal(c.tensor, location, chunks[i]!.offset, c.bytes.length), () => encodeModel(model));
  return { model: bytes, external: true, chunks, dataBytes: end, tensors: candidates.length };
}

/** Makes `t` refer to `length` bytes at `offset` of the data file `location` (its own data cleared by the caller). */
export function setExternal(t: TensorProto, location: string, offset: number, length: number): void {
  t.dataLocation = TensorProto_DataLocation.EXTERNAL;
  t.externalData = Object.entries({ location, offset: String(offset), length: String(length) }).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value }));
}

/**
 * Tensors that may live in external data: initializers of the main graph, or (`everywhere`) of every
 * graph and the `value` of Constant nodes, stored in raw_data or in a numeric typed field of a fixed
 * width, of at least `threshold` bytes. Sparse tensors, strings and the tensors of model-local functions
 * stay in the model.
 */
function externalCandidates(model: ModelProto, threshold: number, everywhere: boolean): Candidate[] {
  const out: Candidate[] = [];
  const take = (t: TensorProto | undefined) => {
    if (!t || t.dataLocation === TensorProto_DataLocation.EXTERNAL) return;
    const bytes = littleEndianBytes(t);
    if (!bytes || bytes.length === 0 || bytes.length < threshold) return;
    const varints = t.rawData.length === 0 && (t.dataType === DT.INT32 || t.dataType === DT.INT64 || t.dataType === DT.UINT64);
    const count = t.int32Data.length + t.int64Data.length + t.uint64Data.length;
    out.push({ tensor: t, bytes, inlineBytes: varints ? 10 * count : bytes.length });
  };
  walkGraphs(model, ({ graph, path }) => {
    if (!everywhere && path !== "") return;
    graph.initializer.forEach(take);
    if (!everywhere) return;
    for (const n of graph.node)
      if (n.opType === "Constant" && (n.domain === "" || n.domain === "ai.onnx")) for (const a of n.attribute) if (a.name === "value") take(a.t);
  });
  return out;
}

/** The bytes a tensor's data takes in raw_data form, or undefined for tensors that keep a typed field of another form. */
function littleEndianBytes(t: TensorProto): Uint8Array | undefined {
  if (t.rawData.length > 0) return t.rawData;
  const n = (arr: ArrayLike<unknown>) => arr.length;
  const dv = (bytes: number, fill: (v: DataView) => void): Uint8Array => {
    const out = new Uint8Array(bytes);
    fill(new DataView(out.buffer));
    return out;
  };
  switch (t.dataType) {
    case DT.FLOAT:
      if (n(t.floatData) && !n(t.int32Data)) return dv(4 * t.floatData.length, (v) => t.floatData.forEach((x, i) => v.setFloat32(4 * i, x, true)));
      return undefined;
    case DT.DOUBLE:
      if (n(t.doubleData)) return dv(8 * t.doubleData.length, (v) => t.doubleData.forEach((x, i) => v.setFloat64(8 * i, x, true)));
      return undefined;
    case DT.INT32:
      if (n(t.int32Data)) return dv(4 * t.int32Data.length, (v) => t.int32Data.forEach((x, i) => v.setInt32(4 * i, x, true)));
      return undefined;
    case DT.INT64:
      if (n(t.int64Data)) return dv(8 * t.int64Data.length, (v) => t.int64Data.forEach((x, i) => v.setBigInt64(8 * i, BigInt(x), true)));
      return undefined;
    case DT.UINT64:
      if (n(t.uint64Data)) return dv(8 * t.uint64Data.length, (v) => t.uint64Data.forEach((x, i) => v.setBigUint64(8 * i, BigInt(x), true)));
      return undefined;
    default:
      return undefined;
  }
}

/**
 * Runs `body` with each candidate's data taken out of its tensor (and `mark` applied), then puts every
 * field back as it was. raw_data and data_location are proto2 fields with presence: they are cleared, not
 * set to their defaults (which would write them), and come back unset when they were.
 */
function withDetached<T>(candidates: Candidate[], mark: ((c: Candidate, i: number) => void) | undefined, body: () => T): T {
  const saved = candidates.map(({ tensor: t }) => ({
    rawData: isFieldSet(t, TensorProtoSchema.field.rawData) ? t.rawData : undefined,
    dataLocation: isFieldSet(t, TensorProtoSchema.field.dataLocation) ? t.dataLocation : undefined,
    floatData: t.floatData,
    doubleData: t.doubleData,
    int32Data: t.int32Data,
    int64Data: t.int64Data,
    uint64Data: t.uint64Data,
    externalData: t.externalData,
  }));
  try {
    candidates.forEach((c, i) => {
      const t = c.tensor;
      clearField(t, TensorProtoSchema.field.rawData);
      t.floatData = [];
      t.doubleData = [];
      t.int32Data = [];
      t.int64Data = [];
      t.uint64Data = [];
      mark?.(c, i);
    });
    return body();
  } finally {
    candidates.forEach(({ tensor: t }, i) => {
      const { rawData, dataLocation, ...repeated } = saved[i]!;
      Object.assign(t, repeated);
      if (rawData === undefined) clearField(t, TensorProtoSchema.field.rawData);
      else t.rawData = rawData;
      if (dataLocation === undefined) clearField(t, TensorProtoSchema.field.dataLocation);
      else t.dataLocation = dataLocation;
    });
  }
}

/**
 * An upper bound of the model's encoded size, without encoding its large tensors: the rest encoded, plus
 * each tensor's bytes and what its field's tag and length prefixes can take (at most 16 bytes per level
 * of nesting, eight levels deep).
 */
function encodedSizeBound(model: ModelProto, candidates: Candidate[]): number {
  const rest = withDetached(candidates, undefined, () => encodeModel(model).length);
  return candidates.reduce((sum, c) => sum + c.inlineBytes + 16 * 8, rest);
}
