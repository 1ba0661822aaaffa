/**
 * Issue 11: a layer's statistic in either form (H, or the calibration columns X when they are fewer than
 * half the columns), the products with it over row blocks, and one large layer split over the pool's
 * threads. Both forms give the same results within rounding; a factor layer, and a split layer, give the
 * same bytes for any thread count.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compressModel } from "../src/core/compress.js";
import { encodeModel } from "../src/core/onnx/proto.js";
import type { CompressConfig } from "../src/core/report.js";
import { Rng } from "../src/core/rng.js";
import {
  finetuneBlocks,
  finetuneLayer,
  finetuneLayerOn,
  finetuneLayers,
  finetuneLayerTask,
  FAST_PRODUCT_MIN_FLOPS,
  resolveFinetuneOptions,
  type FinetuneResult,
} from "../src/core/ssvq/finetune.js";
import { quadraticForm, relativeOutputError, relativeOutputErrorOn } from "../src/core/ssvq/objective.js";
import { quantizeRows, type VqQuantized } from "../src/core/ssvq/quantize.js";
import {
  chooseStatisticForm,
  rowBlocks,
  KERNEL_CACHE_ENTRIES,
  clearKernelsTask,
  setKernelCacheLimit,
  shareStatistic,
  toGram,
  withCachedKernel,
  tsStatEngine,
  wasmStatEngine,
  type FactorStatistic,
  type GramStatistic,
  type StatEngine,
} from "../src/core/ssvq/stat-product.js";
import { serialMap } from "../src/core/tasks.js";
import { ORT_FLOAT64_PRODUCT, ORT_PRODUCT, ortFloat64StatEngine, ortStatEngine, registerOrtProduct } from "../src/io/ort-product.js";
import { createThreadPool } from "../src/io/pool.js";
import { compressFile } from "../src/io/compress-file.js";
import { graph, model, node, randomTensor, smallCnn, valueInfo } from "./helpers/models.js";
import { findWeights } from "../src/core/onnx/weights.js";
import { randomData } from "../src/core/calib/source.js";
import { captureActivations } from "../src/io/capture.js";
import { modelInputs } from "../src/io/ort.js";

const pool1 = createThreadPool(1);
const pool2 = createThreadPool(2);
after(() => Promise.all([pool1.close(), pool2.close()]));
registerOrtProduct();

/** X [groups][r][cols] (sample-major) of correlated post-ReLU activations, float32. */
function samples(r: number, cols: number, seed: number, groups = 1): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(groups * r * cols);
  const f = new Float64Array(6);
  for (let s = 0; s < groups * r; s++) {
    for (let j = 0; j < f.length; j++) f[j] = rng.normal();
    for (let c = 0; c < cols; c++) {
      const v = 0.7 * rng.normal() + 0.7 * f[c % 6]! + 0.3 * f[(3 * c + 1) % 6]! + 0.2;
      x[s * cols + c] = v > 0 ? v : 0;
    }
  }
  return x;
}

function weights(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: rows * cols }, (_, i) => rng.normal() * 0.05 * (1 + (Math.floor(i / cols) % 5) / 5));
}

function factorOf(x: Float32Array, r: number, cols: number, groups = 1): FactorStatistic {
  return { kind: "factor", X: x, r, n: r, groups, cols };
}

/** H = X X^T / n straight from the definition. */
function naiveGram(f: FactorStatistic): GramStatistic {
  const { X, r, n, cols, groups } = f;
  const H = new Float64Array(groups * cols * cols);
  for (let g = 0; g < groups; g++)
    for (let s = 0; s < r; s++)
      for (let i = 0; i < cols; i++) {
        const xi = X[(g * r + s) * cols + i]!;
        for (let j = 0; j < cols; j++) H[g * cols * cols + i * cols + j] += (xi * X[(g * r + s) * cols + j]!) / n;
      }
  return { kind: "gram", H, groups, cols };
}

