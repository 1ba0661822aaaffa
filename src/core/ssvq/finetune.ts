/**
 * Fine-tuning one compressed layer against its own output on calibration inputs (DESIGN.md section 1,
 * "Fine-tuning" and "Progressive freezing"; issue 5 items 1, 2 and 5).
 *
 * Objective, per group g of rows (rows split evenly into `groups`, group g uses the H block g):
 *     loss = tr((W_hat - W) H (W_hat - W)^T),   gradient G = 2 (W_hat - W) H.
 * SSVQ: W_hat[r, c] = s[r, c] C[A[sub], j] with s = sign(L) (zero counts as +), the latent L initialised
 * to alpha |W| with the sign of the given quantization (alpha = 1, so L = W when the signs are sign(W));
 * VQ: W_hat = C[A]. Trainable: the codebook C (SSVQ: clamped to >= 0 after every step) and L. Straight-
 * through estimator: dL = G * C[A] (the codeword magnitude scales the step), dC[a, j] = sum over the
 * positions assigned to a at offset j of G * s. Adam (beta1 0.9, beta2 0.999, eps 1e-8), learning rate
 * lr * (1 + cos(pi t / iters)) / 2 at iteration t, separate rates for the codebook and the signs.
 * Assignments stay fixed; `reassign` re-assigns once at the end (see `reassignGreedy`). `fixedSigns` keeps
 * SSVQ's signs (those of the given quantization, sign(W)) and trains the codebook only (the paper's
 * ablation); mode "vq" trains its codebook only, with the same objective.
 *
 * Scale: fine-tuning runs in normalised units, W' = W / rms(W) and H' = H / mean(diag H) (over all
 * groups). So `lrCodebook` and `lrSign` are relative to the layer's weight RMS: an Adam step moves a
 * codeword entry or a latent by about lr * rms(W) (times the schedule), whatever the scale of the weights
 * or of the activations, and Adam's eps stays negligible next to the gradients.
 *
 * Progressive freezing (`freeze.ts`): checks at iterations F, 2F, ... and at the last one. At a check
 * the freezer first freezes (frozen signs take their majority vote and stop: no more latent or Adam
 * updates), then the loss of the resulting state is measured and recorded with the flips since the
 * previous check. Without freezing (or for VQ and fixed signs) the checks are still recorded, for the
 * loss curve.
 *
 * The product P = E H (2 rows cols^2 flops per iteration and group) is nearly all the time; it runs on a
 * `ProductEngine`: by default the WebAssembly SIMD kernel (`gemm-wasm.ts`), else the TypeScript one.
 *
 * Pure and synchronous; bit-for-bit deterministic (fixed summation order, no randomness, no threads):
 * the same inputs give the same bytes on every map and thread count. Registered as the task
 * "finetune.layer" so layers run in parallel on the pool (`finetuneLayers`).
 *
 * Defaults, chosen on three layers (fine-tuning runs of 500 iterations; relative output error after):
 * LeNet-5's f1 (120 x 400) and f2 (84 x 120) with H from calibration images 0-511 of the fixture, and
 * a synthetic 96 x 256 layer with correlated post-ReLU activations; SSVQ k16 d4 unless said (the lrSign
 * and freezing sweeps ran with lrCodebook 3e-3).
 *  - lrCodebook 1e-2: 1e-3 / 3e-3 / 1e-2 / 3e-2 gave f2 0.0705 / 0.0686 / 0.0667 / 0.0662 (VQ k256 d4:
 *    0.077 / 0.063 / 0.058 / 0.058); 1e-2 is within 1% of the best everywhere, 3e-2 gains < 1%.
 *  - lrSign 1e-2: 3e-3 / 1e-2 / 3e-2 / 1e-1 gave f2 0.075 / 0.069 / 0.066 / 0.069 and synthetic
 *    0.214 / 0.212 / 0.213 / 0.216; larger rates flip (and freeze) many more signs for no gain.
 *  - freezing 0.3 -> 0.1, momentum 0.9, F = iters / 20: thresholds 0.5->0.2 / 0.3->0.1 / 0.2->0.05 /
 *    0.1->0.02 gave f2 0.0680 / 0.0686 / 0.0702 / 0.0735, synthetic 0.2123 / 0.2119 / 0.2122 / 0.2137;
 *    momentum 0.95 or 0.99 (with lower thresholds) and F = 10 or 50 changed the error by < 2%. Freezing
 *    matters: without it the signs keep oscillating (f1 ends at 0.069 with up to 15,000 flips per check,
 *    against 0.056 and 100 flips in the last check with it).
 *  - iters 500: f1 after 100 / 200 / 500 / 1000 iterations: 0.069 / 0.062 / 0.056 / 0.054.
 *  - reassign off (issue 5 asks for fixed assignments): it helps VQ most (f1 VQ k64 d4: 0.159 -> 0.086,
 *    k256 d4: 0.081 -> 0.054; SSVQ k16 d4: 0.056 -> 0.049), so compare the two methods with the same
 *    setting.
 */
import { CancelledError, InputError } from "../errors.js";
import { sharedArray, type ParallelMap } from "../parallel.js";
import { SignFreezer, freezeThreshold, validateFreezeOptions, type FreezeOptions } from "./freeze.js";
import { symmMulBlocked } from "./gemm-kernels.js";
import { wasmAvailable, WasmSymmMul } from "./gemm-wasm.js";
import type { VqQuantized } from "./quantize.js";

