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
import { planeLookupTable, type Plane } from "../ssvq/pack.js";

/** Oldest default-domain opset the decode subgraph can be written at (numpy broadcasting in Mul/Add/Sub). */
export const MIN_OPSET = 7;

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
  | { kind: "int8"; q: Int8Array; scales: Float32Array; rows: number; cols: number }
  | { kind: "int4"; plane: Uint8Array; scales: Float32Array; rows: number; cols: number };

/** Collects new nodes and tensors for one graph, with names made unique by `fresh`. */
export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly tensors: TensorProto[] = [];
  constructor(
    readonly opset: number,
    private readonly fresh: (base: string) => string,
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

export type LookupTable = number | "sign";

/**
 * The nodes and tensors that compute `target` from `src`. Intermediate values are named `base/...`
 * (keep it short: every node repeats it); stored tensors `stored.codebook`, `stored.indices4`, ...
 */
export function writeDecode(b: GraphBuilder, target: DecodeTarget, src: DecodeSource, base: string, stored: string): void {
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

/** A shared lookup table as a tensor: [256, 8/w] uint8 fields, or [256, 8] int8 signs (+1 for bit 0, -1 for bit 1). */
export function lookupTableTensor(name: string, table: LookupTable): TensorProto {
  const width = table === "sign" ? 1 : table;
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
