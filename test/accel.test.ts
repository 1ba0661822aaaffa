/**
 * The accelerator simulator's core (src/core/accel): SCALE-Sim v2 agreement, closed forms, bits, traffic,
 * monotone sanity, the weight-bound speedup, and configuration errors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fixture } from "./helpers/paths.js";
import { isInputError } from "../src/core/errors.js";
import { vqWeightBits, weightEncoding } from "../src/core/accel/bits.js";
import { gemmComputeCycles, layerComputeCycles, type GemmLayer } from "../src/core/accel/gemm.js";
import { applyOverrides, FORMATS, validateParams, type AccelParams, type Format } from "../src/core/accel/params.js";
import { getPreset, PRESETS } from "../src/core/accel/presets.js";
import { parseIni, readScaleSimConfig, readScaleSimTopology } from "../src/core/accel/scalesim.js";
import { dramTraffic, roofline, simulate, simulateLayer } from "../src/core/accel/simulate.js";
import { Rng } from "../src/core/rng.js";

const scalesim = (...p: string[]) => fixture("scalesim", ...p);
const read = (...p: string[]) => readFileSync(scalesim(...p), "utf8");

/** A SCALE-Sim report: one record per layer, keyed by the header's (trimmed) column names. */
function report(run: string, file: string): Record<string, number>[] {
  const [head, ...rows] = read(run, file).trim().split(/\r?\n/);
  const keys = head!.split(",").map((s) => s.trim());
  return rows.map((r) => Object.fromEntries(r.split(",").map((v, i) => [keys[i]!, Number(v)])));
}

function topologyAndConfig(run: string) {
  const topo = readScaleSimTopology(read("topology_resnet18_first5.csv"), "topology_resnet18_first5.csv");
  const cfg = readScaleSimConfig(read(run, "scale.cfg"), `${run}/scale.cfg`);
  return { topo, cfg };
}

const throwsInput = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(isInputError(e), `expected an InputError, got ${String(e)}`);
    assert.match((e as Error).message, pattern);
    return true;
  });

test("SCALE-Sim topology: its output-size rule, no padding, and the M/K/N it simulates", () => {
  const { layers, warnings } = readScaleSimTopology(read("topology_resnet18_first5.csv"));
  assert.deepEqual(warnings, []);
  assert.equal(layers.length, 5);
  // Conv1: 224x224, 7x7 stride 2: ceil((224 - 7 + 2) / 2) = 110 (ONNX without padding gives 109).
  assert.deepEqual([layers[0]!.M, layers[0]!.K, layers[0]!.N, layers[0]!.groups], [110 * 110, 7 * 7 * 3, 64, 1]);
  assert.deepEqual([layers[1]!.M, layers[1]!.K, layers[1]!.N], [54 * 54, 3 * 3 * 64, 64]);
  assert.equal(layers[0]!.ifmapElements, 224 * 224 * 3);
  assert.equal(layers[0]!.ofmapElements, 110 * 110 * 64);
});

for (const run of ["ws32_calc", "os32_calc", "is32_calc"]) {
  test(`SCALE-Sim ${run}: compute cycles equal its Total Cycles to the cycle`, () => {
    const { topo, cfg } = topologyAndConfig(run);
    const expected = report(run, "COMPUTE_REPORT.csv");
    assert.ok(expected.length >= 2);
    assert.equal(cfg.bandwidthMode, "CALC");
    assert.equal(cfg.params.bus, "calc");
    const result = simulate(topo.layers.slice(0, expected.length), cfg.params, { formats: ["int8"], preset: run });
    expected.forEach((row, i) => {
      const layer = result.layers[i]!;
      assert.equal(layer.computeCycles, row["Total Cycles"], `${run} layer ${i}`);
      // Bandwidth computed so nothing stalls: the latency is the compute, as in SCALE-Sim.
      assert.equal(layer.latencyCycles, row["Total Cycles"], `${run} layer ${i} latency`);
      assert.equal(layer.bound, "compute");
    });
  });
}

