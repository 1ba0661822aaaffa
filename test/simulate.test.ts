/**
 * `ssvq simulate` on ONNX models: shapes measured in onnxruntime, lowering to GEMMs, the DeiT-Tiny and
 * batch-1 linear-stack headline, the command's output, and its errors. The child-process tests run the
 * bundled CLI (dist/cli.js) and are skipped until it has the simulate command.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliPath, fixture } from "./helpers/paths.js";
import { ssvq } from "./helpers/cli.js";
import { DT, graph, int64Tensor, model, node, randomTensor, valueInfo } from "./helpers/models.js";
import { isInputError } from "../src/core/errors.js";
import { gemmComputeCycles, layerComputeCycles } from "../src/core/accel/gemm.js";
import { lowerModel } from "../src/core/accel/lower.js";
import { getPreset } from "../src/core/accel/presets.js";
import { simulate, type SimulationResult } from "../src/core/accel/simulate.js";
import { encodeModel, type ModelProto } from "../src/core/onnx/proto.js";
import { measureShapes, parseShapeSpecs } from "../src/io/shapes.js";
import { buildLinearStack, buildTransformer, DEIT_TINY } from "../src/bench/simulate.js";
import { simulateCommand } from "../src/cli/simulate.js";
import type { CliContext, OptionValues } from "../src/cli/command.js";

async function lower(m: ModelProto, shapes: Record<string, number[]> = {}) {
  const measured = await measureShapes(m, shapes);
  return lowerModel(m, measured.dims);
}

const rejectsInput = (p: Promise<unknown>, pattern: RegExp) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(isInputError(e), `expected an InputError, got ${String(e)}`);
    assert.match((e as Error).message, pattern);
    return true;
  });

test("MatMul and Gemm lower to GEMMs whose compute cycles equal the closed form", async () => {
  const m = model(
    graph({
      nodes: [
        node("Gemm", ["x", "w1", "b1"], ["g1"], { transB: 1 }, "gemm_tb"),
        node("Gemm", ["g1", "w2"], ["g2"], {}, "gemm"),
        node("Transpose", ["g2"], ["g2t"], { perm: [1, 0] }),
        node("Gemm", ["g2t", "w3"], ["g3"], { transA: 1 }, "gemm_ta"),
        node("Reshape", ["g3", "shape3"], ["r3"]),
        node("MatMul", ["r3", "w4"], ["m4"], {}, "matmul_3d"),
        node("Transpose", ["m4"], ["m4t"], { perm: [0, 2, 1] }),
        node("MatMul", ["m4", "m4t"], ["scores"], {}, "matmul_act"),
      ],
      inputs: [valueInfo("x", ["batch", 24])],
      outputs: [valueInfo("scores", ["groups", 2, 2])],
      initializers: [
        randomTensor("w1", [40, 24], 1),
        randomTensor("b1", [40], 2),
        randomTensor("w2", [40, 36], 3),
        randomTensor("w3", [36, 20], 4),
        randomTensor("w4", [20, 12], 5),
        int64Tensor("shape3", [3], [-1, 2, 20]),
      ],
    }),
  );
  const { layers, skipped } = await lower(m, { x: [6, 24] });
  assert.deepEqual(skipped, []);
  const byName = Object.fromEntries(layers.map((l) => [l.name, l]));
  const mkn = (name: string) => [byName[name]!.M, byName[name]!.K, byName[name]!.N, byName[name]!.groups, byName[name]!.constantWeights];
  assert.deepEqual(mkn("gemm_tb"), [6, 24, 40, 1, true]);
  assert.deepEqual(mkn("gemm"), [6, 40, 36, 1, true]);
  // transA: A is stored [36, 6] and read as its transpose [6, 36].
  assert.deepEqual(mkn("gemm_ta"), [6, 36, 20, 1, true]);
  // A 3-D input [3, 2, 20] against a 2-D weight: one GEMM over all 6 rows.
  assert.deepEqual(mkn("matmul_3d"), [6, 20, 12, 1, true]);
  // Activation x activation, batched: [3, 2, 12] x [3, 12, 2] -> 3 GEMMs of 2 x 12 x 2, no constant weights.
  assert.deepEqual(mkn("matmul_act"), [2, 12, 2, 3, false]);
  for (const preset of ["ethos-u65-512", "nvdla-large", "scalesim-32x32-ws"]) {
    const p = getPreset(preset).params;
    const r = simulate(layers, p, { formats: ["int8", "ssvq"], preset });
    for (const l of r.layers) {
      const g = layers.find((x) => x.name === l.name)!;
      assert.equal(l.computeCycles, g.groups * gemmComputeCycles(p.dataflow, p.arrayRows, p.arrayCols, g.M, g.K, g.N));
    }
    assert.equal(r.layers.find((l) => l.name === "matmul_act" && l.format === "ssvq")!.dramBytes.weights, 0);
  }
});

test("Conv (padded, strided, grouped, depthwise) and ConvTranspose lower with onnxruntime's shapes", async () => {
  const m = model(
    graph({
      nodes: [
        node("Conv", ["x", "w1"], ["c1"], { pads: [1, 1, 1, 1], strides: [2, 2] }, "conv_s2"),
        node("Conv", ["c1", "w2"], ["c2"], { pads: [1, 1, 1, 1], group: 4 }, "conv_g4"),
        node("Conv", ["c2", "w3"], ["c3"], { pads: [1, 1, 1, 1], group: 16 }, "conv_dw"),
        node("ConvTranspose", ["c3", "w4"], ["y"], { strides: [2, 2], group: 2 }, "deconv"),
      ],
      inputs: [valueInfo("x", [1, 3, 15, 15])],
      outputs: [valueInfo("y", [1, 8, 16, 16])],
      initializers: [
        randomTensor("w1", [16, 3, 3, 3], 1),
        randomTensor("w2", [16, 4, 3, 3], 2),
        randomTensor("w3", [16, 1, 3, 3], 3),
        randomTensor("w4", [16, 4, 2, 2], 4),
      ],
    }),
  );
  const { layers } = await lower(m);
  const [s2, g4, dw, de] = layers;
  // ONNX: floor((15 + 2 - 3) / 2) + 1 = 8 (SCALE-Sim's rule without padding would differ).
  assert.deepEqual([s2!.M, s2!.K, s2!.N, s2!.groups], [64, 27, 16, 1]);
  assert.deepEqual([g4!.M, g4!.K, g4!.N, g4!.groups], [64, 36, 4, 4]);
  assert.deepEqual([dw!.M, dw!.K, dw!.N, dw!.groups], [64, 9, 1, 16]);
  // ConvTranspose: M = input pixels, K = Cin/g, N = Cout/g x kernel; output 16x16x8 written.
  assert.deepEqual([de!.M, de!.K, de!.N, de!.groups, de!.ofmapElements], [64, 8, 16, 2, 8 * 16 * 16]);
  assert.equal(s2!.ifmapElements, 3 * 15 * 15);
  const p = getPreset("nvdla-large").params;
  for (const l of layers) assert.equal(simulate([l], p, { formats: ["int8"], preset: "t" }).layers[0]!.computeCycles, layerComputeCycles("ws", 64, 32, l));
});

test("a real model: LeNet-5 and the tiny ViT lower with batch 1 and batch 8", async () => {
  const { loadModel } = await import("../src/io/model-file.js");
  const lenet = loadModel(fixture("fashion_lenet5.onnx")).model;
  const one = await lower(lenet, { input: [1, 1, 28, 28] });
  const eight = await lower(lenet, { input: [8, 1, 28, 28] });
  assert.ok(one.layers.length >= 4);
  one.layers.forEach((l, i) => assert.equal(eight.layers[i]!.M, 8 * l.M));
  const vit = loadModel(fixture("fashion_tinyvit.onnx")).model;
  const v = await lower(vit, { input: [1, 1, 28, 28] });
  assert.ok(v.layers.some((l) => l.constantWeights) && v.layers.length > 4);
});

test("dynamic dimensions without --shape, a wrong rank or an unknown input are InputErrors", async () => {
  const m = buildLinearStack(2, 16);
  m.graph!.input[0] = valueInfo("x", ["batch", 16]);
  await rejectsInput(measureShapes(m), /input "x" has dynamic dimensions \[batch, 16\]; give its shape with --shape x=1,16/);
  await rejectsInput(measureShapes(m, { x: [1, 16, 1] }), /has 3 dimensions but the input is declared \[batch, 16\]/);
  await rejectsInput(measureShapes(m, { x: [1, 15] }), /sets dimension 1 to 15 but the model fixes it at 16/);
  await rejectsInput(measureShapes(m, { y: [1, 16] }), /--shape names "y", which is not an input of the model \(inputs: "x"\)/);
  assert.deepEqual(parseShapeSpecs(["x=1,3,224,224", "a=b=2x3"]), { x: [1, 3, 224, 224], "a=b": [2, 3] });
  assert.throws(() => parseShapeSpecs(["x"]), /must be NAME=DIMS/);
  assert.throws(() => parseShapeSpecs(["x=1,?"]), /whole numbers/);
  const measured = await measureShapes(m, { x: [4, 16] });
  assert.deepEqual(measured.inputs, { x: [4, 16] });
});

test("layers inside an If body are skipped with the reason; the main graph is lowered", async () => {
  const branch = (name: string) =>
    graph({
      name,
      nodes: [node("MatMul", ["h", "wb"], [`${name}_out`], {}, `${name}_mm`)],
      inputs: [],
      outputs: [valueInfo(`${name}_out`, [1, 8])],
    });
  const m = model(
    graph({
      nodes: [
        node("MatMul", ["x", "w"], ["h"], {}, "main_mm"),
        node("If", ["cond"], ["y"], { then_branch: branch("then"), else_branch: branch("else") }, "if"),
      ],
      inputs: [valueInfo("x", [1, 8]), valueInfo("cond", [], DT.BOOL)],
      outputs: [valueInfo("y", [1, 8])],
      initializers: [randomTensor("w", [8, 8], 1), randomTensor("wb", [8, 8], 2)],
    }),
  );
  const { layers, skipped } = await lower(m);
  assert.deepEqual(layers.map((l) => l.name), ["main_mm"]);
  assert.equal(skipped.length, 2);
  assert.match(skipped[0]!.reason, /inside the subgraph if\.then_branch, whose values cannot be exposed/);
});

test("weights computed from constants (a decode subgraph) and initializers listed as inputs are weights", async () => {
  const m = model(
    graph({
      nodes: [
        // A stand-in for a .ssvq.onnx decode subgraph: codebook x selector, then a reshape, all constant.
        node("MatMul", ["codebook", "selector"], ["decoded"], {}, "decode_mm"),
        node("Reshape", ["decoded", "wshape"], ["w_dec"]),
        node("MatMul", ["x", "w_dec"], ["h"], {}, "fc_decoded"),
        node("MatMul", ["h", "w_old"], ["y"], {}, "fc_old_export"),
      ],
      inputs: [valueInfo("x", [2, 8]), valueInfo("w_old", [8, 4])],
      outputs: [valueInfo("y", [2, 4])],
      initializers: [
        randomTensor("codebook", [16, 4], 1),
        randomTensor("selector", [4, 4], 2),
        int64Tensor("wshape", [2], [8, 8]),
        randomTensor("w_old", [8, 4], 3),
      ],
    }),
  );
  const { layers, skipped } = await lower(m);
  assert.deepEqual(layers.map((l) => [l.name, l.constantWeights, l.weightName]), [
    ["fc_decoded", true, "w_dec"],
    ["fc_old_export", true, "w_old"],
  ]);
  assert.deepEqual(skipped.map((s) => s.name), ["decode_mm"]);
  assert.match(skipped[0]!.reason, /all its inputs are constant/);
});

/** The figures the DeiT/linear-stack tests and the README share. */
async function deit(tokens: number): Promise<SimulationResult> {
  const m = buildTransformer(DEIT_TINY);
  const { layers, skipped } = await lower(m, { tokens: [1, tokens, DEIT_TINY.width] });
  assert.deepEqual(skipped, []);
  // 12 blocks x (qkv, Q x K^T, scores x V, proj, fc1, fc2) + the classifier head.
  assert.equal(layers.length, 12 * 6 + 1);
  return simulate(layers, getPreset("ethos-u65-512").params, { formats: ["int8", "ssvq"], k: 16, d: 8, preset: "ethos-u65-512" });
}

