/**
 * Reading a compressed model back from the file alone (`ssvq.*` metadata and decode subgraphs): the
 * codebooks, usage, bits and signs must equal what the compressor reported, for every mode, dtype and
 * storage the writer produces, and a damaged file must give problems, not exceptions.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  decodeModel,
  encodeModel,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  type ModelProto,
  type TensorProto,
} from "../src/core/onnx/proto.js";
import { readBackCompression, type CompressionReadback, type LayerReadback } from "../src/core/onnx/readback.js";
import { tensorToFloat32 } from "../src/core/onnx/tensor-data.js";
import { walkTensors } from "../src/core/onnx/walk.js";
import { findWeights } from "../src/core/onnx/weights.js";
import type { LayerReport, Report } from "../src/core/report.js";
import { inspectFile, type ModelInspection } from "../src/io/inspect-file.js";
import { DT, floatTensor, graph, model, node, randomTensor, smallCnn, valueInfo } from "./helpers/models.js";
import { ssvq } from "./helpers/cli.js";
import { maxAbsDiff, runModel } from "./helpers/ort.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-readback-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

function compress(input: string, name: string, args: string[]): { out: string; report: Report } {
  const out = join(work, name);
  const r = ssvq(["compress", input, "--out", out, "--json", "--force", ...args]);
  assert.equal(r.status, 0, r.stderr);
  return { out, report: JSON.parse(r.stdout) as Report };
}

function inspectJson(path: string): ModelInspection {
  const r = ssvq(["inspect", path, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, "");
  return JSON.parse(r.stdout) as ModelInspection;
}

const readBack = (path: string): CompressionReadback => {
  const c = readBackCompression(decodeModel(readFileSync(path)));
  assert.ok(c, `${path}: no read-back`);
  return c;
};

const layerOf = (c: CompressionReadback, l: Pick<LayerReport, "name" | "graphPath">): LayerReadback => {
  const found = c.layers.filter((x) => x.name === l.name && x.graphPath === l.graphPath);
  assert.equal(found.length, 1, `layer ${l.name} in "${l.graphPath}": ${found.length} read back`);
  return found[0]!;
};

const writeModel = (name: string, m: ModelProto): string => {
  const p = join(work, name);
  writeFileSync(p, encodeModel(m));
  return p;
};

/** Expected index planes (width, shift) for k: 4+2 for k=64, one 8-bit plane for k=256, ... */
const PLANES: Record<number, [number, number][]> = { 16: [[4, 0]], 64: [[4, 0], [2, 4]], 256: [[8, 0]] };
/** Bytes of the shared lookup tables each configuration needs (sign [256,8] int8; u4 [256,2], u2 [256,4] uint8). */
// Shared tables of the lean format: int32 field tables [256, 8/w] (shift or sign offset baked in), the
// [2^d, 1, d] float sign patterns, the int8 nibble table of INT4. A ConvTranspose keeps the first format
// (uint8 field tables, the [256, 8] int8 sign table).
const LUT_BYTES: Record<string, number> = { "ssvq16": 256 + 2048 + 2048, "ssvq64": 256 + 2048 + 4096 + 2048, "vq16": 2048, "vq256": 0, int4: 512, int8: 0 };
const FIRST_FORMAT_LUT_BYTES: Record<string, number> = { "ssvq16": 512 + 2048, "ssvq64": 512 + 1024 + 2048, "vq16": 512, "vq256": 0, int4: 512, int8: 0 };
const DTYPE_BYTES: Record<string, number> = { float32: 4, float16: 2, bfloat16: 2 };

