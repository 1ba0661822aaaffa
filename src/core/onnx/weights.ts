/**
 * Finding the weights SSVQ can compress: the constant weight operand of every Conv, ConvTranspose,
 * Gemm and MatMul, wherever the tensor lives (initializer, Constant node, behind Identity nodes, in an
 * outer scope of an If/Loop/Scan body), found once however many nodes share it. Weights we do not
 * compress are listed with the reason.
 */
import { COMPRESSIBLE_TYPES, dtypeName } from "./dtype.js";
import { externalRef, type ExternalDataRef } from "./external.js";
import type { GraphProto, ModelProto, NodeProto, TensorProto } from "./proto.js";
import { elementCount, tensorDims } from "./tensor-data.js";
import { nodeLabel, walkGraphs, type GraphPath } from "./walk.js";
import { buildScope, lookup, type Producer, type Scope } from "./scopes.js";

export type WeightStorage = "initializer" | "constant";
export type LayoutKind = "conv" | "convtranspose" | "gemm" | "matmul";

/** How a weight is laid out as a row matrix [rows, cols], cols being the reduction dimension. */
export interface RowLayout {
  kind: LayoutKind;
  rows: number;
  cols: number;
  /** Convolution groups (1 elsewhere). */
  groups: number;
  /**
   * Gemm with transB=0 and MatMul store [K, N]: the rows are the stored tensor's columns.
   * ConvTranspose stores [Cin, Cout/g, k...]: rows are (Cout/g * k) per group, columns Cin/g.
   */
  transposed: boolean;
}

export interface WeightConsumer {
  node: string;
  opType: string;
  inputIndex: number;
  graphPath: GraphPath;
  /** Identity outputs between the tensor and this node, in the order the data flows. */
  via: string[];
}

export interface WeightInfo {
  /** Tensor name, unique within its graph. */
  name: string;
  /** The graph that holds the tensor ("" is the main graph). */
  graphPath: GraphPath;
  storage: WeightStorage;
  dtype: number;
  dims: number[];
  external?: ExternalDataRef;
  /** Older exports list initializers in graph.input too. */
  alsoGraphInput: boolean;
  consumers: WeightConsumer[];
  layout: RowLayout;
  /** The tensor itself (a view into the decoded model). */
  tensor: TensorProto;
  /** For storage "constant": the Constant node. */
  constantNode?: NodeProto;
}

export interface SkippedWeight {
  name: string;
  graphPath: GraphPath;
  consumer: string;
  opType: string;
  dtype: string;
  dims: number[];
  reason: string;
}

export interface WeightScan {
  weights: WeightInfo[];
  skipped: SkippedWeight[];
}

const RECURRENT = new Set(["LSTM", "GRU", "RNN"]);
const QUANTIZED = new Set([
  "QLinearConv",
  "QLinearMatMul",
  "ConvInteger",
  "MatMulInteger",
  "MatMulNBits",
  "QGemm",
  "DynamicQuantizeMatMul",
  "QAttention",
]);
const DEQUANTIZE = new Set(["DequantizeLinear", "DynamicQuantizeLinear", "DequantizeBFP"]);
const TARGETS = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);


const attrInt = (n: NodeProto, name: string, dflt: number): number => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
};

/** The row layout of a weight for one consumer, or a reason it has none. */
export function rowLayout(opType: string, node: NodeProto, dims: number[]): RowLayout | string {
  switch (opType) {
    case "Conv": {
      const groups = attrInt(node, "group", 1);
      if (dims.length < 3) return `a Conv weight of rank ${dims.length}`;
      return { kind: "conv", rows: dims[0]!, cols: elementCount(dims.slice(1)), groups, transposed: false };
    }
    case "ConvTranspose": {
      const groups = attrInt(node, "group", 1);
      if (dims.length < 3) return `a ConvTranspose weight of rank ${dims.length}`;
      if (dims[0]! % groups !== 0) return `${dims[0]} input channels do not split into ${groups} groups`;
      const kernel = elementCount(dims.slice(2));
      return { kind: "convtranspose", rows: groups * dims[1]! * kernel, cols: dims[0]! / groups, groups, transposed: true };
    }
    case "Gemm": {
      if (dims.length !== 2) return `a Gemm weight of rank ${dims.length}`;
      const transB = attrInt(node, "transB", 0) !== 0;
      return transB
        ? { kind: "gemm", rows: dims[0]!, cols: dims[1]!, groups: 1, transposed: false }
        : { kind: "gemm", rows: dims[1]!, cols: dims[0]!, groups: 1, transposed: true };
    }
    case "MatMul": {
      if (dims.length !== 2) return `a batched MatMul weight of rank ${dims.length} (only 2-D weights are compressed)`;
      return { kind: "matmul", rows: dims[1]!, cols: dims[0]!, groups: 1, transposed: true };
    }
  }
  return `not a weight of Conv, ConvTranspose, Gemm or MatMul`;
}

/** Gemm (transB=0) and MatMul store [K, N] alike; only ConvTranspose's transposition is its own. */
const sameLayout = (a: RowLayout, b: RowLayout): boolean =>
  a.rows === b.rows &&
  a.cols === b.cols &&
  a.groups === b.groups &&
  a.transposed === b.transposed &&
  (a.kind === "convtranspose") === (b.kind === "convtranspose");

