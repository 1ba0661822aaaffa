/**
 * onnxruntime's float64 GEMM as a Gram engine (`GramEngine`, src/core/calib/stats.ts): about ten times
 * the TypeScript kernel. Capture uses it in its own thread, and the pool's threads register it for
 * `PooledGram`'s tasks (src/core/calib/gram-pool.ts).
 */
import { create } from "@bufbuild/protobuf";
import { valueInfo } from "../core/onnx/build.js";
import { GRAM_BLOCK, GRAM_MIN_COLS, gramRowBlocks, syrkUpper, type GramEngine } from "../core/calib/stats.js";
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType,
} from "../core/onnx/proto.js";
import { createSession, ort, type Session } from "./ort.js";

/**
 * H += Xt Xt^T through onnxruntime's float64 Gemm (A [a, r] times B [b, r]^T), in blocks of at most
 * `block` rows (the temporary product stays at most 2 MB at 512); only blocks on or above the diagonal
 * are computed, and only the upper triangle is added.
 * Small layers (cols below `minCols`) use the TypeScript kernel, where a session call costs more than
 * it saves.
 */
export class OrtGram implements GramEngine {
  readonly name = "ort";
  private session: Promise<Session> | undefined;
  private scratch: Float64Array | undefined;

  constructor(
    private readonly block = GRAM_BLOCK,
    private readonly minCols = GRAM_MIN_COLS,
  ) {}

  async add(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number): Promise<void> {
    for (const [i0, i1] of gramRowBlocks(c, this.block, this.minCols)) await this.addRows(H, off, Xt, c, r, i0, i1);
  }

  /** The blocks of rows [i0, i1) (a range of `gramRowBlocks`), on and above the diagonal. */
  async addRows(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number, i0: number, i1: number): Promise<void> {
    if (c < this.minCols) {
      if (i0 !== 0 || i1 !== c) throw new Error(`a Gram update of ${c} columns is one block, not rows ${i0}-${i1}`);
      return syrkUpper(H, off, Xt, c, r);
    }
    const session = await (this.session ??= createSession(gramModel(), { label: "the Gram kernel" }));
    // Only rows i0.. of Xt are read. onnxruntime-node takes no tensor on a SharedArrayBuffer ("Invalid
    // argument"): a private copy of them.
    let X = Xt.subarray(i0 * r, c * r);
    if (X.buffer instanceof SharedArrayBuffer) {
      if (!this.scratch || this.scratch.length < X.length) this.scratch = new Float64Array(X.length);
      this.scratch.set(X);
      X = this.scratch.subarray(0, X.length);
    }
    const at = (i: number) => (i - i0) * r;
    // Balanced blocks (gramRowBlocks): only blocks on or above the diagonal are computed (c = 576 -> 2
    // blocks, 3/4 of the full product).
    const B = Math.ceil(c / Math.ceil(c / this.block));
    const a = new ort.Tensor("float64", X.subarray(at(i0), at(i1)), [i1 - i0, r]);
    for (let j0 = i0; j0 < c; j0 += B) {
      const j1 = Math.min(c, j0 + B);
      const b = j0 === i0 ? a : new ort.Tensor("float64", X.subarray(at(j0), at(j1)), [j1 - j0, r]);
      const out = await session.run({ A: a, B: b });
      const C = out["C"]!.data as Float64Array;
      const w = j1 - j0;
      for (let i = i0; i < i1; i++) {
        const row = off + i * c;
        const src = (i - i0) * w - j0;
        for (let j = Math.max(j0, i); j < j1; j++) H[row + j] += C[src + j]!;
      }
    }
  }

  async release(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    this.scratch = undefined;
    if (s) await (await s).release();
  }
}

let gramBytes: Uint8Array | undefined;

/** Gemm(A [a, r], B [b, r], transB = 1) in float64, opset 13. */
function gramModel(): Uint8Array {
  if (gramBytes) return gramBytes;
  const vi = (name: string, dims: string[]) => valueInfo(name, dims, TensorProto_DataType.DOUBLE);
  const model = create(ModelProtoSchema, {
    irVersion: 7n,
    producerName: "ssvq-gram",
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
    graph: create(GraphProtoSchema, {
      name: "gram",
      node: [
        create(NodeProtoSchema, {
          opType: "Gemm",
          input: ["A", "B"],
          output: ["C"],
          attribute: [create(AttributeProtoSchema, { name: "transB", type: AttributeProto_AttributeType.INT, i: 1n })],
        }),
      ],
      input: [vi("A", ["a", "r"]), vi("B", ["b", "r"])],
      output: [vi("C", ["a", "b"])],
    }),
  });
  gramBytes = encodeModel(model);
  return gramBytes;
}
