/**
 * Bombs: inputs built to exhaust something. Length prefixes claiming gigabytes, nesting thousands deep
 * (made at the wire level, so the fuzzer's own encoder does not recurse), 10,000 tiny layers, 100,000
 * initializers, a node with 100,000 inputs, declared shapes of petabytes, an external tensor over 4 GiB
 * in a sparse file, tens of megabytes of doc string.
 */
import { toBinary } from "@bufbuild/protobuf";
import {
  create,
  GraphProtoSchema,
  NodeProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  ValueInfoProtoSchema,
  type GraphProto,
  type ModelProto,
} from "../core/onnx/proto.js";
import type { FileEntry, WrongMessage } from "./case.js";
import { chainModel, decodeLoose, DT, encode, graph, manyInitializersModel, model, node, smallMlp, valueInfo, zerosInit } from "./models.js";
import type { FuzzRng } from "./rng.js";
import { concat, lengthDelimited, lengthFields, stringField, tag, varint, varintField, withLength } from "./wire.js";

export interface BombOutcome {
  /** The model the bomb was built from when not the case's seed. */
  built?: string;
  files: FileEntry[];
  ops: string[];
  hostile?: string;
  wellFormed: boolean;
  wrong: WrongMessage[];
}

const DAMAGED = "damaged|truncated|not a valid protobuf|ends in the middle";

/**
 * A valid model with `depth` nested Ifs, written at the wire level in linear time: each level's graph
 * is laid out so that its then-branch (the next level) comes last, so the file is the levels' heads
 * one after the other, then the innermost graph (a MatMul); each else branch is a Constant.
 */
export function deepIfBytes(depth: number): Uint8Array {
  const innermost = toBinaryGraph(
    create(GraphProtoSchema, {
      name: "inner",
      node: [node("MatMul", ["x", "w_inner"], ["y_in"], {}, "mm_inner")],
      initializer: [zerosInit("w_inner", [16, 16])],
      output: [valueInfo("y_in", [1, 16])],
    }),
  );
  const heads: Uint8Array[] = new Array(depth);
  let innerLen = innermost.length;
  const header = (field: number, len: number) => Uint8Array.from([...tag(field, 2), ...varint(len)]);
  for (let level = depth - 1; level >= 0; level--) {
    const out = `y${level}`;
    const elseG = toBinaryGraph(
      create(GraphProtoSchema, {
        name: `else${level}`,
        node: [node("Constant", [], [`e${level}`], { value: zerosInit(`z${level}`, [1, 16]) })],
        output: [valueInfo(`e${level}`, [1, 16])],
      }),
    );
    // AttributeProto: name = 1, g = 6, type = 20 (GRAPH = 5); the then branch's g field comes last.
    const elseAttr = concat([stringField(1, "else_branch"), varintField(20, 5), lengthDelimited(6, elseG)]);
    const thenHead = concat([stringField(1, "then_branch"), varintField(20, 5), header(6, innerLen)]);
    const thenLen = thenHead.length + innerLen;
    // NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5.
    const nodeHead = concat([stringField(1, "cond"), stringField(2, out), stringField(3, `if${level}`), stringField(4, "If"), lengthDelimited(5, elseAttr), header(5, thenLen), thenHead]);
    const nodeLen = nodeHead.length + innerLen;
    // GraphProto: node = 1, name = 2, input = 11, output = 12; the node comes last.
    const graphFields = [stringField(2, `level${level}`)];
    if (level === 0) graphFields.push(lengthDelimited(11, encodeValueInfo("x")), lengthDelimited(11, encodeValueInfo("cond", DT.BOOL, [])));
    graphFields.push(lengthDelimited(12, encodeValueInfo(out)), header(1, nodeLen), nodeHead);
    const head = concat(graphFields);
    heads[level] = head;
    innerLen = head.length + innerLen;
  }
  // ModelProto: ir_version = 1, producer_name = 2, opset_import = 8 (version = 2), graph = 7.
  return concat([varintField(1, 7), stringField(2, "ssvq-fuzz"), lengthDelimited(8, varintField(2, 13)), header(7, innerLen), ...heads, innermost]);
}

function encodeValueInfo(name: string, elemType: number = DT.FLOAT, dims: number[] = [1, 16]): Uint8Array {
  return toBinary(ValueInfoProtoSchema, valueInfo(name, dims, elemType));
}

