/** Small ONNX models built in tests. */
import { create, TensorProtoSchema, TensorProto_DataType as DT, type GraphProto, type ModelProto, type TensorProto } from "../../src/core/onnx/proto.js";
import { attr, graph, model as buildModel, node } from "../../src/core/onnx/build.js";
import { floatToBfloat16, floatToHalf } from "../../src/core/onnx/dtype.js";
import { Rng } from "../../src/core/rng.js";

export { DT };
export { valueInfo } from "../../src/core/onnx/build.js";
import { valueInfo } from "../../src/core/onnx/build.js";


/** A tensor from float values, stored in raw_data as float32, float16 or bfloat16. */
export function floatTensor(name: string, dims: number[], values: ArrayLike<number>, dataType: number = DT.FLOAT): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  if (values.length !== n) throw new Error(`tensor ${name}: ${values.length} values for shape [${dims}]`);
  let raw: Uint8Array;
  if (dataType === DT.FLOAT) raw = new Uint8Array(Float32Array.from(values).buffer);
  else if (dataType === DT.FLOAT16) raw = new Uint8Array(Uint16Array.from(Array.from(values, floatToHalf)).buffer);
  else if (dataType === DT.BFLOAT16) raw = new Uint8Array(Uint16Array.from(Array.from(values, floatToBfloat16)).buffer);
  else throw new Error("floatTensor: unsupported type " + dataType);
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType, rawData: raw as Uint8Array<ArrayBuffer> });
}

export function randomValues(n: number, seed: number, scale = 0.1): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.normal() * scale;
  return out;
}

export function randomTensor(name: string, dims: number[], seed: number, dataType: number = DT.FLOAT): TensorProto {
  return floatTensor(name, dims, randomValues(dims.reduce((a, b) => a * b, 1), seed), dataType);
}

export function int64Tensor(name: string, dims: number[], values: number[]): TensorProto {
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.INT64, int64Data: values.map(BigInt) });
}

export { attr, graph, node };

export const model = (g: GraphProto, opset = 13, irVersion = 7): ModelProto => buildModel(g, { opset, irVersion, producer: "ssvq-tests" });

/** A small CNN + MLP: Conv(3->8, 3x3) Relu Conv(8->16, 3x3) Relu Flatten Gemm(transB=1) Relu MatMul. */
export function smallCnn(opts: { dataType?: number; seed?: number; opset?: number } = {}): ModelProto {
  const t = opts.dataType ?? DT.FLOAT;
  const s = opts.seed ?? 1;
  return model(
    graph({
      nodes: [
        node("Conv", ["x", "w1", "b1"], ["c1"], { pads: [1, 1, 1, 1] }, "conv1"),
        node("Relu", ["c1"], ["r1"]),
        node("Conv", ["r1", "w2"], ["c2"], { strides: [2, 2] }, "conv2"),
        node("Relu", ["c2"], ["r2"]),
        node("Flatten", ["r2"], ["f"], { axis: 1 }),
        node("Gemm", ["f", "w3", "b3"], ["g"], { transB: 1 }, "fc1"),
        node("Relu", ["g"], ["r3"]),
        node("MatMul", ["r3", "w4"], ["y"], {}, "fc2"),
      ],
      inputs: [valueInfo("x", ["batch", 3, 8, 8], t)],
      outputs: [valueInfo("y", ["batch", 10], t)],
      initializers: [
        randomTensor("w1", [8, 3, 3, 3], s, t),
        randomTensor("b1", [8], s + 1, t),
        randomTensor("w2", [16, 8, 3, 3], s + 2, t),
        randomTensor("w3", [32, 144], s + 3, t),
        randomTensor("b3", [32], s + 4, t),
        randomTensor("w4", [32, 10], s + 5, t),
      ],
    }),
    opts.opset ?? 13,
  );
}

/** MatMul then a Max with an empty second input: onnxruntime refuses it or crashes on it (SIGSEGV in session.run). */
export function maxWithEmptyInput(): ModelProto {
  return model(
    graph({
      nodes: [node("MatMul", ["x", "w"], ["h"]), node("Max", ["h", ""], ["y"])],
      inputs: [valueInfo("x", [1, 64])],
      outputs: [valueInfo("y", [1, 64])],
      initializers: [randomTensor("w", [64, 64], 2)],
    }),
  );
}
