import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { isCancelledError, isInputError } from "../src/core/errors.js";
import { Rng } from "../src/core/rng.js";
import {
  applyFinetune,
  finetuneLayer,
  finetuneLayers,
  finetuneLayerWith,
  defaultProduct,
  jsProduct,
  layerGradients,
  resolveFinetuneOptions,
  type FinetuneInput,
  type FinetuneResult,
} from "../src/core/ssvq/finetune.js";
import { SignFreezer, freezeThreshold } from "../src/core/ssvq/freeze.js";
import { DEFAULT_KC, symmMulBlocked, symmMulPlain } from "../src/core/ssvq/gemm-kernels.js";
import { symmMulWasm, wasmAvailable, WasmSymmMul } from "../src/core/ssvq/gemm-wasm.js";
import { subvectorShape } from "../src/core/ssvq/layout.js";
import { quantizeRows, reconstructRows, type VqQuantized } from "../src/core/ssvq/quantize.js";
import { serialMap } from "../src/core/tasks.js";
import { createThreadPool } from "../src/io/pool.js";

const pool1 = createThreadPool(1);
const pool2 = createThreadPool(2);
after(() => Promise.all([pool1.close(), pool2.close()]));

/**
 * A synthetic layer: W [rows, cols] normal with row-dependent scale, and groups blocks of H = X X^T / n
 * (+ a small ridge, so H is positive definite) from correlated post-ReLU activations, the kind of
 * statistic a real layer sees.
 */
function syntheticLayer(rows: number, cols: number, seed: number, groups = 1, scale = 0.05): { w: Float32Array; h: Float64Array } {
  const rng = new Rng(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * scale * (1 + (Math.floor(i / cols) % 5) / 5);
  const h = new Float64Array(groups * cols * cols);
  const n = 3 * cols;
  const f = new Float64Array(6);
  const x = new Float64Array(cols);
  for (let g = 0; g < groups; g++) {
    const off = g * cols * cols;
    for (let s = 0; s < n; s++) {
      for (let j = 0; j < f.length; j++) f[j] = rng.normal();
      for (let c = 0; c < cols; c++) {
        const v = 0.7 * rng.normal() + 0.7 * f[c % 6] + 0.3 * f[(3 * c + 1) % 6] + 0.2;
        x[c] = v > 0 ? v : 0;
      }
      for (let p = 0; p < cols; p++) {
        if (x[p] === 0) continue;
        for (let q = 0; q < cols; q++) h[off + p * cols + q] += x[p] * x[q];
      }
    }
    for (let i = 0; i < cols * cols; i++) h[off + i] /= n;
    for (let c = 0; c < cols; c++) h[off + c * cols + c] += 1e-3;
  }
  return { w, h };
}

/** tr((A - W) H (A - W)^T) per group, the textbook way (independent of the engine). */
function naiveLoss(a: ArrayLike<number>, w: Float32Array, h: Float32Array | Float64Array, rows: number, cols: number, groups: number): number {
  const rpg = rows / groups;
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const off = Math.floor(r / rpg) * cols * cols;
    for (let i = 0; i < cols; i++) {
      const ei = a[r * cols + i] - w[r * cols + i];
      for (let j = 0; j < cols; j++) loss += ei * h[off + i * cols + j] * (a[r * cols + j] - w[r * cols + j]);
    }
  }
  return loss;
}

async function layer(rows: number, cols: number, seed: number, mode: "ssvq" | "vq", k: number, d: number, groups = 1): Promise<FinetuneInput> {
  const { w, h } = syntheticLayer(rows, cols, seed, groups);
  const quantized = (await quantizeRows(w, rows, cols, { mode, k, d, seed, kmeansIters: 30 })) as VqQuantized;
  return { w, h, groups, quantized };
}

const relErr = (input: FinetuneInput, rec: Float32Array): number => {
  const { rows, cols } = input.quantized.shape;
  return Math.sqrt(naiveLoss(rec, input.w, input.h, rows, cols, input.groups) / naiveLoss(new Float32Array(rows * cols), input.w, input.h, rows, cols, input.groups));
};