export type { FreezeOptions } from "./freeze.js";

export interface FinetuneOptions {
  /** Adam iterations (0: no training; `reassign` still applies). */
  iters: number;
  /** Codebook learning rate, relative to the layer's weight RMS. */
  lrCodebook: number;
  /** Latent-sign learning rate, relative to the layer's weight RMS. */
  lrSign: number;
  /** Progressive freezing of the learnable signs, or null for none. */
  freeze: FreezeOptions | null;
  /** SSVQ only: keep the signs of the given quantization and train the codebook alone. */
  fixedSigns: boolean;
  /** Re-assign every sub-vector once after training (greedy, exact output loss; never increases it). */
  reassign: boolean;
  /** Latent initialisation L = alpha * |W| * sign. */
  alpha: number;
}

/** What a caller may set; everything else takes the defaults (`resolveFinetuneOptions`). */
export interface FinetuneSettings {
  iters?: number;
  lrCodebook?: number;
  lrSign?: number;
  /** null or false: no freezing; an object: overrides of the default freezing. */
  freeze?: Partial<FreezeOptions> | null | false;
  fixedSigns?: boolean;
  reassign?: boolean;
  alpha?: number;
}

export const DEFAULT_ITERS = 500;
export const DEFAULT_LR_CODEBOOK = 1e-2;
export const DEFAULT_LR_SIGN = 1e-2;
export const DEFAULT_FREEZE_FROM = 0.3;
export const DEFAULT_FREEZE_TO = 0.1;
export const DEFAULT_FREEZE_MOMENTUM = 0.9;
/** Checks per run: F = max(1, round(iters / CHECKS_PER_RUN)) (the paper's F = 500 scaled to our runs). */
export const CHECKS_PER_RUN = 20;

/** The default check (and freezing) period for a run of `iters` iterations. */
export function defaultFreezeEvery(iters: number): number {
  return Math.max(1, Math.round(iters / CHECKS_PER_RUN));
}

export function resolveFinetuneOptions(s: FinetuneSettings = {}): FinetuneOptions {
  const iters = s.iters ?? DEFAULT_ITERS;
  const freeze: FreezeOptions | null =
    s.freeze === null || s.freeze === false
      ? null
      : {
          every: s.freeze?.every ?? defaultFreezeEvery(iters),
          thresholdFrom: s.freeze?.thresholdFrom ?? DEFAULT_FREEZE_FROM,
          thresholdTo: s.freeze?.thresholdTo ?? DEFAULT_FREEZE_TO,
          momentum: s.freeze?.momentum ?? DEFAULT_FREEZE_MOMENTUM,
        };
  const o: FinetuneOptions = {
    iters,
    lrCodebook: s.lrCodebook ?? DEFAULT_LR_CODEBOOK,
    lrSign: s.lrSign ?? DEFAULT_LR_SIGN,
    freeze,
    fixedSigns: s.fixedSigns ?? false,
    reassign: s.reassign ?? false,
    alpha: s.alpha ?? 1,
  };
  validateFinetuneOptions(o);
  return o;
}

export function validateFinetuneOptions(o: FinetuneOptions): void {
  if (!Number.isInteger(o.iters) || o.iters < 0) throw new InputError(`iters must be an integer >= 0, not ${o.iters}`);
  for (const [name, v] of [["lr-codebook", o.lrCodebook], ["lr-sign", o.lrSign]] as const) {
    if (!(Number.isFinite(v) && v >= 0)) throw new InputError(`${name} must be a finite number >= 0, not ${v}`);
  }
  if (!(Number.isFinite(o.alpha) && o.alpha > 0)) throw new InputError(`alpha must be a finite number > 0, not ${o.alpha}`);
  if (o.freeze) validateFreezeOptions(o.freeze);
}

export interface FinetuneInput {
  /** The original row matrix W [rows, cols] (rows and cols from `quantized.shape`). */
  w: Float32Array;
  /** `groups` symmetric blocks [cols, cols], row-major: H_g = X_g X_g^T / n. */
  h: Float64Array;
  groups: number;
  /** The starting point: k-means codebook, assignments and (SSVQ) signs. */
  quantized: VqQuantized;
}

/** One progressive-freezing check (recorded also without freezing, for the loss curve). */
export interface FreezeCheck {
  /** Iterations done. */
  iteration: number;
  /** tr((W_hat - W) H (W_hat - W)^T) summed over groups, in the layer's own units. */
  loss: number;
  /** sqrt(loss / tr(W H W^T)). */
  relativeError: number;
  /** Sign flips since the previous check (0 for VQ and fixed signs). */
  flips: number;
  newlyFrozen: number;
  /** Frozen signs / weights (0 without freezing). */
  frozenFraction: number;
  /** The flip-EMA threshold of this check (null without freezing). */
  threshold: number | null;
}

export interface FinetuneStats {
  mode: "ssvq" | "vq";
  iters: number;
  /** tr(W H W^T): the output energy errors are relative to. */
  reference: number;
  lossBefore: number;
  lossAfter: number;
  /** Relative output error sqrt(loss / reference) of the given quantization and of the result. */
  errorBefore: number;
  errorAfter: number;
  /** SSVQ: weights whose final sign differs from sign(W) (padding excluded). */
  signsChanged: number;
  signsChangedFraction: number;
  /** Final frozen fraction (0 without freezing). */
  frozenFraction: number;
  /** Sub-vectors whose codeword `reassign` changed (0 without it). */
  reassigned: number;
  codebookBefore: Float32Array;
  codebookAfter: Float32Array;
  /** Codeword usage counts after fine-tuning. */
  usage: number[];
  checks: FreezeCheck[];
  /** The product engine used ("wasm-simd", "ts-blocked", ...). */
  product: string;
}

