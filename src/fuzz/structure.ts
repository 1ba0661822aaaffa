/**
 * Structure-aware mutations: the model is decoded with the project's onnx-buf schema, fields are changed
 * (shapes, types, tensor data, attributes, node wiring, names, opsets, nesting, metadata) and it is
 * encoded again. Each operation draws its targets from its own generator when applied, so any subset
 * of a case's operations can be applied again when a finding is shrunk.
 */
import { clone } from "@bufbuild/protobuf";
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  create,
  FunctionProtoSchema,
  GraphProtoSchema,
  NodeProtoSchema,
  ValueInfoProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from "../core/onnx/proto.js";
import { DT, floatTensor, graph, node, valueInfo } from "./models.js";
import type { FuzzRng } from "./rng.js";
import type { WrongMessage } from "./case.js";

/** What an operation found out about the case it made. */
export interface Effects {
  hostile?: string;
  wrong: WrongMessage[];
}

export interface StructResult {
  desc: string;
  /** The model is still valid ONNX after this operation. */
  keepsValid?: boolean;
}

type StructOp = (m: ModelProto, r: FuzzRng, fx: Effects) => StructResult | undefined;

/** Sets fields on a message in place (keeps its prototype, unlike a spread copy) and returns it. */
function withFields<T extends object>(m: T, fields: Partial<T>): T {
  return Object.assign(m, fields);
}

export const INT_EDGES: readonly bigint[] = [0n, -1n, 1n, 2n, 3n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n, 2n ** 40n, 2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, -(2n ** 63n)];
const DIM_EDGES: readonly bigint[] = [0n, -1n, -5n, 1n, 7n, 65536n, 2n ** 31n, 2n ** 32n + 1n, 2n ** 40n, 2n ** 62n, 2n ** 63n - 1n];
const FLOAT_EDGES = [NaN, Infinity, -Infinity, 0, -0, 1e-45, 3.4e38, -1, 1e30];

/** Bits per element of the types whose width is fixed (ONNX 1.20 numbering). */
const BITS: Record<number, number> = { 1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4 };

export function graphsOf(m: ModelProto): GraphProto[] {
  const out: GraphProto[] = [];
  const seen = new Set<GraphProto>();
  const visit = (g: GraphProto, depth: number) => {
    if (seen.has(g)) return;
    seen.add(g);
    out.push(g);
    if (depth > 200) return;
    for (const n of g.node)
      for (const a of n.attribute) {
        if (a.g) visit(a.g, depth + 1);
        for (const s of a.graphs) visit(s, depth + 1);
      }
  };
  if (m.graph) visit(m.graph, 0);
  return out;
}

const nodesOf = (m: ModelProto): { g: GraphProto; n: NodeProto; i: number }[] =>
  graphsOf(m).flatMap((g) => g.node.map((n, i) => ({ g, n, i })));

export function tensorsOf(m: ModelProto): { t: TensorProto; where: string }[] {
  const out: { t: TensorProto; where: string }[] = [];
  for (const g of graphsOf(m)) {
    for (const t of g.initializer) out.push({ t, where: `initializer in ${g.name}` });
    for (const n of g.node) for (const a of n.attribute) if (a.t) out.push({ t: a.t, where: `attribute ${a.name} of ${n.opType} ${n.name}` });
  }
  return out;
}

const q = (s: string): string => JSON.stringify(s.length > 60 ? s.slice(0, 60) + "..." : s);

/**
 * Why the finished model is hostile in its tensors' data (raw data that does not match shape and type),
 * judged on the model as written: a later operation may have removed the tensor an earlier one damaged.
 */
export function dataHostility(m: ModelProto): string | undefined {
  const fx: Effects = { wrong: [] };
  for (const { t } of tensorsOf(m)) checkData(t, fx);
  return fx.hostile;
}