describe("gemm kernels", () => {
  it("the blocked kernel equals the plain loop on odd sizes and block boundaries", () => {
    const rng = new Rng(3);
    for (const [m, k, kc] of [[1, 1, DEFAULT_KC], [5, 7, DEFAULT_KC], [9, 13, 4], [6, 10, 3], [13, 37, 16]]) {
      const e = Float64Array.from({ length: m * k }, () => rng.normal());
      const h = new Float64Array(k * k);
      for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) h[i * k + j] = h[j * k + i] = rng.normal();
      const a = new Float64Array(m * k);
      const b = new Float64Array(m * k).fill(123); // must be overwritten
      symmMulPlain(e, m, k, h, a);
      symmMulBlocked(e, m, k, h, b, kc);
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-12 * (1 + Math.abs(a[i])), `m${m} k${k} kc${kc} at ${i}: ${a[i]} vs ${b[i]}`);
      const c = new Float64Array(m * k).fill(123);
      symmMulWasm(e, m, k, h, c);
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - c[i]) <= 1e-12 * (1 + Math.abs(a[i])), `wasm m${m} k${k} at ${i}: ${a[i]} vs ${c[i]}`);
    }
  });

  it("the WebAssembly SIMD kernel is available here and handles groups", () => {
    assert.ok(wasmAvailable(), "Node 20 has WebAssembly SIMD");
    assert.equal(defaultProduct.name, "wasm-simd");
    const rng = new Rng(4);
    const [groups, rows, k] = [3, 9, 7];
    const e = Float64Array.from({ length: rows * k }, () => rng.normal());
    const h = new Float64Array(groups * k * k);
    for (let g = 0; g < groups; g++)
      for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) h[g * k * k + i * k + j] = h[g * k * k + j * k + i] = rng.normal();
    const out = new Float64Array(rows * k);
    new WasmSymmMul(h, groups, rows, k).multiply(e, out);
    const ref = new Float64Array(rows * k);
    for (let g = 0; g < groups; g++) symmMulPlain(e.subarray(g * 3 * k), 3, k, h.subarray(g * k * k), ref.subarray(g * 3 * k));
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(ref[i] - out[i]) <= 1e-12 * (1 + Math.abs(ref[i])));
  });
});

describe("fine-tuning objective", () => {
  it("gradients match finite differences (codebook, latent before the sign, weights), with padding and 2 groups", () => {
    const rows = 4;
    const cols = 6;
    const d = 4;
    const k = 3;
    const groups = 2;
    const rng = new Rng(11);
    const { w, h } = syntheticLayer(rows, cols, 5, groups);
    const shape = subvectorShape(rows, cols, d);
    const codebook = Float32Array.from({ length: k * d }, () => Math.abs(rng.normal()) * 0.05);
    const assignments = Uint32Array.from({ length: shape.count }, () => rng.int(k));
    const signs = new Uint8Array(shape.count * d);
    const neg = new Uint8Array(rows * cols);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) signs[r * shape.paddedCols + c] = neg[r * cols + c] = rng.next() < 0.5 ? 1 : 0;
    const quantized: VqQuantized = { mode: "ssvq", k, d, shape, codebook, assignments, signs, kmeansIterations: 0 };
    const input: FinetuneInput = { w, h, groups, quantized };

    // W_hat from a codebook and a real-valued "sign" u per position (u = +-1 is the SSVQ reconstruction).
    const build = (cbk: ArrayLike<number>, u: Float64Array): Float64Array => {
      const a = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++) a[r * cols + c] = u[r * cols + c] * cbk[assignments[r * shape.perRow + Math.floor(c / d)] * d + (c % d)];
      return a;
    };
    const u0 = Float64Array.from(neg, (s) => (s ? -1 : 1));
    const cb64 = Float64Array.from(codebook);
    const g = layerGradients(input, codebook, neg);
    const loss0 = naiveLoss(build(cb64, u0), w, h, rows, cols, groups);
    assert.ok(Math.abs(g.loss - loss0) <= 1e-9 * loss0, `loss ${g.loss} vs ${loss0}`);

    const step = 1e-4;
    const close = (analytic: number, numeric: number, what: string): void =>
      assert.ok(Math.abs(analytic - numeric) <= 1e-6 * Math.max(1e-6, Math.abs(numeric)) + 1e-12, `${what}: analytic ${analytic}, numeric ${numeric}`);
    let codewordsUsed = 0;
    for (let i = 0; i < k * d; i++) {
      const plus = Float64Array.from(cb64);
      const minus = Float64Array.from(cb64);
      plus[i] += step;
      minus[i] -= step;
      const numeric = (naiveLoss(build(plus, u0), w, h, rows, cols, groups) - naiveLoss(build(minus, u0), w, h, rows, cols, groups)) / (2 * step);
      close(g.codebook[i], numeric, `codebook ${i}`);
      if (numeric !== 0) codewordsUsed++;
    }
    assert.ok(codewordsUsed > k * d / 2, "the check exercised the codebook");
    for (let p = 0; p < rows * cols; p++) {
      const plus = Float64Array.from(u0);
      const minus = Float64Array.from(u0);
      plus[p] += step;
      minus[p] -= step;
      const numeric = (naiveLoss(build(cb64, plus), w, h, rows, cols, groups) - naiveLoss(build(cb64, minus), w, h, rows, cols, groups)) / (2 * step);
      close(g.latent[p], numeric, `latent ${p}`);
      // dLoss/dW_hat: perturb the reconstructed weight itself.
      const base = build(cb64, u0);
      const wp = Float64Array.from(base);
      const wm = Float64Array.from(base);
      wp[p] += step;
      wm[p] -= step;
      const nw = (naiveLoss(wp, w, h, rows, cols, groups) - naiveLoss(wm, w, h, rows, cols, groups)) / (2 * step);
      close(g.weights[p], nw, `weight ${p}`);
    }

    // VQ: no signs.
    const vq: VqQuantized = { mode: "vq", k, d, shape, codebook, assignments, kmeansIterations: 0 };
    const gv = layerGradients({ w, h, groups, quantized: vq }, codebook);
    const ones = new Float64Array(rows * cols).fill(1);
    for (let i = 0; i < k * d; i++) {
      const plus = Float64Array.from(cb64);
      const minus = Float64Array.from(cb64);
      plus[i] += step;
      minus[i] -= step;
      const numeric = (naiveLoss(build(plus, ones), w, h, rows, cols, groups) - naiveLoss(build(minus, ones), w, h, rows, cols, groups)) / (2 * step);
      close(gv.codebook[i], numeric, `vq codebook ${i}`);
    }
  });
});