export interface FinetuneResult {
  /** [k, d] float32; non-negative for SSVQ. */
  codebook: Float32Array;
  /** One per sub-vector (changed only by `reassign`). */
  assignments: Uint32Array;
  /** SSVQ: one bit per padded element, 1 = negative (as VqQuantized.signs); padding stays 0. */
  signs?: Uint8Array;
  /** The reconstructed row matrix [rows, cols], exactly as `reconstructRows` gives it. */
  reconstructed: Float32Array;
  stats: FinetuneStats;
}

/** Called from `finetuneLayer` on the calling thread (not available through a ParallelMap task). */
export interface FinetuneHooks {
  /**
   * At every check. `state` holds live views of the sign bits per position of the row matrix (1 =
   * negative), and with freezing the frozen mask and each weight's negative-minus-positive balance: copy
   * what you keep.
   */
  onCheck?(check: FreezeCheck, state: { negative: Uint8Array; frozen?: Uint8Array; balance?: Int32Array }): void;
  /** After each forward pass: iteration t (0..iters) and the loss of the state after t updates. */
  onIteration?(iteration: number, loss: number): void;
  /** Cancels between iterations with a CancelledError. */
  signal?: AbortSignal;
}

const BETA1 = 0.9;
const BETA2 = 0.999;
const EPS = 1e-8;

/** The quantization with the fine-tuned codebook, assignments and signs. */
export function applyFinetune(q: VqQuantized, r: FinetuneResult): VqQuantized {
  return { ...q, codebook: r.codebook, assignments: r.assignments, signs: r.signs ?? q.signs };
}

/**
 * How P = E H is computed for a layer, per group of rows (E, P [rows, cols]; H `groups` blocks).
 * `finetuneLayer` uses `defaultProduct`: the WebAssembly SIMD kernel (`gemm-wasm.ts`), or `jsProduct`
 * (`symmMulBlocked`) where WebAssembly SIMD is missing or the layer does not fit its 4 GB memory. A
 * caller outside core may pass another engine (onnxruntime's MatMul: see `src/bench/finetune.ts`)
 * to `finetuneLayerWith`.
 */
export interface ProductEngine {
  readonly name: string;
  /** Prepares the products of one layer (H is fixed for the whole run). */
  forLayer(h: Float64Array, groups: number, rows: number, cols: number): LayerProduct | Promise<LayerProduct>;
}

export interface LayerProduct {
  /** out = E H, group by group (rows split evenly into groups, group g uses block g). */
  multiply(e: Float64Array, out: Float64Array): void | Promise<void>;
  dispose?(): void | Promise<void>;
}

/** The TypeScript engine: `symmMulBlocked`, bit-for-bit reproducible on every machine. */
export const jsProduct: SyncProductEngine = {
  name: "ts-blocked",
  forLayer(h: Float64Array, groups: number, rows: number, cols: number) {
    const rowsPerGroup = rows / groups;
    const len = rowsPerGroup * cols;
    return {
      multiply(e: Float64Array, out: Float64Array): void {
        for (let g = 0; g < groups; g++) {
          const off = g * len;
          symmMulBlocked(e.subarray(off, off + len), rowsPerGroup, cols, h.subarray(g * cols * cols, (g + 1) * cols * cols), out.subarray(off, off + len));
        }
      },
    };
  },
};

/** A product engine whose products return synchronously (usable by `finetuneLayer` and pool tasks). */
export interface SyncProductEngine extends ProductEngine {
  forLayer(h: Float64Array, groups: number, rows: number, cols: number): LayerProduct & { multiply(e: Float64Array, out: Float64Array): void };
}

/**
 * The WebAssembly SIMD kernel (about 4x the TypeScript kernel, `npm run bench -- finetune`), falling back
 * to `jsProduct` when unavailable. Both are bit-for-bit reproducible; they round differently, so results
 * are the same bytes on every machine that has WebAssembly SIMD (Node >= 16.4, VS Code's Electron).
 */
export const defaultProduct: SyncProductEngine = {
  name: wasmAvailable() ? "wasm-simd" : "ts-blocked",
  forLayer(h: Float64Array, groups: number, rows: number, cols: number) {
    if (wasmAvailable()) {
      try {
        const kernel = new WasmSymmMul(h, groups, rows, cols);
        return { multiply: (e: Float64Array, out: Float64Array): void => kernel.multiply(e, out) };
      } catch {
        // Too large for a 32-bit WebAssembly memory: the TypeScript kernel.
      }
    }
    return jsProduct.forLayer(h, groups, rows, cols);
  },
};

/**
 * The objective of one layer in normalised units (W' = W / ws, H' = H / hs, see the module comment):
 * loss' = tr(E' H' E'^T) with E' = W_hat' - W', and its gradients. `e` and `pm` (P = E' H, raw H) hold
 * the state of the last `forward`. The methods that need the product are generators: they fill `e`,
 * yield, expect the driver to have written P = E H into `pm`, and return the loss.
 */
