/**
 * Planning activation capture (pure): for each compressible weight, which activations to expose as
 * extra graph outputs (input 0 of every consuming node) and how to turn them into the sample matrix of
 * the weight's row layout; and which weights cannot be calibrated, with the reason.
 *
 * Values computed inside If/Loop/Scan bodies cannot be graph outputs of the main graph: a weight read by
 * a node inside a body is reported as uncalibrated (also when it has consumers in the main graph, since
 * its statistic would miss part of its use).
 */
import type { ModelInputSpec } from "./source.js";
import type { ElemType } from "./npy.js";
import { InputError } from "../errors.js";
import type { ModelProto, NodeProto, TypeProto } from "../onnx/proto.js";
import { TensorProto_DataType as DT } from "../onnx/proto.js";
import { nodeLabel } from "../onnx/walk.js";
import type { WeightInfo } from "../onnx/weights.js";
import {
  convGeometry,
  convSampler,
  convTransposeSampler,
  gemmSampler,
  matmulSampler,
  type Activation,
  type ActivationSampler,
  type AutoPad,
  type ConvAttrs,
} from "./im2col.js";

export type CaptureOp = "Conv" | "ConvTranspose" | "Gemm" | "MatMul";

/** One node that reads the weight, and the activation (its input 0) it multiplies the weight with. */
export interface CaptureConsumer {
  node: string;
  opType: CaptureOp;
  /** Name of the node's input 0 in the main graph. */
  activation: string;
  /** Conv / ConvTranspose attributes. */
  conv?: ConvAttrs;
  /** Conv: the kernel's spatial dims. */
  kernel?: number[];
  /** Gemm: A is stored [K, M]. */
  transA?: boolean;
}

export interface CaptureTarget {
  /** The weight's name (key of the result). */
  name: string;
  groups: number;
  cols: number;
  consumers: CaptureConsumer[];
}

export interface Uncalibrated {
  name: string;
  reason: string;
}

export interface CapturePlan {
  targets: CaptureTarget[];
  uncalibrated: Uncalibrated[];
  /** Activation names to read, each once, in the order of first use. */
  activations: string[];
}

const ints = (n: NodeProto, name: string): number[] | undefined => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? a.ints.map(Number) : undefined;
};
const int = (n: NodeProto, name: string, dflt: number): number => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
};
const str = (n: NodeProto, name: string): string | undefined => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? new TextDecoder().decode(a.s) : undefined;
};

/** Conv attributes of a node (ConvTranspose reads only `group`). */
export function convAttrs(n: NodeProto): ConvAttrs {
  const autoPad = (str(n, "auto_pad") ?? "NOTSET") as AutoPad;
  if (!["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"].includes(autoPad))
    throw new InputError(`${n.name || n.opType}: unknown auto_pad ${JSON.stringify(autoPad)}`);
  const out: ConvAttrs = { autoPad, group: int(n, "group", 1) };
  const pads = ints(n, "pads");
  const strides = ints(n, "strides");
  const dilations = ints(n, "dilations");
  if (pads) out.pads = pads;
  if (strides) out.strides = strides;
  if (dilations) out.dilations = dilations;
  return out;
}

