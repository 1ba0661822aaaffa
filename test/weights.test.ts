import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { InputError } from "../src/core/errors.js";
import { encodeModel, StringStringEntryProtoSchema, TensorProto_DataLocation, TensorProtoSchema } from "../src/core/onnx/proto.js";
import { tensorToFloat32 } from "../src/core/onnx/tensor-data.js";
import { findWeights, type WeightInfo } from "../src/core/onnx/weights.js";
import { loadModel } from "../src/io/model-file.js";
import { DT, floatTensor, graph, model, node, randomTensor, randomValues, smallCnn, valueInfo } from "./helpers/models.js";

const byName = (ws: WeightInfo[], name: string): WeightInfo => {
  const w = ws.find((x) => x.name === name);
  assert.ok(w, `weight ${name} not found among ${ws.map((x) => x.name).join(", ")}`);
  return w;
};

test("initializer weights of Conv, Gemm and MatMul with their row layouts; biases are not weights", () => {
  const { weights, skipped } = findWeights(smallCnn());
  assert.deepEqual(weights.map((w) => w.name).sort(), ["w1", "w2", "w3", "w4"]);
  assert.deepEqual(skipped, []);
  assert.deepEqual(byName(weights, "w1").layout, { kind: "conv", rows: 8, cols: 27, groups: 1, transposed: false });
  assert.deepEqual(byName(weights, "w2").layout, { kind: "conv", rows: 16, cols: 72, groups: 1, transposed: false });
  assert.deepEqual(byName(weights, "w3").layout, { kind: "gemm", rows: 32, cols: 144, groups: 1, transposed: false });
  assert.deepEqual(byName(weights, "w4").layout, { kind: "matmul", rows: 10, cols: 32, groups: 1, transposed: true });
  assert.equal(byName(weights, "w1").consumers[0]!.node, "conv1");
});

test("float16 and bfloat16 weights are found and read as float32", () => {
  for (const [dt, tol] of [
    [DT.FLOAT16, 1e-3],
    [DT.BFLOAT16, 8e-3],
  ] as const) {
    const m = smallCnn({ dataType: dt });
    const w = byName(findWeights(m).weights, "w2");
    assert.equal(w.dtype, dt);
    const values = tensorToFloat32(w.tensor);
    const ref = randomValues(16 * 8 * 9, 3);
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(values[i]! - ref[i]!) <= tol * Math.max(1, Math.abs(ref[i]!) * 10), `${dt}: ${values[i]} vs ${ref[i]}`);
  }
});

test("Constant-node weights, Identity aliases and shared tensors are found once", () => {
  const w = randomTensor("", [4, 2, 3, 3], 7);
  const m = model(
    graph({
      nodes: [
        node("Constant", [], ["wc"], { value: w }),
        node("Identity", ["wc"], ["wc_alias"]),
        node("Identity", ["wc_alias"], ["wc_alias2"]),
        node("Conv", ["x", "wc_alias2"], ["a"], { pads: [1, 1, 1, 1] }, "convA"),
        node("Conv", ["x", "wc"], ["b"], { pads: [1, 1, 1, 1] }, "convB"),
        node("Add", ["a", "b"], ["y"]),
      ],
      inputs: [valueInfo("x", [1, 2, 5, 5])],
      outputs: [valueInfo("y", [1, 4, 5, 5])],
    }),
  );
  const { weights } = findWeights(m);
  assert.equal(weights.length, 1);
  const wc = weights[0]!;
  assert.equal(wc.name, "wc");
  assert.equal(wc.storage, "constant");
  assert.deepEqual(wc.consumers.map((c) => [c.node, c.via]), [
    ["convA", ["wc_alias", "wc_alias2"]],
    ["convB", []],
  ]);
});