/** Marks the case hostile when a tensor's raw data no longer matches its shape and type. */
function checkData(t: TensorProto, fx: Effects): void {
  if (t.dataLocation === TensorProto_DataLocation.EXTERNAL) return;
  const bits = BITS[t.dataType];
  if (t.dims.some((d) => d < 0n)) {
    fx.hostile ??= `tensor ${q(t.name)} has a negative dimension`;
    return;
  }
  const count = t.dims.reduce((a, b) => a * b, 1n);
  if (bits === undefined || t.rawData.length === 0) {
    if (count > 2n ** 40n) fx.hostile ??= `tensor ${q(t.name)} declares ${count} elements`;
    return;
  }
  const need = (count * BigInt(bits) + 7n) / 8n;
  if (need !== BigInt(t.rawData.length)) fx.hostile ??= `tensor ${q(t.name)} declares ${need} bytes but carries ${t.rawData.length}`;
}

function pickTensor(m: ModelProto, r: FuzzRng): { t: TensorProto; where: string } | undefined {
  const ts = tensorsOf(m);
  if (ts.length === 0) return undefined;
  // Prefer tensors with data (weights) over scalars.
  const big = ts.filter((x) => x.t.rawData.length >= 64);
  return r.pick(big.length > 0 && r.chance(0.8) ? big : ts);
}

const WEIRD_NAMES = ["", " ", "x\ny", "\u001b[31mred\u001b[0m", "a".repeat(5000), "a::b", "../../etc/passwd", "名前", "\u0000nul", "%s%n", "w".repeat(200000)];