test("SCALE-Sim ws32_calc: weight DRAM reads equal its filter reads", () => {
  const { topo, cfg } = topologyAndConfig("ws32_calc");
  const access = report("ws32_calc", "DETAILED_ACCESS_REPORT.csv");
  assert.equal(access.length, 5);
  const result = simulate(topo.layers, cfg.params, { formats: ["int8"], preset: "ws32_calc" });
  access.forEach((row, i) => assert.equal(result.layers[i]!.dramBytes.weights, row["DRAM Filter Reads"], `layer ${i}`));
});

test("SCALE-Sim ws32_user_bw10: the per-buffer roofline over its own traffic lands within 3% of its total", () => {
  const { topo, cfg } = topologyAndConfig("ws32_user_bw10");
  assert.equal(cfg.params.bus, "per-buffer");
  assert.equal(cfg.params.dramBytesPerSecond / cfg.params.clockHz, 10);
  const total = report("ws32_user_bw10", "COMPUTE_REPORT.csv");
  const access = report("ws32_user_bw10", "DETAILED_ACCESS_REPORT.csv");
  topo.layers.forEach((l, i) => {
    const compute = layerComputeCycles(cfg.params.dataflow, cfg.params.arrayRows, cfg.params.arrayCols, l);
    const ports = {
      ifmap: access[i]!["DRAM IFMAP Reads"]!,
      filter: access[i]!["DRAM Filter Reads"]!,
      ofmap: access[i]!["DRAM OFMAP Writes"]!,
    };
    // The first tiles: one R x C weight fold and R input rows of R words.
    const tile = cfg.params.arrayRows * cfg.params.arrayCols;
    const r = roofline(cfg.params, compute, ports, { ifmap: tile, filter: tile, ofmap: 0 });
    const error = Math.abs(r.latencyCycles - total[i]!["Total Cycles"]!) / total[i]!["Total Cycles"]!;
    assert.ok(error < 0.03, `layer ${i}: ${r.latencyCycles} vs ${total[i]!["Total Cycles"]} (${(error * 100).toFixed(2)}%)`);
  });
});

test("SCALE-Sim topology forms: 9 fields (two strides), blank lines, depthwise DP rows", () => {
  const t = readScaleSimTopology(
    [
      "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Stride Height, Stride Width,",
      "a,10,12,3,3,4,8,1,2,",
      "",
      "DP_b,8,8,3,3,16,1,1,",
    ].join("\n"),
  );
  const [a, b] = t.layers;
  assert.equal(t.layers.length, 2);
  // Output 8 x ceil((12 - 3 + 2) / 2) = 8 x 6.
  assert.deepEqual([a!.M, a!.K, a!.N], [8 * 6, 36, 8]);
  // SCALE-Sim runs a "DP" layer channel by channel: 16 groups of K = 3 x 3, N = the filters per channel.
  assert.deepEqual([b!.M, b!.K, b!.N, b!.groups, b!.opType], [36, 9, 1, 16, "scalesim-dw"]);
  assert.deepEqual(t.warnings, []);
});

test("SCALE-Sim topology: a row without trailing comma loses its last field, as in SCALE-Sim, with a warning", () => {
  const t = readScaleSimTopology("h,\nc,8,8,3,3,4,8,1,1\n");
  assert.equal(t.layers.length, 1);
  assert.equal(t.layers[0]!.M, 36);
  assert.match(t.warnings[0]!, /does not end with a comma/);
  throwsInput(() => readScaleSimTopology("h,\nc,8,8,3,3,4,8,1\n"), /needs a name/);
  const g = readScaleSimTopology("Layer name,M,N,K,\nL0,196,192,384,\n");
  assert.equal(g.kind, "gemm");
  assert.deepEqual([g.layers[0]!.M, g.layers[0]!.N, g.layers[0]!.K], [196, 192, 384]);
  throwsInput(() => readScaleSimTopology("h,\nx,8,8,9,3,4,8,1,\n"), /filter height 9 is larger/);
  throwsInput(() => readScaleSimTopology("h,\nx,8,8,3,3,four,8,1,\n"), /channels is "four", not an integer/);
  throwsInput(() => readScaleSimTopology("h,\nx,8,8,3,3,0,8,1,\n"), /channels must be a positive integer/);
  throwsInput(() => readScaleSimTopology("header only\n"), /holds no layers/);
});