const layerOf = (r: SimulationResult, name: string, format: string) => r.layers.find((l) => l.name === name && l.format === format)!;

test("DeiT-Tiny at 197 tokens on Ethos-U65: compute-bound, SSVQ k16 d8 gains almost nothing over INT8", async () => {
  const r = await deit(197);
  const fc1 = layerOf(r, "b0_fc1", "int8");
  assert.deepEqual([fc1.M, fc1.K, fc1.N], [197, 192, 768]);
  const qk = layerOf(r, "b0_attn_qk", "int8");
  assert.deepEqual([qk.M, qk.K, qk.N, qk.groups, qk.dramBytes.weights], [197, 64, 197, 3, 0]);
  for (const block of ["b0_", "b5_", "b11_"])
    for (const op of ["qkv", "proj", "fc1", "fc2"]) {
      assert.equal(layerOf(r, block + op, "int8").bound, "compute", block + op);
      assert.equal(layerOf(r, block + op, "ssvq").bound, "compute", block + op);
    }
  // Only the classifier reads one token: weight-bound, and there SSVQ pays off.
  assert.equal(layerOf(r, "head", "int8").bound, "weights");
  const speedup = r.speedup.vsInt8["ssvq"]!;
  assert.ok(speedup >= 1 && speedup < 1.1, `197 tokens: ${speedup}`);
  // Still far fewer weight bytes.
  assert.ok(r.totals["ssvq"]!.dramBytes.weights < r.totals["int8"]!.dramBytes.weights / 4);
});

