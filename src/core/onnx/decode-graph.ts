/**
 * The decode subgraph that replaces a compressed weight in `<name>.ssvq.onnx` (DESIGN.md section 2):
 * standard operators only, valid at the source model's opset (7 and later), reading the codebook, the
 * packed index planes and the packed sign bits. Sub-byte fields are unpacked with a Gather on lookup
 * tables shared by all layers ([256, 8/w] uint8 per field width w), since BitShift needs opset 11.
 * onnxruntime folds the whole subgraph into a dense weight when it creates a session.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { InputError } from "../errors.js";
import { floatToBfloat16, floatToHalf } from "./dtype.js";
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  create,
  NodeProtoSchema,
  TensorProto_DataType as DT,
  TensorProtoSchema,
  type NodeProto,
  type TensorProto,
} from "./proto.js";
import type { RowLayout } from "./weights.js";
import { packPlane, planeLookupTable, unpackPlane, type Plane } from "../ssvq/pack.js";
import type { SplitCodes } from "./split-product.js";

/** Oldest default-domain opset the decode subgraph can be written at (numpy broadcasting in Mul/Add/Sub). */
export const MIN_OPSET = 7;

/** Oldest opset for the split product (Slice with steps). */
export const MIN_SPLIT_OPSET = 10;

export interface DecodeTarget {
  /** The value name the consumers read; the last decode node writes it. */
  output: string;
  /** Dims and element type of the original weight. */
  dims: number[];
  dtype: number;
  layout: RowLayout;
}

export type DecodeSource =
  | {
      kind: "vq";
      /** [k, d] in the weight's dtype. */
      codebook: TensorProto;
      count: number;
      d: number;
      rows: number;
      paddedCols: number;
      indexPlanes: Plane[];
      /** SSVQ: the sign bits, one per padded element. */
      signs?: Uint8Array;
    }
  /** INT8 values as a row matrix, or (`weightLayout`) already in the weight's own layout. */
  | { kind: "int8"; q: Int8Array; scales: Float32Array; rows: number; cols: number; weightLayout?: boolean }
  | { kind: "int4"; plane: Uint8Array; scales: Float32Array; rows: number; cols: number };

