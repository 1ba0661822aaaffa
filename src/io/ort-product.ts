/**
 * onnxruntime's MatMul as the fine-tuning product engine: P = E H with H fixed for a layer's whole run
 * (an initializer, so onnxruntime pre-packs it). `npm run bench -- finetune` measures it at about 47
 * GFLOP/s in float64 on one thread here (100 in float32), against 18 for the WebAssembly kernel (float64):
 * the fastest, so compression jobs use it, in float64 like the other engines (in float32 the tiny ViT lost
 * 0.3 points of accuracy). One intra-op thread: the same bytes on whichever worker thread a layer runs.
 * Registered in each thread that fine-tunes (`registerOrtProduct`): core cannot import onnxruntime.
 */
import * as ort from "onnxruntime-node";
import { create } from "@bufbuild/protobuf";
import { valueInfo } from "../core/onnx/build.js";
import {
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
} from "../core/onnx/proto.js";
import { registerProductEngine, type LayerProduct, type ProductEngine } from "../core/ssvq/finetune.js";

/** The engine name compression jobs ask for. */
export const ORT_PRODUCT = "ort-matmul-float64";

/**
 * A one-node MatMul model: E [m, k] (input) times H [k, k]; H is an input too, or, with `hValues`, an
 * initializer (as a fine-tuning engine uses it: H is fixed for the whole run, so onnxruntime may pre-pack
 * it). With `groups` > 1, E is [groups, m, k] and H [groups, k, k] (batched MatMul).
 */
export function matMulModel(m: number, k: number, elemType: number, hValues?: Float32Array | Float64Array, groups = 1): Uint8Array {
  const vi = (name: string, dims: number[]) => valueInfo(name, dims, elemType);
  const lead = groups > 1 ? [groups] : [];
  const initializer = hValues
    ? [
        create(TensorProtoSchema, {
          name: "H",
          dims: [...lead, k, k].map(BigInt),
          dataType: elemType,
          rawData: new Uint8Array(hValues.buffer, hValues.byteOffset, hValues.byteLength).slice(),
        }),
      ]
    : [];
  const graph = create(GraphProtoSchema, {
    name: "matmul",
    node: [create(NodeProtoSchema, { opType: "MatMul", input: ["E", "H"], output: ["P"], name: "mm" })],
    input: hValues ? [vi("E", [...lead, m, k])] : [vi("E", [m, k]), vi("H", [k, k])],
    output: [vi("P", [...lead, m, k])],
    initializer,
  });
  return encodeModel(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: "ssvq-bench",
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
      graph,
    }),
  );
}

/**
 * A fine-tuning product engine on onnxruntime's MatMul (one intra-op thread), float32 or float64: the
 * shape of what src/io could offer to `finetuneLayerWith` if onnxruntime is chosen. float32 converts E
 * to float32 and P back on every product.
 */
export function ortProductEngine(precision: "float32" | "float64"): ProductEngine {
  return {
    name: `ort-matmul-${precision}`,
    async forLayer(h: Float64Array, groups: number, rows: number, cols: number): Promise<LayerProduct> {
      const Arr = precision === "float32" ? Float32Array : Float64Array;
      const type = precision === "float32" ? TensorProto_DataType.FLOAT : TensorProto_DataType.DOUBLE;
      const rpg = rows / groups;
      const session = await ort.InferenceSession.create(matMulModel(rpg, cols, type, Arr.from(h), groups), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: "sequential",
        logSeverityLevel: 3,
      });
      const dims = groups > 1 ? [groups, rpg, cols] : [rpg, cols];
      const buffer = new Arr(rows * cols);
      return {
        async multiply(e: Float64Array, out: Float64Array): Promise<void> {
          buffer.set(e);
          const r = await session.run({ E: new ort.Tensor(precision, buffer, dims) });
          out.set(r["P"]!.data as Float32Array | Float64Array);
        },
        dispose: () => session.release(),
      };
    },
  };
}

/** Makes the onnxruntime engine available to fine-tuning tasks run in this thread. */
export function registerOrtProduct(): void {
  registerProductEngine(ortProductEngine("float64"));
}