/** Everything the read-back says must equal what the compressor reported (or follow from it). */
function checkAgainstReport(c: CompressionReadback, report: Report, what: string): void {
  assert.deepEqual(c.problems, [], what);
  assert.equal(c.version, report.tool.version);
  for (const key of ["mode", "k", "d", "seed", "kmeansIters", "format", "finetune"] as const) assert.equal(c.config?.[key], report.config[key], `${what}: config ${key}`);
  assert.equal(c.layers.length, report.layers.length, what);
  const seenTensors = new Set<string>();
  for (const l of report.layers) {
    const b = layerOf(c, l);
    const at = `${what} ${l.name}`;
    assert.equal(b.problem, undefined, `${at}: ${b.problem}`);
    assert.equal(b.stored, "subgraph", at);
    assert.equal(b.mode, l.mode, at);
    assert.equal(b.opType, l.opType, at);
    assert.deepEqual(b.consumers.map((x) => x.node), l.consumers, at);
    assert.deepEqual(b.dims, l.dims, at);
    assert.equal(b.dtype, l.dtype, at);
    assert.deepEqual([b.rows, b.cols, b.groups, b.weights], [l.rows, l.cols, l.groups, l.bits.weights], at);
    // Bits: from the stored tensors, exactly the report's count; the bytes only round each plane up.
    assert.equal(b.bits!.fieldBits, l.bits.totalBits, at);
    assert.equal(b.bits!.bitsPerWeight, l.bits.bitsPerWeight, at);
    assert.equal(b.bits!.metadataBitsPerWeight, l.bits.bitsPerWeight, at);
    assert.equal(b.bits!.matchesMetadata, true, at);
    const bytes = b.bytes!;
    assert.equal(bytes.total, bytes.codebook + bytes.indices + bytes.signs + bytes.values + bytes.scales, at);
    assert.equal(b.bits!.storedBits, 8 * bytes.total, at);
    // INT8 in the lean format reads no shape: its values are stored in the weight's dims.
    assert.ok(bytes.other >= (l.mode === "int8" ? 0 : 1) && bytes.other < 200, `${at}: ${bytes.other} bytes of shapes and scalars`);
    for (const t of b.tensors) assert.ok(!seenTensors.has(t.name), `${at}: ${t.name} read by two layers`);
    b.tensors.forEach((t) => seenTensors.add(t.name));
    if (l.mode === "ssvq" || l.mode === "vq") {
      const count = l.rows * Math.ceil(l.cols / l.d!);
      assert.deepEqual([b.k, b.d, b.paddedCols], [l.k, l.d, Math.ceil(l.cols / l.d!) * l.d!], at);
      assert.deepEqual(b.codebook, l.codebook, `${at}: codebook`);
      assert.deepEqual(b.usage, l.usage, `${at}: usage`);
      assert.deepEqual(b.unusedCodewords, l.usage!.flatMap((u, j) => (u === 0 ? [j] : [])), at);
      const planes = b.tensors.filter((t) => t.kind === "indices");
      assert.deepEqual(planes.map((t) => [t.width, t.shift]), PLANES[l.k!], `${at}: index planes`);
      assert.deepEqual([bytes.codebook, bytes.indices], [l.k! * l.d! * DTYPE_BYTES[l.dtype]!, planes.reduce((a, t) => a + Math.ceil((count * t.width!) / 8), 0)], at);
      assert.equal(bytes.signs, l.mode === "ssvq" ? Math.ceil((count * l.d!) / 8) : 0, at);
      assert.equal(b.signs !== undefined, l.mode === "ssvq", at);
      assert.equal(b.scaleRange, undefined, at);
    } else {
      assert.deepEqual(b.scaleRange, l.scaleRange, at);
      assert.deepEqual([bytes.values, bytes.scales, bytes.codebook], [Math.ceil((l.rows * l.cols * (l.mode === "int4" ? 4 : 8)) / 8), 4 * l.rows, 0], at);
      assert.deepEqual(b.tensors.map((t) => t.kind), [l.mode, "scales"], at);
      assert.equal(b.codebook, undefined, at);
    }
  }
  const t = c.totals;
  assert.deepEqual([t.compressedLayers, t.compressedWeights], [report.sizes.compressedLayers, report.sizes.compressedWeights], what);
  assert.equal(t.bitsPerWeight, report.sizes.bitsPerWeight, what);
  assert.equal(t.storedBytes, c.layers.reduce((a, l) => a + l.bytes!.total, 0), what);
  const cfg = report.config;
  const key = cfg.mode === "ssvq" || cfg.mode === "vq" ? `${cfg.mode}${cfg.k}` : cfg.mode;
  const convTranspose = c.layers.some((l) => l.opType === "ConvTranspose");
  const lean = c.layers.some((l) => l.opType !== "ConvTranspose");
  assert.equal(t.lookupTableBytes, (lean ? LUT_BYTES[key]! : 0) + (convTranspose ? FIRST_FORMAT_LUT_BYTES[key]! : 0), `${what}: lookup tables ${t.lookupTables}`);
}

/** Negative values per weight (zero counts as positive), in the source model. */
function sourceNegatives(path: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const w of findWeights(decodeModel(readFileSync(path))).weights) out.set(w.name, tensorToFloat32(w.tensor).reduce((a, v) => a + (v < 0 ? 1 : 0), 0));
  return out;
}

test("fashion models in SSVQ (k16 d4, k64 d4: 4+2-bit planes), VQ (k16, k256: one 8-bit plane), INT8, INT4: read back equals the report", () => {
  for (const name of ["fashion_lenet5", "fashion_tinyvit"]) {
    const src = fixture(`${name}.onnx`);
    const negatives = sourceNegatives(src);
    for (const args of [
      ["--k", "16", "--d", "4"],
      ["--k", "64", "--d", "4"],
      ["--mode", "vq", "--k", "16", "--d", "4"],
      ["--mode", "vq", "--k", "256", "--d", "4"],
      ["--mode", "int8"],
      ["--mode", "int4"],
    ]) {
      const what = `${name} ${args.join(" ")}`;
      const { out, report } = compress(src, `${name}.${args.join("")}.onnx`, args);
      assert.ok(report.layers.length >= 3, what);
      const inspection = inspectJson(out);
      assert.deepEqual(inspection, JSON.parse(JSON.stringify(inspectFile(out))), `${what}: ssvq inspect --json is inspectFile's object`);
      const c = inspection.compression!;
      checkAgainstReport(c, report, what);
      // Without fine-tuning, SSVQ's sign bits are the source weights' signs.
      for (const l of c.layers.filter((x) => x.mode === "ssvq")) {
        assert.equal(l.signs!.weights, l.rows! * l.cols!, `${what} ${l.name}`);
        assert.equal(l.signs!.negative, negatives.get(l.name), `${what} ${l.name}: negative signs`);
        assert.equal(l.signs!.fraction, l.signs!.negative / l.signs!.weights);
      }
    }
  }
});