test("weights inside If branches: the branch's own initializer and an outer-scope one", () => {
  const thenBranch = graph({
    name: "then",
    nodes: [node("Conv", ["x", "w_outer"], ["t"], {}, "conv_then")],
    inputs: [],
    outputs: [valueInfo("t", [1, 4, 3, 3])],
  });
  const elseBranch = graph({
    name: "else",
    nodes: [node("Conv", ["x", "w_inner"], ["e"], {}, "conv_else")],
    inputs: [],
    outputs: [valueInfo("e", [1, 4, 3, 3])],
    initializers: [randomTensor("w_inner", [4, 2, 3, 3], 2)],
  });
  const m = model(
    graph({
      nodes: [node("If", ["cond"], ["y"], { then_branch: thenBranch, else_branch: elseBranch }, "if0")],
      inputs: [valueInfo("cond", [], DT.BOOL), valueInfo("x", [1, 2, 5, 5])],
      outputs: [valueInfo("y", [1, 4, 3, 3])],
      initializers: [randomTensor("w_outer", [4, 2, 3, 3], 1)],
    }),
  );
  const { weights } = findWeights(m);
  const outer = byName(weights, "w_outer");
  assert.equal(outer.graphPath, "");
  assert.equal(outer.consumers[0]!.graphPath, "if0.then_branch");
  const inner = byName(weights, "w_inner");
  assert.equal(inner.graphPath, "if0.else_branch");
});

test("Gemm transB=0, ConvTranspose with groups and depthwise Conv layouts", () => {
  const m = model(
    graph({
      nodes: [
        node("Gemm", ["x", "wg"], ["g"], {}, "gemm"),
        node("ConvTranspose", ["img", "wt"], ["ct"], { group: 2 }, "deconv"),
        node("Conv", ["img", "wd"], ["dw"], { group: 4 }, "depthwise"),
      ],
      inputs: [valueInfo("x", [1, 6]), valueInfo("img", [1, 4, 5, 5])],
      outputs: [valueInfo("g", [1, 5]), valueInfo("ct", [1, 6, 6, 6]), valueInfo("dw", [1, 4, 3, 3])],
      initializers: [randomTensor("wg", [6, 5], 1), randomTensor("wt", [4, 3, 2, 2], 2), randomTensor("wd", [4, 1, 3, 3], 3)],
    }),
  );
  const { weights } = findWeights(m);
  assert.deepEqual(byName(weights, "wg").layout, { kind: "gemm", rows: 5, cols: 6, groups: 1, transposed: true });
  // ConvTranspose [Cin=4, Cout/g=3, 2, 2], g=2: per group (3*2*2) rows by 2 columns.
  assert.deepEqual(byName(weights, "wt").layout, { kind: "convtranspose", rows: 24, cols: 2, groups: 2, transposed: true });
  assert.deepEqual(byName(weights, "wd").layout, { kind: "conv", rows: 4, cols: 9, groups: 4, transposed: false });
});