const bytes = (rs: unknown): string =>
  JSON.stringify(rs, (_k, v: unknown) => (ArrayBuffer.isView(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") : v));

const close = (a: number, b: number, rel: number, what: string): void =>
  assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-300), `${what}: ${a} vs ${b}`);

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den > 0 ? num / den : num;
}

describe("statistic forms", () => {
  test("the kernels of every engine compute A H from either form; a row's values do not depend on the block", async () => {
    const [rows, cols, r, groups] = [12, 37, 9, 2];
    const f = factorOf(samples(r, cols, 1, groups), r, cols, groups);
    const g = naiveGram(f);
    assert.ok(maxRel(toGram(f).H, g.H) < 1e-12);
    const rng = new Rng(2);
    const a = Float64Array.from({ length: rows * cols }, () => rng.normal());
    const ref = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      const off = Math.floor(i / (rows / groups)) * cols * cols;
      for (let j = 0; j < cols; j++) for (let c = 0; c < cols; c++) ref[i * cols + j] += a[i * cols + c]! * g.H[off + c * cols + j]!;
    }
    let refQuad = 0;
    for (let i = 0; i < ref.length; i++) refQuad += a[i]! * ref[i]!;
    const engines: StatEngine[] = [tsStatEngine, wasmStatEngine, ortStatEngine];
    for (const engine of engines)
      for (const stat of [g, f]) {
        const kernel = await engine.kernel(stat, rows);
        const p = new Float64Array(rows * cols);
        const quad = await kernel.multiply(0, rows, a, p);
        const what = `${engine.name} ${stat.kind}`;
        assert.ok(maxRel(p, ref) < 1e-12, `${what}: ${maxRel(p, ref)}`);
        close(quad, refQuad, 1e-12, `${what} quadratic form`);
        // Rows [3, 11) alone: the same bytes as in the whole product.
        const part = new Float64Array(8 * cols);
        await kernel.multiply(3, 11, a.subarray(3 * cols, 11 * cols), part);
        assert.deepEqual(part, p.subarray(3 * cols, 11 * cols), `${what}: a block's rows differ from the whole product's`);
        await kernel.dispose?.();
      }
  });

  test("the mixed onnxruntime engine's float32 products: close to float64, a row's values do not depend on the block", async () => {
    // Rows enough for both forms to reach FAST_PRODUCT_MIN_FLOPS (4 x 300 x 40 flops a row for X).
    const [rows, cols, r, groups] = [5216, 300, 40, 2];
    const f = factorOf(samples(r, cols, 5, groups), r, cols, groups);
    assert.ok(rows * 4 * cols * r >= FAST_PRODUCT_MIN_FLOPS);
    const rng = new Rng(6);
    const a = Float64Array.from({ length: rows * cols }, () => rng.normal());
    assert.equal(ortFloat64StatEngine.name, ORT_FLOAT64_PRODUCT);
    assert.equal((await ortFloat64StatEngine.kernel(f, rows)).multiplyFast, undefined, "the float64 engine has no float32 products");
    assert.equal((await ortStatEngine.kernel(f, 16)).multiplyFast, undefined, "nor a layer below FAST_PRODUCT_MIN_FLOPS");
    for (const stat of [toGram(f), f]) {
      const kernel = await ortStatEngine.kernel(stat, rows);
      assert.equal(kernel.engine, ORT_PRODUCT);
      const p = new Float64Array(rows * cols);
      const quad = await kernel.multiply(0, rows, a, p);
      const a32 = Float32Array.from(a);
      const fp = new Float32Array(rows * cols);
      const fastQuad = await kernel.multiplyFast!(0, rows, a32, fp);
      const what = `float32 ${stat.kind}`;
      assert.ok(maxRel(fp, p) < 1e-5, `${what}: ${maxRel(fp, p)}`);
      assert.ok(maxRel(fp, p) > 0, `${what}: rounded in float32`);
      close(fastQuad, quad, 1e-5, `${what} quadratic form`);
      const part = new Float32Array(8 * cols);
      await kernel.multiplyFast!(4, 12, a32.subarray(4 * cols, 12 * cols), part);
      assert.deepEqual(part, fp.subarray(4 * cols, 12 * cols), `${what}: a block's rows differ from the whole product's`);
      await kernel.dispose?.();
    }
  });

  test("the form: X when its columns are fewer than about half the reduction; blocks depend on the size only", () => {
    assert.equal(chooseStatisticForm(128, 9216, 1, 512, 503), "factor", "the issue's 128 x 9216 Gemm with 512 samples");
    assert.equal(chooseStatisticForm(120, 400, 1, 512, 503), "gram", "LeNet-5 f1");
    assert.equal(chooseStatisticForm(512, 2304, 1, 8192, 503), "gram", "a 3x3x256 conv on 512 small images");
    assert.equal(chooseStatisticForm(256, 4608, 1, 1024, 4), "factor", "a deep conv of a 1024 x 1024 image, output error only");
    assert.deepEqual(rowBlocks(84, 1, 2 * 120 * 120), [[0, 84]]);
    assert.deepEqual(rowBlocks(128, 1, 4 * 9216 * 512), [[0, 64], [64, 128]]);
    assert.deepEqual(rowBlocks(512, 1, 2 * 2304 * 2304), [[0, 128], [128, 256], [256, 384], [384, 512]]);
    const grouped = rowBlocks(1000, 2, 2 * 1152 * 1152);
    assert.deepEqual(grouped, [[0, 256], [256, 500], [500, 756], [756, 1000]], "blocks stay inside a group");
    assert.deepEqual(rowBlocks(256, 16, 2 * 2304 * 2304), [[0, 64], [64, 128], [128, 192], [192, 256]], "small groups: whole groups per block");
    assert.deepEqual(rowBlocks(512, 256, 2 * 9 * 9), [[0, 512]]);
  });

  test("output errors: both forms, this thread and the pools, agree", async () => {
    const [rows, cols, r] = [20, 64, 25];
    const f = factorOf(samples(r, cols, 3), r, cols);
    const g = naiveGram(f);
    const w = weights(rows, cols, 4);
    const wHat = w.map((v, i) => v + 0.01 * Math.sin(i));
    const e = relativeOutputError(w, wHat, rows, g);
    close(relativeOutputError(w, wHat, rows, f), e, 1e-10, "factor vs gram");
    close(quadraticForm(w, rows, f), quadraticForm(w, rows, g), 1e-10, "tr(W H W^T)");
    for (const map of [serialMap, pool1, pool2]) {
      assert.equal(await relativeOutputErrorOn(map, w, wHat, rows, g), e, `gram on ${map.threads}`);
      close(await relativeOutputErrorOn(map, w, wHat, rows, f, ORT_PRODUCT), e, 1e-10, `factor with onnxruntime on ${map.threads}`);
    }
  });
});