test("SCALE-Sim cfg: configparser syntax, USER and CALC, and errors", () => {
  const ini = parseIni("[a]\nKey: 1\nother = x y\n; comment\n# comment\n");
  assert.equal(ini.get("a")!.get("key"), "1");
  assert.equal(ini.get("a")!.get("other"), "x y");
  const user = readScaleSimConfig(read("ws32_user_bw10", "scale.cfg"));
  assert.deepEqual(
    [user.runName, user.params.arrayRows, user.params.arrayCols, user.params.dataflow, user.params.ifmapSramBytes, user.params.bus],
    ["ws32_user_bw10", 32, 32, "ws", 65536, "per-buffer"],
  );
  const base = read("ws32_calc", "scale.cfg");
  throwsInput(() => readScaleSimConfig(base.replace("Dataflow : ws", "Dataflow : xs")), /Dataflow must be one of ws, os, is, not "xs"/);
  throwsInput(() => readScaleSimConfig(base.replace(/ArrayHeight:.*\n/, "")), /no ArrayHeight/);
  throwsInput(() => readScaleSimConfig(base.replace("ArrayHeight:    32", "ArrayHeight: 0")), /ArrayHeight must be a positive integer/);
  throwsInput(() => readScaleSimConfig(base.replace("InterfaceBandwidth: CALC", "InterfaceBandwidth: FAST")), /USER or CALC/);
  throwsInput(() => readScaleSimConfig(base.replace("MemoryBanks:   1", "MemoryBanks: 2")), /multi-bank/);
});

test("closed forms: the three dataflows, groups, and independence from the format", () => {
  assert.equal(gemmComputeCycles("ws", 32, 32, 12100, 147, 64), 121939);
  assert.equal(gemmComputeCycles("os", 32, 32, 12100, 147, 64), 158421);
  assert.equal(gemmComputeCycles("is", 32, 32, 12100, 147, 64), 299409);
  const l: GemmLayer = { name: "dw", opType: "Conv", M: 100, K: 9, N: 1, groups: 32, constantWeights: true, ifmapElements: 3200, ofmapElements: 3200 };
  assert.equal(layerComputeCycles("ws", 8, 8, l), 32 * gemmComputeCycles("ws", 8, 8, 100, 9, 1));
  const rng = new Rng(7);
  for (const preset of PRESETS) {
    for (let i = 0; i < 20; i++) {
      const layer = randomLayer(rng);
      const r = simulate([layer], preset.params, { formats: [...FORMATS], preset: preset.name });
      const cycles = new Set(r.layers.map((x) => x.computeCycles));
      assert.equal(cycles.size, 1, `${preset.name}: compute cycles differ between formats`);
      assert.equal([...cycles][0], layerComputeCycles(preset.params.dataflow, preset.params.arrayRows, preset.params.arrayCols, layer));
    }
  }
});