export class LayerObjective {
  readonly rows: number;
  readonly cols: number;
  readonly groups: number;
  readonly d: number;
  readonly k: number;
  readonly perRow: number;
  readonly n: number;
  /** Weight scale (rms(W)) and H scale (mean diagonal); 1 when W or H is all zero. */
  readonly ws: number;
  readonly hs: number;
  /** False when W or H is zero (nothing to fit): fine-tuning then keeps the given quantization. */
  readonly scaled: boolean;
  /** loss (original units) = lossUnit * loss'. */
  readonly lossUnit: number;
  readonly wn: Float64Array;
  /** Codebook index a * d + j of every position of the row matrix. */
  readonly cb: Int32Array;
  readonly e: Float64Array;
  readonly pm: Float64Array;
  /** tr(W' H' W'^T) (after `init`). */
  reference = 0;

  constructor(input: FinetuneInput) {
    validateInput(input);
    const { w, h, groups, quantized: q } = input;
    const { rows, cols, d, perRow } = q.shape;
    this.rows = rows;
    this.cols = cols;
    this.groups = groups;
    this.d = d;
    this.k = q.k;
    this.perRow = perRow;
    const n = (this.n = rows * cols);
    let sumSq = 0;
    for (let p = 0; p < n; p++) sumSq += w[p]! * w[p]!;
    const rms = Math.sqrt(sumSq / Math.max(1, n));
    let diag = 0;
    for (let g = 0; g < groups; g++) for (let c = 0; c < cols; c++) diag += h[g * cols * cols + c * cols + c]!;
    const hmean = diag / (groups * cols);
    this.scaled = rms > 0 && Number.isFinite(rms) && hmean > 0 && Number.isFinite(hmean);
    this.ws = this.scaled ? rms : 1;
    this.hs = this.scaled ? hmean : 1;
    this.lossUnit = this.ws * this.ws * this.hs;
    this.wn = new Float64Array(n);
    for (let p = 0; p < n; p++) this.wn[p] = w[p]! / this.ws;
    this.cb = new Int32Array(n);
    this.setAssignments(q.assignments);
    this.e = new Float64Array(n);
    this.pm = new Float64Array(n);
  }

  /** Measures the reference tr(W' H' W'^T). */
  *init(): Generator<LayerObjective, void, undefined> {
    this.e.set(this.wn);
    yield this;
    this.reference = this.productLoss();
  }

  setAssignments(assignments: Uint32Array): void {
    const { rows, cols, d, perRow, cb } = this;
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) cb[r * cols + c] = assignments[r * perRow + Math.floor(c / d)]! * d + (c % d);
  }

  /** sum(E .* P) / hs = loss', once `pm` holds P = E H. */
  private productLoss(): number {
    const { e, pm, n } = this;
    let s = 0;
    for (let p = 0; p < n; p++) s += e[p]! * pm[p]!;
    return s / this.hs;
  }

  // (The loops live in plain methods: V8 optimises loops inside generators poorly.)

  /** E' = s * C'[A] - W'. */
  private fillError(cbook: Float64Array, neg: Uint8Array): void {
    const { e, wn, cb, n } = this;
    for (let p = 0; p < n; p++) {
      const v = cbook[cb[p]!]!;
      e[p] = (neg[p] ? -v : v) - wn[p]!;
    }
  }

  private fillErrorStored(reconstructed: Float32Array, w: Float32Array): void {
    const { e, n, ws } = this;
    for (let p = 0; p < n; p++) e[p] = (reconstructed[p]! - w[p]!) / ws;
  }

  /** loss' of W_hat' = s * C'[A] (neg: sign bit per position of the row matrix, all 0 for VQ). */
  *forward(cbook: Float64Array, neg: Uint8Array): Generator<LayerObjective, number, undefined> {
    this.fillError(cbook, neg);
    yield this;
    return this.productLoss();
  }

  /** loss' of a stored (float32, original units) reconstruction. */
  *forwardStored(reconstructed: Float32Array, w: Float32Array): Generator<LayerObjective, number, undefined> {
    this.fillErrorStored(reconstructed, w);
    yield this;
    return this.productLoss();
  }

  /**
   * After `forward`: gC[a * d + j] = sum over positions at (a, j) of G' s, and, when given,
   * gL[p] = G'[p] C'[A[p]] (the straight-through estimate), with G' = 2 E' H' the gradient of loss'.
   */
  gradients(cbook: Float64Array, neg: Uint8Array, gC: Float64Array, gL?: Float64Array): void {
    const { pm, cb, n } = this;
    const scale = 2 / this.hs;
    gC.fill(0);
    for (let p = 0; p < n; p++) {
      const g = scale * pm[p]!;
      const i = cb[p]!;
      gC[i] += neg[p] ? -g : g;
      if (gL) gL[p] = g * cbook[i]!;
    }
  }

  relative(loss: number): number {
    return this.reference > 0 ? Math.sqrt(Math.max(0, loss) / this.reference) : Math.sqrt(Math.max(0, loss * this.lossUnit));
  }
}

/** The objective and its gradients in the layer's own units (for checks): see `layerGradients`. */
export interface LayerGradients {
  /** tr((W_hat - W) H (W_hat - W)^T), summed over groups. */
  loss: number;
  /** d loss / d C [k * d]. */
  codebook: Float64Array;
  /** The straight-through gradient of the latent, G * C[A], per position of the row matrix [rows, cols]. */
  latent: Float64Array;
  /** G = 2 (W_hat - W) H [rows, cols]. */
  weights: Float64Array;
}