/** Collects new nodes and tensors for one graph, with names made unique by `fresh`. */
export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly tensors: TensorProto[] = [];
  constructor(
    readonly opset: number,
    readonly fresh: (base: string) => string,
    /** The shared lookup table for a plane width, or "sign" for the +1/-1 table. */
    private readonly lut: (table: LookupTable) => string,
  ) {
    if (opset < MIN_OPSET)
      throw new InputError(
        `the model's opset ${opset} is too old for the decode subgraph (it needs opset ${MIN_OPSET} or later); use --format dense`,
      );
  }

  tensor(base: string, t: MessageInitShape<typeof TensorProtoSchema>): string {
    const tensor = create(TensorProtoSchema, t);
    tensor.name = this.fresh(base);
    this.tensors.push(tensor);
    return tensor.name;
  }

  int64(base: string, values: number[], dims: number[] = [values.length]): string {
    return this.tensor(base, { dims: dims.map(BigInt), dataType: DT.INT64, int64Data: values.map(BigInt) });
  }

  scalar(base: string, value: number, dataType: number): string {
    if (dataType === DT.INT32) return this.tensor(base, { dims: [], dataType, int32Data: [value] });
    return this.tensor(base, { dims: [], dataType: DT.FLOAT, floatData: [value] });
  }

  op(opType: string, inputs: string[], base: string, attrs: Record<string, number | number[]> = {}, output?: string): string {
    const out = output ?? this.fresh(base);
    this.nodes.push(
      create(NodeProtoSchema, {
        opType,
        input: inputs,
        output: [out],
        attribute: Object.entries(attrs).map(([name, v]) =>
          Array.isArray(v)
            ? create(AttributeProtoSchema, { name, type: AT.INTS, ints: v.map(BigInt) })
            : create(AttributeProtoSchema, { name, type: AT.INT, i: BigInt(v) }),
        ),
      }),
    );
    return out;
  }

  cast(x: string, to: number, base: string): string {
    return this.op("Cast", [x], base, { to });
  }

  reshape(x: string, dims: number[], base: string, output?: string): string {
    return this.op("Reshape", [x, this.int64(`${base}/shape`, dims)], base, {}, output);
  }

  /** x[start:end] along `axis`, as Slice is written at this opset (attributes before opset 10). */
  slice(x: string, axis: number, start: number, end: number, base: string): string {
    if (this.opset < 10) return this.op("Slice", [x], base, { axes: [axis], starts: [start], ends: [end] });
    return this.op(
      "Slice",
      [x, this.int64(`${base}/starts`, [start]), this.int64(`${base}/ends`, [end]), this.int64(`${base}/axes`, [axis])],
      base,
    );
  }

  /** The name of a shared table. */
  lutName(table: LookupTable): string {
    return this.lut(table);
  }

  /**
   * The fields of a w-bit plane stored as `stored`, as int32 times `mult` (or, with table "s4", as int8
   * minus 8): [bytes, 8/w] from one Gather on a shared table, or [bytes] (w = 8: a Cast when mult is 1).
   * `fields` is how many the tensor holds (>= count: the last byte may be half used).
   */
  fields(bytes: Uint8Array, width: number, base: string, stored: string, mult: number, table?: "s4"): Field {
    const packed = this.tensor(stored, { dims: [BigInt(bytes.length)], dataType: DT.UINT8, rawData: bytes as Uint8Array<ArrayBuffer> });
    const per = 8 / width;
    if (width === 8 && mult === 1 && !table) return { name: this.cast(packed, DT.INT32, base), dims: [bytes.length], fields: bytes.length };
    const name = this.op("Gather", [this.lut(table ?? `i${width}x${mult}`), this.cast(packed, DT.INT32, base)], base);
    return { name, dims: width === 8 ? [bytes.length] : [bytes.length, per], fields: bytes.length * per };
  }

  /** A field tensor as a flat [count] (a Reshape, and a Slice when the last byte is half used). */
  flatten(f: Field, count: number, base: string): string {
    const flat = f.dims.length === 1 ? f.name : this.reshape(f.name, [-1], base);
    return f.fields === count ? flat : this.slice(flat, 0, 0, count, base);
  }

  /**
   * Unpacks `count` fields of a w-bit plane, stored as the tensor `stored`, to a flat tensor of type `as`
   * (for w = 8 a Cast alone). With table "sign", 1-bit fields become +1 (bit 0) or -1 (bit 1).
   */
  unpackPlane(bytes: Uint8Array, width: number, count: number, base: string, stored: string, as: number, table: LookupTable = width): string {
    const packed = this.tensor(stored, { dims: [BigInt(bytes.length)], dataType: DT.UINT8, rawData: bytes as Uint8Array<ArrayBuffer> });
    if (width === 8) return this.cast(packed, as, base);
    const fields = this.op("Gather", [this.lut(table), this.cast(packed, DT.INT32, base)], base);
    const flat = this.reshape(fields, [-1], base);
    const per = 8 / width;
    const exact = bytes.length * per === count ? flat : this.slice(flat, 0, 0, count, base);
    return this.cast(exact, as, base);
  }
}

/**
 * A table shared by all layers, emitted once per model:
 * - w (1, 2, 4, 8): [256, 8/w] uint8, entry [b][j] = field j of byte b (the first format's index planes);
 * - "sign": [256, 8] int8, +1 for a 0 bit and -1 for a 1 bit (the first format's sign planes, and the
 *   fallback when the signs cannot join the index);
 * - "i{w}x{m}": the w-bit fields as int32 times m ([256, 8/w]; [256] for w = 8), so that one Gather
 *   yields Gather-ready indices already shifted into place (m = 2^shift, or k for a sign pattern);
 * - "s4": [256, 2] int8, the 4-bit fields minus 8 (INT4 values);
 * - "pattern{d}": [2^d, 1, d] float32, row s = the signs of a sub-vector whose d sign bits are s;
 * - "field{b}_{f}": [256] int32, field f of a byte of b-bit fields (the split product's packed codes).
 */