describe("fine-tuning a layer", () => {
  it("lowers the output error for SSVQ and VQ; stats agree with an independent computation", async () => {
    for (const [mode, k] of [["ssvq", 16], ["vq", 64]] as const) {
      const input = await layer(32, 64, 1, mode, k, 4);
      const r = finetuneLayer(input, { iters: 150 });
      const before = relErr(input, reconstructRows(input.quantized));
      const afterErr = relErr(input, r.reconstructed);
      assert.ok(Math.abs(r.stats.errorBefore - before) < 1e-6, `${mode} before ${r.stats.errorBefore} vs ${before}`);
      assert.ok(Math.abs(r.stats.errorAfter - afterErr) < 1e-6, `${mode} after ${r.stats.errorAfter} vs ${afterErr}`);
      assert.ok(afterErr < 0.85 * before, `${mode}: ${before} -> ${afterErr}`);
      // The result is a valid quantization whose decode is the reconstruction.
      assert.deepEqual(reconstructRows(applyFinetune(input.quantized, r)), r.reconstructed);
      assert.equal(r.stats.usage.reduce((a, b) => a + b, 0), input.quantized.shape.count);
      assert.deepEqual(r.stats.codebookBefore, input.quantized.codebook);
      // F = round(150 / 20) = 8: checks at 8, 16, ..., 144 and at the end.
      assert.deepEqual(r.stats.checks.map((c) => c.iteration), [...Array.from({ length: 18 }, (_, i) => 8 * (i + 1)), 150]);
      assert.equal(r.stats.checks.at(-1)!.iteration, 150);
      if (mode === "ssvq") {
        assert.ok(r.stats.signsChanged > 0, "some signs were learned");
        let changed = 0;
        for (let p = 0; p < input.w.length; p++) if ((r.reconstructed[p] < 0) !== (input.w[p] < 0) && r.reconstructed[p] !== 0) changed++;
        assert.ok(changed <= r.stats.signsChanged);
      } else {
        assert.equal(r.signs, undefined);
      }
    }
  });

  it("keeps the SSVQ codebook non-negative, clamping entries the objective pushes below zero", async () => {
    const input = await layer(16, 32, 2, "ssvq", 8, 4);
    // Signs opposite to the weights' everywhere: the best magnitudes are negative, so the clamp must hold.
    const flipped: VqQuantized = { ...input.quantized, signs: input.quantized.signs!.map((s) => 1 - s) };
    const r = finetuneLayer({ ...input, quantized: flipped }, { iters: 100, fixedSigns: true, lrCodebook: 0.05 });
    assert.ok(r.codebook.every((v) => v >= 0 && !Object.is(v, -0)), "codebook >= 0");
    assert.ok(r.codebook.some((v) => v === 0), "some entries were clamped at 0");
    const normal = finetuneLayer(input, { iters: 100, lrCodebook: 0.05 });
    assert.ok(normal.codebook.every((v) => v >= 0));
  });

  it("fixedSigns never changes a sign and trains the codebook only", async () => {
    const input = await layer(32, 64, 3, "ssvq", 16, 4);
    const checksSeen: number[] = [];
    const r = finetuneLayer(input, { iters: 100, fixedSigns: true, lrSign: 1 }, { onCheck: (c) => checksSeen.push(c.flips) });
    assert.deepEqual(r.signs, input.quantized.signs);
    assert.equal(r.stats.signsChanged, 0);
    assert.ok(checksSeen.every((f) => f === 0));
    assert.ok(r.stats.errorAfter < r.stats.errorBefore);
  });

  it("re-assignment never raises the loss and moves some sub-vectors", async () => {
    for (const mode of ["ssvq", "vq"] as const) {
      const input = await layer(24, 40, 4, mode, 16, 4);
      const plain = finetuneLayer(input, { iters: 60 });
      const re = finetuneLayer(input, { iters: 60, reassign: true });
      assert.ok(re.stats.reassigned > 0, mode);
      assert.ok(re.stats.lossAfter <= plain.stats.lossAfter * (1 + 1e-12), `${mode}: ${re.stats.lossAfter} > ${plain.stats.lossAfter}`);
      assert.ok(Math.abs(relErr(input, re.reconstructed) - re.stats.errorAfter) < 1e-6);
    }
  });

  it("learnable signs with freezing reach a lower output error than fixed signs", async () => {
    const input = await layer(48, 128, 7, "ssvq", 16, 4);
    const learned = finetuneLayer(input, { iters: 300 });
    const fixed = finetuneLayer(input, { iters: 300, fixedSigns: true });
    assert.ok(learned.stats.frozenFraction > 0);
    assert.ok(learned.stats.errorAfter < 0.85 * fixed.stats.errorAfter, `learned ${learned.stats.errorAfter} vs fixed ${fixed.stats.errorAfter}`);
  });

  it("learning rates are relative: rescaling W and H by powers of two gives the same result, scaled", async () => {
    const input = await layer(16, 32, 8, "ssvq", 8, 4);
    const base = finetuneLayer(input, { iters: 80 });
    const q = input.quantized;
    const scaled = finetuneLayer(
      {
        w: input.w.map((v) => v * 1024),
        h: input.h.map((v) => v / 1048576),
        groups: 1,
        quantized: { ...q, codebook: q.codebook.map((v) => v * 1024) },
      },
      { iters: 80 },
    );
    assert.deepEqual(scaled.codebook, base.codebook.map((v) => v * 1024));
    assert.deepEqual(scaled.signs, base.signs);
    assert.equal(scaled.stats.errorAfter, base.stats.errorAfter);
    // Any scale: the same relative errors to rounding.
    const odd = finetuneLayer(
      { w: input.w.map((v) => v * 3e-3), h: input.h.map((v) => v * 7e4), groups: 1, quantized: { ...q, codebook: q.codebook.map((v) => v * 3e-3) } },
      { iters: 80 },
    );
    assert.ok(Math.abs(odd.stats.errorAfter - base.stats.errorAfter) < 0.02 * base.stats.errorAfter, `${odd.stats.errorAfter} vs ${base.stats.errorAfter}`);
  });

  it("is deterministic, and rejects bad options and bad inputs; cancels", async () => {
    const input = await layer(16, 20, 9, "ssvq", 8, 3);
    const a = finetuneLayer(input, { iters: 40 });
    const b = finetuneLayer(input, { iters: 40 });
    assert.deepEqual(a, b);
    assert.throws(() => finetuneLayer(input, { iters: -1 }), isInputError);
    assert.throws(() => finetuneLayer(input, { lrSign: Number.NaN }), isInputError);
    assert.throws(() => finetuneLayer(input, { freeze: { momentum: 1 } }), isInputError);
    assert.throws(() => finetuneLayer(input, { freeze: { every: 0 } }), isInputError);
    assert.throws(() => finetuneLayer({ ...input, groups: 3 }), isInputError);
    assert.throws(() => finetuneLayer({ ...input, h: input.h.subarray(1) }), isInputError);
    const ac = new AbortController();
    ac.abort();
    assert.throws(() => finetuneLayer(input, { iters: 10 }, { signal: ac.signal }), isCancelledError);
    // iters 0: the given quantization, untouched.
    const none = finetuneLayer(input, { iters: 0 });
    assert.deepEqual(none.codebook, input.quantized.codebook);
    assert.deepEqual(none.signs, input.quantized.signs);
    assert.equal(none.stats.errorAfter, none.stats.errorBefore);
    assert.equal(resolveFinetuneOptions({ iters: 500 }).freeze!.every, 25);
    assert.equal(resolveFinetuneOptions({ freeze: false }).freeze, null);
  });
});