/**
 * The loss and gradients exactly as fine-tuning computes them, for a codebook (original units) and sign
 * bits per position of the row matrix (SSVQ; omit for VQ), converted back to the layer's own units.
 */
export function layerGradients(input: FinetuneInput, codebook: ArrayLike<number>, negative?: Uint8Array): LayerGradients {
  const obj = new LayerObjective(input);
  const { k, d, n, ws, lossUnit } = obj;
  const cbook = new Float64Array(k * d);
  for (let i = 0; i < k * d; i++) cbook[i] = codebook[i]! / ws;
  const neg = negative ?? new Uint8Array(n);
  const loss = driveSync(obj, input.h, obj.forward(cbook, neg)) * lossUnit;
  const gC = new Float64Array(k * d);
  const gL = new Float64Array(n);
  obj.gradients(cbook, neg, gC, gL);
  // loss = lossUnit loss', C = ws C', G = ws hs G'.
  for (let i = 0; i < k * d; i++) gC[i] *= lossUnit / ws;
  for (let p = 0; p < n; p++) gL[p] *= lossUnit;
  const weights = new Float64Array(n);
  for (let p = 0; p < n; p++) weights[p] = 2 * obj.pm[p]! * ws;
  return { loss, codebook: gC, latent: gL, weights };
}

/** Runs an objective generator to its end, computing the products with `engine`. */
function driveSync<T>(obj: LayerObjective, h: Float64Array, gen: Generator<LayerObjective, T, undefined>, engine: SyncProductEngine = defaultProduct): T {
  const product = engine.forLayer(h, obj.groups, obj.rows, obj.cols);
  for (;;) {
    const step = gen.next();
    if (step.done) return step.value;
    product.multiply(obj.e, obj.pm);
  }
}

/**
 * Fine-tunes one layer (see the module comment), in this thread, with `defaultProduct` or the given
 * synchronous engine.
 */
export function finetuneLayer(
  input: FinetuneInput,
  settings: FinetuneSettings | FinetuneOptions = {},
  hooks: FinetuneHooks = {},
  engine: SyncProductEngine = defaultProduct,
): FinetuneResult {
  const o = resolveFinetuneOptions(settings);
  const obj = new LayerObjective(input);
  return driveSync(obj, input.h, finetuneSteps(obj, input, o, hooks, engine.name), engine);
}

/**
 * Fine-tunes one layer with another product engine (for example onnxruntime's MatMul, from outside
 * core). Same algorithm as `finetuneLayer`; the bytes depend on the engine's rounding.
 */
export async function finetuneLayerWith(
  engine: ProductEngine,
  input: FinetuneInput,
  settings: FinetuneSettings | FinetuneOptions = {},
  hooks: FinetuneHooks = {},
): Promise<FinetuneResult> {
  const o = resolveFinetuneOptions(settings);
  const obj = new LayerObjective(input);
  const product = await engine.forLayer(input.h, obj.groups, obj.rows, obj.cols);
  try {
    const gen = finetuneSteps(obj, input, o, hooks, engine.name);
    for (;;) {
      const step = gen.next();
      if (step.done) return step.value;
      await product.multiply(obj.e, obj.pm);
    }
  } finally {
    await product.dispose?.();
  }
}