export interface Field {
  name: string;
  dims: number[];
  fields: number;
}

export type LookupTable = number | "sign" | "s4" | `i${number}x${number}` | `pattern${number}` | `field${number}_${number}`;

/** The initializer name of a shared table (made unique by the caller). */
export function lookupTableName(table: LookupTable): string {
  if (typeof table === "number") return `ssvq.lut_u${table}`;
  if (table === "sign") return "ssvq.lut_sign";
  if (table === "s4") return "ssvq.lut_s4";
  if (table.startsWith("pattern")) return `ssvq.sign_patterns${table.slice(7)}`;
  if (table.startsWith("field")) return `ssvq.lut_${table}`;
  return `ssvq.lut_${table}`;
}

/** Signs join the codebook index when a sub-vector's sign bits form an aligned field of the packed plane. */
const MERGE_WIDTHS = new Set([1, 2, 4, 8]);

/**
 * Whether SSVQ's signs are folded into the index (a signed codebook of 2^d * k rows): for d = 1, 2, 4, 8,
 * while that codebook stays small next to the layer (at most a quarter of its weights, or 4096 values).
 */
export function mergesSigns(k: number, d: number, weights: number): boolean {
  return MERGE_WIDTHS.has(d) && 2 ** d * k * d <= Math.max(4096, weights / 4) && 2 ** d * k < 2 ** 31;
}

/**
 * The nodes and tensors that compute `target` from `src`. Intermediate values are named `base/...`
 * (keep it short: every node repeats it); stored tensors `stored.codebook`, `stored.indices4`, ...
 *
 * Shaped for a lean fold (onnxruntime keeps every folded intermediate of every layer until the end of
 * its constant-folding pass, so the peak is their sum): indices are unpacked straight to int32 by one
 * Gather per plane (shift or sign offset baked into the table), SSVQ's signs join the index as a d-bit
 * field addressing a signed codebook (no per-element sign tensor), the codebook Gather is reshaped
 * straight to the weight's dims, INT8/INT4 values are stored in the weight's own layout and dequantized
 * by a Cast and a Mul by broadcast scales (no Reshape or Transpose of a layer-sized float tensor).
 */
export function writeDecode(b: GraphBuilder, target: DecodeTarget, src: DecodeSource, base: string, stored: string): void {
  if (target.layout.kind === "convtranspose") return writeDecodeRows(b, target, src, base, stored);
  if (src.kind === "vq") return writeDecodeVq(b, target, src, base, stored);
  return writeDecodeInt(b, target, src, base, stored);
}

/** The last node writes `target.output`, with a Cast when the weight is not float32. */
function finish(b: GraphBuilder, target: DecodeTarget, base: string, write: (output?: string) => string): void {
  if (target.dtype === DT.FLOAT) {
    write(target.output);
    return;
  }
  b.op("Cast", [write()], `${base}/out`, { to: target.dtype }, target.output);
}

