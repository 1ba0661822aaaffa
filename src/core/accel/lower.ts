/**
 * Lowering an ONNX model's Conv, ConvTranspose, Gemm and MatMul nodes to GEMMs (pure: the model and the
 * shapes of its values in, layers out; src/io/shapes.ts finds the shapes by running the model once).
 *
 *   Conv           X [B, Cin, spatial], W [Cout, Cin/g, kernel], Y [B, Cout, out spatial]
 *                  -> g GEMMs: M = B x out pixels, K = Cin/g x kernel, N = Cout/g (depthwise: K = kernel, N = 1)
 *   ConvTranspose  X [B, Cin, spatial], W [Cin, Cout/g, kernel]
 *                  -> g GEMMs: M = B x input pixels, K = Cin/g, N = Cout/g x kernel (then col2im on chip)
 *   Gemm           A [M, K] (transA: [K, M]), B [K, N] (transB: [N, K])
 *   MatMul         A [..., M, K] x B [..., K, N]: a 2-D (or 1-D) B is one GEMM over all rows of A;
 *                  a batched B is one GEMM per broadcast batch
 * The K x N operand is a weight when it is constant: an initializer, a Constant node, or computed from
 * constants only (the decode subgraph of a `.ssvq.onnx`, a DequantizeLinear of a quantized weight).
 * Otherwise it is an activation (attention's Q x K^T and scores x V) and keeps the activation width.
 * Nodes inside If/Loop/Scan bodies are not lowered: their values cannot be exposed to measure shapes.
 * Nodes whose inputs are all constant are not layers either: onnxruntime folds them when it loads the model.
 */
import type { GemmLayer } from "./gemm.js";
import type { GraphProto, ModelProto, NodeProto } from "../onnx/proto.js";
import { elementCount, tensorDims } from "../onnx/tensor-data.js";
import { nodeLabel, walkGraphs } from "../onnx/walk.js";
import { splitCodesName } from "../onnx/split-product.js";

export const LOWERED_OPS: ReadonlySet<string> = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);

export interface SkippedLayer {
  name: string;
  opType: string;
  reason: string;
}

export interface LoweredModel {
  layers: GemmLayer[];
  skipped: SkippedLayer[];
}

const isDefaultDomain = (n: NodeProto): boolean => n.domain === "" || n.domain === "ai.onnx";

const attrInt = (n: NodeProto, name: string, dflt: number): number => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
};

/** Operators whose outputs differ from run to run even with constant inputs. */
const RANDOM_OPS = new Set(["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"]);

/** Values of the main graph that are constant: initializers, Constant outputs, and what only they feed. */
export function constantValues(g: GraphProto): Set<string> {
  // Initializers older exports also list as graph inputs count as constant: they are the weights.
  const constant = new Set<string>(g.initializer.map((t) => t.name));
  let changed = true;
  const pending = g.node.filter((n) => n.output.length > 0);
  // Nodes are topologically sorted in a valid model; a second sweep covers the rare model that is not.
  for (let sweep = 0; changed && sweep < 2; sweep++) {
    changed = false;
    for (const n of pending) {
      if (n.output.every((o) => !o || constant.has(o))) continue;
      const hasGraphAttr = n.attribute.some((a) => a.g || a.graphs.length > 0);
      const ins = n.input.filter((x) => x !== "");
      const isConst =
        (n.opType === "Constant" && isDefaultDomain(n)) || (!hasGraphAttr && ins.length > 0 && ins.every((x) => constant.has(x)));
      if (isConst && !RANDOM_OPS.has(n.opType)) {
        for (const o of n.output) if (o) constant.add(o);
        changed = true;
      }
    }
  }
  return constant;
}

/** Dims of a value: from `shapes`, else from an initializer or a Constant node of the main graph. */
function dimsLookup(g: GraphProto, shapes: ReadonlyMap<string, readonly number[]>): (name: string) => number[] | undefined {
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const consts = new Map<string, NodeProto>();
  for (const n of g.node) if (n.opType === "Constant" && isDefaultDomain(n) && n.output[0]) consts.set(n.output[0], n);
  return (name) => {
    const s = shapes.get(name);
    if (s) return [...s];
    const t = inits.get(name);
    if (t) return tensorDims(t);
    const c = consts.get(name)?.attribute.find((a) => a.name === "value")?.t;
    return c ? tensorDims(c) : undefined;
  };
}

const prod = (d: readonly number[]): number => elementCount(d as number[]);