interface Found {
  producer: Extract<Producer, { kind: "initializer" | "constant" }>;
  via: string[];
}

/** Follows Identity nodes back from `name` to a constant tensor, or to whatever produces it. */
function resolve(scope: Scope, name: string): Found | Producer | undefined {
  const via: string[] = [];
  let p = lookup(scope, name);
  for (let hops = 0; p && p.kind === "node" && p.node.opType === "Identity" && p.node.domain === "" && hops < 64; hops++) {
    via.push(p.node.output[0] ?? "");
    p = lookup(p.scope, p.node.input[0] ?? "");
  }
  if (p && (p.kind === "initializer" || p.kind === "constant")) return { producer: p, via: via.reverse() };
  return p;
}

/** The name the graph knows the tensor by (a Constant's output, not its often empty tensor name). */
const valueName = (p: Found["producer"]): string => (p.kind === "constant" ? p.node.output[0] ?? "" : p.tensor.name);

const isFound = (x: Found | Producer | undefined): x is Found => x !== undefined && "producer" in x;

/** Scans all graphs of a model for compressible weights and for the weights it skips. */
export function findWeights(model: ModelProto): WeightScan {
  const scopes = new Map<GraphProto, Scope>();
  const found = new Map<TensorProto, WeightInfo>();
  const refused = new Map<TensorProto, SkippedWeight>();
  const skipped: SkippedWeight[] = [];

  const skip = (found: Found, node: NodeProto, index: number, reason: string) => {
    const t = found.producer.tensor;
    if (refused.has(t)) return;
    const s: SkippedWeight = {
      name: valueName(found.producer),
      graphPath: found.producer.scope.visit.path,
      consumer: nodeLabel(node, index),
      opType: node.opType,
      dtype: dtypeName(t.dataType),
      dims: tensorDims(t),
      reason,
    };
    refused.set(t, s);
    skipped.push(s);
  };

  walkGraphs(model, (visit) => {
    const scope = buildScope(visit, visit.parent ? scopes.get(visit.parent.graph) : undefined);
    scopes.set(visit.graph, scope);
    visit.graph.node.forEach((node, index) => {
      const op = node.domain === "" || node.domain === "ai.onnx" ? node.opType : `${node.domain}.${node.opType}`;
      const constInputs = (indices: number[]) =>
        indices
          .map((i) => ({ i, r: node.input[i] ? resolve(scope, node.input[i]!) : undefined }))
          .filter((x): x is { i: number; r: Found } => isFound(x.r));

      if (RECURRENT.has(op)) {
        for (const { r } of constInputs([1, 2, 3]))
          skip(r, node, index, `${op} weights are out of scope for now (recurrent layers are not compressed)`);
        return;
      }
      const quantOp = QUANTIZED.has(node.opType) ? node.opType : undefined;
      if (quantOp) {
        for (const { r } of constInputs(node.input.map((_, i) => i)))
          if (elementCount(tensorDims(r.producer.tensor)) > 1)
            skip(r, node, index, `already quantized (${quantOp})`);
        return;
      }
      if (!TARGETS.has(op)) return;

      const wName = node.input[1];
      if (!wName) return;
      const r = resolve(scope, wName);
      if (!isFound(r)) {
        if (r && r.kind === "node" && DEQUANTIZE.has(r.node.opType)) {
          const q = r.node.input[0] ? resolve(r.scope, r.node.input[0]) : undefined;
          if (isFound(q)) skip(q, node, index, `already quantized (${r.node.opType} feeds this ${op})`);
        }
        return;
      }
      const { producer, via } = r;
      const t = producer.tensor;
      const graphPath = producer.scope.visit.path;
      if (refused.has(t)) return;
      if (!COMPRESSIBLE_TYPES.has(t.dataType)) {
        skip(r, node, index, `${dtypeName(t.dataType)} weights are not compressed (float32, float16 and bfloat16 are)`);
        return;
      }
      const dims = tensorDims(t);
      const layout = rowLayout(op, node, dims);
      if (typeof layout === "string") {
        skip(r, node, index, layout);
        return;
      }
      const consumer: WeightConsumer = { node: nodeLabel(node, index), opType: op, inputIndex: 1, graphPath: visit.path, via };
      const known = found.get(t);
      if (known) {
        if (!sameLayout(known.layout, layout)) {
          found.delete(t);
          skip(r, node, index, `shared by ${known.consumers[0]!.node} and ${consumer.node}, which read it in different layouts`);
          return;
        }
        known.consumers.push(consumer);
        return;
      }
      found.set(t, {
        name: valueName(producer),
        graphPath,
        storage: producer.kind,
        dtype: t.dataType,
        dims,
        external: externalRef(t),
        alsoGraphInput: producer.kind === "initializer" && producer.alsoGraphInput,
        consumers: [consumer],
        layout,
        tensor: t,
        constantNode: producer.kind === "constant" ? producer.node : undefined,
      });
    });
  });
  return { weights: [...found.values()], skipped };
}

/** Identifies a weight in the model: names are unique within a graph, graph paths within the model. */
export const weightKey = (w: Pick<WeightInfo, "graphPath" | "name">): string => `${w.graphPath}\u0000${w.name}`;

/** Elements of the weight (its row matrix, before padding). */
export const weightCount = (w: WeightInfo): number => w.layout.rows * w.layout.cols;