function* finetuneSteps(
  obj: LayerObjective,
  input: FinetuneInput,
  o: FinetuneOptions,
  hooks: FinetuneHooks,
  product: string,
): Generator<LayerObjective, FinetuneResult, undefined> {
  yield* obj.init();
  const { w, quantized: q } = input;
  const { rows, cols, d, paddedCols } = q.shape;
  const { k, n, ws, lossUnit } = obj;
  const ssvq = q.mode === "ssvq";
  const trainSigns = ssvq && !o.fixedSigns;

  const neg = new Uint8Array(n);
  if (ssvq) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) neg[r * cols + c] = q.signs![r * paddedCols + c]!;
  const cbook = new Float64Array(k * d);
  for (let i = 0; i < k * d; i++) cbook[i] = q.codebook[i]! / ws;

  // Optimiser state.
  const mC = new Float64Array(k * d);
  const vC = new Float64Array(k * d);
  const gC = new Float64Array(k * d);
  const latent = trainSigns ? new Float64Array(n) : undefined;
  const gL = trainSigns ? new Float64Array(n) : undefined;
  const mL = trainSigns ? new Float64Array(n) : undefined;
  const vL = trainSigns ? new Float64Array(n) : undefined;
  if (latent) for (let p = 0; p < n; p++) latent[p] = o.alpha * Math.abs(obj.wn[p]!) * (neg[p] ? -1 : 1);
  const freezer = trainSigns && o.freeze ? new SignFreezer(neg, o.freeze.momentum) : undefined;
  const frozen = freezer?.frozen;
  const every = o.freeze?.every ?? defaultFreezeEvery(o.iters);

  const checks: FreezeCheck[] = [];
  let flipsSinceCheck = 0;
  let lossBefore = 0;
  const training = obj.scaled && o.iters > 0;
  const iters = training ? o.iters : 0;
  for (let t = 0; t <= iters && training; t++) {
    if (hooks.signal?.aborted) throw new CancelledError();
    const isCheck = t > 0 && (t % every === 0 || t === iters);
    let newlyFrozen = 0;
    let threshold: number | null = null;
    if (isCheck && freezer) {
      threshold = freezeThreshold(t, iters, o.freeze!.thresholdFrom, o.freeze!.thresholdTo);
      newlyFrozen = freezer.check(threshold).newlyFrozen;
      if (newlyFrozen > 0) applyFrozen(freezer, neg, latent!);
    }
    const loss = yield* obj.forward(cbook, neg);
    if (t === 0) lossBefore = loss;
    hooks.onIteration?.(t, loss * lossUnit);
    if (isCheck) {
      const check: FreezeCheck = {
        iteration: t,
        loss: loss * lossUnit,
        relativeError: obj.relative(loss),
        flips: flipsSinceCheck,
        newlyFrozen,
        frozenFraction: freezer && n > 0 ? freezer.frozenTotal / n : 0,
        threshold,
      };
      flipsSinceCheck = 0;
      checks.push(check);
      hooks.onCheck?.(check, { negative: neg, frozen, balance: freezer?.balance });
    }
    if (t === iters) break;

    // One Adam step at the cosine-scheduled rates.
    const schedule = 0.5 * (1 + Math.cos((Math.PI * t) / iters));
    const step = t + 1;
    const bc1 = 1 - Math.pow(BETA1, step);
    const bc2 = 1 - Math.pow(BETA2, step);
    obj.gradients(cbook, neg, gC, gL);
    if (latent) {
      flipsSinceCheck += adamLatent(latent, gL!, mL!, vL!, frozen, neg, o.lrSign * schedule, bc1, bc2);
      freezer?.observe(neg);
    }
    adamCodebook(cbook, gC, mC, vC, o.lrCodebook * schedule, bc1, bc2, ssvq);
  }

  // The stored codebook (float32, original units), then the optional re-assignment, then the final error.
  const codebook = new Float32Array(k * d);
  if (training) for (let i = 0; i < k * d; i++) codebook[i] = cbook[i]! * ws; // SSVQ: >= 0 by the clamp of every step
  else codebook.set(q.codebook);
  const assignments = Uint32Array.from(q.assignments);
  const reconstructed = new Float32Array(n);
  const rebuild = (): void => {
    const cb = obj.cb;
    for (let p = 0; p < n; p++) {
      const v = codebook[cb[p]!]!;
      reconstructed[p] = neg[p] ? -v : v;
    }
  };
  rebuild();
  let lossAfter = yield* obj.forwardStored(reconstructed, w);
  if (!training) lossBefore = lossAfter;
  let reassigned = 0;
  if (o.reassign && obj.scaled) {
    reassigned = reassignGreedy(obj, input.h, codebook, ssvq ? neg : undefined, assignments);
    if (reassigned > 0) {
      obj.setAssignments(assignments);
      rebuild();
      lossAfter = yield* obj.forwardStored(reconstructed, w);
    }
  }

  let signs: Uint8Array | undefined;
  let signsChanged = 0;
  if (ssvq) {
    signs = Uint8Array.from(q.signs!);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const p = r * cols + c;
        signs[r * paddedCols + c] = neg[p]!;
        if (neg[p] !== (w[p]! < 0 ? 1 : 0)) signsChanged++;
      }
  }
  const usage = new Array<number>(k).fill(0);
  for (const a of assignments) usage[a]!++;
  const stats: FinetuneStats = {
    mode: q.mode,
    iters,
    reference: obj.reference * lossUnit,
    lossBefore: lossBefore * lossUnit,
    lossAfter: lossAfter * lossUnit,
    errorBefore: obj.relative(lossBefore),
    errorAfter: obj.relative(lossAfter),
    signsChanged,
    signsChangedFraction: n > 0 ? signsChanged / n : 0,
    frozenFraction: freezer && n > 0 ? freezer.frozenTotal / n : 0,
    reassigned,
    codebookBefore: Float32Array.from(q.codebook),
    codebookAfter: Float32Array.from(codebook),
    usage,
    checks,
    product,
  };
  return { codebook, assignments, signs, reconstructed, stats };
}

/** Newly frozen signs take their majority vote; their latent follows (it is not updated any more). */
function applyFrozen(freezer: SignFreezer, neg: Uint8Array, latent: Float64Array): void {
  const { frozen, negative } = freezer;
  for (let p = 0; p < neg.length; p++) {
    if (frozen[p] && neg[p] !== negative[p]) {
      neg[p] = negative[p]!;
      latent[p] = -latent[p]!;
    }
  }
}

/** One Adam step of the free latents; updates their sign bits; returns the flips. */
function adamLatent(
  latent: Float64Array,
  g: Float64Array,
  m: Float64Array,
  v: Float64Array,
  frozen: Uint8Array | undefined,
  neg: Uint8Array,
  lr: number,
  bc1: number,
  bc2: number,
): number {
  const none = frozen === undefined;
  const step = lr / bc1;
  const inv2 = 1 / bc2;
  let flips = 0;
  for (let p = 0; p < latent.length; p++) {
    if (!none && frozen[p]) continue;
    const gp = g[p]!;
    const m1 = BETA1 * m[p]! + (1 - BETA1) * gp;
    const m2 = BETA2 * v[p]! + (1 - BETA2) * gp * gp;
    m[p] = m1;
    v[p] = m2;
    const l = latent[p]! - (step * m1) / (Math.sqrt(m2 * inv2) + EPS);
    latent[p] = l;
    const s = l < 0 ? 1 : 0;
    if (s !== neg[p]) {
      neg[p] = s;
      flips++;
    }
  }
  return flips;
}

