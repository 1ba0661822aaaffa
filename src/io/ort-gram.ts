/**
 * onnxruntime's float64 GEMM as a Gram engine (`GramEngine`, src/core/calib/stats.ts): about ten times
 * the TypeScript kernel. Capture uses it in its own thread, and the pool's threads register it for
 * `PooledGram`'s tasks (src/core/calib/gram-pool.ts).
 */
import { create } from "@bufbuild/protobuf";
import { valueInfo } from "../core/onnx/build.js";
import { syrkUpper, type GramEngine } from "../core/calib/stats.js";
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
    private readonly block = 512,
    private readonly minCols = 48,
  ) {}

  async add(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number): Promise<void> {
    if (c < this.minCols) return syrkUpper(H, off, Xt, c, r);
    const session = await (this.session ??= createSession(gramModel(), { label: "the Gram kernel" }));
    // onnxruntime-node takes no tensor on a SharedArrayBuffer ("Invalid argument"): a private copy.
    if (Xt.buffer instanceof SharedArrayBuffer) {
      if (!this.scratch || this.scratch.length < c * r) this.scratch = new Float64Array(c * r);
      this.scratch.set(Xt.subarray(0, c * r));
      Xt = this.scratch.subarray(0, c * r);
    }
    // Balanced blocks: only blocks on or above the diagonal are computed (c = 576 -> 2 blocks, 3/4 of
    // the full product).
    const B = Math.ceil(c / Math.ceil(c / this.block));
    for (let i0 = 0; i0 < c; i0 += B) {
      const i1 = Math.min(c, i0 + B);
      const a = new ort.Tensor("float64", Xt.subarray(i0 * r, i1 * r), [i1 - i0, r]);
      for (let j0 = i0; j0 < c; j0 += B) {
        const j1 = Math.min(c, j0 + B);
        const b = j0 === i0 ? a : new ort.Tensor("float64", Xt.subarray(j0 * r, j1 * r), [j1 - j0, r]);
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