test("DeiT-Tiny at 1 token (decoding) on Ethos-U65: weight-bound, SSVQ k16 d8 is several times faster than INT8", async () => {
  const r = await deit(1);
  for (const op of ["qkv", "proj", "fc1", "fc2"]) assert.equal(layerOf(r, "b3_" + op, "int8").bound, "weights", op);
  // The smallest layer (192 x 192) becomes compute-bound once its weights shrink: less than the byte ratio.
  const proj = [layerOf(r, "b3_proj", "int8"), layerOf(r, "b3_proj", "ssvq")];
  assert.equal(proj[1]!.bound, "compute");
  const speedup = r.speedup.vsInt8["ssvq"]!;
  assert.ok(speedup > 3 && speedup < 8 / 1.5, `1 token: ${speedup}`);
});

test("a batch-1 linear stack: each weight-bound GEMV's speedup equals the ratio of bytes moved within 10%", async () => {
  const { layers } = await lower(buildLinearStack(6, 1024));
  const r = simulate(layers, getPreset("ethos-u65-512").params, { formats: ["int8", "ssvq"], k: 16, d: 8, preset: "ethos-u65-512" });
  const bytes = (l: SimulationResult["layers"][number]) => l.dramBytes.weights + l.dramBytes.ifmap + l.dramBytes.ofmap;
  for (const l of layers) {
    const [a, b] = [layerOf(r, l.name, "int8"), layerOf(r, l.name, "ssvq")];
    assert.deepEqual([a.M, a.K, a.N, a.bound, b.bound], [1, 1024, 1024, "weights", "weights"]);
    const speedup = a.latencyCycles / b.latencyCycles;
    assert.ok(Math.abs(speedup / (bytes(a) / bytes(b)) - 1) < 0.1, `${l.name}: ${speedup} vs ${bytes(a) / bytes(b)}`);
  }
  assert.ok(r.speedup.vsInt8["ssvq"]! > 5);
});