/** Decides, for each weight, what to capture or why it cannot be calibrated. */
export function planCapture(model: ModelProto, weights: readonly WeightInfo[]): CapturePlan {
  const graph = model.graph;
  const targets: CaptureTarget[] = [];
  const uncalibrated: Uncalibrated[] = [];
  const activations: string[] = [];
  const seen = new Set<string>();
  if (!graph) return { targets, uncalibrated: weights.map((w) => ({ name: w.name, reason: "the model has no graph" })), activations };

  const byLabel = new Map<string, NodeProto>();
  graph.node.forEach((n, i) => byLabel.set(nodeLabel(n, i), n));
  const constants = new Set<string>(graph.initializer.map((t) => t.name));
  for (const n of graph.node) if (n.opType === "Constant" && (n.domain === "" || n.domain === "ai.onnx")) n.output.forEach((o) => constants.add(o));
  const inputs = new Set(graph.input.map((i) => i.name));

  weights: for (const w of weights) {
    const inBody = w.consumers.find((c) => c.graphPath !== "");
    if (inBody) {
      uncalibrated.push({
        name: w.name,
        reason: `read by ${inBody.opType} ${inBody.node} inside ${inBody.graphPath}: values inside If/Loop/Scan bodies cannot be exposed as graph outputs`,
      });
      continue;
    }
    const consumers: CaptureConsumer[] = [];
    for (const c of w.consumers) {
      const node = byLabel.get(c.node);
      const fail = (reason: string) => uncalibrated.push({ name: w.name, reason });
      if (!node || node.opType !== c.opType) {
        fail(`its consumer ${c.node} was not found in the main graph`);
        continue weights;
      }
      const activation = node.input[0] ?? "";
      if (!activation) {
        fail(`${c.opType} ${c.node} has no input 0`);
        continue weights;
      }
      if (constants.has(activation) && !inputs.has(activation)) {
        fail(`${c.opType} ${c.node} multiplies it with a constant tensor (${activation}), not an activation`);
        continue weights;
      }
      const op = c.opType as CaptureOp;
      const consumer: CaptureConsumer = { node: c.node, opType: op, activation };
      if (op === "Conv" || op === "ConvTranspose") {
        try {
          consumer.conv = convAttrs(node);
        } catch (e) {
          fail((e as Error).message);
          continue weights;
        }
        if (op === "Conv") {
          consumer.kernel = w.dims.slice(2);
          if (consumer.kernel.length < 1 || consumer.kernel.length > 3) {
            fail(`${c.node} is a ${consumer.kernel.length}-D convolution (calibration handles 1-D to 3-D)`);
            continue weights;
          }
        }
      } else if (op === "Gemm") {
        consumer.transA = int(node, "transA", 0) !== 0;
      } else if (op !== "MatMul") {
        fail(`${c.opType} ${c.node} is not a Conv, ConvTranspose, Gemm or MatMul`);
        continue weights;
      }
      consumers.push(consumer);
    }
    if (consumers.length === 0) {
      uncalibrated.push({ name: w.name, reason: "no consumer in the main graph" });
      continue;
    }
    for (const c of consumers)
      if (!seen.has(c.activation)) {
        seen.add(c.activation);
        activations.push(c.activation);
      }
    targets.push({ name: w.name, groups: w.layout.groups, cols: w.layout.cols, consumers });
  }
  return { targets, uncalibrated, activations };
}

/** The sampler that turns one consumer's activation (`x` with `dims`) into the weight's sample matrix. */
export function samplerFor(c: CaptureConsumer, x: Activation, dims: readonly number[]): ActivationSampler {
  const where = `${c.opType} ${c.node}`;
  switch (c.opType) {
    case "Conv":
      return convSampler(x, convGeometry(dims, c.kernel!, c.conv ?? {}, where));
    case "ConvTranspose":
      return convTransposeSampler(x, dims, c.conv?.group ?? 1, where);
    case "Gemm":
      return gemmSampler(x, dims, c.transA === true, where);
    case "MatMul":
      return matmulSampler(x, dims, where);
  }
}

const ELEM_TYPES: Partial<Record<number, ElemType>> = {
  [DT.FLOAT]: "float32",
  [DT.FLOAT16]: "float16",
  [DT.DOUBLE]: "float64",
  [DT.INT8]: "int8",
  [DT.UINT8]: "uint8",
  [DT.INT16]: "int16",
  [DT.UINT16]: "uint16",
  [DT.INT32]: "int32",
  [DT.UINT32]: "uint32",
  [DT.INT64]: "int64",
  [DT.UINT64]: "uint64",
  [DT.BOOL]: "bool",
};