/** A graph input whose type is a sequence of sequences ... `depth` deep (TypeProto recursion), linear time. */
function deepTypeBytes(depth: number): Uint8Array {
  // TypeProto: tensor_type = 1 (elem_type = 1), sequence_type = 4 (TypeProto.Sequence: elem_type = 1).
  const core = lengthDelimited(1, varintField(1, DT.FLOAT));
  const heads: Uint8Array[] = new Array(depth);
  let len = core.length;
  for (let i = depth - 1; i >= 0; i--) {
    const inner = Uint8Array.from([...tag(1, 2), ...varint(len)]);
    const outer = Uint8Array.from([...tag(4, 2), ...varint(inner.length + len)]);
    heads[i] = concat([outer, inner]);
    len += heads[i]!.length;
  }
  const t = concat([...heads, core]);
  const vi = concat([stringField(1, "seq_in"), lengthDelimited(2, t)]);
  const base = encode(smallMlp());
  // One more graph input (field 11) appended to the model's graph (field 7).
  const fields = lengthFields(base, 0);
  const g = fields.find((f) => f.field === 7)!;
  const graphBody = concat([base.subarray(g.bodyStart, g.bodyEnd), lengthDelimited(11, vi)]);
  return concat([base.subarray(0, g.lengthAt - 1), lengthDelimited(7, graphBody), base.subarray(g.bodyEnd)]);
}