function fakeContext() {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: CliContext = {
    out: (t) => void out.push(t),
    err: (t) => void err.push(t),
    verbose: false,
    errIsTTY: false,
    signal: new AbortController().signal,
  };
  return { ctx, out, err };
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "ssvq-simulate-"));
}

test("simulate command (run): --json prints the issue's shape; the table has a row per layer and totals", async () => {
  const dir = tempDir();
  try {
    const path = join(dir, "stack.onnx");
    writeFileSync(path, encodeModel(buildLinearStack(3, 256)));
    const { ctx, out } = fakeContext();
    const values: OptionValues = { json: true, formats: "fp16,int8,ssvq", preset: "ethos-u55-256" };
    assert.equal(await simulateCommand.run(values, [path], ctx), 0);
    const doc = JSON.parse(out.join("\n"));
    assert.deepEqual(Object.keys(doc), ["preset", "config", "layers", "totals", "speedup", "gemms"]);
    assert.equal(doc.preset, "ethos-u55-256");
    assert.equal(doc.layers.length, 3 * 3);
    // The GEMM shapes simulated, one per layer, to re-simulate on other presets without the model.
    assert.deepEqual(doc.gemms.map((g: { name: string; M: number; K: number; N: number }) => [g.M, g.K, g.N]), [[1, 256, 256], [1, 256, 256], [1, 256, 256]]);
    const l = doc.layers[0];
    assert.deepEqual(Object.keys(l).slice(0, 10), ["name", "M", "K", "N", "format", "computeCycles", "dramBytes", "decodeCycles", "latencyCycles", "bound"]);
    assert.deepEqual(Object.keys(l.dramBytes), ["weights", "ifmap", "ofmap"]);
    assert.deepEqual(Object.keys(doc.speedup), ["vsInt8", "vsFp16"]);
    assert.equal(doc.speedup.vsInt8.int8, 1);
    assert.ok(doc.totals.ssvq.latencyCycles < doc.totals.int8.latencyCycles);

    const text = fakeContext();
    assert.equal(await simulateCommand.run({ formats: "int8,ssvq" }, [path], text.ctx), 0);
    const printed = text.out.join("\n");
    assert.match(printed, /accelerator {2}ethos-u65-512/);
    for (const name of ["fc0", "fc1", "fc2"]) assert.match(printed, new RegExp(`^${name} +Gemm +1 +256 +256 +1 `, "m"));
    assert.match(printed, /ssvq\/int8/);
    assert.match(printed, /^ssvq +[\d,]+ /m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("simulate command (run): a SCALE-Sim topology with its cfg prints SCALE-Sim's cycles", async () => {
  const { ctx, out } = fakeContext();
  const topo = fixture("scalesim", "topology_resnet18_first5.csv");
  await simulateCommand.run({ cfg: fixture("scalesim", "ws32_calc", "scale.cfg"), formats: "int8", json: true }, [topo], ctx);
  const doc = JSON.parse(out.join("\n"));
  assert.deepEqual(doc.layers.map((l: { computeCycles: number }) => l.computeCycles), [121939, 108359, 108359, 108359, 108359]);
  assert.equal(doc.preset, "scalesim-cfg:ws32_calc");
});

test("simulate command (run): bad configuration and dynamic shapes are InputErrors", async () => {
  const dir = tempDir();
  try {
    const stack = join(dir, "stack.onnx");
    writeFileSync(stack, encodeModel(buildLinearStack(2, 32)));
    const dyn = join(dir, "dyn.onnx");
    writeFileSync(dyn, encodeModel(buildTransformer({ blocks: 1, width: 32, heads: 2, mlp: 64, classes: 0 })));
    const bad = join(dir, "bad.json");
    const run = (values: OptionValues, path = stack) => simulateCommand.run(values, [path], fakeContext().ctx);
    writeFileSync(bad, JSON.stringify({ arrayRows: 0 }));
    await rejectsInput(run({ config: bad }), /bad\.json: arrayRows must be a positive integer \(rows\), not 0/);
    writeFileSync(bad, JSON.stringify({ filterSramBytes: -1 }));
    await rejectsInput(run({ config: bad }), /filterSramBytes must be a positive integer/);
    writeFileSync(bad, JSON.stringify({ dataflow: "row-stationary" }));
    await rejectsInput(run({ config: bad }), /dataflow must be one of ws, os, is, not "row-stationary"/);
    writeFileSync(bad, "{ not json");
    await rejectsInput(run({ config: bad }), /is not valid JSON/);
    await rejectsInput(run({ preset: "tpu-v9" }), /unknown preset "tpu-v9"/);
    await rejectsInput(run({ formats: "int8,int3" }), /unknown format "int3"/);
    await rejectsInput(run({ k: "0" }), /k must be an integer >= 2/);
    await rejectsInput(run({ preset: "ethos-u65-512", cfg: fixture("scalesim", "ws32_calc", "scale.cfg") }), /either --cfg .* or --preset/);
    await rejectsInput(run({}, dyn), /input "tokens" has dynamic dimensions \[1, T, 32\]; give its shape with --shape tokens=1,1,32/);
    const ok = fakeContext();
    assert.equal(await simulateCommand.run({ shape: ["tokens=1,5,32"] }, [dyn], ok.ctx), 0);
    await rejectsInput(run({}, join(dir, "missing.onnx")), /no such file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The bundled CLI has the simulate command (main.ts registers it); until then these tests are skipped. */
const cliHasSimulate = (() => {
  if (!existsSync(cliPath)) return false;
  const r = ssvq(["--help"]);
  return /\bsimulate\b/.test(r.stdout);
})();
const skipCli = cliHasSimulate ? false : "dist/cli.js has no simulate command yet (npm run build after main.ts registers it)";

test("ssvq simulate (bundled CLI): JSON on stdout, exit 0", { skip: skipCli }, () => {
  const dir = tempDir();
  try {
    const path = join(dir, "deit.onnx");
    writeFileSync(path, encodeModel(buildTransformer({ blocks: 2, width: 64, heads: 2, mlp: 128, classes: 10 })));
    const r = ssvq(["simulate", path, "--shape", "tokens=1,1,64", "--formats", "int8,ssvq", "--k", "16", "--d", "8", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(doc), ["preset", "config", "layers", "totals", "speedup", "gemms"]);
    assert.equal(doc.layers.length, 2 * (2 * 6 + 1));
    assert.equal(doc.gemms.length, 2 * 6 + 1);
    const table = ssvq(["simulate", fixture("scalesim", "topology_resnet18_first5.csv"), "--cfg", fixture("scalesim", "os32_calc", "scale.cfg")]);
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /^Conv1 .* 158,421 C/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("ssvq simulate (bundled CLI): bad configuration exits 2 with one clear line", { skip: skipCli }, () => {
  const dir = tempDir();
  try {
    const model = join(dir, "stack.onnx");
    writeFileSync(model, encodeModel(buildLinearStack(2, 32)));
    const dyn = join(dir, "dyn.onnx");
    writeFileSync(dyn, encodeModel(buildTransformer({ blocks: 1, width: 32, heads: 2, mlp: 64, classes: 0 })));
    const config = join(dir, "c.json");
    const cases: [string[], RegExp][] = [
      [["--preset", "nope"], /unknown preset "nope"/],
      [["--config", config], /arrayCols must be a positive integer/],
      [["--cfg", join(dir, "none.cfg")], /no such file/],
    ];
    writeFileSync(config, JSON.stringify({ arrayCols: -4 }));
    for (const [args, pattern] of cases) {
      const r = ssvq(["simulate", model, ...args]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.equal(r.stdout, "");
    }
    writeFileSync(config, JSON.stringify({ dataflow: "xy" }));
    const df = ssvq(["simulate", model, "--config", config]);
    assert.equal(df.status, 2);
    assert.match(df.stderr, /dataflow must be one of ws, os, is/);
    const dynamic = ssvq(["simulate", dyn]);
    assert.equal(dynamic.status, 2);
    assert.match(dynamic.stderr, /dynamic dimensions .* --shape tokens=/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