/** A tensor type's element type and shape (dynamic dims null), or undefined for non-tensor types. */
export function tensorTypeSpec(t: TypeProto | undefined): { elemType: number; shape: (number | null)[] | null } | undefined {
  if (!t || t.value.case !== "tensorType") return undefined;
  const tt = t.value.value;
  const shape = tt.shape ? tt.shape.dim.map((d) => (d.value.case === "dimValue" ? Number(d.value.value) : null)) : null;
  return { elemType: tt.elemType, shape };
}

/** The inputs a model needs fed: graph.input minus initializers (older exports list those too). */
export function modelInputs(model: ModelProto): ModelInputSpec[] {
  const g = model.graph;
  if (!g) return [];
  const inits = new Set(g.initializer.map((t) => t.name));
  return g.input
    .filter((i) => !inits.has(i.name))
    .map((i) => {
      const spec = tensorTypeSpec(i.type);
      if (!spec) throw new InputError(`Model input "${i.name}" is not a tensor (sequences, maps and optionals cannot be fed from data files).`);
      const elemType = ELEM_TYPES[spec.elemType];
      if (!elemType) throw new InputError(`Model input "${i.name}" has element type ${spec.elemType}, which cannot be fed from data files.`);
      if (spec.shape === null) throw new InputError(`Model input "${i.name}" declares no shape; calibration needs at least its rank.`);
      return { name: i.name, elemType, shape: spec.shape };
    });
}

/** What an onnxruntime session says about one of its inputs or outputs (structurally). */
export interface ValueMetadataLike {
  readonly isTensor: boolean;
  readonly type?: string;
  readonly shape?: readonly (number | string)[];
}

const TYPE_BYTES: Record<string, number> = {
  float64: 8,
  int64: 8,
  uint64: 8,
  float32: 4,
  int32: 4,
  uint32: 4,
  float16: 2,
  bfloat16: 2,
  int16: 2,
  uint16: 2,
};

/**
 * Estimated dims of each output for one batch: declared dims, symbolic ones bound from the dims the
 * inputs are fed with (an unbound leading dim taken as the batch size, any other as 1); undefined for a
 * non-tensor output or one without a declared shape.
 */
export function estimateOutputDims(
  inputs: readonly { name: string; meta: ValueMetadataLike | undefined }[],
  outputs: readonly { name: string; meta: ValueMetadataLike | undefined }[],
  feedDims: Readonly<Record<string, readonly number[]>>,
  batchSize: number,
): Map<string, { tensor: boolean; type: string; dims: number[] | undefined }> {
  const symbols = new Map<string, number>();
  for (const { name, meta } of inputs) {
    const dims = feedDims[name];
    if (!meta || !meta.isTensor || !dims) continue;
    (meta.shape ?? []).forEach((d, j) => {
      if (typeof d === "string" && dims[j] !== undefined) symbols.set(d, dims[j]!);
    });
  }
  const out = new Map<string, { tensor: boolean; type: string; dims: number[] | undefined }>();
  for (const { name, meta } of outputs) {
    if (!meta || !meta.isTensor) {
      out.set(name, { tensor: false, type: "", dims: undefined });
      continue;
    }
    const dims = meta.shape?.map((d, j) => (typeof d === "number" ? d : (symbols.get(d) ?? (j === 0 ? batchSize : 1))));
    out.set(name, { tensor: true, type: meta.type ?? "", dims });
  }
  return out;
}

/** Estimated bytes of each output for one batch (`estimateOutputDims`; 0 for a non-tensor output). */
export function estimateOutputBytes(
  inputs: readonly { name: string; meta: ValueMetadataLike | undefined }[],
  outputs: readonly { name: string; meta: ValueMetadataLike | undefined }[],
  feedDims: Readonly<Record<string, readonly number[]>>,
  batchSize: number,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, { tensor, type, dims }] of estimateOutputDims(inputs, outputs, feedDims, batchSize)) {
    if (!tensor) {
      out.set(name, 0);
      continue;
    }
    out.set(name, (dims ?? []).reduce((a, b) => a * b, TYPE_BYTES[type] ?? 1));
  }
  return out;
}