const sameDims = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function writeDecodeVq(b: GraphBuilder, target: DecodeTarget, src: Extract<DecodeSource, { kind: "vq" }>, base: string, stored: string): void {
  const { count, d, rows, paddedCols } = src;
  const k = src.codebook.dims.length ? Number(src.codebook.dims[0]) : 0;
  const merge = src.signs !== undefined && mergesSigns(k, d, rows * paddedCols);
  const terms = src.indexPlanes.map((p) => b.fields(p.bytes, p.width, `${base}/idx`, `${stored}.indices${p.width}`, 2 ** p.shift));
  if (merge) terms.push(b.fields(src.signs!, d, `${base}/sign`, `${stored}.signs`, k));
  // Terms of one shape add as they are; otherwise each is flattened to [count] first.
  const flat = !terms.every((t) => sameDims(t.dims, terms[0]!.dims)) || terms[0]!.fields !== count || (src.signs !== undefined && !merge);
  let index: string | undefined;
  for (const t of terms) {
    const v = flat ? b.flatten(t, count, `${base}/idx`) : t.name;
    index = index === undefined ? v : b.op("Add", [index, v], `${base}/idx`);
  }
  let codebook = src.codebook.name;
  if (target.dtype !== DT.FLOAT) codebook = b.cast(codebook, DT.FLOAT, `${base}/codebook`);
  if (merge) {
    const cb3 = b.reshape(codebook, [1, k, d], `${base}/codebook`);
    const signed = b.op("Mul", [cb3, b.lutName(`pattern${d}`)], `${base}/codebook`);
    codebook = b.reshape(signed, [2 ** d * k, d], `${base}/codebook`);
  }
  let values = b.op("Gather", [codebook, index!], `${base}/gather`);
  if (src.signs && !merge) {
    const sign = b.unpackPlane(src.signs, 1, count * d, `${base}/sign`, `${stored}.signs`, DT.FLOAT, "sign");
    values = b.op("Mul", [values, b.reshape(sign, [count, d], `${base}/sign`)], `${base}/signed`);
  }
  const { layout, dims } = target;
  const cols = layout.cols;
  if (!layout.transposed && paddedCols === cols) {
    finish(b, target, base, (output) => b.reshape(values, dims, `${base}/out`, output));
    return;
  }
  let m = b.reshape(values, [rows, paddedCols], `${base}/rows`);
  if (paddedCols !== cols) m = b.slice(m, 1, 0, cols, `${base}/unpad`);
  if (!layout.transposed) {
    finish(b, target, base, (output) => b.reshape(m, dims, `${base}/out`, output));
    return;
  }
  finish(b, target, base, (output) =>
    sameDims(dims, [cols, rows])
      ? b.op("Transpose", [m], `${base}/layout`, { perm: [1, 0] }, output)
      : b.reshape(b.op("Transpose", [m], `${base}/layout`, { perm: [1, 0] }), dims, `${base}/out`, output),
  );
}

/**
 * The weights of a split product (split-product.ts): the stored codes, their int32 copy (named
 * `target.output`, the weight's name, so that the layer keeps its name), and for each t < s = d * per the
 * part W_t = Gather(table_t, codes), table_t = column j of the (signed) codebook, through field f's
 * table when several codes share a byte. Returns the parts' names in order of t.
 */
export function writeDecodeSplit(
  b: GraphBuilder,
  target: DecodeTarget,
  src: { codebook: TensorProto; d: number; signed: boolean; codes: SplitCodes },
  base: string,
  stored: string,
): string[] {
  const { d, codes } = src;
  const k = Number(src.codebook.dims[0] ?? 0);
  const raw = new Uint8Array(codes.values.buffer, codes.values.byteOffset, codes.values.byteLength) as Uint8Array<ArrayBuffer>;
  const packed = b.tensor(`${stored}.codes`, { dims: codes.dims.map(BigInt), dataType: codes.bits === 16 ? DT.UINT16 : DT.UINT8, rawData: raw });
  // The int32 codes take the weight's name (see the doc comment); the caller drops its value_info.
  b.op("Cast", [packed], `${base}/codes`, { to: DT.INT32 }, target.output);
  let codebook = src.codebook.name;
  if (target.dtype !== DT.FLOAT) codebook = b.cast(codebook, DT.FLOAT, `${base}/codebook`);
  if (src.signed) {
    const cb3 = b.reshape(codebook, [1, k, d], `${base}/codebook`);
    const signed = b.op("Mul", [cb3, b.lutName(`pattern${d}`)], `${base}/codebook`);
    codebook = b.reshape(signed, [2 ** d * k, d], `${base}/codebook`);
  }
  const parts: string[] = [];
  for (let f = 0; f < codes.per; f++)
    for (let j = 0; j < d; j++) {
      const at = b.tensor(`${base}/column`, { dims: [], dataType: DT.INT64, int64Data: [BigInt(j)] });
      let table = b.op("Gather", [codebook, at], `${base}/column`, { axis: 1 });
      if (codes.per > 1) table = b.op("Gather", [table, b.lutName(`field${codes.bits}_${f}`)], `${base}/field`);
      if (target.dtype !== DT.FLOAT) table = b.cast(table, target.dtype, `${base}/table`);
      parts.push(b.op("Gather", [table, target.output], `${base}/part`));
    }
  return parts;
}