test("bits: SSVQ k16 d8 is 1.5 bits/weight plus the codebook; padding counts; VQ has no sign bits", () => {
  const rows = 1024;
  const cols = 1024;
  const ssvq = vqWeightBits("ssvq", rows, cols, 16, 8, 16);
  assert.equal(ssvq, rows * cols * 1.5 + 16 * 8 * 16);
  assert.equal(vqWeightBits("vq", rows, cols, 16, 8, 16), rows * cols * 0.5 + 16 * 8 * 16);
  // 10 columns at d = 8: two sub-vectors per row, the second zero-padded: 16 weights' worth of bits.
  assert.equal(vqWeightBits("ssvq", 1, 10, 16, 8, 0), 2 * 4 + 16);
  const p = getPreset("ethos-u65-512").params;
  const layer = gemv(1024, 1024);
  const int8 = weightEncoding(layer, "int8", p, { k: 16, d: 8, fallbackFormat: "int8" });
  assert.equal(int8.totalBits, 1024 * 1024 * 8 + 1024 * 32);
  // Per-layer figures of a compression take precedence, by layer name or weight name; others fall back.
  const perLayer = { ssvq: { gemv: { bitsPerWeight: 2, k: 256, d: 8 } } };
  const fromMap = weightEncoding(layer, "ssvq", p, { k: 16, d: 8, fallbackFormat: "int8", perLayer });
  assert.deepEqual([fromMap.bitsPerWeight, fromMap.k, fromMap.source], [2, 256, "compression"]);
  const other = weightEncoding({ ...layer, name: "x", weightName: "w" }, "ssvq", p, { k: 16, d: 8, fallbackFormat: "int8", perLayer });
  assert.deepEqual([other.format, other.source], ["int8", "fallback"]);
  const byWeight = weightEncoding({ ...layer, name: "x", weightName: "gemv" }, "ssvq", p, { k: 16, d: 8, fallbackFormat: "int8", perLayer });
  assert.equal(byWeight.source, "compression");
  const r = simulate([{ ...layer, name: "x", weightName: "w" }], p, { formats: ["ssvq"], preset: "t", perLayer });
  assert.match(r.layers[0]!.note!, /not in the compression: weights in int8/);
  throwsInput(
    () => weightEncoding(layer, "ssvq", p, { k: 16, d: 8, fallbackFormat: "int8", perLayer: { ssvq: { gemv: { bitsPerWeight: -1, k: 16, d: 8 } } } }),
    /bitsPerWeight must be a positive number/,
  );
});

function gemv(K: number, N: number, name = "gemv"): GemmLayer {
  return { name, opType: "Gemm", M: 1, K, N, groups: 1, constantWeights: true, weightName: name, ifmapElements: K, ofmapElements: N };
}

function randomLayer(rng: Rng): GemmLayer {
  const pick = (xs: number[]) => xs[Math.floor(rng.next() * xs.length)]!;
  const M = pick([1, 1, 4, 49, 197, 784, 3136]);
  const K = pick([9, 27, 64, 147, 192, 576, 768, 1024, 4608]);
  const N = pick([1, 10, 64, 192, 768, 1000, 2048]);
  const groups = pick([1, 1, 1, 4]);
  const constantWeights = rng.next() < 0.85;
  return {
    name: `l${M}x${K}x${N}`,
    opType: "MatMul",
    M,
    K,
    N,
    groups,
    constantWeights,
    ifmapElements: M * K * groups * pick([1, 1, 2]),
    ofmapElements: M * N * groups,
  };
}

test("a weight-bound GEMV: the SSVQ k16 d8 speedup over INT8 equals the ratio of bytes moved within 10%", () => {
  const p = getPreset("ethos-u65-512").params;
  for (const [K, N] of [
    [1024, 1024],
    [768, 3072],
    [4096, 4096],
  ] as const) {
    const r = simulate([gemv(K, N)], p, { formats: ["int8", "ssvq"], k: 16, d: 8, preset: "ethos-u65-512" });
    const [int8, ssvq] = r.layers;
    assert.equal(int8!.bound, "weights");
    assert.equal(ssvq!.bound, "weights");
    const bytes = (l: typeof int8) => l!.dramBytes.weights + l!.dramBytes.ifmap + l!.dramBytes.ofmap;
    const byteRatio = bytes(int8) / bytes(ssvq);
    const speedup = int8!.latencyCycles / ssvq!.latencyCycles;
    assert.ok(Math.abs(speedup / byteRatio - 1) < 0.1, `${K}x${N}: speedup ${speedup} vs bytes ${byteRatio}`);
    // 8 bits against 1.5 plus the codebook and the scales: about 5.3x, more than the paper's 3x.
    assert.ok(speedup > 5 && speedup < 8 / 1.5, `${K}x${N}: ${speedup}`);
  }
});