describe("fine-tuning with a factor statistic", () => {
  test("both forms give the same results within rounding (a layer where both are possible), reassign too", async () => {
    const [rows, cols, r] = [32, 96, 40];
    const f = factorOf(samples(r, cols, 5), r, cols);
    const g = naiveGram(f);
    const w = weights(rows, cols, 6);
    for (const mode of ["ssvq", "vq"] as const) {
      const q = (await quantizeRows(w, rows, cols, { mode, k: 16, d: 4, seed: 1, kmeansIters: 20 })) as VqQuantized;
      const settings = { iters: 120, reassign: true };
      const a = finetuneLayer({ w, stat: g, quantized: q }, settings);
      const b = finetuneLayer({ w, stat: f, quantized: q }, settings);
      close(b.stats.errorBefore, a.stats.errorBefore, 1e-9, `${mode} error before`);
      close(b.stats.errorAfter, a.stats.errorAfter, 1e-6, `${mode} error after`);
      assert.ok(b.stats.errorAfter < 0.9 * b.stats.errorBefore, `${mode}: fine-tuning lowers the error`);
      assert.ok(maxRel(b.codebook, a.codebook) < 1e-5, `${mode} codebook`);
      assert.equal(b.stats.reassigned, a.stats.reassigned, `${mode} moves`);
      assert.deepEqual(b.assignments, a.assignments);
      assert.deepEqual(b.signs, a.signs);
      b.stats.checks.forEach((c, i) => close(c.loss, a.stats.checks[i]!.loss, 1e-6, `${mode} check ${i}`));
      // The reported error is the output error of the reconstruction.
      close(b.stats.errorAfter, relativeOutputError(w, b.reconstructed, rows, g), 1e-6, `${mode} error after vs reconstruction`);
      // And onnxruntime's engine, in one task.
      const o = await finetuneLayerTask({ w, stat: shareStatistic(f), quantized: q, options: resolveFinetuneOptions(settings), engine: ORT_PRODUCT });
      close(o.stats.errorAfter, a.stats.errorAfter, 1e-6, `${mode} onnxruntime`);
    }
  });

  test("a factor layer gives the same bytes on the serial map and pools of 1 and 2 threads", async () => {
    const [rows, cols, r] = [24, 80, 30];
    const f = factorOf(samples(r, cols, 7), r, cols);
    const w = weights(rows, cols, 8);
    const q = (await quantizeRows(w, rows, cols, { mode: "ssvq", k: 16, d: 4, seed: 2, kmeansIters: 20 })) as VqQuantized;
    const settings = { iters: 80, reassign: true };
    const expected = bytes(finetuneLayer({ w, stat: f, quantized: q }, settings));
    for (const map of [serialMap, pool1, pool2]) {
      assert.equal(bytes(await finetuneLayers(map, [{ w, stat: f, quantized: q }], settings)), `[${expected}]`, `task, threads ${map.threads}`);
      assert.equal(bytes(await finetuneLayerOn(map, { w, stat: f, quantized: q }, settings)), expected, `split, threads ${map.threads}`);
    }
    // onnxruntime's engine: one task on one thread, split over two, the same bytes.
    const stat = shareStatistic(f);
    const options = resolveFinetuneOptions(settings);
    const [one] = await pool1.run<unknown, FinetuneResult>("finetune.layer", [{ w, stat, quantized: q, options, engine: ORT_PRODUCT }]);
    assert.equal(bytes(await finetuneLayerOn(pool2, { w, stat, quantized: q }, options, { engine: ORT_PRODUCT })), bytes(one));
  });
});