/**
 * Replaces the product node `n` (MatMul, or Gemm reading the weight as B) by the split product over
 * `parts`: each part multiplies the strided slice x[..., t::s] of n's A (axis 0 for a Gemm with transA)
 * and a Sum writes n's output. A Gemm's C and beta go with the first part; alpha with every part.
 * Returns the nodes in order.
 */
export function writeSplitProduct(b: GraphBuilder, n: NodeProto, parts: readonly string[], reduction: number, base: string): NodeProto[] {
  const start = b.nodes.length;
  const s = parts.length;
  const gemm = n.opType === "Gemm";
  const transA = gemm && Number(n.attribute.find((a) => a.name === "transA")?.i ?? 0) !== 0;
  const axis = gemm ? (transA ? 0 : 1) : -1;
  const x = n.input[0]!;
  // Parts are named after the product (an unnamed one by its output), so that they read as one layer.
  const label = n.name || `${n.opType}:${n.output[0]}`;
  const products: string[] = [];
  parts.forEach((w, t) => {
    const slice = b.op(
      "Slice",
      [x, b.int64(`${base}/starts`, [t]), b.int64(`${base}/ends`, [reduction]), b.int64(`${base}/axes`, [axis]), b.int64(`${base}/steps`, [s])],
      `${base}/slice`,
    );
    const inputs = gemm && t === 0 && n.input[2] ? [slice, w, n.input[2]] : [slice, w];
    const attribute = n.attribute.filter((a) => t === 0 || a.name !== "beta");
    const out = b.fresh(`${base}/part`);
    b.nodes.push(create(NodeProtoSchema, { opType: n.opType, domain: n.domain, name: b.fresh(`${label}/part${t}`), input: inputs, output: [out], attribute }));
    products.push(out);
  });
  b.nodes.push(create(NodeProtoSchema, { opType: "Sum", name: b.fresh(`${label}/sum`), input: products, output: [n.output[0]!] }));
  return b.nodes.splice(start);
}

/**
 * INT8/INT4 with q in the weight's own layout ([cols, rows] when transposed): int8 values (INT4 unpacked
 * by one Gather on the "s4" table), Cast, and a Mul by the scales shaped to broadcast along the
 * output-channel axis. (DequantizeLinear would be one node less, but onnxruntime does not fold it: for
 * MatMul it fuses it into MatMulNBits, which quantizes the activations to 8 bits by default, so the
 * outputs would no longer be those of the dense reconstruction.)
 */
function writeDecodeInt(b: GraphBuilder, target: DecodeTarget, src: Exclude<DecodeSource, { kind: "vq" }>, base: string, stored: string): void {
  const { layout, dims } = target;
  const { rows } = src;
  const count = rows * src.cols;
  let q: string;
  if (src.kind === "int8") {
    const v = layout.transposed && !src.weightLayout ? transposeRows(src.q, rows, src.cols) : src.q;
    q = b.tensor(`${stored}.int8`, { dims: dims.map(BigInt), dataType: DT.INT8, rawData: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) as Uint8Array<ArrayBuffer> });
  } else {
    const plane = layout.transposed ? packPlane(transposeRows(unpackPlane(src.plane, count, 4), rows, src.cols), 4, 0) : src.plane;
    const t = b.fields(plane, 4, `${base}/q4`, `${stored}.int4`, 1, "s4");
    q = b.reshape(t.fields === count ? t.name : b.flatten(t, count, `${base}/q4`), dims, `${base}/q4`);
  }
  const axis = layout.transposed ? dims.length - 1 : 0;
  const raw = new Uint8Array(src.scales.slice().buffer);
  const shape = dims.map((_, i) => (i === axis ? rows : 1));
  const scales = b.tensor(`${stored}.scales`, { dims: shape.map(BigInt), dataType: DT.FLOAT, rawData: raw });
  finish(b, target, base, (output) => b.op("Mul", [b.cast(q, DT.FLOAT, `${base}/q`), scales], `${base}/dequant`, {}, output));
}

