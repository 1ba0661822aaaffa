/**
 * Fine-tuning's per-weight loops in WebAssembly (finetune-wasm.ts) against the TypeScript loops they
 * replace: the same bytes for every kind of layer (SSVQ with and without freezing, fixed signs, VQ, an odd
 * number of weights, checks run apart for an onCheck hook, float32 products), in this thread, in a task
 * and split over a pool's threads with the state in shared WebAssembly memory.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Rng } from "../src/core/rng.js";
import { disableFinetuneWasm } from "../src/core/ssvq/finetune-wasm.js";
import {
  finetuneLayer,
  finetuneLayerOn,
  finetuneLayerWith,
  FAST_PRODUCT_MIN_FLOPS,
  resolveFinetuneOptions,
  type FinetuneHooks,
  type FinetuneResult,
  type FinetuneSettings,
  type FinetuneStatInput,
} from "../src/core/ssvq/finetune.js";
import { quantizeRows, type VqQuantized } from "../src/core/ssvq/quantize.js";
import { shareStatistic, type GramStatistic } from "../src/core/ssvq/stat-product.js";
import { wasmAvailable } from "../src/core/ssvq/gemm-wasm.js";
import { createThreadPool } from "../src/io/pool.js";
import { ortStatEngine, registerOrtProduct, ORT_PRODUCT } from "../src/io/ort-product.js";

const pool2 = createThreadPool(2);
after(async () => {
  disableFinetuneWasm(false);
  await pool2.close();
});

const bytes = (r: FinetuneResult): string =>
  JSON.stringify(r, (_k, v: unknown) => (ArrayBuffer.isView(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") : v));

/** W [rows, cols] and H = X X^T / n of correlated post-ReLU samples (+ a ridge). */
function layerData(rows: number, cols: number, seed: number, groups = 1): { w: Float32Array; stat: GramStatistic } {
  const rng = new Rng(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * 0.05 * (1 + (Math.floor(i / cols) % 5) / 5);
  const H = new Float64Array(groups * cols * cols);
  const n = 2 * cols;
  const x = new Float64Array(cols);
  for (let g = 0; g < groups; g++) {
    const off = g * cols * cols;
    for (let s = 0; s < n; s++) {
      const f = [rng.normal(), rng.normal(), rng.normal()];
      for (let c = 0; c < cols; c++) {
        const v = 0.7 * rng.normal() + 0.6 * f[c % 3]! + 0.1;
        x[c] = v > 0 ? v : 0;
      }
      for (let p = 0; p < cols; p++) if (x[p]) for (let q = 0; q < cols; q++) H[off + p * cols + q] += x[p]! * x[q]!;
    }
    for (let i = 0; i < cols * cols; i++) H[off + i] /= n;
    for (let c = 0; c < cols; c++) H[off + c * cols + c] += 1e-3;
  }
  return { w, stat: { kind: "gram", H, groups, cols } };
}

async function input(rows: number, cols: number, seed: number, mode: "ssvq" | "vq", groups = 1): Promise<FinetuneStatInput> {
  const { w, stat } = layerData(rows, cols, seed, groups);
  const quantized = (await quantizeRows(w, rows, cols, { mode, k: 16, d: 4, seed, kmeansIters: 10 })) as VqQuantized;
  return { w, stat, quantized };
}

/** Runs `f` with the TypeScript loops and with WebAssembly; checks the state's placement through onCheck. */
async function both(f: (hooks: FinetuneHooks) => FinetuneResult | Promise<FinetuneResult>): Promise<[FinetuneResult, FinetuneResult]> {
  const placed: boolean[] = [];
  const hooks: FinetuneHooks = { onCheck: (_c, state) => void placed.push(state.negative.byteOffset > 0) };
  disableFinetuneWasm(true);
  const ts = await f(hooks);
  disableFinetuneWasm(false);
  const wasm = await f(hooks);
  const half = placed.length / 2;
  assert.ok(half > 0, "checks ran");
  assert.ok(placed.slice(0, half).every((x) => !x), "TypeScript: plain arrays");
  assert.ok(placed.slice(half).every((x) => x), "WebAssembly: views of the state's memory");
  return [ts, wasm];
}

describe("fine-tuning's WebAssembly loops", { skip: !wasmAvailable() }, () => {
  const cases: Array<[string, () => Promise<FinetuneStatInput>, FinetuneSettings]> = [
    ["SSVQ with freezing, 2 groups", () => input(24, 40, 1, "ssvq", 2), { iters: 60, freeze: { every: 7 } }],
    ["SSVQ without freezing", () => input(20, 36, 2, "ssvq"), { iters: 50, freeze: false }],
    ["SSVQ with fixed signs and re-assignment", () => input(16, 32, 3, "ssvq"), { iters: 40, fixedSigns: true, reassign: true }],
    ["VQ", () => input(16, 28, 4, "vq"), { iters: 40, reassign: true }],
    ["an odd number of weights (7 x 27, padded sub-vectors)", () => input(7, 27, 5, "ssvq"), { iters: 45, freeze: { every: 5 } }],
  ];
  for (const [name, make, settings] of cases) {
    test(`${name}: the same bytes as the TypeScript loops, in this thread and split over 2 threads`, async () => {
      const layer = await make();
      const [ts, wasm] = await both((hooks) => finetuneLayer(layer, settings, hooks));
      assert.equal(bytes(wasm), bytes(ts));
      assert.ok(wasm.stats.errorAfter < wasm.stats.errorBefore, "fine-tuning lowers the error");
      if (settings.freeze !== false && !settings.fixedSigns && layer.quantized.mode === "ssvq") assert.ok(wasm.stats.signsChanged > 0, "signs flip");
      const [tsSplit, wasmSplit] = await both((hooks) => finetuneLayerOn(pool2, layer, settings, { hooks }));
      assert.equal(bytes(tsSplit), bytes(ts), "split, TypeScript loops");
      assert.equal(bytes(wasmSplit), bytes(ts), "split, WebAssembly loops");
    });
  }

  test("a layer large enough for several blocks and float32 products (onnxruntime): the same bytes", async () => {
    registerOrtProduct();
    const [rows, cols] = [256, 768];
    assert.ok(rows * 2 * cols * cols >= FAST_PRODUCT_MIN_FLOPS);
    const layer = await input(rows, cols, 6, "ssvq");
    const settings = resolveFinetuneOptions({ iters: 12, freeze: { every: 4 } });
    const [ts, wasm] = await both((hooks) => finetuneLayerWith(ortStatEngine, layer, settings, hooks));
    assert.equal(bytes(wasm), bytes(ts), "in this thread");
    const stat = shareStatistic(layer.stat as GramStatistic);
    const [tsSplit, wasmSplit] = await both((hooks) => finetuneLayerOn(pool2, { ...layer, stat }, settings, { engine: ORT_PRODUCT, hooks }));
    assert.equal(bytes(tsSplit), bytes(ts), "split, TypeScript loops");
    assert.equal(bytes(wasmSplit), bytes(ts), "split, WebAssembly loops");
  });

  test("float32 iterations skip their loss unless an onIteration hook reads it: the same bytes either way", async () => {
    registerOrtProduct();
    const [rows, cols] = [256, 768];
    const layer = await input(rows, cols, 7, "ssvq");
    const kernel = await ortStatEngine.kernel(layer.stat as GramStatistic, rows);
    const a = new Float32Array(rows * cols).map((_, i) => Math.sin(i));
    const [p1, p2] = [new Float32Array(rows * cols), new Float32Array(rows * cols)];
    assert.ok(Number.isFinite(await kernel.multiplyFast!(0, rows, a, p1)));
    assert.ok(Number.isNaN(await kernel.multiplyFast!(0, rows, a, p2, false)), "no loss: NaN");
    assert.deepEqual(p2, p1, "the same product");
    await kernel.dispose?.();
    const settings = resolveFinetuneOptions({ iters: 12, freeze: { every: 4 } });
    const losses: number[] = [];
    const withHook = await finetuneLayerWith(ortStatEngine, layer, settings, { onIteration: (_t, loss) => void losses.push(loss) });
    const without = await finetuneLayerWith(ortStatEngine, layer, settings);
    assert.equal(bytes(without), bytes(withHook));
    assert.equal(losses.length, 13);
    assert.ok(losses.every((l) => Number.isFinite(l) && l > 0), "every iteration's loss, the float32 ones included");
  });
});