/** One Adam step of the codebook; SSVQ clamps it at 0 (`nonNegative`). */
function adamCodebook(c: Float64Array, g: Float64Array, m: Float64Array, v: Float64Array, lr: number, bc1: number, bc2: number, nonNegative: boolean): void {
  for (let i = 0; i < c.length; i++) {
    const gi = g[i]!;
    const m1 = BETA1 * m[i]! + (1 - BETA1) * gi;
    const m2 = BETA2 * v[i]! + (1 - BETA2) * gi * gi;
    m[i] = m1;
    v[i] = m2;
    let x = c[i]! - (lr * (m1 / bc1)) / (Math.sqrt(m2 / bc2) + EPS);
    if (nonNegative && !(x > 0)) x = 0;
    c[i] = x;
  }
}

/**
 * One greedy pass of re-assignment under the exact output loss: sub-vector by sub-vector in row order,
 * each moves to the codeword (with its final signs, SSVQ) that lowers tr(E H E^T) most given all the
 * others, if any does (ties keep the current codeword, then the lowest index). With Delta the change of
 * the sub-vector's d entries of row r (columns c0..), the loss changes by 2 Delta . P[r, c0..] +
 * Delta^T H[c0.., c0..] Delta; the rows are independent, and P's row is updated after each move. The loss
 * never increases. Returns the number of sub-vectors moved.
 */
function reassignGreedy(obj: LayerObjective, h: Float64Array, codebook: Float32Array, neg: Uint8Array | undefined, assignments: Uint32Array): number {
  const { e, pm, groups, rows, cols, d, k, perRow, ws } = obj;
  const rowsPerGroup = rows / groups;
  const cand = new Float64Array(d);
  const delta = new Float64Array(d);
  const best = new Float64Array(d);
  let moved = 0;
  for (let r = 0; r < rows; r++) {
    const hOff = Math.floor(r / rowsPerGroup) * cols * cols;
    const row = r * cols;
    for (let sv = 0; sv < perRow; sv++) {
      const c0 = sv * d;
      const dd = Math.min(d, cols - c0);
      const cur = assignments[r * perRow + sv]!;
      let bestA = cur;
      let bestGain = 0;
      for (let a = 0; a < k; a++) {
        if (a === cur) continue;
        for (let j = 0; j < dd; j++) {
          const p = row + c0 + j;
          const sign = neg && neg[p] ? -1 : 1;
          cand[j] = (sign * (codebook[a * d + j]! - codebook[cur * d + j]!)) / ws;
        }
        let change = 0;
        for (let j = 0; j < dd; j++) {
          const hj = hOff + (c0 + j) * cols + c0;
          let quad = 0;
          for (let i = 0; i < dd; i++) quad += h[hj + i]! * cand[i]!;
          change += cand[j]! * (2 * pm[row + c0 + j]! + quad);
        }
        if (change < bestGain) {
          bestGain = change;
          bestA = a;
          best.set(cand);
        }
      }
      if (bestA === cur) continue;
      moved++;
      assignments[r * perRow + sv] = bestA;
      for (let j = 0; j < dd; j++) {
        delta[j] = best[j]!;
        e[row + c0 + j] += delta[j]!;
      }
      // P[r, :] += Delta H[c0.., :] (rows of H, by symmetry its columns).
      for (let j = 0; j < dd; j++) {
        const dj = delta[j]!;
        const hr = hOff + (c0 + j) * cols;
        for (let c = 0; c < cols; c++) pm[row + c] += dj * h[hr + c]!;
      }
    }
  }
  return moved;
}

function validateInput(input: FinetuneInput): void {
  const { w, h, groups, quantized: q } = input;
  const { rows, cols, d, count, paddedCols } = q.shape;
  if (q.mode !== "ssvq" && q.mode !== "vq") throw new InputError(`fine-tuning needs an SSVQ or VQ quantization, not ${String(q.mode)}`);
  if (w.length !== rows * cols) throw new InputError(`fine-tuning: W has ${w.length} values, the quantization's shape is ${rows} x ${cols}`);
  if (!Number.isInteger(groups) || groups < 1 || rows % groups !== 0) throw new InputError(`fine-tuning: ${rows} rows cannot be split into ${groups} groups`);
  if (h.length !== groups * cols * cols) throw new InputError(`fine-tuning: H has ${h.length} values, expected ${groups} x ${cols} x ${cols}`);
  if (q.d !== d || q.codebook.length !== q.k * d) throw new InputError(`fine-tuning: codebook has ${q.codebook.length} values, expected ${q.k} x ${d}`);
  if (q.assignments.length !== count) throw new InputError(`fine-tuning: ${q.assignments.length} assignments, expected ${count}`);
  for (const a of q.assignments) if (a >= q.k) throw new InputError(`fine-tuning: assignment ${a} out of range (k = ${q.k})`);
  if (paddedCols * rows !== count * d) throw new InputError("fine-tuning: inconsistent sub-vector shape");
  if (q.mode === "ssvq" && (!q.signs || q.signs.length !== count * d)) {
    throw new InputError(`fine-tuning: SSVQ needs one sign per padded element (${count * d})`);
  }
}

