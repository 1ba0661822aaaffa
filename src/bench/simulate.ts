/**
 * `ssvq bench simulate`: the speed of the accelerator simulator on a generated 100-layer model, and the
 * generated models the simulator's tests and README use (a DeiT-Tiny-shaped transformer, a batch-1
 * linear stack, a convolution stack). Weights are zeros: only shapes matter to the simulator.
 */
import { valueInfo } from "../core/onnx/build.js";
import { create } from "@bufbuild/protobuf";
import { lowerModel } from "../core/accel/lower.js";
import { getPreset } from "../core/accel/presets.js";
import { simulate } from "../core/accel/simulate.js";
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType as AT,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProtoSchema,
  TensorProto_DataType as DT,
  type AttributeProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from "../core/onnx/proto.js";
import { measureShapes } from "../io/shapes.js";
import { DEFAULT_FORMATS } from "../io/simulate-model.js";


function zeros(name: string, dims: number[]): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.FLOAT, rawData: new Uint8Array(4 * n) });
}

function int64s(name: string, values: number[]): TensorProto {
  return create(TensorProtoSchema, { name, dims: [BigInt(values.length)], dataType: DT.INT64, int64Data: values.map(BigInt) });
}

function attr(name: string, v: number | number[] | { f: number }): AttributeProto {
  if (typeof v === "number") return create(AttributeProtoSchema, { name, type: AT.INT, i: BigInt(v) });
  if (Array.isArray(v)) return create(AttributeProtoSchema, { name, type: AT.INTS, ints: v.map(BigInt) });
  return create(AttributeProtoSchema, { name, type: AT.FLOAT, f: v.f });
}

function node(opType: string, input: string[], output: string[], name = "", attrs: Record<string, number | number[] | { f: number }> = {}): NodeProto {
  return create(NodeProtoSchema, {
    opType,
    input,
    output,
    name,
    attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
  });
}

function model(nodes: NodeProto[], inputs: ValueInfoProto[], outputs: ValueInfoProto[], initializer: TensorProto[], opset: number): ModelProto {
  return create(ModelProtoSchema, {
    irVersion: 8n,
    producerName: "ssvq-simulate-bench",
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: BigInt(opset) })],
    graph: create(GraphProtoSchema, { name: "g", node: nodes, input: inputs, output: outputs, initializer }),
  });
}

export interface TransformerShape {
  blocks: number;
  width: number;
  heads: number;
  mlp: number;
  /** Classifier outputs (0: no head). */
  classes: number;
}

/** DeiT-Tiny: 12 blocks, width 192, 3 heads, MLP 768, 1000 classes. */
export const DEIT_TINY: TransformerShape = { blocks: 12, width: 192, heads: 3, mlp: 768, classes: 1000 };

/**
 * A pre-norm ViT encoder of `shape` over token embeddings `tokens` [1, T, width] with T dynamic: per block
 * LayerNorm, qkv MatMul, per-head Q x K^T and scores x V MatMuls, projection, LayerNorm, MLP (two MatMuls).
 * The patch embedding (a 16x16 stride-16 Conv for DeiT) is left out so that T = 1 (decoding one token)
 * is possible. Element-wise ops stand in where they do not change shapes (Relu for GELU). Opset 17.
 */
