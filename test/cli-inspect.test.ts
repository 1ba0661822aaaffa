import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { encodeModel, StringStringEntryProtoSchema, TensorProto_DataLocation, TensorProtoSchema } from "../src/core/onnx/proto.js";
import { VERSION } from "../src/version.js";
import { DT, graph, model, node, valueInfo } from "./helpers/models.js";
import { listing, ssvq } from "./helpers/cli.js";
import { fixture, repoRoot } from "./helpers/paths.js";

test("--version matches package.json; --help lists the commands; COMMAND --help shows usage", () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string };
  assert.equal(VERSION, pkg.version);
  const v = ssvq(["--version"]);
  assert.equal(v.status, 0);
  assert.equal(v.stdout.trim(), pkg.version);
  const h = ssvq(["--help"]);
  assert.equal(h.status, 0);
  assert.match(h.stdout, /inspect\s+show a model's interface/);
  const ih = ssvq(["inspect", "--help"]);
  assert.equal(ih.status, 0);
  assert.match(ih.stdout, /^Usage: ssvq inspect MODEL \[--json\]/);
  const bad = ssvq(["frobnicate"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown command "frobnicate"/);
});

interface InspectJson {
  producer: string;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  inputs: { name: string; dtype: string; shape: (number | string)[] }[];
  outputs: { name: string; shape: (number | string)[] }[];
  opCounts: Record<string, number>;
  parameters: { count: number };
  weights: { name: string; opType: string; rows: number; cols: number; dims: number[]; location: string; consumers: string[] }[];
  skipped: { name: string; opType: string; reason: string }[];
}