describe("one large layer on every thread", () => {
  /** Big enough for several blocks: 192 x 768 from H (3 blocks), 128 x 2048 from 300 columns (2 blocks). */
  async function bigLayers() {
    const gw = weights(192, 768, 11);
    const gx = factorOf(samples(900, 768, 12), 900, 768);
    const gram = toGram(gx);
    const fw = weights(128, 2048, 13);
    const fx = factorOf(samples(300, 2048, 14), 300, 2048);
    const gq = (await quantizeRows(gw, 192, 768, { mode: "ssvq", k: 16, d: 4, seed: 3, kmeansIters: 10 })) as VqQuantized;
    const fq = (await quantizeRows(fw, 128, 2048, { mode: "ssvq", k: 16, d: 4, seed: 4, kmeansIters: 10 })) as VqQuantized;
    return [
      { w: gw, stat: gram, quantized: gq },
      { w: fw, stat: fx, quantized: fq },
    ];
  }

  test("split into row blocks: the same bytes in this thread, in one task and split over 1 or 2 threads, any engine", async () => {
    const layers = await bigLayers();
    assert.deepEqual(finetuneBlocks(layers[0]!).length, 3);
    assert.deepEqual(finetuneBlocks(layers[1]!).length, 2);
    const settings = { iters: 30, reassign: true, freeze: { every: 5 } };
    for (const input of layers) {
      const expected = bytes(finetuneLayer(input, settings));
      const [task] = await finetuneLayers(pool2, [input], settings);
      assert.equal(bytes(task), expected, "one task");
      for (const map of [serialMap, pool1, pool2]) assert.equal(bytes(await finetuneLayerOn(map, input, settings)), expected, `split, threads ${map.threads}`);
      // onnxruntime: one task on a pool thread, and split over two threads.
      const stat = shareStatistic(input.stat);
      const options = resolveFinetuneOptions(settings);
      const [ortTask] = await pool1.run<unknown, FinetuneResult>("finetune.layer", [{ ...input, stat, options, engine: ORT_PRODUCT }]);
      const ortSplit = await finetuneLayerOn(pool2, { ...input, stat }, options, { engine: ORT_PRODUCT });
      assert.equal(bytes(ortSplit), bytes(ortTask), "onnxruntime: split vs one task");
      close(ortSplit!.stats.errorAfter, JSON.parse(expected).stats.errorAfter, 1e-6, "onnxruntime vs WebAssembly");
    }
  });

  test("a layer at FAST_PRODUCT_MIN_FLOPS: float32 between checks, the same bytes on 1 and 2 threads, float64 losses at the checks", async () => {
    const [rows, cols] = [256, 768];
    assert.ok(rows * 2 * cols * cols >= FAST_PRODUCT_MIN_FLOPS);
    const w = weights(rows, cols, 31);
    const stat = shareStatistic(toGram(factorOf(samples(900, cols, 32), 900, cols)));
    const q = (await quantizeRows(w, rows, cols, { mode: "ssvq", k: 16, d: 4, seed: 5, kmeansIters: 10 })) as VqQuantized;
    const options = resolveFinetuneOptions({ iters: 30, freeze: { every: 10 } });
    const [task] = await pool1.run<unknown, FinetuneResult>("finetune.layer", [{ w, stat, quantized: q, options, engine: ORT_PRODUCT }]);
    const split = await finetuneLayerOn(pool2, { w, stat, quantized: q }, options, { engine: ORT_PRODUCT });
    assert.equal(bytes(split), bytes(task), "mixed: split on 2 threads vs one task on 1");
    const full = await finetuneLayerOn(pool2, { w, stat, quantized: q }, options, { engine: ORT_FLOAT64_PRODUCT });
    assert.notEqual(bytes(full.codebook), bytes(task!.codebook), "float32 between checks changes the path");
    // Iteration 0 is float64 in both: the same loss before; after, close.
    assert.equal(task!.stats.lossBefore, full.stats.lossBefore);
    close(task!.stats.errorAfter, full.stats.errorAfter, 1e-3, "mixed vs float64");
    // A check's loss is the float64 loss of its state: the stored result's loss at the last check.
    const last = task!.stats.checks.at(-1)!;
    close(last.loss, task!.stats.lossAfter, 1e-6, "the last check's loss vs the stored result's");
  });

  test("compressModel: a model of one large layer gives the same bytes with 1 thread (one task) and 2 (split)", async () => {
    const K = 768;
    const N = 192;
    const bytesIn = encodeModel(
      model(graph({ nodes: [node("MatMul", ["x", "w"], ["y"], {}, "mm")], inputs: [valueInfo("x", ["batch", K])], outputs: [valueInfo("y", ["batch", N])], initializers: [randomTensor("w", [K, N], 21)] })),
    );
    const stat = toGram(factorOf(samples(900, K, 22), 900, K));
    const config: CompressConfig = {
      mode: "ssvq",
      k: 16,
      d: 4,
      seed: 1,
      kmeansIters: 10,
      minWeights: 1,
      format: "ssvq",
      finetune: true,
      finetuning: resolveFinetuneOptions({ iters: 40, reassign: true }),
    };
    const runs = [];
    for (const map of [pool1, pool2]) {
      const checks: number[] = [];
      const r = await compressModel(
        { bytes: bytesIn, path: "big.onnx" },
        { config, stats: new Map([["w", stat]]), map, productEngine: ORT_PRODUCT, onProgress: (e) => void (e.kind === "freezeCheck" && checks.push(e.iteration)) },
      );
      assert.deepEqual(checks, r.report.layers[0]!.finetune!.checks.map((c) => c.iteration), "every check emitted once, in order");
      runs.push(r);
    }
    assert.ok(Buffer.from(runs[0]!.model).equals(Buffer.from(runs[1]!.model)), "the output differs between 1 and 2 threads");
    assert.deepEqual(runs[0]!.report.layers[0]!.outputError, runs[1]!.report.layers[0]!.outputError);
    assert.deepEqual(runs[0]!.report.layers[0]!.finetune!.checks, runs[1]!.report.layers[0]!.finetune!.checks);
  });
});