const OPS: Record<string, [number, StructOp]> = {
  tensorDims: [
    8,
    (m, r) => {
      const p = pickTensor(m, r);
      if (!p) return undefined;
      const t = p.t;
      const how = r.int(6);
      let desc: string;
      if (how === 0 && t.dims.length > 0) {
        const i = r.int(t.dims.length);
        t.dims[i] = r.pick(DIM_EDGES);
        desc = `dim ${i} of ${q(t.name)} set to ${t.dims[i]}`;
      } else if (how === 1) {
        t.dims.push(r.pick([1n, 2n, 0n]));
        desc = `a dimension appended to ${q(t.name)}`;
      } else if (how === 2 && t.dims.length > 0) {
        t.dims.pop();
        desc = `the last dimension of ${q(t.name)} removed`;
      } else if (how === 3) {
        t.dims = [];
        desc = `${q(t.name)} made a scalar`;
      } else if (how === 4) {
        const n = r.pick([64, 1000, 100000]);
        t.dims = Array.from({ length: n }, () => 1n);
        desc = `${q(t.name)} given ${n} dimensions of 1`;
      } else {
        t.dims = t.dims.map((d) => (d > 1n ? d * 2n : d));
        desc = `the dimensions of ${q(t.name)} doubled`;
      }
      return { desc };
    },
  ],
  inputShape: [
    6,
    (m, r) => {
      const g = m.graph!;
      const inits = new Set(g.initializer.map((t) => t.name));
      const real = g.input.filter((v) => !inits.has(v.name));
      const v = real.length > 0 ? r.pick(real) : g.output.length > 0 ? r.pick(g.output) : undefined;
      if (!v || v.type?.value.case !== "tensorType") return undefined;
      const tt = v.type.value.value;
      const how = r.int(6);
      if (how === 0 && tt.shape && tt.shape.dim.length > 0) {
        const d = tt.shape.dim[r.int(tt.shape.dim.length)]!;
        d.value = { case: "dimValue", value: r.pick(DIM_EDGES) };
        return { desc: `a dimension of ${q(v.name)} declared ${d.value.value}` };
      }
      if (how === 1) {
        const dims = r.pick([[1n, 65536n, 65536n, 65536n], [2n ** 31n, 2n ** 31n], [1n, 2n ** 40n], [0n], [-1n, 3n]]);
        tt.shape = create(TensorShapeProtoSchema, { dim: dims.map((x) => create(TensorShapeProto_DimensionSchema, { value: { case: "dimValue", value: x } })) });
        return { desc: `${q(v.name)} declared [${dims.join(",")}]` };
      }
      if (how === 2) {
        tt.shape = undefined;
        return { desc: `${q(v.name)} declared with no shape` };
      }
      if (how === 3) {
        tt.elemType = r.pick([0, 8, 9, 7, 11, 14, 21, 99, -3]);
        return { desc: `${q(v.name)} declared of element type ${tt.elemType}` };
      }
      if (how === 4 && tt.shape) {
        tt.shape.dim.push(...Array.from({ length: r.pick([3, 50]) }, () => create(TensorShapeProto_DimensionSchema, { value: { case: "dimParam", value: r.pick(["", "n", "batch"]) } })));
        return { desc: `${q(v.name)} given extra symbolic dimensions` };
      }
      v.type = undefined;
      return { desc: `${q(v.name)} declared with no type` };
    },
  ],
  dataType: [
    5,
    (m, r) => {
      const p = pickTensor(m, r);
      if (!p) return undefined;
      p.t.dataType = r.pick([0, 2, 3, 6, 7, 8, 9, 10, 11, 14, 16, 17, 21, 23, 24, 25, 100, -1]);
      return { desc: `${q(p.t.name)} given data type ${p.t.dataType}` };
    },
  ],
  rawData: [
    6,
    (m, r, fx) => {
      const p = pickTensor(m, r);
      if (!p || p.t.rawData.length === 0) return undefined;
      const t = p.t;
      const how = r.int(4);
      let desc: string;
      if (how === 0) {
        const cut = r.range(1, Math.min(t.rawData.length, 16));
        t.rawData = t.rawData.slice(0, t.rawData.length - cut);
        desc = `${cut} bytes cut from the raw data of ${q(t.name)}`;
      } else if (how === 1) {
        t.rawData = t.rawData.slice(0, r.int(4));
        desc = `the raw data of ${q(t.name)} cut to ${t.rawData.length} bytes`;
      } else if (how === 2) {
        const extra = r.range(1, 4096);
        const out = new Uint8Array(t.rawData.length + extra);
        out.set(t.rawData);
        t.rawData = out;
        desc = `${extra} bytes added to the raw data of ${q(t.name)}`;
      } else {
        const f = new Float32Array(t.rawData.buffer.slice(t.rawData.byteOffset, t.rawData.byteOffset + (t.rawData.length & ~3)));
        t.rawData = new Uint8Array(0);
        t.floatData = Array.from(f.subarray(0, Math.max(0, f.length - r.range(0, 3))));
        if (r.chance(0.3)) t.floatData.push(...FLOAT_EDGES);
        desc = `the data of ${q(t.name)} moved to float_data (${t.floatData.length} values for ${f.length})`;
        if (t.dataType === DT.FLOAT && t.floatData.length !== f.length) fx.hostile ??= `tensor ${q(t.name)} carries ${t.floatData.length} values for ${f.length}`;
        return { desc };
      }
      return { desc };
    },
  ],
  attrType: [
    5,
    (m, r) => {
      const withAttrs = nodesOf(m).filter((x) => x.n.attribute.length > 0);
      if (withAttrs.length === 0) return undefined;
      const { n } = r.pick(withAttrs);
      const a = r.pick(n.attribute);
      const before = a.type;
      a.type = r.pick([AT.UNDEFINED, AT.FLOAT, AT.INT, AT.STRING, AT.TENSOR, AT.GRAPH, AT.FLOATS, AT.INTS, AT.STRINGS, AT.GRAPHS, AT.SPARSE_TENSOR, AT.TYPE_PROTO, 99 as AT].filter((x) => x !== before));
      if (r.chance(0.4)) {
        a.ints = [];
        a.g = undefined;
        a.t = undefined;
      }
      return { desc: `attribute ${q(a.name)} of ${n.opType} changed from type ${before} to ${a.type}` };
    },
  ],
  attrValue: [
    8,
    (m, r) => {
      const all = nodesOf(m);
      if (all.length === 0) return undefined;
      const { n } = r.pick(all);
      const name = r.pick(["group", "kernel_shape", "strides", "pads", "dilations", "axis", "perm", "transB", "transA", "alpha", "to", "auto_pad", "keepdims", "axes", "mode", "value"]);
      let a = n.attribute.find((x) => x.name === name);
      if (!a) {
        a = create(AttributeProtoSchema, { name, type: AT.INT });
        n.attribute.push(a);
      }
      const how = r.int(5);
      if (how === 0) {
        a.type = AT.INT;
        a.i = r.pick(INT_EDGES);
        return { desc: `${n.opType} ${q(n.name)} attribute ${name} = ${a.i}` };
      }
      if (how === 1) {
        a.type = AT.INTS;
        a.ints = Array.from({ length: r.pick([0, 1, 2, 4, 6, 1000]) }, () => r.pick(INT_EDGES));
        return { desc: `${n.opType} ${q(n.name)} attribute ${name} = [${a.ints.slice(0, 6).join(",")}${a.ints.length > 6 ? ",..." : ""}]` };
      }
      if (how === 2) {
        a.type = AT.FLOAT;
        a.f = r.pick(FLOAT_EDGES);
        return { desc: `${n.opType} ${q(n.name)} attribute ${name} = ${a.f}` };
      }
      if (how === 3) {
        a.type = AT.STRING;
        a.s = new TextEncoder().encode(r.pick(["", "SAME_UPPER", "VALID", "NOTSET", "x".repeat(100000), "\u0000"])) as Uint8Array<ArrayBuffer>;
        return { desc: `${n.opType} ${q(n.name)} attribute ${name} = a string of ${a.s.length} bytes` };
      }
      n.attribute.push(withFields(clone(AttributeProtoSchema, a), { i: a.i + 1n }));
      return { desc: `${n.opType} ${q(n.name)} attribute ${name} given twice` };
    },
  ],
  emptyInput: [
    5,
    (m, r) => {
      const all = nodesOf(m).filter((x) => x.n.input.length > 0);
      if (all.length === 0) return undefined;
      const { n } = r.pick(all);
      const i = r.int(n.input.length);
      n.input[i] = "";
      return { desc: `input ${i} of ${n.opType} ${q(n.name)} made empty` };
    },
  ],
  variadicEmpty: [
    4,
    (m, r) => {
      const all = nodesOf(m).filter((x) => x.n.input.length >= 1 && x.n.output.length >= 1);
      if (all.length === 0) return undefined;
      const { n } = r.pick(all);
      const before = n.opType;
      n.opType = r.pick(["Max", "Min", "Sum", "Mean", "Concat"]);
      n.domain = "";
      n.input = [n.input[0]!, "", ...(r.chance(0.3) ? [""] : [])];
      n.attribute = n.opType === "Concat" ? [create(AttributeProtoSchema, { name: "axis", type: AT.INT, i: 0n })] : [];
      return { desc: `${before} ${q(n.name)} made ${n.opType} with an empty second input` };
    },
  ],
  danglingInput: [
    5,
    (m, r) => {
      const all = nodesOf(m).filter((x) => x.n.input.length > 0);
      if (all.length === 0) return undefined;
      const { n } = r.pick(all);
      const i = r.int(n.input.length);
      n.input[i] = r.pick(["nowhere", "undefined_value_42", n.input[i] + "_missing"]);
      return { desc: `input ${i} of ${n.opType} ${q(n.name)} names a value nothing produces` };
    },
  ],
  cycle: [
    4,
    (m, r) => {
      const g = m.graph!;
      if (g.node.length < 1) return undefined;
      const i = r.int(g.node.length);
      const j = r.range(i, g.node.length - 1);
      const src = g.node[j]!;
      const dst = g.node[i]!;
      if (src.output.length === 0 || dst.input.length === 0) return undefined;
      dst.input[r.int(dst.input.length)] = src.output[0]!;
      return { desc: `node ${i} (${dst.opType}) fed by the output of node ${j} (${src.opType}): a cycle` };
    },
  ],
  duplicateOutput: [
    4,
    (m, r) => {
      const g = m.graph!;
      if (g.node.length < 2) return undefined;
      const i = r.int(g.node.length);
      const j = r.int(g.node.length);
      if (i === j || !g.node[i]!.output[0] || g.node[j]!.output.length === 0) return undefined;
      g.node[j]!.output[0] = g.node[i]!.output[0]!;
      return { desc: `nodes ${i} and ${j} produce the same value ${q(g.node[i]!.output[0]!)}` };
    },
  ],
  duplicateNode: [
    2,
    (m, r) => {
      const g = m.graph!;
      if (g.node.length === 0) return undefined;
      const i = r.int(g.node.length);
      g.node.splice(i, 0, clone(NodeProtoSchema, g.node[i]!));
      return { desc: `node ${i} (${g.node[i]!.opType}) duplicated` };
    },
  ],
  initializerName: [
    6,
    (m, r) => {
      const g = m.graph!;
      if (g.initializer.length === 0) return undefined;
      const t = r.pick(g.initializer);
      const how = r.int(4);
      if (how === 0) {
        const old = t.name;
        t.name = old + "_renamed";
        return { desc: `initializer ${q(old)} renamed (its users now dangle)` };
      }
      if (how === 1) {
        const copy = withFields(clone(TensorProtoSchema, t), { dims: [1n], rawData: new Uint8Array(4) as Uint8Array<ArrayBuffer>, dataType: DT.FLOAT });
        g.initializer.push(copy);
        return { desc: `a second initializer named ${q(t.name)} with another shape` };
      }
      if (how === 2) {
        g.initializer.push(clone(TensorProtoSchema, t));
        return { desc: `initializer ${q(t.name)} listed twice` };
      }
      t.name = "";
      return { desc: `an initializer's name made empty` };
    },
  ],
  opset: [
    5,
    (m, r) => {
      const how = r.int(4);
      const def = m.opsetImport.find((o) => o.domain === "" || o.domain === "ai.onnx");
      if (how === 0 && def) {
        def.version = r.pick([0n, 1n, 6n, 7n, 9n, 23n, 99n, 1000n, 1001n, 2n ** 40n, -1n]);
        return { desc: `default opset set to ${def.version}` };
      }
      if (how === 1) {
        m.opsetImport = m.opsetImport.filter((o) => o !== def);
        return { desc: "default opset import removed" };
      }
      if (how === 2) {
        m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: "", version: r.pick([7n, 11n, 13n, 17n]) }));
        return { desc: "default opset imported twice" };
      }
      m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: r.pick(["com.microsoft", "x".repeat(1000), "ai.onnx.ml", "\u0000"]), version: r.pick([1n, 0n, 2n ** 40n]) }));
      return { desc: "another opset domain imported" };
    },
  ],
  irVersion: [
    3,
    (m, r) => {
      m.irVersion = r.pick([0n, 1n, 2n, 3n, 4n, 9n, 10n, 11n, 12n, 13n, 64n, 65n, 2n ** 40n, -1n]);
      return { desc: `IR version set to ${m.irVersion}` };
    },
  ],
  opType: [
    6,
    (m, r) => {
      const all = nodesOf(m);
      if (all.length === 0) return undefined;
      const { n } = r.pick(all);
      const before = n.opType;
      n.opType = r.pick(["Conv", "Gemm", "MatMul", "ConvTranspose", "Max", "Concat", "Reshape", "LSTM", "GRU", "If", "Loop", "Scan", "QLinearConv", "MatMulInteger", "DequantizeLinear", "Identity", "Constant", "Foo", "Conv.x", "_", "Split", "Einsum", "Attention"]);
      return { desc: `${before} ${q(n.name)} made ${n.opType}` };
    },
  ],
  domain: [
    2,
    (m, r) => {
      const all = nodesOf(m);
      if (all.length === 0) return undefined;
      const { n } = r.pick(all);
      n.domain = r.pick(["com.microsoft", "custom.domain", "ai.onnx.ml", "ai.onnx", "local"]);
      return { desc: `${n.opType} ${q(n.name)} put in domain ${n.domain}` };
    },
  ],
  metadata: [
    5,
    (m, r) => {
      const key = r.pick(["ssvq.config", "ssvq.layers", "ssvq.version", "other", ""]);
      const deep = "[".repeat(r.pick([100, 10000, 200000]));
      const value = r.pick([
        "{",
        "null",
        "[]",
        "{}",
        '{"mode":"ssvq","k":-1,"d":0}',
        '{"mode":"vq","k":1e308,"d":1e308}',
        '[{"name":"w1","k":16,"d":4,"bits":1e999}]',
        '{"__proto__":{"polluted":1}}',
        deep,
        "x".repeat(1000000),
        "\u001b[2J",
      ]);
      if (r.chance(0.3)) {
        m.docString = value;
        return { desc: `model doc_string set (${value.length} characters)`, keepsValid: true };
      }
      const existing = m.metadataProps.find((p) => p.key === key);
      if (existing && r.chance(0.7)) existing.value = value;
      else m.metadataProps.push(create(StringStringEntryProtoSchema, { key, value }));
      return { desc: `metadata ${q(key)} set to ${q(value)}`, keepsValid: true };
    },
  ],
  nastyName: [
    4,
    (m, r) => {
      const all = nodesOf(m);
      const name = r.pick(WEIRD_NAMES);
      const how = r.int(3);
      if (how === 0 && m.graph!.initializer.length > 0) {
        const t = r.pick(m.graph!.initializer);
        const old = t.name;
        t.name = name;
        for (const { n } of all) n.input = n.input.map((x) => (x === old ? name : x));
        for (const v of m.graph!.input) if (v.name === old) v.name = name;
        return { desc: `initializer ${q(old)} renamed to a ${name.length}-character name`, keepsValid: name !== "" && !m.graph!.initializer.some((x) => x !== t && x.name === name) };
      }
      if (how === 1 && all.length > 0) {
        const { n } = r.pick(all);
        n.name = name;
        return { desc: `node ${n.opType} renamed to a ${name.length}-character name`, keepsValid: true };
      }
      m.producerName = name;
      return { desc: `producer name set to a ${name.length}-character name`, keepsValid: true };
    },
  ],
  graphIO: [
    4,
    (m, r) => {
      const g = m.graph!;
      const how = r.int(4);
      if (how === 0) {
        g.output = [];
        return { desc: "graph outputs removed" };
      }
      if (how === 1 && g.output.length > 0) {
        g.output[0]!.name = "not_produced";
        return { desc: "graph output names a value nothing produces" };
      }
      if (how === 2 && g.input.length > 0) {
        g.input.push(clone(ValueInfoProtoSchema, g.input[0]!));
        return { desc: "graph input listed twice" };
      }
      g.input = [];
      return { desc: "graph inputs removed" };
    },
  ],
  valueInfo: [
    2,
    (m, r) => {
      const g = m.graph!;
      const produced = g.node.flatMap((n) => n.output).filter((x) => x !== "");
      if (produced.length === 0) return undefined;
      const name = r.pick(produced);
      g.valueInfo.push(valueInfo(name, r.pick([[1], [0, -1], [1, 99999999]]), r.pick([DT.FLOAT, DT.INT64, DT.STRING, 0])));
      return { desc: `value_info for ${q(name)} with a wrong type or shape` };
    },
  ],
  recursiveFunction: [
    2,
    (m, r) => {
      const g = m.graph!;
      const fname = "selfcall";
      const body = node(fname, ["a"], ["b"]);
      body.domain = "local";
      m.functions.push(create(FunctionProtoSchema, { name: fname, domain: "local", input: ["a"], output: ["b"], node: [body], opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })] }));
      m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: "local", version: 1n }));
      const first = g.input[0]?.name ?? "x";
      const call = node(fname, [first], ["fn_out"], {}, "call_selfcall");
      call.domain = "local";
      g.node.splice(r.int(g.node.length + 1), 0, call);
      return { desc: "a local function that calls itself, used by a node" };
    },
  ],
  subgraphBreak: [
    3,
    (m, r) => {
      const ifs = nodesOf(m).filter((x) => x.n.opType === "If" || x.n.opType === "Loop" || x.n.opType === "Scan");
      const all = nodesOf(m);
      if (ifs.length === 0) {
        if (all.length === 0) return undefined;
        // Give an ordinary node a graph attribute.
        const { n } = r.pick(all);
        n.attribute.push(create(AttributeProtoSchema, { name: "body", type: AT.GRAPH, g: graph({ nodes: [], inputs: [], outputs: [] }) }));
        return { desc: `${n.opType} ${q(n.name)} given a graph attribute` };
      }
      const { n } = r.pick(ifs);
      const how = r.int(4);
      if (how === 0) {
        n.attribute = n.attribute.filter((a) => a.name !== "else_branch" && a.name !== "body");
        return { desc: `${n.opType} ${q(n.name)} lost a branch` };
      }
      if (how === 1) {
        for (const a of n.attribute) if (a.g) a.g.output = [];
        return { desc: `${n.opType} ${q(n.name)} branches declare no outputs` };
      }
      if (how === 2) {
        for (const a of n.attribute) if (a.g) a.g.node.push(node("Identity", ["x"], [n.output[0] ?? "y"]));
        return { desc: `${n.opType} ${q(n.name)} branches redefine an outer value` };
      }
      for (const a of n.attribute) if (a.g) a.g = clone(GraphProtoSchema, m.graph!);
      return { desc: `${n.opType} ${q(n.name)} branches replaced by a copy of the main graph` };
    },
  ],
  constantNode: [
    3,
    (m, r) => {
      const g = m.graph!;
      const how = r.int(3);
      const t = floatTensor("cval", [4, 4], 77);
      if (how === 0) t.dims = [4n, 5n];
      else if (how === 1) t.dims = [2n ** 33n, 2n ** 33n];
      else t.rawData = new Uint8Array(0);
      const n = node("Constant", [], ["const_out"], { value: t }, "const_bad");
      const mm = g.node.find((x) => x.opType === "MatMul" || x.opType === "Gemm" || x.opType === "Conv");
      if (mm && r.chance(0.6)) mm.input[1] = "const_out";
      g.node.unshift(n);
      return { desc: `a Constant node with a [${t.dims.join(",")}] tensor of ${t.rawData.length} bytes${mm ? ` feeding ${mm.opType}` : ""}` };
    },
  ],
  sparseInit: [
    2,
    (m, r) => {
      const g = m.graph!;
      const values = floatTensor("sp", [3], 5);
      const indices = create(TensorProtoSchema, { name: "sp_idx", dims: [3n], dataType: DT.INT64, int64Data: [0n, r.pick([-1n, 99999999n, 2n ** 62n]), 1n] });
      g.sparseInitializer.push({ $typeName: "onnx.SparseTensorProto", values, indices, dims: [r.pick([4n, 0n, -1n, 2n ** 40n])] } as never);
      return { desc: "a sparse initializer with out-of-range indices" };
    },
  ],
  segment: [
    1,
    (m, r) => {
      const p = pickTensor(m, r);
      if (!p) return undefined;
      p.t.segment = { $typeName: "onnx.TensorProto.Segment", begin: r.pick([0n, -1n, 2n ** 62n]), end: r.pick([0n, 5n, -(2n ** 62n)]) } as never;
      return { desc: `${q(p.t.name)} given a segment` };
    },
  ],
  stringTensor: [
    2,
    (m, r, fx) => {
      const p = pickTensor(m, r);
      if (!p) return undefined;
      p.t.dataType = DT.STRING;
      p.t.stringData = Array.from({ length: r.pick([0, 1, 3]) }, () => new TextEncoder().encode("s") as Uint8Array<ArrayBuffer>);
      if (p.t.rawData.length > 0) fx.hostile ??= `tensor ${q(p.t.name)} is a string tensor with raw data`;
      return { desc: `${q(p.t.name)} made a string tensor` };
    },
  ],
  externalFlag: [
    2,
    (m, r, fx) => {
      const p = pickTensor(m, r);
      if (!p) return undefined;
      p.t.dataLocation = TensorProto_DataLocation.EXTERNAL;
      if (r.chance(0.5)) p.t.rawData = new Uint8Array(0);
      fx.hostile ??= `tensor ${q(p.t.name)} is external with no location`;
      return { desc: `${q(p.t.name)} marked external with no location` };
    },
  ],
  deepIf: [
    4,
    (m, r, fx) => {
      const depth = r.pick([2, 8, 16, 30, 31, 32, 33, 34, 40, 64, 65, 100]);
      wrapInIfs(m, depth);
      fx.wrong.push({ pattern: "damaged|truncated|not a valid protobuf|ends in the middle", why: "the model is valid ONNX, nested deep" });
      return { desc: `the graph wrapped in ${depth} nested Ifs`, keepsValid: true };
    },
  ],
};