const inspectJson = (path: string): InspectJson => {
  const r = ssvq(["inspect", path, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, "");
  return JSON.parse(r.stdout) as InspectJson;
};

test("inspect fashion_lenet5: interface, operators, 61,706 parameters, five weights with layouts", () => {
  const s = inspectJson(fixture("fashion_lenet5.onnx"));
  assert.equal(s.producer, "pytorch");
  assert.equal(s.irVersion, 7);
  assert.deepEqual(s.opsets, [{ domain: "ai.onnx", version: 13 }]);
  assert.deepEqual(s.inputs, [{ name: "input", dtype: "float32", shape: ["batch", 1, 28, 28] }]);
  assert.deepEqual(s.outputs.map((o) => [o.name, o.shape]), [["logits", ["batch", 10]]]);
  assert.equal(s.parameters.count, 61706);
  assert.deepEqual(s.opCounts, { Relu: 4, Gemm: 3, Conv: 2, MaxPool: 2, Flatten: 1 });
  assert.deepEqual(
    s.weights.map((w) => [w.name, w.opType, w.rows, w.cols]),
    [
      ["c1.weight", "Conv", 6, 25],
      ["c2.weight", "Conv", 16, 150],
      ["f1.weight", "Gemm", 120, 400],
      ["f2.weight", "Gemm", 84, 120],
      ["f3.weight", "Gemm", 10, 84],
    ],
  );
  const text = ssvq(["inspect", fixture("fashion_lenet5.onnx")]);
  assert.equal(text.status, 0);
  assert.match(text.stdout, /c2\.weight\s+Conv \/c2\/Conv\s+\[16, 6, 5, 5\]\s+float32\s+16 x 150/);
});

test("inspect fashion_tinyvit: MatMul weights transposed to [N, K] rows", () => {
  const s = inspectJson(fixture("fashion_tinyvit.onnx"));
  const patch = s.weights.find((w) => w.opType === "MatMul" && w.dims[0] === 49)!;
  assert.deepEqual([patch.rows, patch.cols], [64, 49]);
  assert.equal(s.weights.length, 10);
  assert.equal(s.weights.filter((w) => w.opType === "MatMul").length, 7);
});

test("inspect Silero VAD (third-party): Conv weights used inside If branches, LSTM weights skipped", () => {
  const s = inspectJson(join(repoRoot, "node_modules", "@ricky0123", "vad-node", "dist", "silero_vad.onnx"));
  assert.equal(s.opCounts["If"], 9);
  assert.equal(s.weights.length, 36);
  assert.ok(s.weights.every((w) => w.opType === "Conv"));
  assert.ok(s.weights.every((w) => w.consumers.every((c) => / \(in If_\d+\.(then|else)_branch/.test(c))), "consumers should be in If branches");
  const lstm = s.skipped.filter((k) => k.opType === "LSTM");
  assert.equal(lstm.length, 24);
  assert.ok(lstm.every((k) => /out of scope/.test(k.reason)));
});

test("bad input: exit 2, one clear line on stderr, no stack trace, nothing written", () => {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bad-"));
  try {
    const lenet = readFileSync(fixture("fashion_lenet5.onnx"));
    writeFileSync(join(dir, "empty.onnx"), new Uint8Array(0));
    writeFileSync(join(dir, "truncated.onnx"), lenet.subarray(0, 100_000));
    let x = 12345;
    writeFileSync(join(dir, "random.onnx"), Uint8Array.from({ length: 4096 }, () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 24)));
    writeFileSync(join(dir, "text.onnx"), "# Not a model\nThis is a README renamed to .onnx.\n".repeat(20));
    const huge = create(TensorProtoSchema, { name: "huge", dims: [1000000n, 1000000n, 1000n], dataType: DT.FLOAT });
    const mk = (inits: ReturnType<typeof create<typeof TensorProtoSchema>>[]) =>
      encodeModel(model(graph({ nodes: [node("MatMul", ["x", inits[0]!.name], ["y"])], inputs: [valueInfo("x", [1, 4])], outputs: [valueInfo("y", [1, 4])], initializers: inits })));
    writeFileSync(join(dir, "huge.onnx"), mk([huge]));
    const ext = (location: string) =>
      create(TensorProtoSchema, {
        name: "w",
        dims: [4n, 4n],
        dataType: DT.FLOAT,
        dataLocation: TensorProto_DataLocation.EXTERNAL,
        externalData: [create(StringStringEntryProtoSchema, { key: "location", value: location })],
      });
    writeFileSync(join(dir, "outside.onnx"), mk([ext("../outside.bin")]));
    writeFileSync(join(dir, "missing.onnx"), mk([ext("weights.bin")]));
    copyFileSync(fixture("fashion_lenet5.onnx"), join(dir, "good.onnx"));
    const before = listing(dir);
    const cases: [string, RegExp][] = [
      ["empty.onnx", /empty \(0 bytes\)/],
      ["truncated.onnx", /truncated/],
      ["random.onnx", /not a readable ONNX model|not an ONNX model/],
      ["text.onnx", /text file/],
      ["huge.onnx", /more than this machine can hold/],
      ["outside.onnx", /\.\.\/outside\.bin.*must stay inside the model's folder/],
      ["missing.onnx", /weights\.bin.*does not exist/],
      ["no-such-file.onnx", /no such file/],
    ];
    for (const [file, message] of cases) {
      const r = ssvq(["inspect", join(dir, file)]);
      assert.equal(r.status, 2, `${file}: status ${r.status}, stderr ${r.stderr}`);
      assert.equal(r.stdout, "", file);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `${file}: ${r.stderr}`);
      assert.match(lines[0]!, /^ssvq inspect: /);
      assert.match(lines[0]!, message, file);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    }
    const verbose = ssvq(["inspect", join(dir, "truncated.onnx"), "--verbose"]);
    assert.equal(verbose.status, 2);
    assert.match(verbose.stderr, /\n\s+at /, "--verbose shows the stack");
    assert.deepEqual(listing(dir), before, "a command wrote into the folder");
    assert.ok(readFileSync(join(dir, "good.onnx")).equals(lenet));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