describe("capture keeps the form the layer will use", () => {
  const work = mkdtempSync(join(tmpdir(), "ssvq-forms-"));
  after(() => rmSync(work, { recursive: true, force: true }));

  test("the factor form keeps X (float32, every sample's columns): X X^T / n is the gram capture's H", async () => {
    const m = smallCnn();
    const { weights: ws } = findWeights(m);
    const data = () => randomData(modelInputs(m), { count: 10, seed: 5, batchSize: 4 });
    const gram = await captureActivations(m, ws, data());
    const asked: string[] = [];
    const factor = await captureActivations(m, ws, data(), {
      choose: (q) => {
        asked.push(`${q.name}:${q.samples}`);
        return "factor";
      },
    });
    // Samples per group over the data: conv1 8x8 positions, conv2 3x3, fc1 and fc2 one per image.
    assert.deepEqual(asked.sort(), ["w1:640", "w2:90", "w3:10", "w4:10"]);
    for (const [name, g] of gram.layers) {
      const f = factor.layers.get(name)!;
      assert.equal(f.kind, "factor", name);
      if (f.kind !== "factor") continue;
      assert.ok(f.X instanceof Float32Array && f.X.buffer instanceof SharedArrayBuffer, `${name}: X float32 in shared memory`);
      assert.equal(f.r, g.samples);
      assert.equal(f.n, g.samples);
      assert.ok(maxRel(toGram(f).H, g.H) < 1e-12, `${name}: ${maxRel(toGram(f).H, g.H)}`);
      close(f.trace, g.trace, 1e-12, `${name} trace`);
      assert.equal(f.meanSquare, g.meanSquare);
    }
    // Without the data's size nothing is estimated: every layer keeps H.
    const unsized = data();
    const noInfo = await captureActivations(m, ws, { batches: () => unsized.batches() }, { choose: () => "factor" as const });
    for (const l of noInfo.layers.values()) assert.equal(l.kind, "gram");
  });

  test("compressFile: a Gemm fed by fewer samples than half its columns keeps X; 1 and 2 threads give the same bytes", async () => {
    // x [batch, 600] -> Gemm 600 -> 96 (X: 64 samples, factor) -> Relu -> MatMul 96 -> 40 (gram).
    const inits = [randomTensor("w1", [96, 600], 31), randomTensor("w2", [96, 40], 32)];
    const nodes = [node("Gemm", ["x", "w1"], ["h"], { transB: 1 }, "fc1"), node("Relu", ["h"], ["r"]), node("MatMul", ["r", "w2"], ["y"], {}, "fc2")];
    const input = join(work, "two.onnx");
    writeFileSync(input, encodeModel(model(graph({ nodes, inputs: [valueInfo("x", ["batch", 600])], outputs: [valueInfo("y", ["batch", 40])], initializers: inits }))));
    const config: CompressConfig = {
      mode: "ssvq",
      k: 16,
      d: 4,
      seed: 1,
      kmeansIters: 10,
      minWeights: 1,
      format: "ssvq",
      finetune: true,
      finetuning: resolveFinetuneOptions({ iters: 40 }),
    };
    const outs: Buffer[] = [];
    const reports = [];
    for (const map of [pool1, pool2]) {
      const out = join(work, `two.${map.threads}.onnx`);
      const { report } = await compressFile({ input, out, force: true, config, map, data: { calib: { count: 64, seed: 3 } } });
      outs.push(readFileSync(out));
      reports.push(report);
    }
    assert.ok(outs[0]!.equals(outs[1]!), "1 and 2 threads differ");
    const fc1 = reports[0]!.layers.find((l) => l.name === "w1")!;
    assert.ok(fc1.finetune!.errorAfter < fc1.finetune!.errorBefore);
    assert.ok(Math.abs(fc1.finetune!.errorAfter - fc1.outputError!) < 1e-6 * fc1.outputError!);
  });
});