/**
 * INT8 for MatMul and Gemm, scaled after the product (`scalesAfterProduct`): the weight is Cast(q) alone,
 * q in the weight's own layout, and each consumer's output is multiplied by the scales [rows] (they
 * broadcast along its last axis, the output channels). onnxruntime then folds one Cast per layer: the
 * load holds q and the float weight, not also the Cast's output beside the Mul's (about 5 bytes per
 * weight instead of 9). Returns the scales tensor's name for the consumers' Mul.
 */
export function writeDecodeInt8Unscaled(b: GraphBuilder, target: DecodeTarget, src: Extract<DecodeSource, { kind: "int8" }>, stored: string): string {
  const { layout, dims } = target;
  const v = layout.transposed && !src.weightLayout ? transposeRows(src.q, src.rows, src.cols) : src.q;
  const q = b.tensor(`${stored}.int8`, { dims: dims.map(BigInt), dataType: DT.INT8, rawData: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) as Uint8Array<ArrayBuffer> });
  b.op("Cast", [q], `${stored}/q`, { to: DT.FLOAT }, target.output);
  return b.tensor(`${stored}.scales`, { dims: [BigInt(src.rows)], dataType: DT.FLOAT, rawData: new Uint8Array(src.scales.slice().buffer) });
}

/** Row matrix [rows, cols] (row-major) -> [cols, rows]. */
export function transposeRows<T extends Int8Array | Uint32Array>(v: T, rows: number, cols: number): T {
  const out = new (v.constructor as new (n: number) => T)(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = v[r * cols + c]!;
  return out;
}

/** The first format, kept for ConvTranspose (rows interleave groups and kernel positions). */
function writeDecodeRows(b: GraphBuilder, target: DecodeTarget, src: DecodeSource, base: string, stored: string): void {

  let rowsMatrix: string;
  let cols: number;
  if (src.kind === "vq") {
    let index: string | undefined;
    for (const p of src.indexPlanes) {
      let part = b.unpackPlane(p.bytes, p.width, src.count, `${base}/idx`, `${stored}.indices${p.width}`, DT.INT32);
      if (p.shift) part = b.op("Mul", [part, b.scalar(`${base}/shift`, 2 ** p.shift, DT.INT32)], `${base}/idx`);
      index = index === undefined ? part : b.op("Add", [index, part], `${base}/idx`);
    }
    let codebook = src.codebook.name;
    if (target.dtype !== DT.FLOAT) codebook = b.cast(codebook, DT.FLOAT, `${base}/codebook`);
    let values = b.op("Gather", [codebook, index!], `${base}/gather`);
    if (src.signs) {
      const sign = b.unpackPlane(src.signs, 1, src.count * src.d, `${base}/sign`, `${stored}.signs`, DT.FLOAT, "sign");
      values = b.op("Mul", [values, b.reshape(sign, [src.count, src.d], `${base}/sign`)], `${base}/signed`);
    }
    rowsMatrix = b.reshape(values, [src.rows, src.paddedCols], `${base}/rows`);
    cols = target.layout.cols;
    if (src.paddedCols !== cols) rowsMatrix = b.slice(rowsMatrix, 1, 0, cols, `${base}/unpad`);
  } else {
    const { rows } = src;
    cols = src.cols;
    let q: string;
    if (src.kind === "int8") {
      const q8 = b.tensor(`${stored}.int8`, { dims: [BigInt(src.q.length)], dataType: DT.INT8, rawData: new Uint8Array(src.q.buffer, src.q.byteOffset, src.q.byteLength) as Uint8Array<ArrayBuffer> });
      q = b.cast(q8, DT.FLOAT, `${base}/q`);
    } else {
      const u = b.unpackPlane(src.plane, 4, rows * cols, `${base}/q4`, `${stored}.int4`, DT.FLOAT);
      q = b.op("Sub", [u, b.scalar(`${base}/eight`, 8, DT.FLOAT)], `${base}/q4`);
    }
    const scales = b.tensor(`${stored}.scales`, { dims: [BigInt(rows), 1n], dataType: DT.FLOAT, rawData: new Uint8Array(src.scales.slice().buffer) });
    rowsMatrix = b.op("Mul", [b.reshape(q, [rows, cols], `${base}/q`), scales], `${base}/dequant`);
  }
  const { layout, dims } = target;
  let asStored = rowsMatrix;
  if (layout.kind === "convtranspose") {
    const rpg = layout.rows / layout.groups;
    const grouped = b.reshape(asStored, [layout.groups, rpg, layout.cols], `${base}/groups`);
    asStored = b.op("Transpose", [grouped], `${base}/layout`, { perm: [0, 2, 1] });
  } else if (layout.transposed) {
    asStored = b.op("Transpose", [asStored], `${base}/layout`, { perm: [1, 0] });
  }
  if (target.dtype === DT.FLOAT) {
    b.reshape(asStored, dims, `${base}/out`, target.output);
  } else {
    const shaped = b.reshape(asStored, dims, `${base}/out`);
    b.op("Cast", [shaped], `${base}/out`, { to: target.dtype }, target.output);
  }
}

/** A shared table as a tensor (see LookupTable). */
export function lookupTableTensor(name: string, table: LookupTable): TensorProto {
  const raw = (a: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength) as Uint8Array<ArrayBuffer>;
  if (typeof table === "string" && table.startsWith("pattern")) {
    const d = Number(table.slice(7));
    const values = new Float32Array(2 ** d * d);
    for (let s = 0; s < 2 ** d; s++) for (let t = 0; t < d; t++) values[s * d + t] = (s >>> t) & 1 ? -1 : 1;
    return create(TensorProtoSchema, { name, dims: [BigInt(2 ** d), 1n, BigInt(d)], dataType: DT.FLOAT, rawData: raw(values) });
  }
  if (typeof table === "string" && table.startsWith("field")) {
    const [bits, f] = table.slice(5).split("_").map(Number) as [number, number];
    const values = new Int32Array(256).map((_, v) => (v >>> (f * bits)) & ((1 << bits) - 1));
    return create(TensorProtoSchema, { name, dims: [256n], dataType: DT.INT32, rawData: raw(values) });
  }
  if (typeof table === "string" && table.startsWith("i")) {
    const [width, mult] = table.slice(1).split("x").map(Number) as [number, number];
    const values = Int32Array.from(planeLookupTable(width), (f) => f * mult);
    const dims = width === 8 ? [256n] : [256n, BigInt(8 / width)];
    return create(TensorProtoSchema, { name, dims, dataType: DT.INT32, rawData: raw(values) });
  }
  if (table === "s4") {
    const values = Int8Array.from(planeLookupTable(4), (f) => f - 8);
    return create(TensorProtoSchema, { name, dims: [256n, 2n], dataType: DT.INT8, rawData: raw(values) });
  }
  const width = table === "sign" ? 1 : Number(table);
  const fields = planeLookupTable(width);
  if (table === "sign") {
    const signs = Int8Array.from(fields, (bit) => (bit ? -1 : 1));
    return create(TensorProtoSchema, { name, dims: [256n, 8n], dataType: DT.INT8, rawData: new Uint8Array(signs.buffer) });
  }
  return create(TensorProtoSchema, { name, dims: [256n, BigInt(8 / width)], dataType: DT.UINT8, rawData: fields as Uint8Array<ArrayBuffer> });
}

/** float32 values stored as a tensor of `dtype` (float32, float16 or bfloat16) in raw_data. */
export function floatsAs(name: string, dims: number[], values: Float32Array, dtype: number): TensorProto {
  let raw: Uint8Array;
  if (dtype === DT.FLOAT) raw = new Uint8Array(values.slice().buffer);
  else if (dtype === DT.FLOAT16) raw = new Uint8Array(Uint16Array.from(values, floatToHalf).buffer);
  else if (dtype === DT.BFLOAT16) raw = new Uint8Array(Uint16Array.from(values, floatToBfloat16).buffer);
  else throw new Error(`floatsAs: unsupported dtype ${dtype}`);
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: dtype, rawData: raw as Uint8Array<ArrayBuffer> });
}
