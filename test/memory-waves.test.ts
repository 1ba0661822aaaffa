import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { layerWorkBytes, planWaves, waveBytes } from "../src/core/calib/waves.js";
import type { CompressConfig, Report } from "../src/core/report.js";
import { resolveFinetuneOptions } from "../src/core/ssvq/finetune.js";
import { compressFile } from "../src/io/compress-file.js";
import { defaultMemoryBudget, MAX_DEFAULT_BUDGET, machineMemory } from "../src/io/memory.js";
import { createThreadPool } from "../src/io/pool.js";
import { sizeOption } from "../src/job/option-values.js";
import { generateFashionCnn } from "../src/bench/models.js";
import { ssvq } from "./helpers/cli.js";
import { JobProgress } from "../src/job/job-progress.js";
import type { CompressJobSpec, WorkerEvent } from "../src/job/protocol.js";
import { decodeModel } from "../src/core/onnx/proto.js";
import { findWeights } from "../src/core/onnx/weights.js";
import { parsePreprocess } from "../src/core/calib/preprocess.js";
import { openData } from "../src/io/calib-files.js";
import { captureActivations } from "../src/io/capture.js";
import { modelInputs } from "../src/io/ort.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-waves-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

test("planWaves keeps the order, fills each wave while the next layer fits, and gives an oversized layer a wave of its own", () => {
  const l = (name: string, statBytes: number, workBytes = 0) => ({ name, statBytes, workBytes });
  const layers = [l("a", 10), l("b", 10), l("c", 10), l("big", 100), l("d", 5), l("e", 5)];
  assert.deepEqual(planWaves(layers, 1000, 2).waves, [["a", "b", "c", "big", "d", "e"]]);
  const tight = planWaves(layers, 25, 2);
  assert.deepEqual(tight.waves, [["a", "b"], ["c"], ["big"], ["d", "e"]]);
  assert.deepEqual(tight.oversized, [{ name: "big", bytes: 100 }]);
  assert.deepEqual(tight.bytes, [20, 10, 100, 10]);
  // Working memory counts once per thread, for the largest layer of the wave.
  assert.equal(waveBytes([l("x", 10, 7), l("y", 10, 3)], 3), 20 + 3 * 7);
  assert.deepEqual(planWaves([l("x", 10, 7), l("y", 10, 3)], 30, 2).waves, [["x"], ["y"]]);
  // A layer that fits on one thread only: its wave runs its products on one thread.
  const one = planWaves([l("z", 10, 20), l("w", 1, 1)], 35, 2);
  assert.deepEqual(one.waves, [["z", "w"]]);
  assert.deepEqual(one.threads, [1]);
  assert.deepEqual(one.oversized, []);
  assert.deepEqual(planWaves([l("w", 1, 1), l("z", 10, 20)], 35, 2).threads, [2, 1]);
  // Nothing available: one layer per wave, each oversized.
  const none = planWaves(layers, 0, 1);
  assert.deepEqual(none.waves, layers.map((x) => [x.name]));
  assert.equal(none.oversized.length, layers.length);
  assert.ok(layerWorkBytes(128, 9216, 9216 * 512) > 16 * 9216 * 512);
});

test("--memory-budget sizes: binary units, bytes without one; anything else is refused in one line", () => {
  const v = (s: string) => sizeOption({ "memory-budget": s }, "memory-budget");
  assert.equal(v("4G"), 4 * 2 ** 30);
  assert.equal(v("512M"), 512 * 2 ** 20);
  assert.equal(v("1.5g"), 1.5 * 2 ** 30);
  assert.equal(v("2GiB"), 2 * 2 ** 30);
  assert.equal(v("64KB"), 64 * 1024);
  assert.equal(v("1000000"), 1000000);
  assert.equal(v(" "), undefined);
  assert.equal(sizeOption({}, "memory-budget"), undefined);
  for (const bad of ["4X", "-1G", "0", "G", "1e9", "4 G B", "0.1"]) assert.throws(() => v(bad), /--memory-budget must be a size such as 4G/, bad);
  const budget = defaultMemoryBudget();
  assert.ok(budget > 0 && budget <= MAX_DEFAULT_BUDGET && budget <= machineMemory() / 2);
});