test("monotone: more bandwidth never slows a layer; fewer bits never slow a weight-bound layer", () => {
  const rng = new Rng(11);
  const dense: Format[] = ["fp32", "fp16", "int8", "int4"];
  for (const preset of PRESETS) {
    const base = { ...preset.params, bus: preset.params.bus === "calc" ? ("shared" as const) : preset.params.bus };
    for (let i = 0; i < 60; i++) {
      const layer = randomLayer(rng);
      const formats = [...FORMATS];
      let previous: number[] | undefined;
      for (const scale of [0.25, 0.5, 1, 2, 4, 16]) {
        const p: AccelParams = { ...base, dramBytesPerSecond: base.dramBytesPerSecond * scale };
        const lat = simulate([layer], p, { formats, preset: "t" }).layers.map((l) => l.latencyCycles);
        if (previous) lat.forEach((x, j) => assert.ok(x <= previous![j]!, `${preset.name} ${layer.name} ${formats[j]}: ${x} > ${previous![j]} with more bandwidth`));
        previous = lat;
      }
      // Dense formats from 32 down to 4 bits, then SSVQ at decreasing bits per weight (same k, d).
      const chain = dense.map((f) => simulateLayer(layer, base, weightEncoding(layer, f, base, { k: 16, d: 8, fallbackFormat: "int8" })));
      for (const bits of [4, 3, 2, 1.5, 1]) {
        const perLayer = { ssvq: { [layer.name]: { bitsPerWeight: bits, k: 16, d: 8 } } };
        chain.push(simulateLayer(layer, base, weightEncoding(layer, "ssvq", base, { k: 16, d: 8, fallbackFormat: "int8", perLayer })));
      }
      for (let j = 1; j < chain.length; j++) {
        const [prev, next] = [chain[j - 1]!, chain[j]!];
        if (prev.bound === "weights")
          assert.ok(next.latencyCycles <= prev.latencyCycles, `${preset.name} ${layer.name}: ${next.bitsPerWeight} bits ${next.latencyCycles} > ${prev.bitsPerWeight} bits ${prev.latencyCycles}`);
      }
    }
  }
});

test("traffic: weights once when they fit, re-fetch when neither operand fits, and compression cuts re-fetches", () => {
  const p: AccelParams = { ...getPreset("scalesim-32x32-ws").params, bus: "shared" };
  // 576 x 64 int8 = 36,864 bytes: more than half the 64 KiB filter SRAM; 56x56x64 inputs do not fit either.
  const l: GemmLayer = { name: "c", opType: "Conv", M: 2916, K: 576, N: 64, groups: 1, constantWeights: true, ifmapElements: 56 * 56 * 64, ofmapElements: 2916 * 64 };
  const int8 = dramTraffic(l, p, 576 * 64 * 8);
  assert.deepEqual([int8.weightReads, int8.ifmapReads], [1, 2]);
  assert.equal(int8.dramBytes.weights, 36864);
  assert.equal(int8.dramBytes.ifmap, 2 * 56 * 56 * 64);
  const ssvq = dramTraffic(l, p, vqWeightBits("ssvq", 64, 576, 16, 8, 16));
  assert.deepEqual([ssvq.weightReads, ssvq.ifmapReads], [1, 1]);
  // An activation K x N operand (attention) is counted with the inputs, not the weights.
  const act = dramTraffic({ ...l, constantWeights: false }, p, 576 * 64 * 8);
  assert.equal(act.dramBytes.weights, 0);
  assert.equal(act.dramBytes.ifmap, int8.dramBytes.ifmap + int8.dramBytes.weights);
});

test("decode cycles bound a layer when the decoders cannot keep up", () => {
  const p: AccelParams = { ...getPreset("ethos-u65-512").params, decoders: 1 };
  const l: GemmLayer = { name: "c", opType: "Conv", M: 3136, K: 576, N: 128, groups: 1, constantWeights: true, ifmapElements: 3136 * 64, ofmapElements: 3136 * 128 };
  const r = simulate([l], p, { formats: ["int8", "ssvq"], k: 16, d: 2, preset: "t" });
  const ssvq = r.layers.find((x) => x.format === "ssvq")!;
  assert.equal(ssvq.bound, "decode");
  assert.equal(ssvq.latencyCycles, ssvq.prologueCycles + ssvq.decodeCycles);
  assert.equal(r.layers.find((x) => x.format === "int8")!.decodeCycles, 0);
});