describe("the sequential variant from the stacked statistic", () => {
  /** X_fp and X_q [r][c] per group (X_q = X_fp perturbed), stacked sample by sample: [r][2c]. */
  function stackedSamples(r: number, c: number, seed: number, groups = 1): { fp: Float32Array; q: Float32Array; stacked: Float32Array } {
    const fp = samples(r, c, seed, groups);
    const rng = new Rng(seed + 1);
    const q = fp.map((v) => Math.max(0, v + 0.2 * rng.normal()));
    const stacked = new Float32Array(groups * r * 2 * c);
    for (let j = 0; j < groups * r; j++) {
      stacked.set(fp.subarray(j * c, (j + 1) * c), j * 2 * c);
      stacked.set(q.subarray(j * c, (j + 1) * c), j * 2 * c + c);
    }
    return { fp, q, stacked };
  }

  test("target and loss: both forms, on any map, agree with sequentialTarget / sequentialLoss from H_qq, H_fq, H_ff", async () => {
    const { sequentialLoss, sequentialLossOn, sequentialTarget, sequentialTargetOn, splitStacked, qqStatistic } = await import("../src/core/calib/sequential.js");
    const [rows, c, r, groups] = [12, 40, 15, 2];
    const { stacked } = stackedSamples(r, c, 41, groups);
    const f = factorOf(stacked, r, 2 * c, groups);
    const g = toGram(f);
    const { hff, hfq, hqq } = splitStacked(g.H, groups, c);
    const w = weights(rows, c, 42);
    const wHat = w.map((v, i) => v + 0.02 * Math.cos(i));
    for (const damping of [1e-6, 1e-2]) {
      const ref = sequentialTarget(w, rows, c, groups, hqq, hfq, { hff, damping });
      const refLoss = sequentialLoss(wHat, w, rows, { hqq, hfq, hff, groups, cols: c });
      for (const stat of [g, f]) {
        const results = [];
        for (const map of [serialMap, pool2]) {
          const t = await sequentialTargetOn(map, w, rows, stat, { damping });
          assert.ok(maxRel(t.target, ref.target) < 1e-5, `${stat.kind} damping ${damping}: target differs by ${maxRel(t.target, ref.target)}`);
          t.lambdas.forEach((l, i) => close(l, ref.lambdas[i]!, 1e-9, `${stat.kind} lambda of group ${i}`));
          assert.equal(t.retries, ref.retries);
          const loss = await sequentialLossOn(map, w, wHat, rows, stat);
          close(loss.loss, refLoss.loss, 1e-8, `${stat.kind} loss`);
          close(loss.reference, refLoss.reference, 1e-10, `${stat.kind} reference`);
          results.push(bytes({ t: t.target, loss }));
        }
        assert.equal(results[0], results[1], `${stat.kind}: serial map and pool differ`);
      }
    }
    // H_qq / X_q for fine-tuning.
    assert.ok(maxRel(toGram(qqStatistic(f)).H, hqq) < 1e-12);
    assert.deepEqual((qqStatistic(g) as GramStatistic).H, hqq);
  });

  test("compressFile --sequential: a layer that keeps X gives the same bytes on 1 and 2 threads", async () => {
    const work = mkdtempSync(join(tmpdir(), "ssvq-forms-seq-"));
    try {
      const inits = [randomTensor("w1", [96, 600], 51), randomTensor("w2", [96, 40], 52)];
      const nodes = [node("Gemm", ["x", "w1"], ["h"], { transB: 1 }, "fc1"), node("Relu", ["h"], ["r"]), node("MatMul", ["r", "w2"], ["y"], {}, "fc2")];
      const input = join(work, "seq.onnx");
      writeFileSync(input, encodeModel(model(graph({ nodes, inputs: [valueInfo("x", ["batch", 600])], outputs: [valueInfo("y", ["batch", 40])], initializers: inits }))));
      const config: CompressConfig = {
        mode: "ssvq",
        k: 16,
        d: 4,
        seed: 1,
        kmeansIters: 10,
        minWeights: 1,
        format: "ssvq",
        finetune: true,
        finetuning: resolveFinetuneOptions({ iters: 40 }),
        sequential: true,
      };
      const outs: Buffer[] = [];
      for (const map of [pool1, pool2]) {
        const out = join(work, `seq.${map.threads}.onnx`);
        const { report } = await compressFile({ input, out, force: true, config, map, data: { calib: { count: 64, seed: 3 } } });
        outs.push(readFileSync(out));
        for (const l of report.layers) assert.ok(l.finetune!.errorAfter < l.finetune!.errorBefore, `${l.name}: ${l.finetune!.errorBefore} -> ${l.finetune!.errorAfter}`);
      }
      assert.ok(outs[0]!.equals(outs[1]!), "1 and 2 threads differ");
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

test("a cached kernel is never disposed while a task uses it: more layers than the cache holds interleave on one thread (compress --threads 1 stopped with 'Session already disposed')", async () => {
  registerOrtProduct();
  const cols = 16;
  const stats = Array.from({ length: KERNEL_CACHE_ENTRIES + 3 }, (_, i) => {
    const H = new Float64Array(cols * cols);
    for (let c = 0; c < cols; c++) H[c * cols + c] = 1 + i;
    return shareStatistic({ H, groups: 1, cols } as GramStatistic);
  });
  const a = new Float64Array(2 * cols).fill(1);
  // The first task holds its kernel across awaits while every other statistic builds one on this thread.
  const first = withCachedKernel(stats[0]!, ORT_PRODUCT, 2, async (kernel) => {
    const before = await kernel.multiply(0, 2, a, new Float64Array(2 * cols));
    await Promise.all(stats.slice(1).map((s) => withCachedKernel(s, ORT_PRODUCT, 2, (k) => k.multiply(0, 2, a, new Float64Array(2 * cols)))));
    const after = await kernel.multiply(0, 2, a, new Float64Array(2 * cols));
    return [before, after];
  });
  const [before, after] = await first;
  assert.equal(before, 2 * cols);
  assert.equal(after, before);
});

test("the kernel cache keeps what its bound allows: a wave's room, or the default again", async () => {
  registerOrtProduct();
  const cols = 64;
  const stats = Array.from({ length: 4 }, (_, i) => {
    const H = new Float64Array(cols * cols);
    for (let c = 0; c < cols; c++) H[c * cols + c] = 1 + i;
    return shareStatistic({ H, groups: 1, cols } as GramStatistic);
  });
  const a = new Float64Array(2 * cols).fill(1);
  const useAll = () => Promise.all(stats.map((s) => withCachedKernel(s, ORT_PRODUCT, 2, (k) => k.multiply(0, 2, a, new Float64Array(2 * cols)))));
  try {
    // No room beyond the kernel in use (what a wave leaves when its plan fills the budget): one kept.
    await clearKernelsTask({ cacheBytes: 0 }); // (and the kernels earlier tests left on this thread go)
    await useAll();
    assert.equal(await clearKernelsTask({}), 1);
    // The default bound (set by the task without cacheBytes) keeps all four small kernels.
    await useAll();
    assert.equal(await clearKernelsTask({}), 4);
    // Room for about two of them (each holds its statistic twice: 2 x 32 KB).
    setKernelCacheLimit(2 * 2 * cols * cols * 8 + 1000);
    await useAll();
    const kept = await clearKernelsTask({});
    assert.ok(kept >= 1 && kept <= 3, `${kept} kept`);
  } finally {
    setKernelCacheLimit(undefined);
  }
});