export function bombCase(seedBytes: Uint8Array, seedName: string, r: FuzzRng): BombOutcome & { model?: Uint8Array } {
  const files: FileEntry[] = [];
  const kind = r.weighted([
    [6, "lengthPrefix"],
    [4, "deepIf"],
    [2, "deepType"],
    [3, "chain"],
    [2, "manyInitializers"],
    [3, "hugeInputShape"],
    [2, "hugeInitializerDims"],
    [2, "hugeExternal"],
    [1, "wideNode"],
    [1, "manyDims"],
    [1, "hugeDoc"],
    [1, "manyOutputs"],
  ] as const);
  const wrongDamaged = [{ pattern: DAMAGED, why: "the model is valid ONNX" }];
  const out = (model: Uint8Array, ops: string[], extra: Partial<BombOutcome> = {}) => ({
    files: [...files, { path: "model/model.onnx", kind: "file" as const, data: model }],
    ops,
    wellFormed: false,
    wrong: [],
    ...extra,
  });
  switch (kind) {
    case "lengthPrefix": {
      const fields = lengthFields(seedBytes, 3).filter((f) => f.depth <= 2);
      if (fields.length === 0) return out(seedBytes, ["no length-delimited field found"]);
      const f = r.pick(fields);
      const claimed = r.pick([2n ** 31n - 1n, 2n ** 32n, 2n ** 32n + 7n, 2n ** 40n, 2n ** 63n - 1n, 2n ** 64n - 1n]);
      return out(withLength(seedBytes, f, claimed), [`the length prefix of field ${f.field} at depth ${f.depth} (of ${seedName}) claims ${claimed} bytes`], {
        hostile: `a length prefix claims ${claimed} bytes in a ${seedBytes.length}-byte file`,
      });
    }
    case "deepIf": {
      const depth = r.pick([100, 1000, 10000, 30000]);
      return out(deepIfBytes(depth), [`${depth} nested If nodes (valid ONNX)`], { wellFormed: true, wrong: wrongDamaged, built: "generated" });
    }
    case "deepType": {
      const depth = r.pick([50, 1000, 100000]);
      return out(deepTypeBytes(depth), [`a graph input typed as sequences nested ${depth} deep`], { built: "mlp" });
    }
    case "chain": {
      const n = r.pick([2000, 10000, 10000, 20000]);
      return out(encode(chainModel(n)), [`${n} MatMul layers in a chain`], { wellFormed: true, built: "generated" });
    }
    case "manyInitializers": {
      const n = r.pick([20000, 100000]);
      return out(encode(manyInitializersModel(n)), [`${n} initializers`], { wellFormed: true, built: "mlp" });
    }
    case "hugeInputShape": {
      if (r.chance(0.5)) {
        // A model onnxruntime accepts with such an input: x [1, 65536, 65536, 65536] MatMul w [65536, 4].
        const m = model(
          graph({
            nodes: [node("MatMul", ["x", "w"], ["y"], {}, "mm")],
            inputs: [valueInfo("x", [1, 65536, 65536, 65536])],
            outputs: [valueInfo("y", [1, 65536, 65536, 4])],
            initializers: [zerosInit("w", [65536, 4])],
          }),
        );
        return out(encode(m), ["input x declared [1, 65536, 65536, 65536], feeding a MatMul onnxruntime accepts"], { wellFormed: true, built: "generated" });
      }
      const m = decodeOr(seedBytes, smallMlp);
      const g = m.graph!;
      const inits = new Set(g.initializer.map((t) => t.name));
      const input = g.input.find((v) => !inits.has(v.name));
      const dims = r.pick([[1n, 65536n, 65536n, 65536n], [2n ** 31n, 2n ** 31n], [1n, 2n ** 40n], [2n ** 62n], [1n, 3n, 100000n, 100000n]]);
      if (!input || input.type?.value.case !== "tensorType") return out(seedBytes, ["no tensor input"]);
      input.type.value.value.shape = create(TensorShapeProtoSchema, { dim: dims.map((d) => create(TensorShapeProto_DimensionSchema, { value: { case: "dimValue", value: d } })) });
      return out(encode(m), [`input ${JSON.stringify(input.name)} of ${seedName} declared [${dims.join(", ")}]`]);
    }
    case "hugeInitializerDims": {
      const m = decodeOr(seedBytes, smallMlp);
      const t = m.graph!.initializer.find((x) => x.rawData.length > 0);
      if (!t) return out(seedBytes, ["no initializer with data"]);
      t.dims = r.pick([[65536n, 65536n, 65536n], [2n ** 62n], [2n ** 31n, 2n ** 31n, 2n ** 31n, 2n ** 31n], [4n, 2n ** 61n]]);
      return out(encode(m), [`initializer ${JSON.stringify(t.name)} of ${seedName} declared [${t.dims.join(", ")}] over ${t.rawData.length} bytes`], {
        hostile: "a tensor declares far more data than it carries",
      });
    }
    case "hugeExternal": {
      const m = smallMlp();
      const count = 2 ** 30 + r.pick([1, 4, 1024]);
      const bytes = count * 4;
      const withLen = r.chance(0.5);
      const t = create(TensorProtoSchema, {
        name: "huge",
        dims: [BigInt(count)],
        dataType: DT.FLOAT,
        dataLocation: TensorProto_DataLocation.EXTERNAL,
        externalData: [
          create(StringStringEntryProtoSchema, { key: "location", value: "huge.bin" }),
          ...(withLen ? [create(StringStringEntryProtoSchema, { key: "length", value: String(bytes) })] : []),
        ],
      });
      const used = r.chance(0.5);
      m.graph!.initializer.push(t);
      if (used) {
        // huge feeds a ReduceSum whose result is added to the output, so it is not dead.
        m.graph!.node.push(
          create(NodeProtoSchema, { opType: "ReduceSum", input: ["huge"], output: ["huge_sum"], name: "reduce_huge" }),
        );
        m.graph!.output.push(valueInfo("huge_sum", [1]));
      }
      files.push({ path: "model/huge.bin", kind: "sparse", size: bytes });
      return out(encode(m), [`an external tensor of ${bytes} bytes (sparse file, ${withLen ? "with" : "without"} length, ${used ? "used" : "unused"})`], { wellFormed: true, built: "mlp" });
    }
    case "wideNode": {
      const m = smallMlp();
      const n = r.pick([10000, 100000]);
      m.graph!.node.push(node("Concat", Array.from({ length: n }, () => "x"), ["wide"], { axis: 0 }, "wide_concat"));
      m.graph!.output.push(valueInfo("wide", [n, 64]));
      return out(encode(m), [`a Concat with ${n} inputs`], { wellFormed: true, built: "mlp" });
    }
    case "manyDims": {
      const m = smallMlp();
      const n = r.pick([100000, 1000000]);
      m.graph!.initializer.push(create(TensorProtoSchema, { name: "many_dims", dims: Array.from({ length: n }, () => 1n), dataType: DT.FLOAT, rawData: new Uint8Array(4) as Uint8Array<ArrayBuffer> }));
      return out(encode(m), [`an initializer with ${n} dimensions of 1`], { built: "mlp" });
    }
    case "hugeDoc": {
      const m = decodeOr(seedBytes, smallMlp);
      const mb = r.pick([20, 60]);
      m.docString = "d".repeat(mb * 2 ** 20);
      return out(encode(m), [`a ${mb} MB doc string on ${seedName}`], { wellFormed: true });
    }
    case "manyOutputs": {
      const m = smallMlp();
      const n = r.pick([10000, 50000]);
      for (let i = 0; i < n; i++) m.graph!.output.push(valueInfo("y", ["batch", 16]));
      return out(encode(m), [`the output listed ${n} times`], { built: "mlp" });
    }
  }
}

function decodeOr(bytes: Uint8Array, fallback: () => ModelProto): ModelProto {
  try {
    return decodeLoose(bytes);
  } catch {
    return fallback();
  }
}

const toBinaryGraph = (g: GraphProto): Uint8Array => toBinary(GraphProtoSchema, g);