export function buildTransformer(shape: TransformerShape = DEIT_TINY): ModelProto {
  const { blocks, width: w, heads, mlp, classes } = shape;
  const hd = w / heads;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [
    int64s("qkv_shape", [0, 0, 3, heads, hd]),
    int64s("merge_shape", [0, 0, w]),
    create(TensorProtoSchema, { name: "scale", dims: [], dataType: DT.FLOAT, floatData: [1 / Math.sqrt(hd)] }),
    zeros("ln_gamma", [w]),
    zeros("ln_beta", [w]),
  ];
  let x = "tokens";
  for (let b = 0; b < blocks; b++) {
    const p = `b${b}_`;
    inits.push(zeros(`${p}qkv_w`, [w, 3 * w]), zeros(`${p}qkv_b`, [3 * w]), zeros(`${p}proj_w`, [w, w]), zeros(`${p}proj_b`, [w]));
    inits.push(zeros(`${p}fc1_w`, [w, mlp]), zeros(`${p}fc1_b`, [mlp]), zeros(`${p}fc2_w`, [mlp, w]), zeros(`${p}fc2_b`, [w]));
    nodes.push(
      node("LayerNormalization", [x, "ln_gamma", "ln_beta"], [`${p}ln1`], `${p}ln1`, { axis: -1 }),
      node("MatMul", [`${p}ln1`, `${p}qkv_w`], [`${p}qkv_mm`], `${p}qkv`),
      node("Add", [`${p}qkv_mm`, `${p}qkv_b`], [`${p}qkv_out`]),
      node("Reshape", [`${p}qkv_out`, "qkv_shape"], [`${p}qkv_r`]),
      node("Transpose", [`${p}qkv_r`], [`${p}qkv_t`], "", { perm: [2, 0, 3, 1, 4] }),
      node("Split", [`${p}qkv_t`], [`${p}q5`, `${p}k5`, `${p}v5`], "", { axis: 0 }),
      node("Squeeze", [`${p}q5`, "axis0"], [`${p}q`]),
      node("Squeeze", [`${p}k5`, "axis0"], [`${p}k`]),
      node("Squeeze", [`${p}v5`, "axis0"], [`${p}v`]),
      node("Transpose", [`${p}k`], [`${p}kT`], "", { perm: [0, 1, 3, 2] }),
      node("MatMul", [`${p}q`, `${p}kT`], [`${p}scores`], `${p}attn_qk`),
      node("Mul", [`${p}scores`, "scale"], [`${p}scaled`]),
      node("Softmax", [`${p}scaled`], [`${p}probs`], "", { axis: -1 }),
      node("MatMul", [`${p}probs`, `${p}v`], [`${p}ctx`], `${p}attn_v`),
      node("Transpose", [`${p}ctx`], [`${p}ctx_t`], "", { perm: [0, 2, 1, 3] }),
      node("Reshape", [`${p}ctx_t`, "merge_shape"], [`${p}ctx_m`]),
      node("MatMul", [`${p}ctx_m`, `${p}proj_w`], [`${p}proj_mm`], `${p}proj`),
      node("Add", [`${p}proj_mm`, `${p}proj_b`], [`${p}proj_out`]),
      node("Add", [x, `${p}proj_out`], [`${p}res1`]),
      node("LayerNormalization", [`${p}res1`, "ln_gamma", "ln_beta"], [`${p}ln2`], `${p}ln2`, { axis: -1 }),
      node("MatMul", [`${p}ln2`, `${p}fc1_w`], [`${p}fc1_mm`], `${p}fc1`),
      node("Add", [`${p}fc1_mm`, `${p}fc1_b`], [`${p}fc1_out`]),
      node("Relu", [`${p}fc1_out`], [`${p}act`]),
      node("MatMul", [`${p}act`, `${p}fc2_w`], [`${p}fc2_mm`], `${p}fc2`),
      node("Add", [`${p}fc2_mm`, `${p}fc2_b`], [`${p}fc2_out`]),
      node("Add", [`${p}res1`, `${p}fc2_out`], [`${p}out`]),
    );
    x = `${p}out`;
  }
  inits.push(int64s("axis0", [0]));
  let output = x;
  let outDims: (number | string)[] = [1, "T", w];
  if (classes > 0) {
    inits.push(zeros("head_w", [w, classes]), int64s("cls_index", [0]));
    nodes.push(
      node("LayerNormalization", [x, "ln_gamma", "ln_beta"], ["final_ln"], "final_ln", { axis: -1 }),
      node("Gather", ["final_ln", "cls_index"], ["cls"], "", { axis: 1 }),
      node("MatMul", ["cls", "head_w"], ["logits"], "head"),
    );
    output = "logits";
    outDims = [1, 1, classes];
  }
  return model(nodes, [valueInfo("tokens", [1, "T", w])], [valueInfo(output, outDims)], inits, 17);
}