test("ssvq inspect text: parameters and a per-layer table read from the file", () => {
  const { out, report } = compress(fixture("fashion_lenet5.onnx"), "lenet.text.onnx", ["--k", "64", "--d", "4", "--seed", "3"]);
  const r = ssvq(["inspect", out]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^SSVQ compression \(written by ssvq \d+\.\d+\.\d+/m);
  assert.match(r.stdout, /^parameters +SSVQ k=64 d=4, seed 3, 25 k-means iterations at most, format ssvq, not fine-tuned$/m);
  const s = report.sizes;
  assert.match(r.stdout, new RegExp(`^stored +${s.compressedLayers} layers, ${s.compressedWeights.toLocaleString("en-US")} weights in .* at ${s.bitsPerWeight.toFixed(3)} bits/weight; shared lookup tables 8\\.25 KiB$`, "m"));
  assert.match(r.stdout, /^layer +op +mode +k +d +bits\/weight +stored +negative signs +codewords used$/m);
  const c = readBack(out);
  for (const l of report.layers) {
    const neg = layerOf(c, l).signs!.fraction;
    const row = new RegExp(`^${l.name.replace(/\./g, "\\.")} +${l.opType} +ssvq +64 +4 +${l.bits.bitsPerWeight.toFixed(3)} +[\\d.]+ (B|KiB) +${(100 * neg).toFixed(2)}% +${l.usage!.filter((u) => u > 0).length} of 64$`, "m");
    assert.match(r.stdout, row, `${l.name} row`);
  }
  assert.doesNotMatch(r.stdout, /Problems/);
  const int8 = compress(fixture("fashion_lenet5.onnx"), "lenet.text8.onnx", ["--mode", "int8"]);
  const t8 = ssvq(["inspect", int8.out]);
  assert.match(t8.stdout, /^parameters +INT8, seed 0, format ssvq, not fine-tuned$/m);
  assert.match(t8.stdout, /^f1\.weight +Gemm +int8 +- +- +8\.080 +47\.3 KiB +- +-$/m);
});

test("--format dense: each layer says it is stored dense, with the metadata's k, d and bits and the graph's shape", () => {
  const { out, report } = compress(fixture("fashion_lenet5.onnx"), "lenet.dense.onnx", ["--k", "16", "--d", "4", "--format", "dense"]);
  const c = inspectJson(out).compression!;
  assert.deepEqual(c.problems, []);
  assert.equal(c.config!.format, "dense");
  assert.equal(c.layers.length, report.layers.length);
  for (const l of report.layers) {
    const b = layerOf(c, l);
    assert.equal(b.stored, "dense", l.name);
    assert.equal(b.problem, undefined, b.problem);
    assert.deepEqual([b.mode, b.k, b.d, b.metadata!.bitsPerWeight], ["ssvq", 16, 4, l.bits.bitsPerWeight]);
    assert.deepEqual([b.opType, b.dims, b.dtype, b.rows, b.cols, b.weights], [l.opType, l.dims, l.dtype, l.rows, l.cols, l.bits.weights]);
    assert.deepEqual([b.bits, b.bytes, b.codebook, b.signs, b.tensors], [undefined, undefined, undefined, undefined, []]);
  }
  assert.deepEqual([c.totals.compressedLayers, c.totals.compressedWeights, c.totals.storedBytes, c.totals.lookupTableBytes], [report.sizes.compressedLayers, report.sizes.compressedWeights, 0, 0]);
  const text = ssvq(["inspect", out]).stdout;
  assert.match(text, /^f1\.weight +Gemm +ssvq +16 +4 +2\.\d{3} \(metadata\) +dense +- +-$/m);
  // The config and the graph disagree about the format: each layer says so.
  const setFormat = (path: string, format: string) => {
    const m = decodeModel(readFileSync(path));
    const p = m.metadataProps.find((x) => x.key === "ssvq.config")!;
    p.value = JSON.stringify({ ...JSON.parse(p.value), format });
    return readBackCompression(m)!;
  };
  assert.ok(setFormat(out, "ssvq").layers.every((l) => /says format ssvq, but the weight is stored dense/.test(l.problem ?? "")));
  const subgraphs = compress(fixture("fashion_lenet5.onnx"), "lenet.notdense.onnx", ["--k", "16", "--d", "4"]).out;
  assert.ok(setFormat(subgraphs, "dense").layers.every((l) => /says format dense, but the weight has a decode subgraph/.test(l.problem ?? "")));
});

test("float16 and bfloat16 weights: the codebook is decoded from its stored type and equals the report's", () => {
  for (const [type, dataType] of [["float16", DT.FLOAT16], ["bfloat16", DT.BFLOAT16]] as const) {
    // bfloat16 Conv is valid ONNX from opset 22 (onnxruntime's CPU build has no kernel for it: compress warns).
    const src = writeModel(`cnn.${type}.onnx`, smallCnn({ dataType, seed: 5, ...(type === "bfloat16" ? { opset: 22 } : {}) }));
    const negatives = sourceNegatives(src);
    for (const mode of ["ssvq", "vq", "int4"]) {
      const what = `${type} ${mode}`;
      const { out, report } = compress(src, `cnn.${type}.${mode}.onnx`, ["--mode", mode, "--min-weights", "100", ...(mode === "int4" ? [] : ["--k", "16", "--d", "4"])]);
      assert.equal(report.layers.length, 4, what);
      assert.ok(report.layers.every((l) => l.dtype === type));
      const c = readBack(out);
      checkAgainstReport(c, report, what);
      for (const l of c.layers) {
        if (mode !== "int4") assert.deepEqual(l.tensors.find((t) => t.kind === "codebook")!.dtype, type, what);
        if (mode === "ssvq") assert.equal(l.signs!.negative, negatives.get(l.name), `${what} ${l.name}: signs`);
      }
      // w1 [8, 3, 3, 3]: 27 columns padded to 28; its padding holds no sign.
      if (mode === "ssvq") assert.equal(layerOf(c, { name: "w1", graphPath: "" }).paddedCols, 28);
    }
  }
});

test("IR 3 (decode tensors in Constant nodes, opset 8 Slice attributes), a Constant-node weight and an initializer listed in graph.input", () => {
  const m = model(
    graph({
      nodes: [
        node("Constant", [], ["w1"], { value: randomTensor("", [8, 3, 3, 3], 1) }, "const_w1"),
        node("Conv", ["x", "w1"], ["c"], { pads: [1, 1, 1, 1] }, "conv"),
        node("Relu", ["c"], ["r"]),
        node("Flatten", ["r"], ["f"], { axis: 1 }),
        node("Gemm", ["f", "w2", "b2"], ["h"], { transB: 1 }, "fc"),
        node("MatMul", ["h", "w3"], ["y"], {}, "out"),
      ],
      inputs: [valueInfo("x", [2, 3, 6, 6]), valueInfo("w2", [16, 288]), valueInfo("b2", [16]), valueInfo("w3", [16, 30])],
      outputs: [valueInfo("y", [2, 30])],
      initializers: [randomTensor("w2", [16, 288], 2), randomTensor("b2", [16], 3), randomTensor("w3", [16, 30], 4)],
    }),
    8,
    3,
  );
  const src = writeModel("ir3.onnx", m);
  for (const args of [["--k", "16", "--d", "4"], ["--mode", "vq", "--k", "16", "--d", "4"], ["--mode", "int4"], ["--mode", "int8"]]) {
    const what = `IR 3 ${args.join(" ")}`;
    const { out, report } = compress(src, `ir3.${args.join("")}.onnx`, [...args, "--min-weights", "100"]);
    assert.deepEqual(report.layers.map((l) => l.name), ["w1", "w2", "w3"]);
    const written = decodeModel(readFileSync(out));
    assert.equal(Number(written.irVersion), 3);
    const c = readBack(out);
    checkAgainstReport(c, report, what);
    for (const l of c.layers) assert.ok(l.tensors.every((t) => t.storage === "constant" && t.graphPath === ""), `${what} ${l.name}: ${JSON.stringify(l.tensors)}`);
    if (args[1] === "16") assert.equal(layerOf(c, { name: "w1", graphPath: "" }).paddedCols, 28);
  }
});

test("If branches (the same weight name in both), a main-graph weight read inside a branch, grouped ConvTranspose, Gemm transB=0", () => {
  // Both branches name their weight "w" (in shapes of other bits/weight, so pairing them with the wrong
  // ssvq.layers entry would show).
  const branch = (name: string, seed: number, input: string, k: number) =>
    graph({ name, nodes: [node("MatMul", [input, "w"], [`${name}_y`], {}, `mm_${name}`)], inputs: [], outputs: [valueInfo(`${name}_y`, [2, 40])], initializers: [randomTensor("w", [k, 40], seed)] });
  const thenBranch = branch("then", 11, "h", 48);
  thenBranch.node.push(node("MatMul", ["then_y", "wt"], ["then_z"], {}, "mm_outer"));
  thenBranch.output = [valueInfo("then_z", [2, 40])];
  const m = model(
    graph({
      nodes: [
        node("ConvTranspose", ["x", "wct"], ["a"], { group: 2, strides: [2, 2] }, "deconv"),
        node("Flatten", ["a"], ["f"], { axis: 1 }),
        node("Gemm", ["f", "wgemm"], ["h"], {}, "gemm"),
        node("If", ["cond"], ["y"], { then_branch: thenBranch, else_branch: branch("else", 12, "f", 784) }, "branch"),
      ],
      inputs: [valueInfo("x", [2, 8, 3, 3]), valueInfo("cond", [], DT.BOOL)],
      outputs: [valueInfo("y", [2, 40])],
      initializers: [randomTensor("wct", [8, 8, 3, 3], 1), randomTensor("wgemm", [784, 48], 3), randomTensor("wt", [40, 40], 4)],
    }),
  );
  const src = writeModel("branches.onnx", m);
  for (const args of [["--k", "16", "--d", "4"], ["--mode", "int8"]]) {
    const what = `branches ${args.join(" ")}`;
    const { out, report } = compress(src, `branches.${args.join("")}.onnx`, [...args, "--min-weights", "512"]);
    assert.deepEqual(report.layers.map((l) => `${l.graphPath}:${l.name}`).sort(), [":wct", ":wgemm", ":wt", "branch.else_branch:w", "branch.then_branch:w"], what);
    const c = readBack(out);
    checkAgainstReport(c, report, what);
    const wt = layerOf(c, { name: "wt", graphPath: "" });
    assert.deepEqual(wt.consumers, [{ node: "mm_outer", opType: "MatMul", graphPath: "branch.then_branch", inputIndex: 1 }]);
    const inThen = layerOf(c, { name: "w", graphPath: "branch.then_branch" });
    assert.ok(inThen.tensors.every((t) => t.graphPath === "branch.then_branch"), what);
    assert.equal(layerOf(c, { name: "wct", graphPath: "" }).groups, 2);
    const [a, b] = ["then", "else"].map((s) => layerOf(c, { name: "w", graphPath: `branch.${s}_branch` }).bits!.bitsPerWeight);
    assert.notEqual(a, b, "the two branches' weights must differ in bits/weight for a mix-up to show");
  }
});

test("fine-tuned signs: the read-back negative signs equal those of the weights onnxruntime decodes from the file", async () => {
  const src = fixture("fashion_lenet5.onnx");
  const { out, report } = compress(src, "lenet.tuned.onnx", ["--k", "16", "--d", "4", "--finetune", "--iters", "40", "--lr-sign", "0.5"]);
  assert.ok(report.layers.some((l) => (l.finetune?.signsChanged ?? 0) > 0), "fine-tuning changed no sign: the test would not tell signs(W) from the stored bits");
  const c = readBack(out);
  checkAgainstReport(c, report, "fine-tuned");
  // The decoded weights, as extra outputs of the compressed model (the sign of -0 counts: zero codewords keep their sign bit).
  const m = decodeModel(readFileSync(out));
  for (const l of report.layers) m.graph!.output.push(valueInfo(l.name, l.dims));
  const y = await runModel(encodeModel(m), { input: { data: new Float32Array(28 * 28), dims: [1, 1, 28, 28] } });
  const source = sourceNegatives(src);
  let differs = 0;
  for (const l of report.layers) {
    const decoded = y[l.name]!;
    assert.equal(decoded.length, l.bits.weights);
    const negative = decoded.reduce((a, v) => a + (v < 0 || Object.is(v, -0) ? 1 : 0), 0);
    const b = layerOf(c, l);
    assert.equal(b.signs!.negative, negative, `${l.name}: read back ${b.signs!.negative}, onnxruntime ${negative}`);
    if (negative !== source.get(l.name)) differs++;
  }
  assert.ok(differs > 0, "the signs equal the source's: fine-tuning changed nothing the test can see");
});

test("unused codewords: a weight with three distinct sub-vectors uses 3 of 64", () => {
  const values = Array.from({ length: 64 * 64 }, (_, i) => [0, 0.1, -0.1][i % 3]!);
  const src = writeModel("three.onnx", model(graph({ nodes: [node("MatMul", ["x", "w"], ["y"], {}, "mm")], inputs: [valueInfo("x", [1, 64])], outputs: [valueInfo("y", [1, 64])], initializers: [floatTensor("w", [64, 64], values)] })));
  const { out, report } = compress(src, "three.ssvq.onnx", ["--k", "64", "--d", "4"]);
  const c = readBack(out);
  checkAgainstReport(c, report, "three");
  const l = c.layers[0]!;
  assert.equal(l.unusedCodewords!.length, 61);
  assert.equal(l.signs!.negative, values.filter((v) => v < 0).length);
  assert.match(ssvq(["inspect", out]).stdout, /^w +MatMul +ssvq +64 +4 .* 3 of 64$/m);
});

test("planes whose last byte is half used (255 sub-vectors, 1071 INT4 values): the Slice keeps the tail out, and a Slice cut short is a problem", () => {
  const cases = [
    { mode: "ssvq", k: 20, args: ["--k", "16", "--d", "4"], slices: 2, short: /holds (254|1019) fields, fewer than the (255|1020) the weight needs/ },
    { mode: "int4", k: 21, args: [], slices: 1, short: /holds 1070 fields, fewer than the 1071 the weight needs/ },
  ];
  for (const { mode, k, args, slices, short } of cases) {
    const src = writeModel(`odd.${mode}.onnx`, model(graph({ nodes: [node("MatMul", ["x", "w"], ["y"], {}, "mm")], inputs: [valueInfo("x", [1, k])], outputs: [valueInfo("y", [1, 51])], initializers: [randomTensor("w", [k, 51], 7)] })));
    const { out, report } = compress(src, `odd.${mode}.ssvq.onnx`, ["--mode", mode, ...args, "--min-weights", "0"]);
    const c = readBack(out);
    checkAgainstReport(c, report, `odd ${mode}`);
    const m = decodeModel(readFileSync(out));
    const flatSlices = m.graph!.node.filter((n) => n.opType === "Slice" && m.graph!.initializer.find((t) => t.name === n.input[3])!.int64Data[0] === 0n);
    assert.equal(flatSlices.length, slices, `${mode}: the planes whose last byte is partly used are sliced`);
    for (const n of flatSlices) {
      const end = m.graph!.initializer.find((t) => t.name === n.input[2])!;
      end.int64Data = [end.int64Data[0]! - 1n];
    }
    assert.match(readBackCompression(m)!.layers[0]!.problem!, short);
  }
});

test("damaged files: broken metadata JSON, a listed layer missing, a malformed or truncated subgraph, disagreeing metadata give problems, not exceptions", () => {
  const { out, report } = compress(fixture("fashion_lenet5.onnx"), "lenet.damage.onnx", ["--k", "64", "--d", "4"]);
  const good = readBack(out);
  checkAgainstReport(good, report, "undamaged");
  const fresh = () => decodeModel(readFileSync(out));
  const setMeta = (m: ModelProto, key: string, value: string | undefined) => {
    m.metadataProps = m.metadataProps.filter((p) => p.key !== key);
    if (value !== undefined) m.metadataProps.push(create(StringStringEntryProtoSchema, { key, value }));
    return m;
  };
  const meta = (m: ModelProto, key: string) => m.metadataProps.find((p) => p.key === key)!.value;
  const codebooks = (c: CompressionReadback) => c.layers.map((l) => [l.name, l.codebook]);

  // ssvq.config is not JSON: a problem; the layers are read all the same.
  const badConfig = readBackCompression(setMeta(fresh(), "ssvq.config", "{mode: ssvq"))!;
  assert.equal(badConfig.config, undefined);
  assert.match(badConfig.problems.join("\n"), /ssvq\.config is not valid JSON/);
  assert.deepEqual(codebooks(badConfig), codebooks(good));

  // ssvq.layers is not JSON: the decode subgraphs are still found in the graph, each flagged as unlisted.
  const badLayers = readBackCompression(setMeta(fresh(), "ssvq.layers", "[{\"name\": \"c2.weight\""))!;
  assert.match(badLayers.problems.join("\n"), /ssvq\.layers is not valid JSON/);
  assert.deepEqual(codebooks(badLayers), codebooks(good));
  assert.ok(badLayers.layers.every((l) => /does not list/.test(l.problem ?? "") && l.metadata === undefined));
  assert.deepEqual(badLayers.totals, good.totals);

  // The metadata lists a layer the graph lacks and disagrees with the file about another.
  const m3 = fresh();
  const entries = JSON.parse(meta(m3, "ssvq.layers")) as Record<string, unknown>[];
  entries.push({ name: "ghost.weight", mode: "ssvq", k: 64, d: 4, bitsPerWeight: 2 });
  const f1 = entries.find((e) => e["name"] === "f1.weight")!;
  f1["k"] = 32;
  f1["bitsPerWeight"] = (f1["bitsPerWeight"] as number) + 0.5;
  const disagree = readBackCompression(setMeta(m3, "ssvq.layers", JSON.stringify(entries)))!;
  const ghost = disagree.layers.find((l) => l.name === "ghost.weight")!;
  assert.equal(ghost.stored, "missing");
  assert.match(ghost.problem!, /no Conv, ConvTranspose, Gemm or MatMul reads a weight of that name/);
  const f1b = disagree.layers.find((l) => l.name === "f1.weight")!;
  assert.match(f1b.problem!, /k=32/);
  assert.match(f1b.problem!, /bits\/weight/);
  assert.equal(f1b.bits!.matchesMetadata, false);
  assert.deepEqual(f1b.codebook, good.layers.find((l) => l.name === "f1.weight")!.codebook, "the file, not the metadata, decides the codebook");
  assert.equal(disagree.totals.compressedLayers, 3, "the missing layer is not counted");

  // A stored tensor removed, another truncated: those layers get problems, the others are read.
  const m4 = fresh();
  const tensorOf = (layer: string, kind: string) => good.layers.find((l) => l.name === layer)!.tensors.find((t) => t.kind === kind)!.name;
  const removed = tensorOf("f2.weight", "indices");
  m4.graph!.initializer = m4.graph!.initializer.filter((t) => t.name !== removed);
  const signs = m4.graph!.initializer.find((t) => t.name === tensorOf("c2.weight", "signs"))!;
  signs.rawData = signs.rawData.slice(0, 10);
  signs.dims = [10n];
  const damaged = readBackCompression(m4)!;
  const byName = (c: CompressionReadback, n: string) => c.layers.find((l) => l.name === n)!;
  assert.match(byName(damaged, "f2.weight").problem!, new RegExp(`cannot be read: .*${removed.replace(/\./g, "\\.")}`));
  assert.equal(byName(damaged, "f2.weight").stored, "subgraph");
  // 10 bytes of 4-bit sign patterns (d = 4: one field per sub-vector).
  assert.match(byName(damaged, "c2.weight").problem!, /holds 20 fields, fewer than the \d+ the weight needs/);
  assert.equal(byName(damaged, "f1.weight").problem, undefined);
  assert.deepEqual(byName(damaged, "f1.weight").codebook, byName(good, "f1.weight").codebook);

  // Every sign bit set, padding included (c2: 150 columns padded to 152): the padding is not counted.
  const m7 = fresh();
  const c2signs = m7.graph!.initializer.find((t) => t.name === tensorOf("c2.weight", "signs"))!;
  c2signs.rawData = new Uint8Array(c2signs.rawData.length).fill(0xff);
  const allNegative = byName(readBackCompression(m7)!, "c2.weight");
  assert.equal(allNegative.paddedCols, 152);
  assert.deepEqual(allNegative.signs, { negative: 16 * 150, weights: 16 * 150, fraction: 1 });

  // The codebook cut to 8 entries: indices point past it; the consumer's layout no longer matches the subgraph.
  const m8 = fresh();
  const cb = m8.graph!.initializer.find((t) => t.name === tensorOf("f1.weight", "codebook"))!;
  cb.rawData = cb.rawData.slice(0, 8 * 4 * 4);
  cb.dims = [8n, 4n];
  for (const n of m8.graph!.node) if (n.opType === "Gemm" && n.input[1] === "f2.weight") n.attribute.find((a) => a.name === "transB")!.i = 0n;
  const cut = readBackCompression(m8)!;
  assert.match(byName(cut, "f1.weight").problem!, /index \d+, outside the 8-entry codebook/);
  assert.match(byName(cut, "f2.weight").problem!, /reads the weight as 120 x 84, the decode subgraph writes 84 x 120/);

  // A codebook that declares a huge shape over its few bytes: a problem, not a huge allocation.
  const m9 = fresh();
  m9.graph!.initializer.find((t) => t.name === tensorOf("f2.weight", "codebook"))!.dims = [1_000_000_000n, 4n];
  assert.match(byName(readBackCompression(m9)!, "f2.weight").problem!, /declares \[1000000000, 4\] float32 \(16000000000 bytes\) but carries 1024/);

  // A consumer now reads something else: the listed weight is gone from the graph.
  const m5 = fresh();
  for (const n of m5.graph!.node) if (n.opType === "Gemm" && n.input[1] === "f1.weight") n.input[1] = "f2.weight";
  const rewired = readBackCompression(m5)!;
  assert.equal(byName(rewired, "f1.weight").stored, "missing");

  // Only ssvq.version: config and layers are missing, the subgraphs are still found.
  const m6 = fresh();
  m6.metadataProps = m6.metadataProps.filter((p) => p.key === "ssvq.version");
  const bare = readBackCompression(m6)!;
  assert.deepEqual(bare.problems, ["ssvq.config is missing", "ssvq.layers is missing"]);
  assert.equal(bare.layers.length, 3);

  // Metadata of the wrong shape.
  const wrong = readBackCompression(setMeta(setMeta(fresh(), "ssvq.config", "[1]"), "ssvq.layers", "{\"a\": 1}"))!;
  assert.deepEqual(wrong.problems, ["ssvq.config is not a JSON object", "ssvq.layers is not a JSON array"]);

  // The CLI shows a damaged file, exit 0, with its problems.
  const path = writeModel("lenet.damaged.onnx", m4);
  const text = ssvq(["inspect", path]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^Problems: 2$/m);
  assert.match(text.stdout, /^ {2}f2\.weight: the decode subgraph cannot be read/m);
  assert.match(text.stdout, /^c2\.weight +Conv +ssvq +64 +4 +\d\.\d{3} \(metadata\) +unreadable +- +-$/m);
  assert.equal(inspectJson(path).compression!.layers.length, 3);
});

test("a stored tensor in an external data file is read through the model's folder", () => {
  const { out, report } = compress(fixture("fashion_lenet5.onnx"), "lenet.ext.onnx", ["--k", "16", "--d", "4"]);
  const m = decodeModel(readFileSync(out));
  const name = readBack(out).layers.find((l) => l.name === "f1.weight")!.tensors.find((t) => t.kind === "codebook")!.name;
  let moved: TensorProto | undefined;
  walkTensors(m, (t) => {
    if (t.name === name) moved = t;
  });
  writeFileSync(join(work, "codebook.bin"), moved!.rawData);
  moved!.rawData = new Uint8Array(0);
  moved!.dataLocation = TensorProto_DataLocation.EXTERNAL;
  moved!.externalData = [create(StringStringEntryProtoSchema, { key: "location", value: "codebook.bin" })];
  const path = writeModel("lenet.ext-data.onnx", m);
  const inspection = inspectJson(path);
  assert.deepEqual(inspection.externalFiles, ["codebook.bin"]);
  assert.equal(inspection.externalBytes, readFileSync(join(work, "codebook.bin")).length, "the data file's size");
  checkAgainstReport(inspection.compression!, report, "external codebook");
  // Without a reader, that layer has a problem and the others are read.
  const c = readBackCompression(decodeModel(readFileSync(path)))!;
  assert.match(c.layers.find((l) => l.name === "f1.weight")!.problem!, /external file/);
  assert.ok(c.layers.filter((l) => l.name !== "f1.weight").every((l) => l.problem === undefined));
});

test("an uncompressed model: no compression in ssvq inspect --json, readBackCompression is undefined", () => {
  const src = fixture("fashion_lenet5.onnx");
  const s = inspectJson(src);
  assert.equal("compression" in s, false);
  assert.equal(s.weights.length, 5, "the rest of the summary is unchanged");
  assert.equal(readBackCompression(decodeModel(readFileSync(src))), undefined);
  assert.doesNotMatch(ssvq(["inspect", src]).stdout, /SSVQ compression/);
});

test("first-format outputs (written before the lean decode subgraph) still read back, equal to today's output of the same run, and run alike", async () => {
  // test/fixtures/legacy: the fixtures compressed with --no-finetune by the first format's writer
  // (index planes unpacked to uint8 then Cast, signs multiplied as floats, row matrix Reshape, Transpose).
  const runs: [string, string, string[]][] = [
    ["fashion_lenet5", "ssvq", ["--k", "16", "--d", "4"]],
    ["fashion_lenet5", "int4", ["--mode", "int4"]],
    ["fashion_lenet5", "int8", ["--mode", "int8"]],
    ["fashion_tinyvit", "ssvq", ["--k", "16", "--d", "4"]],
    ["fashion_tinyvit", "vq", ["--mode", "vq", "--k", "16", "--d", "4"]],
  ];
  const x = new Float32Array(4 * 28 * 28).map((_, i) => ((i * 37) % 255) / 255);
  for (const [model, mode, args] of runs) {
    const at = `${model} ${mode}`;
    const legacyPath = fixture("legacy", `${model}.${mode}.onnx`);
    const legacy = readBack(legacyPath);
    const { out } = compress(fixture(`${model}.onnx`), `${model}.${mode}.lean.onnx`, [...args, "--no-finetune"]);
    const lean = readBack(out);
    assert.deepEqual(legacy.problems, [], at);
    assert.equal(legacy.layers.length, lean.layers.length, at);
    for (const [i, a] of legacy.layers.entries()) {
      const b = lean.layers[i]!;
      assert.equal(a.problem, undefined, `${at} ${a.name}`);
      const facts = (l: LayerReadback) => [l.name, l.stored, l.mode, l.k, l.d, l.dims, l.rows, l.cols, l.paddedCols, l.codebook, l.usage, l.signs, l.scaleRange, l.bits?.fieldBits, l.tensors.map((t) => [t.kind, t.width, t.shift, t.fields])];
      assert.deepEqual(facts(a), facts(b), `${at} ${a.name}`);
    }
    assert.equal(legacy.totals.bitsPerWeight, lean.totals.bitsPerWeight, at);
    const feeds = { input: { data: x, dims: [4, 1, 28, 28] } };
    const ya = (await runModel(legacyPath, feeds))["logits"]!;
    const yb = (await runModel(out, feeds))["logits"]!;
    assert.ok(maxAbsDiff(ya, yb) < 1e-5, `${at}: the formats' outputs differ by ${maxAbsDiff(ya, yb)}`);
  }
});