/**
 * Moves the main graph into the then-branches of `depth` nested If nodes on a new bool input
 * `fuzz_cond`; each else-branch is a Constant per output (zeros of the declared shape, symbolic
 * dimensions as 1), so the model stays valid and grows linearly with the depth.
 */
export function wrapInIfs(m: ModelProto, depth: number): void {
  const g = m.graph!;
  const inits = new Set(g.initializer.map((t) => t.name));
  const realInputs = g.input.filter((v) => !inits.has(v.name));
  const outputs = g.output;
  let inner: GraphProto = withFields(clone(GraphProtoSchema, g), { name: `${g.name}_inner`, input: [] });
  for (let level = depth - 1; level >= 0; level--) {
    const outs = outputs.map((o) => withFields(clone(ValueInfoProtoSchema, o), { name: `${o.name}__L${level}` }));
    const elseOuts = outputs.map((o) => withFields(clone(ValueInfoProtoSchema, o), { name: `${o.name}__E${level}` }));
    const elseBranch = graph({
      name: `fuzz_else${level}`,
      nodes: outputs.map((o, k) => node("Constant", [], [elseOuts[k]!.name], { value: zerosLike(o, `fuzz_zero${level}_${k}`) })),
      inputs: [],
      outputs: elseOuts,
    });
    const ifNode = node("If", ["fuzz_cond"], outs.map((o) => o.name), { then_branch: inner, else_branch: elseBranch }, `fuzz_if${level}`);
    inner = graph({ name: `fuzz_level${level}`, nodes: [ifNode], inputs: [], outputs: outs });
  }
  m.graph = withFields(inner, { name: g.name, input: [...realInputs, valueInfo("fuzz_cond", [], DT.BOOL)] });
}