describe("progressive freezing", () => {
  it("freezes an oscillating sign at its majority value, leaves stable ones, and frozen signs never change", () => {
    const iters = 40;
    const every = 10;
    // Weight 0 oscillates: positive at i % 3 == 0 (the minority, and its state at the first check), else
    // negative. Weight 1 is always positive. Weight 2 flips once, at iteration 5, and stays negative.
    // Weight 3 oscillates slowly (period 8): its EMA stays low until the threshold has decayed.
    const f = new SignFreezer(Uint8Array.from([1, 0, 0, 0]), 0.9);
    const fractions: number[] = [];
    const frozenAt: number[] = [-1, -1, -1, -1];
    for (let t = 0; t < iters; t++) {
      const s = Uint8Array.from([t % 3 === 0 ? 0 : 1, 0, t >= 5 ? 1 : 0, Math.floor(t / 4) % 2]);
      const before = Uint8Array.from(f.negative);
      const frozenBefore = Uint8Array.from(f.frozen);
      f.observe(s);
      for (let i = 0; i < 4; i++) if (frozenBefore[i]) assert.equal(f.negative[i], before[i], `frozen weight ${i} changed at ${t}`);
      if ((t + 1) % every === 0) {
        const step = f.check(freezeThreshold(t + 1, iters, 0.3, 0.1));
        fractions.push(step.frozenFraction);
        for (let i = 0; i < 4; i++) if (f.frozen[i] && frozenAt[i] < 0) frozenAt[i] = t + 1;
        if (t + 1 === every) {
          assert.equal(step.newlyFrozen, 1);
          assert.equal(step.flippedByVote, 1, "frozen at the majority, not at its current sign");
          assert.ok(step.flips > 0);
        }
      }
    }
    assert.equal(frozenAt[0], 10);
    assert.equal(f.negative[0], 1, "majority vote: negative");
    assert.equal(frozenAt[1], -1, "a stable sign is never frozen");
    assert.equal(frozenAt[2], -1, "a sign that flipped once is not frozen");
    assert.equal(f.negative[2], 1);
    assert.ok(frozenAt[3] > 10, `the slow oscillator is frozen only once the threshold decays (at ${frozenAt[3]})`);
    for (let i = 1; i < fractions.length; i++) assert.ok(fractions[i] >= fractions[i - 1]);
    assert.ok(freezeThreshold(0, 40, 0.3, 0.1) === 0.3 && Math.abs(freezeThreshold(40, 40, 0.3, 0.1) - 0.1) < 1e-15);
  });

  it("in a fine-tuning run: frozen signs stay fixed at their majority, the frozen fraction never decreases", async () => {
    const input = await layer(32, 64, 12, "ssvq", 16, 4);
    const n = input.w.length;
    let prevFrozen = new Uint8Array(n);
    let prevNeg = new Uint8Array(n);
    let prevFraction = 0;
    let totalFlips = 0;
    const r = finetuneLayer(input, { iters: 200, lrSign: 0.05 }, {
      onCheck(check, state) {
        const frozen = state.frozen!;
        totalFlips += check.flips;
        assert.ok(check.frozenFraction >= prevFraction);
        let count = 0;
        for (let p = 0; p < n; p++) {
          if (prevFrozen[p]) {
            assert.equal(frozen[p], 1);
            assert.equal(state.negative[p], prevNeg[p], `frozen sign ${p} changed at ${check.iteration}`);
          } else if (frozen[p]) {
            const b = state.balance![p];
            if (b !== 0) assert.equal(state.negative[p], b > 0 ? 1 : 0, `newly frozen ${p} is not at its majority`);
          }
          count += frozen[p];
        }
        assert.equal(count - prevFrozen.reduce((a, v) => a + v, 0), check.newlyFrozen);
        assert.equal(check.frozenFraction, count / n);
        prevFrozen = Uint8Array.from(frozen);
        prevNeg = Uint8Array.from(state.negative);
        prevFraction = check.frozenFraction;
      },
    });
    assert.ok(totalFlips > 0 && prevFraction > 0.01, `flips ${totalFlips}, frozen ${prevFraction}`);
    assert.equal(r.stats.frozenFraction, prevFraction);
    const { cols } = input.quantized.shape;
    const pc = input.quantized.shape.paddedCols;
    for (let p = 0; p < n; p++) if (prevFrozen[p]) assert.equal(r.signs![Math.floor(p / cols) * pc + (p % cols)], prevNeg[p]);
  });
});