test("recurrent, quantized, integer and conflicting weights are skipped with the reason", () => {
  const i8 = create(TensorProtoSchema, { name: "wq", dims: [4n, 2n, 3n, 3n], dataType: DT.INT8, rawData: new Uint8Array(72) as Uint8Array<ArrayBuffer> });
  const m = model(
    graph({
      nodes: [
        node("LSTM", ["seq", "lw", "lr"], ["h"], { hidden_size: 3 }, "lstm"),
        node("DequantizeLinear", ["wq", "scale"], ["wdq"]),
        node("Conv", ["img", "wdq"], ["c"], {}, "qconv"),
        node("MatMul", ["x", "shared"], ["m"], {}, "mm"),
        node("Gemm", ["x", "shared"], ["gm"], { transB: 1 }, "gemm"),
      ],
      inputs: [valueInfo("seq", [2, 1, 4]), valueInfo("img", [1, 2, 5, 5]), valueInfo("x", [4, 4])],
      outputs: [valueInfo("h", [2, 1, 1, 3]), valueInfo("c", [1, 4, 3, 3]), valueInfo("m", [4, 4]), valueInfo("gm", [4, 4])],
      initializers: [
        randomTensor("lw", [1, 12, 4], 1),
        randomTensor("lr", [1, 12, 3], 2),
        i8,
        floatTensor("scale", [], [0.1]),
        randomTensor("shared", [4, 4], 3),
      ],
    }),
  );
  const { weights, skipped } = findWeights(m);
  assert.deepEqual(weights, []);
  const reason = (n: string) => skipped.find((s) => s.name === n)?.reason ?? "";
  assert.match(reason("lw"), /LSTM weights are out of scope/);
  assert.match(reason("lr"), /LSTM/);
  assert.match(reason("wq"), /already quantized \(DequantizeLinear/);
  assert.match(reason("shared"), /different layouts/);
});

/** A model whose Conv weight lives in an external file at `location`. */
function externalModel(dir: string, location: string, values: Float32Array, offset = 16): string {
  const t = create(TensorProtoSchema, {
    name: "wx",
    dims: [4n, 2n, 3n, 3n],
    dataType: DT.FLOAT,
    dataLocation: TensorProto_DataLocation.EXTERNAL,
    externalData: [
      create(StringStringEntryProtoSchema, { key: "location", value: location }),
      create(StringStringEntryProtoSchema, { key: "offset", value: String(offset) }),
      create(StringStringEntryProtoSchema, { key: "length", value: String(values.byteLength) }),
    ],
  });
  const m = model(
    graph({
      nodes: [node("Conv", ["x", "wx"], ["y"], {}, "conv")],
      inputs: [valueInfo("x", [1, 2, 5, 5])],
      outputs: [valueInfo("y", [1, 4, 3, 3])],
      initializers: [t],
    }),
  );
  const path = join(dir, "model.onnx");
  writeFileSync(path, encodeModel(m));
  return path;
}

test("external data is read from the model's folder", () => {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-ext-"));
  try {
    const values = randomValues(72, 9);
    const data = new Uint8Array(16 + values.byteLength);
    data.set(new Uint8Array(values.buffer), 16);
    writeFileSync(join(dir, "weights.bin"), data);
    const loaded = loadModel(externalModel(dir, "weights.bin", values));
    const [w] = findWeights(loaded.model).weights;
    assert.equal(w!.external?.location, "weights.bin");
    assert.deepEqual(tensorToFloat32(w!.tensor, loaded.readExternal), values);
    assert.deepEqual(loaded.externalFiles, ["weights.bin"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("external data outside the model's folder, missing or too short is refused", () => {
  const root = mkdtempSync(join(tmpdir(), "ssvq-ext-"));
  try {
    const dir = join(root, "m");
    const values = randomValues(72, 9);
    const data = new Uint8Array(16 + values.byteLength);
    writeFileSync(join(root, "outside.bin"), data);
    mkdirSync(dir);
    symlinkSync(join(root, "outside.bin"), join(dir, "link.bin"));
    writeFileSync(join(dir, "short.bin"), new Uint8Array(20));
    const cases: [string, RegExp][] = [
      ["../outside.bin", /goes up out of the folder/],
      [join(root, "outside.bin"), /absolute path/],
      ["link.bin", /links outside the model's folder/],
      ["missing.bin", /does not exist next to the model/],
      ["short.bin", /has only 20 bytes/],
    ];
    for (const [location, why] of cases) {
      const path = externalModel(dir, location, values);
      assert.throws(() => loadModel(path), (e: unknown) => e instanceof InputError && why.test(e.message), location);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("a tensor declaring more memory than the machine has is refused before any allocation", () => {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-huge-"));
  try {
    const huge = create(TensorProtoSchema, { name: "huge", dims: [100000n, 100000n, 1000n], dataType: DT.FLOAT });
    const m = model(graph({ nodes: [node("MatMul", ["x", "huge"], ["y"])], inputs: [valueInfo("x", [1, 100000])], outputs: [valueInfo("y", [1, 1])], initializers: [huge] }));
    const path = join(dir, "huge.onnx");
    writeFileSync(path, encodeModel(m));
    assert.throws(() => loadModel(path), /more than this machine can hold/);
    // A raw_data length that disagrees with the shape: damaged.
    const bad = floatTensor("w", [2, 2], [1, 2, 3, 4]);
    bad.rawData = bad.rawData.subarray(0, 12);
    const m2 = model(graph({ nodes: [node("MatMul", ["x", "w"], ["y"])], inputs: [valueInfo("x", [1, 2])], outputs: [valueInfo("y", [1, 2])], initializers: [bad] }));
    writeFileSync(path, encodeModel(m2));
    assert.throws(() => loadModel(path), /carries 12 bytes/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