/** `layers` Gemm layers of width x width (transB=1) on a batch-1 input `x` [1, width]. */
export function buildLinearStack(layers: number, width: number): ModelProto {
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  let x = "x";
  for (let i = 0; i < layers; i++) {
    inits.push(zeros(`fc${i}_w`, [width, width]), zeros(`fc${i}_b`, [width]));
    nodes.push(node("Gemm", [x, `fc${i}_w`, `fc${i}_b`], [`h${i}`], `fc${i}`, { transB: 1 }));
    if (i < layers - 1) nodes.push(node("Relu", [`h${i}`], [`r${i}`]));
    x = i < layers - 1 ? `r${i}` : `h${i}`;
  }
  return model(nodes, [valueInfo("x", [1, width])], [valueInfo(x, [1, width])], inits, 13);
}

/**
 * A generated convolutional network of `layers` layers: 3x3 convolutions (padded, `channels` wide) on a
 * `size` x `size` input, every fourth one depthwise, then a Gemm classifier.
 */
export function buildConvStack(layers: number, channels = 64, size = 16): ModelProto {
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [zeros("stem_w", [channels, 3, 3, 3])];
  nodes.push(node("Conv", ["image", "stem_w"], ["c0"], "stem", { pads: [1, 1, 1, 1] }));
  let x = "c0";
  for (let i = 1; i < layers - 1; i++) {
    const depthwise = i % 4 === 0;
    inits.push(zeros(`conv${i}_w`, depthwise ? [channels, 1, 3, 3] : [channels, channels, 3, 3]));
    nodes.push(node("Conv", [x, `conv${i}_w`], [`c${i}`], `conv${i}`, { pads: [1, 1, 1, 1], group: depthwise ? channels : 1 }));
    nodes.push(node("Relu", [`c${i}`], [`r${i}`]));
    x = `r${i}`;
  }
  inits.push(zeros("fc_w", [10, channels]));
  nodes.push(
    node("GlobalAveragePool", [x], ["pooled"]),
    node("Flatten", ["pooled"], ["flat"], "", { axis: 1 }),
    node("Gemm", ["flat", "fc_w"], ["logits"], "fc", { transB: 1 }),
  );
  return model(nodes, [valueInfo("image", [1, 3, size, size])], [valueInfo("logits", [1, 10])], inits, 13);
}

/**
 * Simulates a generated 100-layer model on the default preset in the five default formats. Figures:
 * the one-off shape measurement (onnxruntime), and lowering + simulation averaged over repetitions.
 */
export async function runSimulateBench(): Promise<object> {
  const layers = 100;
  const m = buildConvStack(layers);
  const t0 = performance.now();
  const shapes = await measureShapes(m);
  const shapeSeconds = (performance.now() - t0) / 1000;
  const params = getPreset("ethos-u65-512").params;
  const run = () => simulate(lowerModel(m, shapes.dims).layers, params, { formats: DEFAULT_FORMATS, preset: "ethos-u65-512" });
  const first = run();
  const reps = 50;
  const t1 = performance.now();
  for (let i = 0; i < reps; i++) run();
  const perSimulation = (performance.now() - t1) / 1000 / reps;
  return {
    benchmark: "simulate",
    layers: first.layers.length / DEFAULT_FORMATS.length,
    formats: DEFAULT_FORMATS.length,
    preset: "ethos-u65-512",
    secondsPerSimulation: perSimulation,
    shapeMeasurementSeconds: shapeSeconds,
    repetitions: reps,
    withinBudget: perSimulation < 0.1,
  };
}