/** Input of the "finetune.layer" task: a layer and fully resolved options. */
export interface FinetuneTaskInput extends FinetuneInput {
  options: FinetuneOptions;
  /**
   * A product engine registered in the thread that runs the task (`registerProductEngine`), by name;
   * without one, or when it is not registered there, the default (WebAssembly) engine.
   */
  engine?: string;
  /**
   * A check record (`createCheckRecord`, backed by a SharedArrayBuffer) the task publishes every check
   * into as it happens, so that the caller can read them while the task still runs (`readCheckRecord`).
   * Write-only for the task and read-only for the caller: it never changes the result.
   */
  progress?: Float64Array;
}

/*
 * The check record: a side channel from a running "finetune.layer" task to the thread that started it
 * (parallel.ts: a shared array the task alone writes). Float64 elements:
 *   [0]                         header; its 8 bytes as two int32: [0] the number of checks published
 *                               (written last, with Atomics.store), [1] unused (0)
 *   [1 + i * CHECK_RECORD_FIELDS + f]   check i, field f: iteration, loss, relativeError, flips,
 *                               newlyFrozen, frozenFraction, threshold (NaN for null)
 * A check's fields are written before the count that publishes it, and the reader loads the count with
 * Atomics.load first, so it never sees a half-written check. float64 holds every field exactly: the
 * checks read back are the same numbers as the result's `stats.checks`.
 */

/** Float64 fields per check in a check record. */
export const CHECK_RECORD_FIELDS = 7;

/** How many checks a run with these options records (at most; none when the layer has nothing to fit). */
export function finetuneCheckCount(o: Pick<FinetuneOptions, "iters" | "freeze">): number {
  if (o.iters <= 0) return 0;
  const every = o.freeze?.every ?? defaultFreezeEvery(o.iters);
  return Math.ceil(o.iters / every);
}

/** An empty check record for up to `capacity` checks, backed by a SharedArrayBuffer. */
export function createCheckRecord(capacity: number): Float64Array {
  if (!Number.isInteger(capacity) || capacity < 0) throw new InputError(`a check record holds an integer >= 0 of checks, not ${capacity}`);
  return sharedArray(Float64Array, 1 + capacity * CHECK_RECORD_FIELDS);
}

function checkRecordCount(record: Float64Array): Int32Array {
  return new Int32Array(record.buffer, record.byteOffset, 2);
}

function validateCheckRecord(record: Float64Array): void {
  if (!(record instanceof Float64Array) || record.length < 1 || (record.length - 1) % CHECK_RECORD_FIELDS !== 0)
    throw new InputError(`fine-tuning: a check record has 1 + ${CHECK_RECORD_FIELDS} x checks float64 values`);
}

/** Publishes one more check; false (and nothing written) when the record is full. */
export function writeCheckRecord(record: Float64Array, check: FreezeCheck): boolean {
  const count = checkRecordCount(record);
  const i = Atomics.load(count, 0);
  const at = 1 + i * CHECK_RECORD_FIELDS;
  if (at + CHECK_RECORD_FIELDS > record.length) return false;
  record[at] = check.iteration;
  record[at + 1] = check.loss;
  record[at + 2] = check.relativeError;
  record[at + 3] = check.flips;
  record[at + 4] = check.newlyFrozen;
  record[at + 5] = check.frozenFraction;
  record[at + 6] = check.threshold ?? NaN;
  Atomics.store(count, 0, i + 1);
  return true;
}

/** The checks published so far, from index `from` on, in order. */
export function readCheckRecord(record: Float64Array, from = 0): FreezeCheck[] {
  const published = Atomics.load(checkRecordCount(record), 0);
  const out: FreezeCheck[] = [];
  for (let i = Math.max(0, from); i < published; i++) {
    const at = 1 + i * CHECK_RECORD_FIELDS;
    const threshold = record[at + 6]!;
    out.push({
      iteration: record[at]!,
      loss: record[at + 1]!,
      relativeError: record[at + 2]!,
      flips: record[at + 3]!,
      newlyFrozen: record[at + 4]!,
      frozenFraction: record[at + 5]!,
      threshold: Number.isNaN(threshold) ? null : threshold,
    });
  }
  return out;
}

const productEngines = new Map<string, ProductEngine>();

/**
 * Makes a product engine (for example onnxruntime's MatMul, which core cannot import) available to
 * "finetune.layer" tasks run in this thread. Register it in every thread that runs them.
 */
export function registerProductEngine(engine: ProductEngine): void {
  productEngines.set(engine.name, engine);
}

/** The "finetune.layer" task (`tasks.ts`). */
export function finetuneLayerTask(input: FinetuneTaskInput): FinetuneResult | Promise<FinetuneResult> {
  const engine = input.engine !== undefined ? productEngines.get(input.engine) : undefined;
  const record = input.progress;
  if (record) validateCheckRecord(record);
  const hooks: FinetuneHooks = record ? { onCheck: (check) => void writeCheckRecord(record, check) } : {};
  return engine ? finetuneLayerWith(engine, input, input.options, hooks) : finetuneLayer(input, input.options, hooks);
}

/**
 * Fine-tunes several layers, one task each, through `map` (a thread pool runs them in parallel); the
 * results come back in input order and do not depend on the map or its thread count.
 */
export async function finetuneLayers(map: ParallelMap, layers: readonly FinetuneInput[], settings: FinetuneSettings = {}): Promise<FinetuneResult[]> {
  const options = resolveFinetuneOptions(settings);
  return map.run<FinetuneTaskInput, FinetuneResult>(
    "finetune.layer",
    layers.map((l) => ({ ...l, options })),
  );
}