/** The broadcast of two batch shapes (numpy rules), or undefined when they do not broadcast. */
function broadcast(a: number[], b: number[]): number[] | undefined {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/**
 * Lowers every Conv, ConvTranspose, Gemm and MatMul of the model's main graph, in graph order. `shapes`
 * maps value names to their dims (src/io/shapes.ts); constant operands may be left out of it.
 */
export function lowerModel(model: ModelProto, shapes: ReadonlyMap<string, readonly number[]>): LoweredModel {
  const layers: GemmLayer[] = [];
  const skipped: SkippedLayer[] = [];
  const g = model.graph;
  if (!g) return { layers, skipped };
  const constant = constantValues(g);
  const dims = dimsLookup(g, shapes);
  const producers = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) if (o) producers.set(o, n);
  // The parts of a split product (a `.ssvq.onnx`'s MatMul or Gemm over strided slices of one input) are
  // one layer: the weight named by its codes, K summed over the parts.
  const splitLayers = new Map<string, GemmLayer>();

  walkGraphs(model, (visit) => {
    if (visit.path === "") return;
    visit.graph.node.forEach((n, i) => {
      if (isDefaultDomain(n) && LOWERED_OPS.has(n.opType))
        skipped.push({
          name: `${visit.path}/${nodeLabel(n, i)}`,
          opType: n.opType,
          reason: `inside the subgraph ${visit.path}, whose values cannot be exposed as graph outputs to measure their shapes`,
        });
    });
  });

  g.node.forEach((n, index) => {
    if (!isDefaultDomain(n) || !LOWERED_OPS.has(n.opType)) return;
    const name = nodeLabel(n, index);
    const skip = (reason: string) => skipped.push({ name, opType: n.opType, reason });
    const [aName, bName] = [n.input[0] ?? "", n.input[1] ?? ""];
    const yName = n.output[0] ?? "";
    const A = dims(aName);
    const B = dims(bName);
    const Y = dims(yName);
    const missing = [
      [aName, A],
      [bName, B],
      [yName, Y],
    ].filter(([, d]) => d === undefined);
    if (missing.length)
      return skip(`the shape of ${missing.map(([x]) => JSON.stringify(x)).join(" and ")} is unknown`);
    const a = A!;
    const b = B!;
    const y = Y!;
    if ([a, b, y].some((d) => d.some((x) => !Number.isSafeInteger(x) || x < 0)))
      return skip("a shape has an unknown or negative dimension");
    if (prod(a) === 0 || prod(b) === 0 || prod(y) === 0) return skip("an operand is empty");
    const constantWeights = constant.has(bName);
    if (constantWeights && constant.has(aName))
      return skip("all its inputs are constant: onnxruntime folds it when the session is created");
    const codes = constantWeights && (n.opType === "MatMul" || n.opType === "Gemm") ? splitCodesName(bName, (v) => producers.get(v)) : undefined;
    const slice = codes !== undefined ? producers.get(aName) : undefined;
    // One part per strided slice of the input: the parts of one product share the codes and the input.
    const splitKey = slice?.opType === "Slice" ? `${codes}\u0000${slice.input[0]}` : undefined;
    if (splitKey !== undefined) {
      const whole = splitLayers.get(splitKey);
      const K = n.opType === "Gemm" && attrInt(n, "transA", 0) !== 0 ? a[0]! : a[a.length - 1]!;
      if (whole) {
        whole.K += K;
        whole.ifmapElements += prod(a);
        return;
      }
    }
    const base = {
      name: codes !== undefined ? name.replace(/\/part\d+(_\d+)?$/, "") : name,
      opType: n.opType,
      constantWeights,
      ...(constantWeights ? { weightName: codes ?? bName } : {}),
      ifmapElements: prod(a),
      ofmapElements: prod(y),
    };
    const pushed = layers.length;
    switch (n.opType) {
      case "Conv": {
        const group = attrInt(n, "group", 1);
        if (a.length < 3 || b.length !== a.length || y.length !== a.length) return skip(`a Conv of rank ${a.length}`);
        const batch = y[0]!;
        const cout = b[0]!;
        if (group < 1 || cout % group !== 0) return skip(`${cout} output channels do not split into ${group} groups`);
        layers.push({ ...base, M: batch * prod(y.slice(2)), K: prod(b.slice(1)), N: cout / group, groups: group });
        return;
      }
      case "ConvTranspose": {
        const group = attrInt(n, "group", 1);
        if (a.length < 3 || b.length !== a.length) return skip(`a ConvTranspose of rank ${a.length}`);
        const cin = b[0]!;
        if (group < 1 || cin % group !== 0) return skip(`${cin} input channels do not split into ${group} groups`);
        layers.push({ ...base, M: a[0]! * prod(a.slice(2)), K: cin / group, N: prod(b.slice(1)), groups: group });
        return;
      }
      case "Gemm": {
        if (a.length !== 2 || b.length !== 2) return skip(`a Gemm of ranks ${a.length} and ${b.length}`);
        const transA = attrInt(n, "transA", 0) !== 0;
        const transB = attrInt(n, "transB", 0) !== 0;
        const [M, K] = transA ? [a[1]!, a[0]!] : [a[0]!, a[1]!];
        const N = transB ? b[0]! : b[1]!;
        layers.push({ ...base, M, K, N, groups: 1 });
        break;
      }
      case "MatMul": {
        if (a.length === 0 || b.length === 0) return skip("a MatMul of a scalar");
        const K = a[a.length - 1]!;
        const N = b.length === 1 ? 1 : b[b.length - 1]!;
        if (b.length <= 2) {
          layers.push({ ...base, M: prod(a) / K, K, N, groups: 1 });
          break;
        }
        const batch = broadcast(a.length > 2 ? a.slice(0, -2) : [], b.slice(0, -2));
        if (!batch) return skip("its batch dimensions do not broadcast");
        const M = a.length >= 2 ? a[a.length - 2]! : 1;
        layers.push({ ...base, M, K, N, groups: prod(batch) });
        break;
      }
    }
    if (splitKey !== undefined && layers.length > pushed) splitLayers.set(splitKey, layers[layers.length - 1]!);
  });
  return { layers, skipped };
}

/** Names of the values whose shapes lowering needs: inputs 0 and 1 and output 0 of each lowered node. */
export function valuesToMeasure(model: ModelProto): string[] {
  const g = model.graph;
  if (!g) return [];
  const names = new Set<string>();
  for (const n of g.node) {
    if (!isDefaultDomain(n) || !LOWERED_OPS.has(n.opType)) continue;
    for (const v of [n.input[0], n.input[1], n.output[0]]) if (v) names.add(v);
  }
  return [...names];
}