describe("fine-tuning on a ParallelMap", () => {
  it("gives the same bytes on the serial map and on thread pools of 1 and 2 threads", async () => {
    const layers = [await layer(24, 40, 21, "ssvq", 16, 4), await layer(16, 30, 22, "vq", 32, 4), await layer(20, 22, 23, "ssvq", 8, 4, 2)];
    const settings = { iters: 60, reassign: true };
    const direct = layers.map((l) => finetuneLayer(l, settings));
    const bytes = (rs: FinetuneResult[]): string =>
      JSON.stringify(rs, (_k, v: unknown) => (ArrayBuffer.isView(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") : v));
    const expected = bytes(direct);
    for (const map of [serialMap, pool1, pool2]) assert.equal(bytes(await finetuneLayers(map, layers, settings)), expected, `threads ${map.threads}`);
  });
});

describe("fine-tuning with another product engine", () => {
  it("finetuneLayerWith(engine) is finetuneLayer with it; other engines agree to rounding", async () => {
    const input = await layer(20, 22, 31, "ssvq", 8, 4, 2);
    const settings = { iters: 60 };
    const direct = finetuneLayer(input, settings);
    assert.equal(direct.stats.product, "wasm-simd");
    assert.deepEqual(await finetuneLayerWith(defaultProduct, input, settings), direct);
    const js = finetuneLayer(input, settings, {}, jsProduct);
    assert.equal(js.stats.product, "ts-blocked");
    assert.deepEqual(await finetuneLayerWith(jsProduct, input, settings), js);
    assert.ok(Math.abs(js.stats.errorAfter - direct.stats.errorAfter) < 0.02 * direct.stats.errorAfter);
    let disposed = 0;
    let products = 0;
    const plainEngine = {
      name: "plain-async",
      forLayer(h: Float64Array, groups: number, rows: number, cols: number) {
        const rpg = rows / groups;
        return {
          async multiply(e: Float64Array, out: Float64Array) {
            products++;
            for (let g = 0; g < groups; g++)
              symmMulPlain(e.subarray(g * rpg * cols), rpg, cols, h.subarray(g * cols * cols), out.subarray(g * rpg * cols));
          },
          dispose() {
            disposed++;
          },
        };
      },
    };
    const other = await finetuneLayerWith(plainEngine, input, settings);
    assert.equal(disposed, 1);
    assert.equal(products, 60 + 1 + 1 + 1, "reference, 61 forward passes (0..60), final stored");
    assert.ok(Math.abs(other.stats.errorAfter - direct.stats.errorAfter) < 0.02 * direct.stats.errorAfter);
    assert.ok(Math.abs(other.stats.errorBefore - direct.stats.errorBefore) < 1e-9);
  });
});