test("latency = prologue + max(compute, DRAM, decode) and totals add up", () => {
  const rng = new Rng(3);
  const layers = Array.from({ length: 30 }, () => randomLayer(rng));
  for (const preset of PRESETS) {
    const r = simulate(layers, preset.params, { formats: ["fp16", "int8", "int4", "vq", "ssvq"], preset: preset.name });
    for (const l of r.layers) assert.equal(l.latencyCycles, l.prologueCycles + Math.max(l.computeCycles, l.dramCycles, l.decodeCycles));
    for (const f of ["fp16", "int8", "ssvq"]) {
      const sum = r.layers.filter((l) => l.format === f).reduce((a, l) => a + l.latencyCycles, 0);
      assert.equal(r.totals[f]!.latencyCycles, sum);
      assert.equal(r.totals[f]!.seconds, sum / preset.params.clockHz);
    }
    assert.equal(r.speedup.vsInt8["int8"], 1);
    assert.equal(r.speedup.vsFp16["fp16"], 1);
  }
});

test("bad configuration: zero or negative sizes, unknown dataflow, bus, preset or key are InputErrors", () => {
  const p = getPreset("ethos-u65-512").params;
  throwsInput(() => validateParams({ ...p, arrayRows: 0 }), /arrayRows must be a positive integer \(rows\), not 0/);
  throwsInput(() => validateParams({ ...p, filterSramBytes: -65536 }), /filterSramBytes must be a positive integer/);
  throwsInput(() => validateParams({ ...p, dramBytesPerSecond: 0 }), /dramBytesPerSecond must be a positive number/);
  throwsInput(() => validateParams({ ...p, arrayCols: 1.5 }), /arrayCols must be a positive integer/);
  throwsInput(() => validateParams({ ...p, dataflow: "rs" as never }), /dataflow must be one of ws, os, is, not "rs"/);
  throwsInput(() => getPreset("ethos-u99"), /unknown preset "ethos-u99"; known presets: scalesim-32x32-ws, ethos-u65-512/);
  throwsInput(() => applyOverrides(p, { arrayRows: 8, sramBytes: 1 }, "x.json"), /x\.json: unknown parameter "sramBytes"/);
  throwsInput(() => applyOverrides(p, { bus: "pcie" }, "x.json"), /bus must be one of shared, per-buffer, calc/);
  throwsInput(() => applyOverrides(p, { bitsPerWeight: { int3: 3 } }, "x.json"), /unknown format "int3"/);
  throwsInput(() => applyOverrides(p, { arrayRows: "32" }, "x.json"), /arrayRows must be a positive integer \(rows\), not "32"/);
  throwsInput(() => applyOverrides(p, [1, 2], "x.json"), /must hold a JSON object/);
  throwsInput(() => simulate([gemv(8, 8)], { ...p, ofmapSramBytes: 0 }, { formats: ["int8"], preset: "t" }), /ofmapSramBytes/);
  const o = applyOverrides(p, { arrayRows: 8, dataflow: "ws", bitsPerWeight: { int4: 4.25 } }, "x.json");
  assert.deepEqual([o.arrayRows, o.dataflow, o.bitsPerWeight.int4, o.bitsPerWeight.int8], [8, "ws", 4.25, 8]);
  assert.equal(p.arrayRows, 4, "the base is not changed");
});

test("presets state every parameter and validate", () => {
  for (const preset of PRESETS) {
    validateParams(preset.params);
    assert.ok(preset.description.length > 10);
  }
  assert.deepEqual(
    PRESETS.map((x) => [x.name, x.params.arrayRows * x.params.arrayCols]),
    [["scalesim-32x32-ws", 1024], ["ethos-u65-512", 512], ["ethos-u55-256", 256], ["nvdla-large", 2048]],
  );
  const u65 = getPreset("ethos-u65-512").params;
  assert.deepEqual([u65.clockHz, u65.dramBytesPerSecond, u65.bus], [1e9, 12.8e9, "shared"]);
  const u55 = getPreset("ethos-u55-256").params;
  assert.deepEqual([u55.clockHz, u55.dramBytesPerSecond], [500e6, 4e9]);
});