/** A zero float tensor shaped like a declared value (symbolic dimensions taken as 1). */
export function zerosLike(v: { type?: GraphProto["output"][number]["type"] }, name: string): TensorProto {
  const tt = v.type?.value.case === "tensorType" ? v.type.value.value : undefined;
  const dims = (tt?.shape?.dim ?? []).map((d) => (d.value.case === "dimValue" && d.value.value > 0n && d.value.value < 4096n ? Number(d.value.value) : 1));
  const count = dims.reduce((a, b) => a * b, 1);
  return create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.FLOAT, rawData: new Uint8Array(4 * Math.min(count, 1 << 20)) as Uint8Array<ArrayBuffer> });
}

export interface DrawnStructOp {
  name: string;
  seed: number;
}

export function drawStructOps(r: FuzzRng): DrawnStructOp[] {
  const n = r.weighted([
    [60, 1],
    [25, 2],
    [15, 3],
  ] as const);
  const entries = Object.entries(OPS).map(([name, [w]]) => [w, name] as const);
  return Array.from({ length: n }, () => ({ name: r.weighted(entries), seed: r.u32() }));
}

/** Applies one drawn operation; a result of undefined means it found nothing to change. */
export function applyStructOp(m: ModelProto, op: DrawnStructOp, fx: Effects, rngOf: (seed: number) => FuzzRng): StructResult | undefined {
  const entry = OPS[op.name];
  if (!entry) return undefined;
  return entry[1](m, rngOf(op.seed), fx);
}