test("ssvq compress --memory-budget: a bad size is exit 2 with one line, before anything runs", () => {
  for (const bad of ["lots", "4X", "0"]) {
    const r = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", join(work, "never.onnx"), "--memory-budget", bad]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--memory-budget must be a size such as 4G, 512M or 1\.5G/);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

/** The report without what depends on the run rather than the result (times, the budget's own record). */
function result(r: Report): unknown {
  return {
    layers: r.layers.map((l) => ({ ...l, finetune: l.finetune ? { ...l.finetune, seconds: 0 } : undefined })),
    sizes: r.sizes,
    samples: r.calibration?.samples,
    uncalibrated: r.calibration?.uncalibrated,
  };
}

/** SSVQ k16 d4, seed 0, 10 k-means iterations; fine-tuned for `iters` (0: not fine-tuned). */
const ssvqConfig = (iters: number, extra: Partial<CompressConfig> = {}): CompressConfig => ({
  mode: "ssvq",
  k: 16,
  d: 4,
  seed: 0,
  kmeansIters: 10,
  minWeights: 1024,
  format: "ssvq",
  finetune: iters > 0,
  ...(iters > 0 ? { finetuning: resolveFinetuneOptions({ iters }) } : {}),
  ...extra,
});

/** Calibration on Fashion-MNIST test images `range`, scaled to [0, 1]. */
const fashionCalib = (range: string) => ({ calib: { path: fixture("fashion_test2000_x_u8.npy"), range }, preprocess: { scale: "1/255" } });

test("waves give the same bytes: a budget too small for any layer (one layer per wave, each captured on its own) against the default, on 2 threads", async () => {
  const input = join(work, "cnn1m.onnx");
  writeFileSync(input, generateFashionCnn(3));
  const pool = createThreadPool(2);
  try {
    const run = async (name: string, memoryBudget?: number) => {
      const out = join(work, `${name}.onnx`);
      const { report } = await compressFile({
        input,
        out,
        force: true,
        config: ssvqConfig(30),
        map: pool,
        data: { ...fashionCalib("0:96"), batchSize: 32 },
        ...(memoryBudget !== undefined ? { memoryBudget } : {}),
      });
      return { report, bytes: readFileSync(out) };
    };
    const whole = await run("whole");
    const tiny = await run("tiny", 1);
    assert.deepEqual(whole.report.calibration!.memory!.waves, [3], "the default budget holds every statistic at once");
    assert.deepEqual(tiny.report.calibration!.memory!.waves, [1, 1, 1]);
    assert.deepEqual(tiny.report.calibration!.memory!.threads, [1, 1, 1], "a wave that does not fit runs its products on one thread");
    assert.deepEqual(whole.report.calibration!.memory!.threads, [2]);
    assert.equal(tiny.report.calibration!.memory!.precision, "float64", "fine-tuning keeps H in float64");
    assert.ok(tiny.bytes.equals(whole.bytes), "the output model is the same bytes");
    assert.deepEqual(result(tiny.report), result(whole.report));
    // Every layer is too large for a 1-byte budget: it is said, and the run goes on.
    const said = tiny.report.warnings.filter((w) => w.startsWith("memory budget: layer "));
    assert.equal(said.length, 3, tiny.report.warnings.join("\n"));
    assert.ok(!whole.report.warnings.some((w) => w.startsWith("memory budget")));
    // Capture ran once per wave: its time adds up over the waves.
    assert.ok(tiny.report.timings["capture"]! > 0);
  } finally {
    await pool.close();
  }
});

test("--compare vq with a plan of several waves captures again for VQ and gives the same comparison", async () => {
  const input = fixture("fashion_lenet5.onnx");
  const pool = createThreadPool(2);
  try {
    const run = async (memoryBudget?: number) =>
      (
        await compressFile({
          input,
          dryRun: false,
          out: join(work, `cmp-${memoryBudget ?? "default"}.onnx`),
          force: true,
          config: ssvqConfig(20),
          map: pool,
          compare: "vq",
          data: fashionCalib("0:64"),
          ...(memoryBudget !== undefined ? { memoryBudget } : {}),
        })
      ).report;
    const whole = await run();
    const tiny = await run(1);
    assert.equal(whole.calibration!.memory!.waves.length, 1);
    assert.ok(tiny.calibration!.memory!.waves.length > 1);
    const vq = (r: Report) => r.comparison!.vq.layers.map((l) => ({ ...l, finetune: l.finetune ? { ...l.finetune, seconds: 0 } : undefined }));
    assert.deepEqual(vq(tiny), vq(whole));
    assert.deepEqual(result(tiny), result(whole));
  } finally {
    await pool.close();
  }
});

test("--ratio under a budget of one layer per wave: the search captures wave by wave and picks the same points, the same bytes", async () => {
  const input = fixture("fashion_lenet5.onnx");
  const pool = createThreadPool(2);
  try {
    const run = async (memoryBudget?: number) => {
      const out = join(work, `ratio-${memoryBudget ?? "default"}.onnx`);
      const { report } = await compressFile({
        input,
        out,
        force: true,
        config: ssvqConfig(20, { ratio: 10 }),
        map: pool,
        compare: "vq",
        data: fashionCalib("0:64"),
        ...(memoryBudget !== undefined ? { memoryBudget } : {}),
      });
      return { report, bytes: readFileSync(out) };
    };
    const whole = await run();
    const tiny = await run(1);
    assert.equal(whole.report.calibration!.memory!.waves.length, 1);
    assert.ok(tiny.report.calibration!.memory!.waves.length > 1);
    const picks = (r: Report) => r.search!.layers.map((l) => ({ name: l.name, pick: l.pick, candidates: l.candidates }));
    assert.ok(whole.report.search!.layers.length > 1, "the search ran");
    assert.deepEqual(picks(tiny.report), picks(whole.report));
    assert.deepEqual(picks({ search: tiny.report.comparison!.vq.search } as Report), picks({ search: whole.report.comparison!.vq.search } as Report), "--compare vq's search too");
    assert.ok(tiny.bytes.equals(whole.bytes), "the output model is the same bytes");
  } finally {
    await pool.close();
  }
});

test("without fine-tuning H is kept in float32 (half the memory): the same H as float64 to float32 rounding, and the same output errors", async () => {
  const path = fixture("fashion_lenet5.onnx");
  const model = decodeModel(readFileSync(path), path);
  const { weights } = findWeights(model);
  const images = fixture("fashion_test2000_x_u8.npy");
  const data = () => openData(modelInputs(model), { path: images, range: "0:64", role: "calib", preprocess: parsePreprocess({ scale: "1/255" }) });
  const f64 = await captureActivations(model, weights, await data(), { gram: "js" });
  const f32 = await captureActivations(model, weights, await data(), { gram: "js", gramPrecision: "float32" });
  for (const [name, l] of f64.layers) {
    const h = f32.layers.get(name)!.H;
    assert.ok(h instanceof Float32Array && l.H instanceof Float64Array);
    let scale = 0;
    let worst = 0;
    for (let i = 0; i < h.length; i++) {
      scale = Math.max(scale, Math.abs(l.H[i]!));
      worst = Math.max(worst, Math.abs(h[i]! - l.H[i]!));
    }
    assert.ok(worst <= 1e-6 * scale, `${name}: ${worst} of ${scale}`);
  }
  const run = async (finetune: boolean) =>
    (
      await compressFile({
        input: path,
        out: join(work, `prec-${finetune}.onnx`),
        force: true,
        config: ssvqConfig(finetune ? 1 : 0),
        data: fashionCalib("0:64"),
      })
    ).report;
  const plain = await run(false);
  const tuned = await run(true);
  assert.equal(plain.calibration!.memory!.precision, "float32");
  assert.equal(tuned.calibration!.memory!.precision, "float64");
  // The output error after k-means, measured with either H.
  for (const [i, l] of plain.layers.entries()) assert.ok(Math.abs(l.outputError! - tuned.layers[i]!.finetune!.errorBefore) < 1e-5, l.name);
});

test("the run fraction over waves: capture, quantize and finetune come once per wave and the fraction never goes back", () => {
  const spec = { kind: "compress", input: "m.onnx", config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: true, finetuning: resolveFinetuneOptions() }, threads: 2, data: { calib: { path: "x.npy" } } } as const;
  const p = new JobProgress(spec as unknown as CompressJobSpec);
  const seen: number[] = [];
  const add = (e: WorkerEvent) => {
    p.add(e);
    seen.push(p.overallFraction());
  };
  add({ type: "stage", stage: "check" });
  add({ type: "stage", stage: "read" });
  for (let w = 0; w < 3; w++) {
    add({ type: "wave", index: w, count: 3, layers: 2 });
    add({ type: "stage", stage: "capture" });
    add({ type: "progress", stage: "capture", fraction: (w + 0.5) / 3 });
    add({ type: "stage", stage: "quantize" });
    add({ type: "progress", stage: "quantize", fraction: 0.5, layer: { index: 2 * w, count: 6, name: `l${2 * w}`, rows: 4, cols: 4 } });
    add({ type: "stage", stage: "finetune" });
    add({ type: "progress", stage: "finetune", fraction: (2 * w + 2) / 6, layer: { index: 2 * w + 1, count: 6, name: `l${2 * w + 1}`, rows: 4, cols: 4 } });
  }
  add({ type: "stage", stage: "write" });
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! >= seen[i - 1]!, `went back at event ${i}: ${seen[i - 1]} -> ${seen[i]}`);
  assert.ok(seen.at(-1)! < 1 && seen.at(-1)! > 0.8);
});
