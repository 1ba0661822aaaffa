import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { create } from "@bufbuild/protobuf";
import { decodeModel, encodeModel, StringStringEntryProtoSchema, TensorProto_DataLocation, TensorProtoSchema } from "../src/core/onnx/proto.js";
import type { Report } from "../src/core/report.js";
import { DT, graph, model, node, randomTensor, randomValues, valueInfo } from "./helpers/models.js";
import { listing, ssvq } from "./helpers/cli.js";
import { argmaxRows, fashionImages, maxAbsDiff, runModel } from "./helpers/ort.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-compress-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

function compress(input: string, out: string, args: string[]): Report {
  const r = ssvq(["compress", input, "--out", out, "--json", "--force", ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Report;
}

const images = fashionImages();
const feeds = { input: { data: images.x, dims: [images.n, 1, 28, 28] } };

test("fashion models at 2 bits/weight (INT4 at 4): run in onnxruntime, equal the dense variant, accuracy table", async (t) => {
  const rows: string[] = [];
  for (const name of ["fashion_lenet5", "fashion_tinyvit"]) {
    const src = fixture(`${name}.onnx`);
    const ref = (await runModel(src, feeds))["logits"]!;
    const refTop = argmaxRows(ref, 10);
    const acc = (top: Uint32Array) => top.reduce((a, p, i) => a + (p === images.y[i] ? 1 : 0), 0) / images.n;
    rows.push(`${name.padEnd(16)} FP32             acc ${(100 * acc(refTop)).toFixed(2)}%`);
    const errors: Record<string, number[]> = {};
    for (const mode of ["ssvq", "vq", "int4"]) {
      const args = ["--mode", mode];
      const out = join(work, `${name}.${mode}.onnx`);
      const dense = join(work, `${name}.${mode}.dense.onnx`);
      const report = compress(src, out, args);
      compress(src, dense, [...args, "--format", "dense"]);
      const y = (await runModel(out, feeds))["logits"]!;
      const yd = (await runModel(dense, feeds))["logits"]!;
      assert.ok(maxAbsDiff(y, yd) < 1e-4, `${name} ${mode}: decode subgraph and dense differ by ${maxAbsDiff(y, yd)}`);
      const top = argmaxRows(y, 10);
      const agree = top.reduce((a, p, i) => a + (p === refTop[i] ? 1 : 0), 0) / images.n;
      assert.ok(acc(top) > 0.8, `${name} ${mode}: accuracy ${acc(top)}`);
      // At 2 bits/weight the indices alone give 16x; on these small models the codebooks cost a lot (VQ k=256).
      assert.ok(report.sizes.tensorRatio > (mode === "ssvq" ? 7 : mode === "vq" ? 3 : 5), `${name} ${mode}: ratio ${report.sizes.tensorRatio}`);
      assert.ok(report.sizes.diskRatio > 1 && report.sizes.outputFileBytes === readFileSync(out).length);
      errors[mode] = report.layers.map((l) => l.weightError);
      rows.push(
        `${name.padEnd(16)} ${mode.padEnd(5)} ${report.sizes.bitsPerWeight.toFixed(2)} b/w  acc ${(100 * acc(top)).toFixed(2)}%  agree ${(100 * agree).toFixed(2)}%  ` +
          `tensor ${report.sizes.tensorRatio.toFixed(2)}x  disk ${report.sizes.diskRatio.toFixed(2)}x`,
      );
    }
    const layerNames = compress(src, join(work, `${name}.names.onnx`), ["--dry-run"]).layers.map((l) => l.name);
    rows.push(`  relative weight error per layer, SSVQ vs VQ (k256 d4):`);
    layerNames.forEach((l, i) => rows.push(`    ${l.padEnd(40)} ${(100 * errors["ssvq"]![i]!).toFixed(1)}%  ${(100 * errors["vq"]![i]!).toFixed(1)}%`));
  }
  for (const row of rows) t.diagnostic(row);
});

test("opset 9: Constant-node weights and initializers listed in graph.input compress, run, and fold", async () => {
  const w1 = randomTensor("", [8, 3, 3, 3], 1);
  const w2 = randomTensor("w2", [16, 8 * 36], 2);
  const m = model(
    graph({
      nodes: [
        node("Constant", [], ["w1"], { value: w1 }, "const_w1"),
        node("Conv", ["x", "w1"], ["c"], { pads: [1, 1, 1, 1] }, "conv"),
        node("Relu", ["c"], ["r"]),
        node("Flatten", ["r"], ["f"], { axis: 1 }),
        node("Gemm", ["f", "w2", "b2"], ["y"], { transB: 1 }, "fc"),
      ],
      inputs: [valueInfo("x", [2, 3, 6, 6]), valueInfo("w2", [16, 288])],
      outputs: [valueInfo("y", [2, 16])],
      initializers: [w2, randomTensor("b2", [16], 3)],
    }),
    9,
    4,
  );
  const src = join(work, "opset9.onnx");
  writeFileSync(src, encodeModel(m));
  const out = join(work, "opset9.ssvq.onnx");
  const report = compress(src, out, ["--min-weights", "100", "--k", "16", "--d", "4"]);
  assert.equal(report.layers.length, 2);
  const outModel = decodeModel(readFileSync(out));
  assert.deepEqual(outModel.opsetImport.map((o) => Number(o.version)), [9], "no opset bump");
  assert.deepEqual(outModel.graph!.input.map((i) => i.name), ["x"], "the compressed initializer left graph.input; nothing new added");
  assert.ok(!outModel.graph!.node.some((n) => n.opType === "BitShift" || n.opType === "Mod"));
  const x = { x: { data: randomValues(2 * 3 * 36, 4), dims: [2, 3, 6, 6] } };
  const dense = join(work, "opset9.dense.onnx");
  compress(src, dense, ["--min-weights", "100", "--k", "16", "--d", "4", "--format", "dense"]);
  const yd = (await runModel(dense, x))["y"]!;
  const optimized = join(work, "opset9.optimized.onnx");
  const y = (await runModel(out, x, { graphOptimizationLevel: "all", optimizedModelFilePath: optimized }))["y"]!;
  assert.ok(maxAbsDiff(y, yd) < 1e-5);
  const folded = decodeModel(readFileSync(optimized));
  const left = folded.graph!.node.map((n) => n.opType);
  assert.ok(!left.includes("Gather") && !left.includes("Cast"), `decode subgraph not folded: ${left.join(",")}`);
  const yNoOpt = (await runModel(out, x, { graphOptimizationLevel: "disabled" }))["y"]!;
  assert.ok(maxAbsDiff(yNoOpt, yd) < 1e-5);
});

test("ConvTranspose, grouped Conv, Gemm transB=0, float16 weights, If branches and external data", async () => {
  const thenBranch = graph({ name: "then", nodes: [node("MatMul", ["h", "wt"], ["t"], {}, "mm_then")], inputs: [], outputs: [valueInfo("t", [2, 40])] });
  const elseBranch = graph({
    name: "else",
    nodes: [node("MatMul", ["h", "we"], ["e"], {}, "mm_else")],
    inputs: [],
    outputs: [valueInfo("e", [2, 40])],
    initializers: [randomTensor("we", [48, 40], 6)],
  });
  const wx = randomValues(48 * 48, 8);
  const ext = create(TensorProtoSchema, {
    name: "wx",
    dims: [48n, 48n],
    dataType: DT.FLOAT,
    dataLocation: TensorProto_DataLocation.EXTERNAL,
    externalData: [create(StringStringEntryProtoSchema, { key: "location", value: "data/weights.bin" })],
  });
  const m = model(
    graph({
      nodes: [
        node("ConvTranspose", ["x", "wct"], ["a"], { group: 2, strides: [2, 2] }, "deconv"),
        node("Conv", ["a", "wg"], ["b"], { group: 4, pads: [1, 1, 1, 1] }, "gconv"),
        node("Flatten", ["b"], ["f"], { axis: 1 }),
        node("Gemm", ["f", "wgemm"], ["h0"], {}, "gemm"),
        node("MatMul", ["h0", "wx"], ["h"], {}, "mm_ext"),
        node("If", ["cond"], ["y"], { then_branch: thenBranch, else_branch: elseBranch }, "branch"),
      ],
      inputs: [valueInfo("x", [2, 8, 3, 3]), valueInfo("cond", [], DT.BOOL)],
      outputs: [valueInfo("y", [2, 40])],
      initializers: [randomTensor("wct", [8, 8, 3, 3], 1), randomTensor("wg", [16, 4, 3, 3], 2), randomTensor("wgemm", [784, 48], 3), randomTensor("wt", [48, 40], 4), ext],
    }),
  );
  const dir = mkdtempSync(join(work, "ext-"));
  mkdirSync(join(dir, "data"));
  writeFileSync(join(dir, "data", "weights.bin"), new Uint8Array(wx.buffer));
  const src = join(dir, "mixed.onnx");
  writeFileSync(src, encodeModel(m));
  const half = model(graph({ nodes: [node("MatMul", ["x16", "w16"], ["y16"], {}, "mm16")], inputs: [valueInfo("x16", [2, 64], DT.FLOAT16)], outputs: [valueInfo("y16", [2, 32], DT.FLOAT16)], initializers: [randomTensor("w16", [64, 32], 9, DT.FLOAT16)] }));
  const src16 = join(dir, "half.onnx");
  writeFileSync(src16, encodeModel(half));

  const feedsMixed = (cond: boolean) => ({ x: new ort.Tensor("float32", randomValues(2 * 8 * 9, 10), [2, 8, 3, 3]), cond: new ort.Tensor("bool", Uint8Array.from([cond ? 1 : 0]), []) });
  for (const mode of ["ssvq", "vq", "int8", "int4"]) {
    const args = ["--mode", mode, "--min-weights", "512", ...(mode === "ssvq" || mode === "vq" ? ["--k", "16", "--d", "4"] : [])];
    const outDir = mkdtempSync(join(work, "out-"));
    const out = join(outDir, "mixed.ssvq.onnx");
    const dense = join(outDir, "mixed.dense.onnx");
    const report = compress(src, out, args);
    compress(src, dense, [...args, "--format", "dense"]);
    assert.deepEqual(report.layers.map((l) => l.name).sort(), ["wct", "we", "wg", "wgemm", "wt", "wx"]);
    assert.ok(report.layers.some((l) => l.name === "we" && l.graphPath === "branch.else_branch"));
    assert.ok(report.layers.some((l) => l.name === "wx"), "external weight compressed");
    for (const cond of [true, false]) {
      const s1 = await ort.InferenceSession.create(out, { intraOpNumThreads: 1 });
      const s2 = await ort.InferenceSession.create(dense, { intraOpNumThreads: 1 });
      const y1 = (await s1.run(feedsMixed(cond)))["y"]!.data as Float32Array;
      const y2 = (await s2.run(feedsMixed(cond)))["y"]!.data as Float32Array;
      assert.ok(maxAbsDiff(y1, y2) < 1e-4, `${mode} cond=${cond}: ${maxAbsDiff(y1, y2)}`);
    }
    const out16 = join(outDir, "half.ssvq.onnx");
    const dense16 = join(outDir, "half.dense.onnx");
    compress(src16, out16, args);
    compress(src16, dense16, [...args, "--format", "dense"]);
    const x16 = new ort.Tensor("float16", Uint16Array.from(randomValues(128, 12), (v) => Math.round(v * 100) + 0x3c00), [2, 64]);
    const a = (await (await ort.InferenceSession.create(out16)).run({ x16 }))["y16"]!.data as Uint16Array;
    const b = (await (await ort.InferenceSession.create(dense16)).run({ x16 }))["y16"]!.data as Uint16Array;
    assert.deepEqual(a, b, `${mode}: float16 decode differs from dense`);
  }
});

test("same seed, same bytes; any --threads, same bytes; another seed, other bytes", () => {
  const src = fixture("fashion_lenet5.onnx");
  const outs = [
    ["--seed", "7", "--threads", "1"],
    ["--seed", "7", "--threads", "2"],
    ["--seed", "7", "--threads", "3"],
    ["--seed", "8", "--threads", "2"],
  ].map((args, i) => {
    const out = join(work, `det${i}.onnx`);
    compress(src, out, ["--k", "16", "--d", "4", ...args]);
    return readFileSync(out);
  });
  assert.ok(outs[0]!.equals(outs[1]!) && outs[1]!.equals(outs[2]!), "thread count changed the output");
  assert.ok(!outs[0]!.equals(outs[3]!), "the seed had no effect");
});

test("size on disk within 1.05 x theoretical + 1 KB per layer on a 1.2M-weight model", () => {
  const layers = 6;
  const inits = Array.from({ length: layers }, (_, i) => randomTensor(`w${i}`, [448, 448], 100 + i));
  const nodes = inits.map((t, i) => node("MatMul", [i ? `h${i}` : "x", t.name], [i === layers - 1 ? "y" : `h${i + 1}`]));
  const src = join(work, "big.onnx");
  writeFileSync(src, encodeModel(model(graph({ nodes, inputs: [valueInfo("x", [1, 448])], outputs: [valueInfo("y", [1, 448])], initializers: inits }))));
  for (const args of [["--k", "16", "--d", "4"], ["--k", "16", "--d", "8"], ["--mode", "vq", "--k", "64", "--d", "4"], ["--mode", "int4"]]) {
    const r = compress(src, join(work, "big.ssvq.onnx"), args);
    assert.ok(r.sizes.compressedWeights >= 1_000_000);
    const bound = 1.05 * r.sizes.theoreticalFileBytes + 1024 * r.sizes.compressedLayers;
    assert.ok(r.sizes.outputFileBytes <= bound, `${args.join(" ")}: ${r.sizes.outputFileBytes} > ${bound}`);
  }
});

test("nothing to compress, --layers matching nothing, output = input, existing output: exit 2, nothing written", () => {
  const dir = mkdtempSync(join(work, "bad-"));
  const noWeights = join(dir, "relu.onnx");
  writeFileSync(noWeights, encodeModel(model(graph({ nodes: [node("Relu", ["x"], ["y"])], inputs: [valueInfo("x", [4])], outputs: [valueInfo("y", [4])] }))));
  const lenet = join(dir, "lenet.onnx");
  copyFileSync(fixture("fashion_lenet5.onnx"), lenet);
  const original = readFileSync(lenet);
  const before = listing(dir);
  const cases: [string[], RegExp][] = [
    [["compress", noWeights], /nothing to compress/],
    [["compress", lenet, "--layers", "^nomatch$"], /--layers \^nomatch\$ matches none/],
    [["compress", lenet, "--out", lenet], /is the input model itself/],
    [["compress", lenet, "--out", join(dir, "lenet.json.onnx"), "--min-weights", "99999999"], /fewer than --min-weights/],
    [["compress", lenet, "--bits", "2", "--k", "16", "--d", "4"], /give either --bits \(each layer's own k and d\) or --k and --d/],
    [["compress", lenet, "--ratio", "8", "--bits", "2"], /give either --ratio or --bits/],
    [["compress", lenet, "--ratio", "1"], /--ratio must be a whole-model ratio above 1/],
    [["compress", lenet, "--mode", "int8", "--ratio", "8"], /--ratio searches SSVQ or VQ operating points; it does not apply to --mode int8/],
    [["compress", lenet, "--ratio", "8", "--dry-run"], /--dry-run estimates a fixed --k and --d only/],
    [["compress", lenet, "--bits", "2", "--finetune", "--sequential"], /--bits with --sequential is not supported/],
    [["compress", lenet, "--mode", "int3"], /--mode must be one of/],
    [["compress", lenet, "--layers", "("], /not a valid regular expression/],
  ];
  for (const [args, message] of cases) {
    const r = ssvq(args);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  assert.deepEqual(listing(dir), before);
  assert.ok(readFileSync(lenet).equals(original));
  // An existing output is replaced only with --force.
  const out = join(dir, "lenet.ssvq.onnx");
  assert.equal(ssvq(["compress", lenet]).status, 0);
  assert.ok(existsSync(out) && existsSync(join(dir, "lenet.ssvq.json")));
  const again = ssvq(["compress", lenet, "--seed", "3"]);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /exists; pass --force/);
  assert.equal(ssvq(["compress", lenet, "--seed", "3", "--force"]).status, 0);
  assert.ok(readFileSync(lenet).equals(original), "the input was written");
  assert.deepEqual(listing(dir).filter((f) => f.endsWith(".tmp")), [], "temporary files left behind");
});

test("--dry-run estimates sizes without writing; the report carries codebooks and usage", () => {
  const dir = mkdtempSync(join(work, "dry-"));
  const lenet = join(dir, "lenet.onnx");
  copyFileSync(fixture("fashion_lenet5.onnx"), lenet);
  const dry = ssvq(["compress", lenet, "--dry-run", "--json"]);
  assert.equal(dry.status, 0, dry.stderr);
  assert.deepEqual(listing(dir), ["lenet.onnx"]);
  const est = JSON.parse(dry.stdout) as Report;
  const real = compress(lenet, join(dir, "lenet.ssvq.onnx"), []);
  assert.deepEqual(est.layers.map((l) => l.bits), real.layers.map((l) => l.bits));
  assert.equal(est.sizes.theoreticalFileBytes, real.sizes.theoreticalFileBytes);
  const onDisk = JSON.parse(readFileSync(join(dir, "lenet.ssvq.json"), "utf8")) as Report;
  assert.equal(onDisk.schemaVersion, 1);
  for (const l of onDisk.layers) {
    assert.equal(l.codebook!.length, 16);
    assert.ok(l.codebook!.every((c) => c.length === 4 && c.every((v) => v >= 0)));
    assert.equal(l.usage!.reduce((a, b) => a + b, 0), l.rows * Math.ceil(l.cols / 4));
  }
  const meta = Object.fromEntries(decodeModel(readFileSync(join(dir, "lenet.ssvq.onnx"))).metadataProps.map((p) => [p.key, p.value]));
  assert.equal(JSON.parse(meta["ssvq.config"]!).k, 16);
  assert.doesNotMatch(JSON.stringify(meta), /\/tmp|\d{4}-\d\d-\d\dT/, "metadata must hold no paths or timestamps");
});




test("review fixes: sibling subgraphs with the same label, a weight shared by Gemm transB=0 and MatMul", async () => {
  const dir = mkdtempSync(join(work, "graphs-"));
  const branch = (name: string, w: string, seed: number) =>
    graph({ name, nodes: [node("MatMul", ["x", w], [`${w}_out`])], inputs: [], outputs: [valueInfo(`${w}_out`, [1, 32])], initializers: [randomTensor(w, [32, 32], seed)] });
  // The first If is unnamed (labelled "If_0"), the second is named "If_0": their bodies must not be confused.
  const m = model(
    graph({
      nodes: [
        node("If", ["c"], ["y1"], { then_branch: branch("t1", "wa", 1), else_branch: branch("e1", "wae", 2) }),
        node("If", ["c"], ["y2"], { then_branch: branch("t2", "wb", 3), else_branch: branch("e2", "wbe", 4) }, "If_0"),
        node("Gemm", ["x", "shared"], ["g"], {}, "g"),
        node("MatMul", ["x", "shared"], ["mm"], {}, "mm"),
      ],
      inputs: [valueInfo("c", [], DT.BOOL), valueInfo("x", [1, 32])],
      outputs: [valueInfo("y1", [1, 32]), valueInfo("y2", [1, 32]), valueInfo("g", [1, 32]), valueInfo("mm", [1, 32])],
      initializers: [randomTensor("shared", [32, 32], 5)],
    }),
  );
  const src = join(dir, "siblings.onnx");
  writeFileSync(src, encodeModel(m));
  const out = join(dir, "siblings.ssvq.onnx");
  const report = compress(src, out, ["--mode", "int8", "--min-weights", "0"]);
  assert.deepEqual(report.layers.map((l) => l.name).sort(), ["shared", "wa", "wae", "wb", "wbe"]);
  const written = decodeModel(readFileSync(out));
  const leftover: string[] = [];
  for (const n of written.graph!.node)
    for (const a of n.attribute) if (a.g) leftover.push(...a.g.initializer.filter((t) => ["wa", "wae", "wb", "wbe"].includes(t.name)).map((t) => t.name));
  assert.deepEqual(leftover, [], "a branch kept its original weight");
  const x = new ort.Tensor("float32", randomValues(32, 9), [1, 32]);
  for (const cond of [true, false]) {
    const feeds = { x, c: new ort.Tensor("bool", Uint8Array.from([cond ? 1 : 0]), []) };
    const a = await (await ort.InferenceSession.create(src)).run(feeds);
    const b = await (await ort.InferenceSession.create(out)).run(feeds);
    for (const k of ["y1", "y2", "g", "mm"]) {
      const ya = a[k]!.data as Float32Array;
      const yb = b[k]!.data as Float32Array;
      assert.ok(maxAbsDiff(ya, yb) > 0, `${k}: not compressed`);
      assert.ok(maxAbsDiff(ya, yb) < 0.05 * Math.max(...Array.from(ya, Math.abs)), `${k}: ${maxAbsDiff(ya, yb)}`);
    }
  }
});

test("review fixes: unwritable outputs and too-old opsets fail before the work, with exit 2, losing nothing", () => {
  const dir = mkdtempSync(join(work, "paths-"));
  const lenet = join(dir, "lenet.onnx");
  copyFileSync(fixture("fashion_lenet5.onnx"), lenet);
  writeFileSync(join(dir, "file.json"), "{}");
  const notAFolder = ssvq(["compress", lenet, "--out", join(dir, "file.json", "x.onnx")]);
  assert.equal(notAFolder.status, 2, notAFolder.stderr);
  assert.match(notAFolder.stderr, /is not a folder/);
  // The report's path is a folder: refused up front, and the old output survives even with --force.
  mkdirSync(join(dir, "rj.json"));
  writeFileSync(join(dir, "rj.onnx"), "OLD");
  const reportFolder = ssvq(["compress", lenet, "--out", join(dir, "rj.onnx"), "--force"]);
  assert.equal(reportFolder.status, 2, reportFolder.stderr);
  assert.match(reportFolder.stderr, /rj\.json is a folder/);
  assert.equal(readFileSync(join(dir, "rj.onnx"), "utf8"), "OLD");
  const old = join(dir, "opset6.onnx");
  writeFileSync(old, encodeModel(model(graph({ nodes: [node("MatMul", ["x", "w"], ["y"])], inputs: [valueInfo("x", [1, 64])], outputs: [valueInfo("y", [1, 64])], initializers: [randomTensor("w", [64, 64], 1)] }), 6)));
  const tooOld = ssvq(["compress", old]);
  assert.equal(tooOld.status, 2);
  assert.equal(tooOld.stderr.trim().split("\n").length, 1, tooOld.stderr);
  assert.match(tooOld.stderr, /opset 6 is too old.*--format dense/);
  assert.equal(ssvq(["compress", old, "--format", "dense"]).status, 0);
});

test("a final layer keeps only its packed output: the same bytes with and without keepQuantized, and no quantizations returned by default", async () => {
  const { compressModel } = await import("../src/core/compress.js");
  const bytes = readFileSync(fixture("fashion_lenet5.onnx"));
  for (const [mode, extra] of [["ssvq", {}], ["int4", {}], ["vq", { format: "dense" as const }]] as const) {
    const config = { mode, k: 16, d: 4, seed: 3, kmeansIters: 10, minWeights: 1024, format: "ssvq" as const, finetune: false, ...extra };
    const lean = await compressModel({ bytes, path: "lenet" }, { config });
    const kept = await compressModel({ bytes, path: "lenet" }, { config, keepQuantized: true });
    assert.ok(Buffer.from(lean.model).equals(Buffer.from(kept.model)), `${mode}: same output`);
    assert.equal(lean.quantized.size, 0, "nothing kept by default");
    assert.equal(kept.quantized.size, lean.report.layers.length, "every layer's quantization on request");
  }
});

test("INT8 MatMul weights are put in the weight's layout when the layer is final: the output equals the dense variant in onnxruntime", async () => {
  const { compressModel } = await import("../src/core/compress.js");
  const m = model(
    graph({
      nodes: [node("MatMul", ["x", "w1"], ["h"]), node("Relu", ["h"], ["r"]), node("MatMul", ["r", "w2"], ["y"])],
      inputs: [valueInfo("x", [2, 96])],
      outputs: [valueInfo("y", [2, 40])],
      initializers: [randomTensor("w1", [96, 64], 11), randomTensor("w2", [64, 40], 12)],
    }),
  );
  const bytes = encodeModel(m);
  const config = { mode: "int8" as const, k: 16, d: 4, seed: 0, kmeansIters: 10, minWeights: 16, format: "ssvq" as const, finetune: false };
  const decoded = await compressModel({ bytes, path: "mm" }, { config });
  const dense = await compressModel({ bytes, path: "mm" }, { config: { ...config, format: "dense" } });
  const x = { data: randomValues(192, 5), dims: [2, 96] };
  const a = (await runModel(decoded.model, { x }))["y"]!;
  const b = (await runModel(dense.model, { x }))["y"]!;
  assert.ok(maxAbsDiff(a, b) < 1e-5, `decode subgraph against dense: ${maxAbsDiff(a, b)}`);
  assert.equal(decoded.report.layers.length, 2);
});

test("INT8 for MatMul and Gemm is scaled after the product (the weight is a Cast alone, so it loads lean); other readers keep the scales in the weight; both read back and run as the dense variant", async () => {
  const { compressModel } = await import("../src/core/compress.js");
  const { readBackCompression } = await import("../src/core/onnx/readback.js");
  const m = model(
    graph({
      nodes: [
        node("MatMul", ["x", "w1"], ["h1"]), // N-D activation [2, 3, 32]
        node("Reshape", ["h1", "flat"], ["h1f"]),
        node("Gemm", ["h1f", "w2", "b2"], ["h2"], { transB: 1 }), // C moves after the Mul
        node("Gemm", ["h2", "w3", "b3"], ["h3"], { beta: { float: 0.5 } }), // beta != 1: scales stay in the weight
        node("MatMul", ["h3", "w4"], ["y"]),
        node("Relu", ["h3"], ["h3r"]),
        node("MatMul", ["h3r", "w4"], ["z"]), // w4 read by two MatMuls: both scaled
        node("MatMul", ["h3", "w6"], ["v"]), // w6 is also a graph output: scales stay in the weight
      ],
      inputs: [valueInfo("x", [2, 3, 32])],
      outputs: [valueInfo("y", [6, 16]), valueInfo("z", [6, 16]), valueInfo("v", [6, 16]), valueInfo("w6", [24, 16])],
      initializers: [
        randomTensor("w1", [32, 48], 21),
        { ...randomTensor("flat", [2], 0), dataType: DT.INT64, rawData: new Uint8Array(BigInt64Array.of(6n, 48n).buffer) },
        randomTensor("w2", [40, 48], 22),
        randomTensor("b2", [40], 23),
        randomTensor("w3", [40, 24], 24),
        randomTensor("b3", [24], 25),
        randomTensor("w4", [24, 16], 26),
        randomTensor("w6", [24, 16], 27),
      ],
    }),
  );
  const bytes = encodeModel(m);
  const config = { mode: "int8" as const, k: 16, d: 4, seed: 0, kmeansIters: 10, minWeights: 16, format: "ssvq" as const, finetune: false };
  const out = await compressModel({ bytes, path: "m" }, { config });
  const dense = await compressModel({ bytes, path: "m" }, { config: { ...config, format: "dense" } });
  const g = out.proto.graph!;
  const writer = (name: string) => g.node.find((n) => n.output.includes(name))!;
  const readers = (name: string) => g.node.filter((n) => n.input.includes(name));
  for (const w of ["w1", "w2", "w4"]) {
    assert.equal(writer(w).opType, "Cast", `${w}: Cast alone`);
    assert.ok(g.initializer.some((t) => t.name === writer(w).input[0] && t.dataType === DT.INT8), `${w}: from stored int8`);
    for (const consumer of readers(w)) {
      const [after] = readers(consumer.output[0]!);
      assert.equal(after?.opType, "Mul", `${w}: ${consumer.opType}'s output is scaled`);
    }
  }
  const gemm2 = readers("w2")[0]!;
  assert.equal(gemm2.input.length, 2, "the Gemm's C has moved out");
  assert.equal(readers(readers(gemm2.output[0]!)[0]!.output[0]!)[0]!.opType, "Add", "C is added after the scaling");
  for (const w of ["w3", "w6"]) assert.equal(writer(w).opType, "Mul", `${w}: scales stay in the weight (Cast then Mul)`);
  // The same outputs as the dense reconstruction, up to float rounding.
  const x = { data: randomValues(2 * 3 * 32, 9), dims: [2, 3, 32] };
  const a = await runModel(out.model, { x });
  const b = await runModel(dense.model, { x });
  for (const name of ["y", "z", "v", "w6"]) assert.ok(maxAbsDiff(a[name]!, b[name]!) < 1e-5, `${name}: ${maxAbsDiff(a[name]!, b[name]!)}`);
  // Read back from the file alone: every layer INT8, no problem, the stored bytes counted.
  const rb = readBackCompression(decodeModel(out.model))!;
  assert.deepEqual(rb.problems, []);
  assert.deepEqual(rb.layers.map((l) => [l.name, l.mode, l.problem, l.rows, l.cols]), [
    ["w1", "int8", undefined, 48, 32],
    ["w2", "int8", undefined, 40, 48],
    ["w3", "int8", undefined, 24, 40],
    ["w4", "int8", undefined, 16, 24],
    ["w6", "int8", undefined, 16, 24],
  ]);
  for (const l of rb.layers) assert.equal(l.bytes!.values, l.rows! * l.cols!, `${l.name}: one byte per weight`);
});

test("SSVQ/VQ weights read only by MatMul/Gemm are stored as split products (codes gathered straight to 2-D parts over strided slices): they run as the dense variant, read back from the file, and lower to one layer each", async () => {
  const { compressModel, SPLIT_MIN_WEIGHTS } = await import("../src/core/compress.js");
  const { readBackCompression } = await import("../src/core/onnx/readback.js");
  const { lowerModel } = await import("../src/core/accel/lower.js");
  const w = (name: string, dims: number[], seed: number) => randomTensor(name, dims, seed);
  const m = model(
    graph({
      nodes: [
        node("MatMul", ["x", "w1"], ["h1"]), // N-D activation [2, 3, 256], weight [256, 512]: codes [K/s, N]
        node("Reshape", ["h1", "flat"], ["h1f"]),
        node("Gemm", ["h1f", "w2", "b2"], ["h2"], { transB: 1 }), // [N, K] weight: codes [N, K/s]; C in the first part
        node("Gemm", ["h2", "w3", "b3"], ["h3"], { beta: { float: 0.5 }, alpha: { float: 2 } }), // beta with C, alpha in every part
        node("MatMul", ["h3", "w4"], ["y"]),
        node("Relu", ["h3"], ["h3r"]),
        node("MatMul", ["h3r", "w4"], ["z"]), // w4 read by two MatMuls: both split
        node("MatMul", ["z", "w5"], ["v"]), // below SPLIT_MIN_WEIGHTS: the codebook Gather reshaped to the weight
      ],
      inputs: [valueInfo("x", [2, 3, 256])],
      outputs: [valueInfo("y", [6, 256]), valueInfo("z", [6, 256]), valueInfo("v", [6, 16])],
      initializers: [
        w("w1", [256, 512], 31),
        { ...randomTensor("flat", [2], 0), dataType: DT.INT64, rawData: new Uint8Array(BigInt64Array.of(6n, 512n).buffer) },
        w("w2", [384, 512], 32),
        w("b2", [384], 33),
        w("w3", [384, 256], 34),
        w("b3", [256], 35),
        w("w4", [256, 256], 36),
        w("w5", [256, 16], 37),
      ],
    }),
  );
  assert.ok(256 * 16 < SPLIT_MIN_WEIGHTS && 256 * 256 >= SPLIT_MIN_WEIGHTS);
  const bytes = encodeModel(m);
  const source = new Map(m.graph!.initializer.map((t) => [t.name, new Float32Array(t.rawData.slice().buffer)]));
  const x = { data: randomValues(2 * 3 * 256, 9), dims: [2, 3, 256] };
  // SSVQ k16 d4: 8-bit codes (index + sign pattern); VQ k16: 4-bit codes, two per byte; VQ k256: 8-bit.
  for (const [mode, k, bits, per] of [["ssvq", 16, 8, 1], ["vq", 16, 4, 2], ["vq", 256, 8, 1]] as const) {
    const config = { mode, k, d: 4, seed: 0, kmeansIters: 8, minWeights: 16, format: "ssvq" as const, finetune: false };
    const out = await compressModel({ bytes, path: "m" }, { config });
    const dense = await compressModel({ bytes, path: "m" }, { config: { ...config, format: "dense" } });
    const g = out.proto.graph!;
    const what = `${mode} k${k}`;
    for (const name of ["w1", "w2", "w3", "w4"]) {
      const cast = g.node.find((n) => n.output.includes(name))!;
      assert.equal(cast.opType, "Cast", `${what} ${name}: the weight's name holds the int32 codes`);
      const codes = g.initializer.find((t) => t.name === cast.input[0])!;
      assert.equal(codes.dataType, DT.UINT8, `${what} ${name}: codes stored as uint8`);
      const parts = g.node.filter((n) => n.opType === "Gather" && n.input[1] === name);
      assert.equal(parts.length, 4 * per, `${what} ${name}: one part per column and field`);
      for (const p of parts) assert.equal(g.node.filter((n) => n.input[1] === p.output[0]).every((n) => n.opType === "MatMul" || n.opType === "Gemm"), true);
    }
    assert.ok(g.node.some((n) => n.output[0] === "w5" && n.opType === "Transpose"), `${what}: w5 keeps the codebook Gather reshaped to the row matrix and transposed`);
    assert.equal(g.node.filter((n) => n.opType === "Sum").length, 5, `${what}: one Sum per split consumer`);
    const a = await runModel(out.model, { x });
    const b = await runModel(dense.model, { x });
    for (const name of ["y", "z", "v"]) assert.ok(maxAbsDiff(a[name]!, b[name]!) < 1e-4, `${what} ${name}: ${maxAbsDiff(a[name]!, b[name]!)}`);
    // Read back from the file alone: the layers by their names, their usage as the report counts it, and
    // (SSVQ) exactly the source weights' negative signs.
    const rb = readBackCompression(decodeModel(out.model))!;
    assert.deepEqual(rb.problems, []);
    assert.deepEqual(
      rb.layers.map((l) => [l.name, l.mode, l.k, l.d, l.problem, l.rows, l.cols, l.opType]),
      [
        ["w1", mode, k, 4, undefined, 512, 256, "MatMul"],
        ["w2", mode, k, 4, undefined, 384, 512, "Gemm"],
        ["w3", mode, k, 4, undefined, 256, 384, "Gemm"],
        ["w4", mode, k, 4, undefined, 256, 256, "MatMul"],
        ["w5", mode, k, 4, undefined, 16, 256, "MatMul"],
      ],
    );
    for (const l of rb.layers) {
      const r = out.report.layers.find((x) => x.name === l.name)!;
      assert.deepEqual(l.usage, r.usage, `${what} ${l.name}: usage`);
      assert.equal(l.bits!.matchesMetadata, true, `${what} ${l.name}: bits/weight as the metadata says`);
      if (l.name !== "w5") assert.equal(l.tensors.find((t) => t.kind === "codes")?.width, bits);
      if (mode === "ssvq") assert.equal(l.signs!.negative, source.get(l.name)!.filter((v) => v < 0).length, `${l.name}: negative signs`);
    }
    assert.equal(rb.layers.find((l) => l.name === "w4")!.consumers.length, 2 * 4 * per, "w4: the parts of both products");
    // The accelerator lowering sees one layer per product, with the whole reduction.
    const shapes = new Map<string, number[]>([["w5", [256, 16]], ["x", [2, 3, 256]], ["h1", [2, 3, 512]], ["h1f", [6, 512]], ["h2", [6, 384]], ["h3", [6, 256]], ["h3r", [6, 256]], ["y", [6, 256]], ["z", [6, 256]], ["v", [6, 16]]]);
    const proto = decodeModel(out.model);
    for (const n of proto.graph!.node) if (n.opType === "Slice") shapes.set(n.output[0]!, [...shapes.get(n.input[0]!)!.slice(0, -1), shapes.get(n.input[0]!)!.at(-1)! / (4 * per)]);
    for (const n of proto.graph!.node) if ((n.opType === "MatMul" || n.opType === "Gemm") && n.name.includes("/part")) shapes.set(n.output[0]!, shapes.get(proto.graph!.node.find((s) => s.opType === "Sum" && s.input.includes(n.output[0]!))!.output[0]!)!);
    for (const n of proto.graph!.node) if (n.opType === "Gather" && n.input[1]?.startsWith("w") && n.input[1] !== "w5") {
      const rbl = rb.layers.find((l) => l.name === n.input[1])!;
      shapes.set(n.output[0]!, rbl.opType === "Gemm" && rbl.name === "w2" ? [rbl.rows!, rbl.cols! / (4 * per)] : [rbl.cols! / (4 * per), rbl.rows!]);
    }
    const lowered = lowerModel(proto, shapes);
    assert.deepEqual(
      lowered.layers.map((l) => [l.weightName, l.M, l.K, l.N]),
      [
        ["w1", 6, 256, 512],
        ["w2", 6, 512, 384],
        ["w3", 6, 384, 256],
        ["w4", 6, 256, 256],
        ["w4", 6, 256, 256],
        ["w5", 6, 256, 16],
      ],
      `${what}: lowered layers`,
    );
  }
});

test("SSVQ k256 d8 stores 16-bit split codes; below opset 10 or with a padded reduction the weight keeps the codebook Gather", async () => {
  const { compressModel } = await import("../src/core/compress.js");
  const { readBackCompression } = await import("../src/core/onnx/readback.js");
  const x = { data: randomValues(3 * 1024, 5), dims: [3, 1024] };
  const make = (opset: number, K: number) =>
    encodeModel(model(graph({ nodes: [node("MatMul", ["x", "w"], ["y"])], inputs: [valueInfo("x", [3, K])], outputs: [valueInfo("y", [3, 2048])], initializers: [randomTensor("w", [K, 2048], 41)] }), opset));
  const config = { mode: "ssvq" as const, k: 256, d: 8, seed: 0, kmeansIters: 4, minWeights: 16, format: "ssvq" as const, finetune: false };
  const cases = [
    { opset: 13, K: 1024, split: true },
    { opset: 9, K: 1024, split: false },
    { opset: 13, K: 1020, split: false }, // 1020 % 8 != 0: padded rows
  ];
  for (const c of cases) {
    const bytes = make(c.opset, c.K);
    const out = await compressModel({ bytes, path: "m" }, { config });
    const dense = await compressModel({ bytes, path: "m" }, { config: { ...config, format: "dense" } });
    const g = out.proto.graph!;
    const writer = g.node.find((n) => n.output.includes("w"))!;
    assert.equal(writer.opType === "Cast", c.split, `opset ${c.opset}, K ${c.K}: ${writer.opType}`);
    if (c.split) assert.equal(g.initializer.find((t) => t.name === writer.input[0])!.dataType, DT.UINT16);
    const feeds = { x: { data: x.data.subarray(0, 3 * c.K), dims: [3, c.K] } };
    const a = (await runModel(out.model, feeds))["y"]!;
    const b = (await runModel(dense.model, feeds))["y"]!;
    assert.ok(maxAbsDiff(a, b) < 1e-4, `opset ${c.opset}, K ${c.K}: ${maxAbsDiff(a, b)}`);
    const rb = readBackCompression(decodeModel(out.model))!;
    assert.deepEqual(rb.layers.map((l) => [l.name, l.mode, l.k, l.d, l.problem, l.bits?.matchesMetadata]), [["w", "ssvq", 256, 8, undefined, true]]);
    assert.deepEqual(rb.layers[0]!.usage, out.report.layers[0]!.usage);
  }
});
