/**
 * Fine-tuning one compressed layer against its own output on calibration inputs (DESIGN.md section 1,
 * "Fine-tuning" and "Progressive freezing"; issue 5 items 1, 2 and 5; issue 11).
 *
 * Objective, per group g of rows (rows split evenly into `groups`, group g uses the H block g):
 *     loss = tr((W_hat - W) H (W_hat - W)^T),   gradient G = 2 (W_hat - W) H.
 * SSVQ: W_hat[r, c] = s[r, c] C[A[sub], j] with s = sign(L) (zero counts as +), the latent L initialised
 * to alpha |W| with the sign of the given quantization (alpha = 1, so L = W when the signs are sign(W));
 * VQ: W_hat = C[A]. Trainable: the codebook C (SSVQ: clamped to >= 0 after every step) and L. Straight-
 * through estimator: dL = G * C[A] (the codeword magnitude scales the step), dC[a, j] = sum over the
 * positions assigned to a at offset j of G * s. Adam (beta1 0.9, beta2 0.999, eps 1e-8), learning rate
 * lr * (1 + cos(pi t / iters)) / 2 at iteration t, separate rates for the codebook and the signs.
 * Assignments stay fixed; `reassign` re-assigns once at the end (see `reassignRows`). `fixedSigns` keeps
 * SSVQ's signs (those of the given quantization, sign(W)) and trains the codebook only (the paper's
 * ablation); mode "vq" trains its codebook only, with the same objective.
 *
 * Scale: fine-tuning runs in normalised units, W' = W / rms(W) and H' = H / mean(diag H) (over all
 * groups). So `lrCodebook` and `lrSign` are relative to the layer's weight RMS: an Adam step moves a
 * codeword entry or a latent by about lr * rms(W) (times the schedule), whatever the scale of the weights
 * or of the activations, and Adam's eps stays negligible next to the gradients.
 *
 * Progressive freezing (as `freeze.ts`'s SignFreezer, position by position): checks at iterations F, 2F,
 * ... and at the last one. At a check the signs are first frozen (frozen signs take their majority vote
 * and stop: no more latent or Adam updates), then the loss of the resulting state is measured and
 * recorded with the flips since the previous check. Without freezing (or for VQ and fixed signs) the
 * checks are still recorded, for the loss curve.
 *
 * The statistic is either form of `stat-product.ts`: H, or the calibration columns X themselves (H =
 * X X^T / n) when they are fewer than half the columns; then the product P = E H is (E X) X^T / n and the
 * loss ||E X||^2 / n. The product (2 rows cols^2, or 4 rows cols r, flops per iteration) is nearly all the
 * time. Everything else is per position except the codebook's gradient (k d sums) and the loss, so each
 * iteration runs as one step over blocks of rows (`rowBlocks`: the problem size only): E of the block,
 * its product on a `StatKernel`, its partial loss and codebook gradient, and the Adam step of its latents
 * with their freezing state; then the partial sums are added in block order and the codebook takes its
 * Adam step. `finetuneLayer` runs the blocks in this thread, the "finetune.layer" task in a pool thread,
 * `finetuneLayerOn` as "finetune.block" tasks across the pool (the layer's state in shared memory), so
 * one large layer uses every thread; all three give the same bytes with the same engine.
 *
 * Pure; bit-for-bit deterministic (fixed summation order, no randomness): the same inputs give the same
 * bytes on every map and thread count.
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
import { freezeThreshold, validateFreezeOptions, type FreezeOptions } from "./freeze.js";
import { symmMulBlocked } from "./gemm-kernels.js";
import { wasmAvailable, WasmSymmMul } from "./gemm-wasm.js";
import { finetuneWasm, stateMemory, type WasmMemory } from "./finetune-wasm.js";
import type { VqQuantized } from "./quantize.js";
import {
  withCachedKernel,
  defaultStatEngine,
  isFactor,
  productRowFlops,
  rowBlocks,
  shareStatistic,
  statEngine,
  statisticTrace,
  validateStatistic,
  hasStatEngine,
  isSyncStatEngine,
  type FactorStatistic,
  type GramStatistic,
  type LayerStatistic,
  type StatEngine,
  type StatHandle,
  type StatKernel,
  type SyncStatEngine,
  type SyncStatKernel,
} from "./stat-product.js";

export type { FreezeOptions } from "./freeze.js";
export type { LayerStatistic, StatHandle } from "./stat-product.js";

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
  /** `groups` symmetric blocks [cols, cols], row-major: H_g = X_g X_g^T / n (the gram form's shorthand). */
  h: Float32Array | Float64Array;
  groups: number;
  /** The starting point: k-means codebook, assignments and (SSVQ) signs. */
  quantized: VqQuantized;
}

/** A layer with its statistic in either form (a shared handle keeps each thread's kernel cached). */
export interface FinetuneStatInput {
  w: Float32Array;
  stat: LayerStatistic | StatHandle;
  quantized: VqQuantized;
}

export type FinetuneInputAny = FinetuneInput | FinetuneStatInput;

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

/** Called on the thread that drives the layer (`finetuneLayer`, `finetuneLayerOn`; not through a task). */
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


// ---- the layer, its state and its blocks -----------------------------------------------------------------

/** The sizes and scales of a layer being fine-tuned (plain numbers, so block tasks receive them). */
export interface LayerSetup {
  rows: number;
  cols: number;
  groups: number;
  d: number;
  k: number;
  perRow: number;
  paddedCols: number;
  /** rows * cols. */
  n: number;
  /** Weight scale (rms(W)) and H scale (mean diagonal); 1 when W or H is all zero. */
  ws: number;
  hs: number;
  /** False when W or H is zero (nothing to fit): fine-tuning then keeps the given quantization. */
  scaled: boolean;
  ssvq: boolean;
  /** SSVQ with learnable signs. */
  trainSigns: boolean;
  /** Progressive freezing on (trainSigns and freeze options). */
  freezing: boolean;
  momentum: number;
  /** The iterations between checks may use the kernel's reduced-precision product (`FAST_PRODUCT_MIN_FLOPS`). */
  fastProducts: boolean;
  /** The blocks of rows the steps run in (`rowBlocks`). */
  blocks: Array<[number, number]>;
}

/**
 * Layers whose product (the whole layer, one iteration) takes at least this many flops run the
 * iterations between checks at the kernel's reduced precision (`StatKernel.multiplyFast`: onnxruntime in
 * float32, about twice float64's speed), the others in float64 throughout. The rounding changes the path
 * of the signs (they flip on small differences), so a small layer, where 500 iterations save under half
 * a second, keeps the float64 path and its exact results: the 3M CNN's layers of 0.13 to 5.4 GFLOP an
 * iteration (all but conv1 and conv2: 99% of its products) take it; no layer of LeNet-5 or the tiny ViT
 * does (at most 0.04 GFLOP).
 */
export const FAST_PRODUCT_MIN_FLOPS = 1e8;

/**
 * The per-position state of a layer (all [rows, cols] unless said): plain arrays when one thread runs the
 * layer, shared ones when its blocks run on a pool (each block task writes its own rows only).
 */
export interface LayerState {
  /** The original row matrix (float32) and W' = W / ws. */
  w: Float32Array;
  wn: Float64Array;
  /** Codebook index a * d + j of every position. */
  cb: Int32Array;
  /** Sign bit per position (1 = negative; all 0 for VQ). */
  neg: Uint8Array;
  /** Assignments [count] (changed only by re-assignment). */
  assignments: Uint32Array;
  /** E' of the last product and P = E' H (raw H). */
  e: Float64Array;
  p: Float64Array;
  /** Layers with fast products: E' and P of the float32 products (`StatKernel.multiplyFast`). */
  e32?: Float32Array;
  p32?: Float32Array;
  /** Learnable signs: latents and their Adam moments. */
  latent?: Float64Array;
  mL?: Float64Array;
  vL?: Float64Array;
  /** Freezing (as `SignFreezer`): frozen mask, the freezer's sign bits, flip EMA, negative-minus-positive balance. */
  frozen?: Uint8Array;
  fneg?: Uint8Array;
  flipEma?: Float64Array;
  balance?: Int32Array;
  /**
   * The WebAssembly memory every array above is a view of (shared when the state is), where the kernel of
   * `finetune-wasm.ts` runs the per-weight loops; absent (plain typed arrays, the TypeScript loops) where
   * WebAssembly SIMD is missing or the state does not fit one memory.
   */
  memory?: WasmMemory;
  /** With `memory`: per block (one slot in a state of this thread only), the codebook C' and the block's gradient, k d values each. */
  scratch?: Float64Array;
}

/** One step of the layer's algorithm, run on every block of rows. */
export type BlockStep =
  /** E' = W': the reference tr(W' H W'^T). */
  | { kind: "reference" }
  /**
   * Iteration t: freezing (threshold, at a check), then E' = s C'[A] - W' and its product (the loss),
   * then with `update` the gradients and the Adam step of the latents (`grad`: the codebook gradient).
   * `fast`: the product at the kernel's reduced precision (`StatKernel.multiplyFast`) where it has one;
   * `skipLoss` (fast steps only): nothing reads this iteration's loss, so that product need not sum it
   * (the block's loss is then NaN).
   */
  | { kind: "iterate"; cbook: Float64Array; threshold: number | null; update: LatentUpdate | null; grad: boolean; fast?: boolean; skipLoss?: boolean }
  /** The gradients and the Adam step of an iterate step run without them (P from it). */
  | { kind: "update"; cbook: Float64Array; update: LatentUpdate }
  /** E' of the stored (float32, original units) reconstruction with this codebook. */
  | { kind: "stored"; codebook: Float32Array }
  /** One greedy pass of re-assignment with the final codebook and signs. */
  | { kind: "reassign"; codebook: Float32Array };

export interface LatentUpdate {
  /** Latent learning rate at this iteration (with the schedule), 0 without learnable signs. */
  lr: number;
  bc1: number;
  bc2: number;
}

export interface BlockOut {
  /** The block's sum(E' .* P) (gram form) or ||E' X||^2 / n (factor form): the loss times hs. */
  loss: number;
  /** The block's codebook gradient (iterate with grad, update). */
  gC?: Float64Array;
  flips: number;
  newlyFrozen: number;
  /** Sub-vectors re-assigned. */
  moved: number;
}

function setupLayer(input: FinetuneInputAny, stat: LayerStatistic, o: FinetuneOptions): LayerSetup {
  const { w, quantized: q } = input;
  const { rows, cols, d, perRow, paddedCols } = q.shape;
  const n = rows * cols;
  let sumSq = 0;
  for (let p = 0; p < n; p++) sumSq += w[p]! * w[p]!;
  const rms = Math.sqrt(sumSq / Math.max(1, n));
  const hmean = statisticTrace(stat) / (stat.groups * cols);
  const scaled = rms > 0 && Number.isFinite(rms) && hmean > 0 && Number.isFinite(hmean);
  const ssvq = q.mode === "ssvq";
  const trainSigns = ssvq && !o.fixedSigns;
  return {
    rows,
    cols,
    groups: stat.groups,
    d,
    k: q.k,
    perRow,
    paddedCols,
    n,
    ws: scaled ? rms : 1,
    hs: scaled ? hmean : 1,
    scaled,
    ssvq,
    trainSigns,
    freezing: trainSigns && o.freeze !== null,
    momentum: o.freeze?.momentum ?? 0,
    fastProducts: rows * productRowFlops(stat) >= FAST_PRODUCT_MIN_FLOPS,
    blocks: rowBlocks(rows, stat.groups, productRowFlops(stat)),
  };
}

type ArrayType = Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array;
interface ArrayCtor<T extends ArrayType> {
  new (length: number): T;
  new (buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}
/** Where a layer's state lives: this thread's memory, or shared memory (a split layer's blocks on a pool). */
type Placement = "local" | "shared";

/** The state's arrays by field, in the order they are laid out. */
type StateArrays = Omit<LayerState, "memory">;

function stateFields(L: LayerSetup, assignments: number, shared: boolean): Array<[keyof StateArrays, ArrayCtor<ArrayType>, number]> {
  const { n, k, d } = L;
  const f: Array<[keyof StateArrays, ArrayCtor<ArrayType>, number]> = [
    ["wn", Float64Array, n],
    ["e", Float64Array, n],
    ["p", Float64Array, n],
  ];
  if (L.trainSigns) f.push(["latent", Float64Array, n], ["mL", Float64Array, n], ["vL", Float64Array, n]);
  if (L.freezing) f.push(["flipEma", Float64Array, n]);
  f.push(["scratch", Float64Array, 2 * k * d * (shared ? L.blocks.length : 1)]);
  f.push(["w", Float32Array, n], ["cb", Int32Array, n]);
  if (L.fastProducts) f.push(["e32", Float32Array, n], ["p32", Float32Array, n]);
  if (L.freezing) f.push(["balance", Int32Array, n]);
  f.push(["assignments", Uint32Array, assignments], ["neg", Uint8Array, n]);
  if (L.freezing) f.push(["frozen", Uint8Array, n], ["fneg", Uint8Array, n]);
  return f;
}

/**
 * The state's arrays, zero-filled: views of one WebAssembly memory (`stateMemory`) where the kernel runs,
 * each at a 16-byte boundary; else separate typed arrays (shared ones for a shared placement), without
 * the kernel's scratch.
 */
function allocateState(L: LayerSetup, assignments: number, placement: Placement): LayerState {
  const shared = placement === "shared";
  const fields = stateFields(L, assignments, shared);
  const offsets: number[] = [];
  let bytes = 0;
  for (const [, type, length] of fields) {
    offsets.push(bytes);
    bytes += Math.ceil((length * type.BYTES_PER_ELEMENT) / 16) * 16;
  }
  const memory = stateMemory(bytes, shared);
  const S: Partial<LayerState> = {};
  const views = S as Record<string, ArrayType>;
  fields.forEach(([field, type, length], i) => {
    if (memory) views[field] = new type(memory.buffer, offsets[i]!, length);
    else if (field !== "scratch") views[field] = shared ? sharedArray(type as unknown as { new (b: SharedArrayBuffer): ArrayType; BYTES_PER_ELEMENT: number }, length) : new type(length);
  });
  if (memory) S.memory = memory;
  return S as LayerState;
}

function createState(L: LayerSetup, input: FinetuneInputAny, o: FinetuneOptions, placement: Placement): LayerState {
  const { w, quantized: q } = input;
  const { rows, cols, n, ws, paddedCols } = L;
  const S = allocateState(L, q.assignments.length, placement);
  S.w.set(w);
  const wn = S.wn;
  for (let p = 0; p < n; p++) wn[p] = w[p]! / ws;
  const neg = S.neg;
  if (L.ssvq) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) neg[r * cols + c] = q.signs![r * paddedCols + c]!;
  S.assignments.set(q.assignments);
  setCodebookIndex(L, S.cb, S.assignments, 0, rows);
  if (S.latent) for (let p = 0; p < n; p++) S.latent[p] = o.alpha * Math.abs(wn[p]!) * (neg[p] ? -1 : 1);
  if (S.fneg) S.fneg.set(neg);
  return S;
}

function setCodebookIndex(L: LayerSetup, cb: Int32Array, assignments: Uint32Array, r0: number, r1: number): void {
  const { cols, d, perRow } = L;
  for (let r = r0; r < r1; r++) for (let c = 0; c < cols; c++) cb[r * cols + c] = assignments[r * perRow + Math.floor(c / d)]! * d + (c % d);
}

/** The part of a step before its product: freezing, then E' of the block (into `e32` with `fast`). Returns the newly frozen. */
function beforeProduct(L: LayerSetup, S: LayerState, step: BlockStep, r0: number, r1: number, fast: boolean): number {
  const p0 = r0 * L.cols;
  const p1 = r1 * L.cols;
  const { e } = S;
  switch (step.kind) {
    case "reference":
      e.set(S.wn.subarray(p0, p1), p0);
      return 0;
    case "iterate": {
      const newlyFrozen = step.threshold !== null && S.frozen ? freezeRange(S, step.threshold, p0, p1) : 0;
      const { wn, cb, neg } = S;
      const cbook = step.cbook;
      // float32 products: E' rounded to float32 as it is written (as the kernel would round it).
      const out = fast ? S.e32! : e;
      if (S.memory) {
        const c = scratchCodebook(L, S, r0, cbook);
        const k = finetuneWasm(S.memory);
        (fast ? k.errorE32 : k.errorE)(p1 - p0, c.byteOffset, at(cb, p0), at(neg, p0), at(wn, p0), at(out, p0));
        return newlyFrozen;
      }
      for (let p = p0; p < p1; p++) {
        const v = cbook[cb[p]!]!;
        out[p] = (neg[p] ? -v : v) - wn[p]!;
      }
      return newlyFrozen;
    }
    case "stored":
    case "reassign": {
      const { w, cb, neg } = S;
      const codebook = step.codebook;
      const ws = L.ws;
      for (let p = p0; p < p1; p++) {
        const v = codebook[cb[p]!]!;
        e[p] = ((neg[p] ? -v : v) - w[p]!) / ws;
      }
      return 0;
    }
    case "update":
      return 0;
  }
}

/** Freezes the block's free signs whose flip EMA exceeds the threshold, at their majority (`SignFreezer.check`). */
function freezeRange(S: LayerState, threshold: number, p0: number, p1: number): number {
  const frozen = S.frozen!;
  const flipEma = S.flipEma!;
  const balance = S.balance!;
  const fneg = S.fneg!;
  let newly = 0;
  for (let i = p0; i < p1; i++) {
    if (frozen[i] || !(flipEma[i]! > threshold)) continue;
    frozen[i] = 1;
    newly++;
    const b = balance[i]!;
    fneg[i] = b > 0 ? 1 : b < 0 ? 0 : fneg[i]!;
  }
  if (newly > 0) {
    // Newly frozen signs take their majority vote; their latent follows (it is not updated any more).
    const { neg, latent } = S;
    for (let p = p0; p < p1; p++) {
      if (frozen[p] && neg[p] !== fneg[p]) {
        neg[p] = fneg[p]!;
        latent![p] = -latent![p]!;
      }
    }
  }
  return newly;
}

/** The part of a step after its product (`quad`: the block's loss sum; `pm`: P, float32 after a fast product). */
function afterProduct(L: LayerSetup, S: LayerState, stat: LayerStatistic, step: BlockStep, r0: number, r1: number, quad: number, pm: Float32Array | Float64Array, t?: Float64Array): BlockOut {
  const out: BlockOut = { loss: quad, flips: 0, newlyFrozen: 0, moved: 0 };
  if (step.kind === "iterate" && step.grad) {
    out.gC = new Float64Array(L.k * L.d);
    out.flips = gradientsAndAdam(L, S, pm, step.cbook, step.update, out.gC, r0, r1);
  } else if (step.kind === "update") {
    out.gC = new Float64Array(L.k * L.d);
    out.flips = gradientsAndAdam(L, S, pm, step.cbook, step.update, out.gC, r0, r1);
  } else if (step.kind === "reassign") {
    out.moved = reassignRows(L, S, stat, step.codebook, r0, r1, t);
  }
  return out;
}

/**
 * The block's gradients from P: gC[a * d + j] += G' s over the positions at (a, j) (G' = 2 E' H' = 2 P / hs),
 * and with `update` (learnable signs) the Adam step of every free latent with its straight-through
 * gradient G' C'[A], the sign bits it flips, and the freezer's record of them (as `SignFreezer.observe`).
 * Returns the flips.
 */
function gradientsAndAdam(L: LayerSetup, S: LayerState, pm: Float32Array | Float64Array, cbook: Float64Array, update: LatentUpdate | null, gC: Float64Array, r0: number, r1: number): number {
  const p0 = r0 * L.cols;
  const p1 = r1 * L.cols;
  const { cb, neg, latent } = S;
  const scale = 2 / L.hs;
  if (S.memory) return gradientsAndAdamWasm(L, S, S.memory, pm, cbook, update, gC, p0, p1, scale, r0);
  if (!latent || !update) {
    for (let p = p0; p < p1; p++) {
      const g = scale * pm[p]!;
      const i = cb[p]!;
      gC[i] += neg[p] ? -g : g;
    }
    return 0;
  }
  const mL = S.mL!;
  const vL = S.vL!;
  const step = update.lr / update.bc1;
  const inv2 = 1 / update.bc2;
  let flips = 0;
  const frozen = S.frozen;
  if (!frozen) {
    for (let p = p0; p < p1; p++) {
      const g = scale * pm[p]!;
      const i = cb[p]!;
      // The codebook gradient takes the sign before this step's update.
      gC[i] += neg[p] ? -g : g;
      const gp = g * cbook[i]!;
      const m1 = BETA1 * mL[p]! + (1 - BETA1) * gp;
      const m2 = BETA2 * vL[p]! + (1 - BETA2) * gp * gp;
      mL[p] = m1;
      vL[p] = m2;
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
  // With freezing: frozen latents stay; the free ones' flips go into the flip EMA and the balance
  // (`SignFreezer.observe`, position by position).
  const m = L.momentum;
  const a = 1 - m;
  const flipEma = S.flipEma!;
  const balance = S.balance!;
  const current = S.fneg!;
  for (let p = p0; p < p1; p++) {
    const g = scale * pm[p]!;
    const i = cb[p]!;
    gC[i] += neg[p] ? -g : g;
    if (frozen[p]) continue;
    const gp = g * cbook[i]!;
    const m1 = BETA1 * mL[p]! + (1 - BETA1) * gp;
    const m2 = BETA2 * vL[p]! + (1 - BETA2) * gp * gp;
    mL[p] = m1;
    vL[p] = m2;
    const l = latent[p]! - (step * m1) / (Math.sqrt(m2 * inv2) + EPS);
    latent[p] = l;
    const s = l < 0 ? 1 : 0;
    if (s !== neg[p]) {
      neg[p] = s;
      flips++;
    }
    if (s !== current[p]) {
      current[p] = s;
      flipEma[p] = m * flipEma[p]! + a;
    } else {
      flipEma[p] = m * flipEma[p]!;
    }
    balance[p] += s ? 1 : -1;
  }
  return flips;
}

/** The byte address of element p of a view of the state's memory. */
const at = (a: ArrayType, p: number): number => a.byteOffset + p * a.BYTES_PER_ELEMENT;

/** The block's scratch slot (its own when the state is shared, else the only one): C' then the gradient. */
function scratchSlot(L: LayerSetup, S: LayerState, r0: number): { c: Float64Array; g: Float64Array } {
  const kd = L.k * L.d;
  let slot = 0;
  if (S.memory!.buffer instanceof SharedArrayBuffer) {
    slot = L.blocks.findIndex(([b0]) => b0 === r0);
    if (slot < 0) throw new Error(`fine-tuning: no block starts at row ${r0}`);
  }
  const o = slot * 2 * kd;
  return { c: S.scratch!.subarray(o, o + kd), g: S.scratch!.subarray(o + kd, o + 2 * kd) };
}

/** C' copied into the block's scratch slot, for the kernel. */
function scratchCodebook(L: LayerSetup, S: LayerState, r0: number, cbook: Float64Array): Float64Array {
  const { c } = scratchSlot(L, S, r0);
  c.set(cbook);
  return c;
}

/** `gradientsAndAdam` on the state's memory (finetune-wasm.ts: the same operations, the same bytes). */
function gradientsAndAdamWasm(L: LayerSetup, S: LayerState, memory: WasmMemory, pm: Float32Array | Float64Array, cbook: Float64Array, update: LatentUpdate | null, gC: Float64Array, p0: number, p1: number, scale: number, r0: number): number {
  const k = finetuneWasm(memory);
  const { c, g } = scratchSlot(L, S, r0);
  g.set(gC);
  const f32 = pm instanceof Float32Array;
  let flips = 0;
  if (!S.latent || !update) {
    (f32 ? k.gradient32 : k.gradient)(p1 - p0, at(pm, p0), at(S.cb, p0), at(S.neg, p0), g.byteOffset, scale);
  } else {
    c.set(cbook);
    const frozen = S.frozen;
    const fn = frozen ? (f32 ? k.adamFreeze32 : k.adamFreeze) : f32 ? k.adam32 : k.adam;
    const m = L.momentum;
    flips = fn(
      p1 - p0,
      at(pm, p0),
      at(S.cb, p0),
      at(S.neg, p0),
      c.byteOffset,
      g.byteOffset,
      at(S.latent, p0),
      at(S.mL!, p0),
      at(S.vL!, p0),
      frozen ? at(frozen, p0) : 0,
      frozen ? at(S.fneg!, p0) : 0,
      frozen ? at(S.flipEma!, p0) : 0,
      frozen ? at(S.balance!, p0) : 0,
      scale,
      update.lr / update.bc1,
      1 / update.bc2,
      m,
      1 - m,
    );
  }
  gC.set(g);
  return flips;
}

/**
 * One greedy pass of re-assignment under the exact output loss, rows [r0, r1): sub-vector by sub-vector
 * in row order, each moves to the codeword (with its final signs, SSVQ) that lowers tr(E H E^T) most given
 * all the others, if any does (ties keep the current codeword, then the lowest index). With Delta the
 * change of the sub-vector's d entries of row r (columns c0..), the loss changes by 2 Delta . P[r, c0..] +
 * Delta^T H[c0.., c0..] Delta. Rows are independent. Gram form: P's row is updated after each move
 * (P[r, :] += Delta H[c0.., :]); factor form: T = E X of the row is kept instead (T += Delta X[c0.., :]),
 * P[r, c0..] = T X[c0.., :]^T / n computed when needed. The loss never increases. Returns the moves.
 */
function reassignRows(L: LayerSetup, S: LayerState, stat: LayerStatistic, codebook: Float32Array, r0: number, r1: number, tRows?: Float64Array): number {
  const { rows, cols, d, k, perRow, ws, groups } = L;
  const { e, p: pm, assignments } = S;
  const neg = L.ssvq ? S.neg : undefined;
  const rowsPerGroup = rows / groups;
  const cand = new Float64Array(d);
  const best = new Float64Array(d);
  const prow = new Float64Array(d);
  const factor = isFactor(stat);
  // Factor form: the d x d diagonal blocks of H per group and sub-vector, from X.
  const hblk = factor ? new Float64Array(perRow * d * d) : undefined;
  let hblkGroup = -1;
  let moved = 0;
  for (let r = r0; r < r1; r++) {
    const g = Math.floor(r / rowsPerGroup);
    const row = r * cols;
    const hOff = g * cols * cols;
    if (factor && g !== hblkGroup) {
      factorDiagonalBlocks(stat, g, d, perRow, hblk!);
      hblkGroup = g;
    }
    for (let sv = 0; sv < perRow; sv++) {
      const c0 = sv * d;
      const dd = Math.min(d, cols - c0);
      if (factor) factorRowProduct(stat, g, tRows!, (r - r0) * stat.r, c0, dd, prow);
      else for (let j = 0; j < dd; j++) prow[j] = pm[row + c0 + j]!;
      const cur = assignments[r * perRow + sv]!;
      let bestA = cur;
      let bestGain = 0;
      for (let a = 0; a < k; a++) {
        if (a === cur) continue;
        for (let j = 0; j < dd; j++) {
          const pos = row + c0 + j;
          const sign = neg && neg[pos] ? -1 : 1;
          cand[j] = (sign * (codebook[a * d + j]! - codebook[cur * d + j]!)) / ws;
        }
        let change = 0;
        for (let j = 0; j < dd; j++) {
          let quad = 0;
          if (factor) {
            const hj = (sv * d + j) * d;
            for (let i = 0; i < dd; i++) quad += hblk![hj + i]! * cand[i]!;
          } else {
            const hj = hOff + (c0 + j) * cols + c0;
            for (let i = 0; i < dd; i++) quad += (stat as GramStatistic).H[hj + i]! * cand[i]!;
          }
          change += cand[j]! * (2 * prow[j]! + quad);
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
      for (let j = 0; j < dd; j++) e[row + c0 + j] += best[j]!;
      if (factor) {
        // T[r, :] += Delta X[:, c0..]^T.
        const { X, r: rr } = stat;
        const to = (r - r0) * rr;
        for (let s = 0; s < rr; s++) {
          const xo = (g * rr + s) * cols + c0;
          let v = 0;
          for (let j = 0; j < dd; j++) v += best[j]! * X[xo + j]!;
          tRows![to + s] += v;
        }
      } else {
        // P[r, :] += Delta H[c0.., :] (rows of H, by symmetry its columns).
        const H = (stat as GramStatistic).H;
        for (let j = 0; j < dd; j++) {
          const dj = best[j]!;
          const hr = hOff + (c0 + j) * cols;
          for (let c = 0; c < cols; c++) pm[row + c] += dj * H[hr + c]!;
        }
      }
    }
  }
  setCodebookIndex(L, S.cb, assignments, r0, r1);
  return moved;
}

/** out[(sv * d + j) * d + i] = H[c0 + j, c0 + i] of group g (c0 = sv * d), from X. */
function factorDiagonalBlocks(stat: FactorStatistic, g: number, d: number, perRow: number, out: Float64Array): void {
  const { X, r, n, cols } = stat;
  out.fill(0);
  for (let s = 0; s < r; s++) {
    const xo = (g * r + s) * cols;
    for (let sv = 0; sv < perRow; sv++) {
      const c0 = sv * d;
      const dd = Math.min(d, cols - c0);
      for (let j = 0; j < dd; j++) {
        const xj = X[xo + c0 + j]!;
        if (xj === 0) continue;
        const o = (sv * d + j) * d;
        for (let i = 0; i < dd; i++) out[o + i] += xj * X[xo + c0 + i]!;
      }
    }
  }
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / n;
}

/** out[j] = P[row, c0 + j] = T[row] . X[:, c0 + j] / n for j < dd. */
function factorRowProduct(stat: FactorStatistic, g: number, t: Float64Array, tOff: number, c0: number, dd: number, out: Float64Array): void {
  const { X, r, n, cols } = stat;
  for (let j = 0; j < dd; j++) out[j] = 0;
  for (let s = 0; s < r; s++) {
    const tv = t[tOff + s]!;
    const xo = (g * r + s) * cols + c0;
    for (let j = 0; j < dd; j++) out[j] += tv * X[xo + j]!;
  }
  for (let j = 0; j < dd; j++) out[j] = out[j]! / n;
}

/** What a block step needs from its product: none for "update"; T too for re-assignment with a factor. */
const needsProduct = (step: BlockStep): boolean => step.kind !== "update";

/**
 * One step on one block: the part before the product, the product started on the kernel (a number from a
 * synchronous kernel, else perhaps a promise), and `finish`, the part after it.
 */
function startBlock(L: LayerSetup, S: LayerState, stat: LayerStatistic, kernel: StatKernel, step: BlockStep, r0: number, r1: number): { product: number | Promise<number>; finish(quad: number): BlockOut } {
  const fast = useFast(S, kernel, step);
  const newlyFrozen = beforeProduct(L, S, step, r0, r1, fast);
  let product: number | Promise<number> = 0;
  let t: Float64Array | undefined;
  if (fast) {
    const { a, p } = blockViews32(L, S, r0, r1);
    product = kernel.multiplyFast!(r0, r1, a, p, !(step.kind === "iterate" && step.skipLoss === true));
  } else if (needsProduct(step)) {
    const { a, p } = blockViews(L, S, r0, r1);
    if (step.kind === "reassign" && isFactor(stat)) t = new Float64Array((r1 - r0) * stat.r);
    product = kernel.multiply(r0, r1, a, p, t);
  }
  return {
    product,
    finish(quad: number): BlockOut {
      const out = afterProduct(L, S, stat, step, r0, r1, quad, fast ? S.p32! : S.p, t);
      out.newlyFrozen = newlyFrozen;
      return out;
    },
  };
}

/** Runs one step on one block with a synchronous kernel. */
function runBlockSync(L: LayerSetup, S: LayerState, stat: LayerStatistic, kernel: SyncStatKernel, step: BlockStep, r0: number, r1: number): BlockOut {
  const b = startBlock(L, S, stat, kernel, step, r0, r1);
  return b.finish(b.product as number);
}

/** Runs one step on one block with any kernel. */
async function runBlock(L: LayerSetup, S: LayerState, stat: LayerStatistic, kernel: StatKernel, step: BlockStep, r0: number, r1: number): Promise<BlockOut> {
  const b = startBlock(L, S, stat, kernel, step, r0, r1);
  return b.finish(await b.product);
}

function blockViews(L: LayerSetup, S: LayerState, r0: number, r1: number): { a: Float64Array; p: Float64Array } {
  return { a: S.e.subarray(r0 * L.cols, r1 * L.cols), p: S.p.subarray(r0 * L.cols, r1 * L.cols) };
}

function blockViews32(L: LayerSetup, S: LayerState, r0: number, r1: number): { a: Float32Array; p: Float32Array } {
  return { a: S.e32!.subarray(r0 * L.cols, r1 * L.cols), p: S.p32!.subarray(r0 * L.cols, r1 * L.cols) };
}

/** Whether this step's product runs in float32: a fast iterate step, a kernel that has them, a layer with their arrays. */
const useFast = (S: LayerState, kernel: StatKernel, step: BlockStep): boolean =>
  step.kind === "iterate" && step.fast === true && kernel.multiplyFast !== undefined && S.e32 !== undefined;

// ---- the algorithm ------------------------------------------------------------------------------------

const sum = (outs: readonly BlockOut[], f: (o: BlockOut) => number): number => {
  let s = 0;
  for (const o of outs) s += f(o);
  return s;
};

/** The codebook gradient: the blocks' partial gradients added in block order. */
function sumGradients(outs: readonly BlockOut[], gC: Float64Array): void {
  outs.forEach((o, b) => {
    const g = o.gC!;
    if (b === 0) gC.set(g);
    else for (let i = 0; i < gC.length; i++) gC[i] += g[i]!;
  });
}

/**
 * The whole run of one layer (see the module comment) as a generator: it yields each step, to be run on
 * every block of rows, and receives the blocks' outputs in block order. Whoever drives it (this thread,
 * or the blocks as pool tasks) gets the same bytes.
 */
function* finetuneSteps(
  L: LayerSetup,
  S: LayerState,
  q: VqQuantized,
  o: FinetuneOptions,
  hooks: FinetuneHooks,
  product: string,
): Generator<BlockStep, FinetuneResult, BlockOut[]> {
  const { rows, cols, d, k, n, ws, hs, paddedCols, ssvq } = L;
  const lossUnit = ws * ws * hs;
  const reference = sum(yield { kind: "reference" }, (x) => x.loss) / hs;
  const relative = (loss: number): number =>
    reference > 0 ? Math.sqrt(Math.max(0, loss) / reference) : Math.sqrt(Math.max(0, loss * lossUnit));

  const cbook = new Float64Array(k * d);
  for (let i = 0; i < k * d; i++) cbook[i] = q.codebook[i]! / ws;
  const mC = new Float64Array(k * d);
  const vC = new Float64Array(k * d);
  const gC = new Float64Array(k * d);
  const every = o.freeze?.every ?? defaultFreezeEvery(o.iters);

  const checks: FreezeCheck[] = [];
  let flipsSinceCheck = 0;
  let frozenTotal = 0;
  let lossBefore = 0;
  const training = L.scaled && o.iters > 0;
  const iters = training ? o.iters : 0;
  for (let t = 0; t <= iters && training; t++) {
    if (hooks.signal?.aborted) throw new CancelledError();
    const isCheck = t > 0 && (t % every === 0 || t === iters);
    const threshold = isCheck && L.freezing ? freezeThreshold(t, iters, o.freeze!.thresholdFrom, o.freeze!.thresholdTo) : null;
    const schedule = 0.5 * (1 + Math.cos((Math.PI * t) / iters));
    const step = t + 1;
    const update: LatentUpdate | null = t < iters ? { lr: o.lrSign * schedule, bc1: 1 - Math.pow(BETA1, step), bc2: 1 - Math.pow(BETA2, step) } : null;
    // A check with an onCheck hook shows the state before this iteration's update: the update then runs
    // as a step of its own (the same operations, so the same bytes).
    const apart = isCheck && hooks.onCheck !== undefined;
    // Between checks the product may run at the kernel's reduced precision (`StatKernel.multiplyFast`):
    // the first iteration (lossBefore) and every check (the losses recorded) run at full precision.
    const fast = L.fastProducts && t > 0 && !isCheck;
    // Such an iteration's loss is read by an onIteration hook only (not the first, not a check).
    const skipLoss = fast && hooks.onIteration === undefined;
    let outs = yield { kind: "iterate", cbook, threshold, update: apart ? null : update, grad: !apart && update !== null, fast, ...(skipLoss ? { skipLoss } : {}) };
    const newlyFrozen = sum(outs, (x) => x.newlyFrozen);
    frozenTotal += newlyFrozen;
    const loss = sum(outs, (x) => x.loss) / hs;
    if (t === 0) lossBefore = loss;
    hooks.onIteration?.(t, loss * lossUnit);
    if (isCheck) {
      const check: FreezeCheck = {
        iteration: t,
        loss: loss * lossUnit,
        relativeError: relative(loss),
        flips: flipsSinceCheck,
        newlyFrozen,
        frozenFraction: L.freezing && n > 0 ? frozenTotal / n : 0,
        threshold,
      };
      flipsSinceCheck = 0;
      checks.push(check);
      hooks.onCheck?.(check, { negative: S.neg, frozen: S.frozen, balance: S.balance });
    }
    if (!update) break;
    if (apart) outs = yield { kind: "update", cbook, update };
    flipsSinceCheck += sum(outs, (x) => x.flips);
    // The codebook's Adam step at the cosine-scheduled rate.
    sumGradients(outs, gC);
    adamCodebook(cbook, gC, mC, vC, o.lrCodebook * schedule, update.bc1, update.bc2, ssvq);
  }

  // The stored codebook (float32, original units), then the optional re-assignment, then the final error.
  const codebook = new Float32Array(k * d);
  if (training) for (let i = 0; i < k * d; i++) codebook[i] = cbook[i]! * ws; // SSVQ: >= 0 by the clamp of every step
  else codebook.set(q.codebook);
  let lossAfter = sum(yield { kind: "stored", codebook }, (x) => x.loss) / hs;
  if (!training) lossBefore = lossAfter;
  let reassigned = 0;
  if (o.reassign && L.scaled) {
    reassigned = sum(yield { kind: "reassign", codebook }, (x) => x.moved);
    if (reassigned > 0) lossAfter = sum(yield { kind: "stored", codebook }, (x) => x.loss) / hs;
  }

  const { neg, cb, w } = S;
  const assignments = Uint32Array.from(S.assignments);
  const reconstructed = new Float32Array(n);
  for (let p = 0; p < n; p++) {
    const v = codebook[cb[p]!]!;
    reconstructed[p] = neg[p] ? -v : v;
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
    reference: reference * lossUnit,
    lossBefore: lossBefore * lossUnit,
    lossAfter: lossAfter * lossUnit,
    errorBefore: relative(lossBefore),
    errorAfter: relative(lossAfter),
    signsChanged,
    signsChangedFraction: n > 0 ? signsChanged / n : 0,
    frozenFraction: L.freezing && n > 0 ? frozenTotal / n : 0,
    reassigned,
    codebookBefore: Float32Array.from(q.codebook),
    codebookAfter: Float32Array.from(codebook),
    usage,
    checks,
    product,
  };
  return { codebook, assignments, signs, reconstructed, stats };
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

// ---- running a layer ----------------------------------------------------------------------------------

/** The statistic of an input (`h` and `groups` are the gram form's shorthand). */
function statOf(input: FinetuneInputAny): LayerStatistic {
  if ("stat" in input && input.stat) return "key" in input.stat ? input.stat.stat : input.stat;
  const i = input as FinetuneInput;
  return { kind: "gram", H: i.h, groups: i.groups, cols: i.quantized.shape.cols };
}

function validateInput(input: FinetuneInputAny, stat: LayerStatistic): void {
  const { w, quantized: q } = input;
  const { rows, cols, d, count, paddedCols } = q.shape;
  if (q.mode !== "ssvq" && q.mode !== "vq") throw new InputError(`fine-tuning needs an SSVQ or VQ quantization, not ${String(q.mode)}`);
  if (w.length !== rows * cols) throw new InputError(`fine-tuning: W has ${w.length} values, the quantization's shape is ${rows} x ${cols}`);
  if (stat.cols !== cols) throw new InputError(`fine-tuning: the statistic has ${stat.cols} columns, the layer ${cols}`);
  validateStatistic(stat, rows, "fine-tuning");
  if (q.d !== d || q.codebook.length !== q.k * d) throw new InputError(`fine-tuning: codebook has ${q.codebook.length} values, expected ${q.k} x ${d}`);
  if (q.assignments.length !== count) throw new InputError(`fine-tuning: ${q.assignments.length} assignments, expected ${count}`);
  for (const a of q.assignments) if (a >= q.k) throw new InputError(`fine-tuning: assignment ${a} out of range (k = ${q.k})`);
  if (paddedCols * rows !== count * d) throw new InputError("fine-tuning: inconsistent sub-vector shape");
  if (q.mode === "ssvq" && (!q.signs || q.signs.length !== count * d)) {
    throw new InputError(`fine-tuning: SSVQ needs one sign per padded element (${count * d})`);
  }
}

/** The blocks of rows a layer's steps run in (`rowBlocks`: the problem size only). */
export function finetuneBlocks(input: FinetuneInputAny): Array<[number, number]> {
  const stat = statOf(input);
  return rowBlocks(input.quantized.shape.rows, stat.groups, productRowFlops(stat));
}

interface Prepared {
  L: LayerSetup;
  S: LayerState;
  stat: LayerStatistic;
  o: FinetuneOptions;
}

function prepare(input: FinetuneInputAny, settings: FinetuneSettings | FinetuneOptions, placement: Placement): Prepared {
  const o = resolveFinetuneOptions(settings);
  const stat = statOf(input);
  validateInput(input, stat);
  const L = setupLayer(input, stat, o);
  return { L, S: createState(L, input, o, placement), stat, o };
}

/** Drives the steps in this thread, each on every block, with a synchronous kernel. */
function driveSync(gen: Generator<BlockStep, FinetuneResult, BlockOut[]>, run: (step: BlockStep) => BlockOut[]): FinetuneResult {
  let next = gen.next();
  while (!next.done) next = gen.next(run(next.value));
  return next.value;
}

async function driveAsync(gen: Generator<BlockStep, FinetuneResult, BlockOut[]>, run: (step: BlockStep) => Promise<BlockOut[]>): Promise<FinetuneResult> {
  let next = gen.next();
  while (!next.done) next = gen.next(await run(next.value));
  return next.value;
}

/** A legacy whole-layer product (gram form) as the kernel of a single block covering the layer. */
function legacyKernel(product: LayerProduct, name: string): StatKernel {
  return {
    engine: name,
    bytes: 0,
    multiply(_r0, _r1, a, p) {
      const done = product.multiply(a, p);
      const quad = (): number => {
        let s = 0;
        for (let i = 0; i < a.length; i++) s += a[i]! * p[i]!;
        return s;
      };
      return done instanceof Promise ? done.then(quad) : quad();
    },
    dispose: () => product.dispose?.(),
  };
}

/**
 * Fine-tunes one layer (see the module comment) in this thread. With no engine, or a `SyncStatEngine`
 * (default: WebAssembly), the products run over the layer's blocks (`finetuneBlocks`), exactly as the
 * pool tasks run them; a legacy `SyncProductEngine` (gram form only) computes the whole layer at once.
 */
export function finetuneLayer(
  input: FinetuneInputAny,
  settings: FinetuneSettings | FinetuneOptions = {},
  hooks: FinetuneHooks = {},
  engine: SyncStatEngine | SyncProductEngine = defaultStatEngine,
): FinetuneResult {
  const { L, S, stat, o } = prepare(input, settings, "local");
  if ("forLayer" in engine) {
    if (isFactor(stat)) throw new InputError(`the product engine ${engine.name} takes H only, not a factor statistic`);
    const kernel = legacyKernel(engine.forLayer(asFloat64(stat.H), stat.groups, L.rows, L.cols), engine.name) as SyncStatKernel;
    return driveSync(finetuneSteps(L, S, input.quantized, o, hooks, engine.name), (step) => [runBlockSync(L, S, stat, kernel, step, 0, L.rows)]);
  }
  const kernel = engine.kernel(stat, L.rows);
  const blocks = rowBlocks(L.rows, stat.groups, productRowFlops(stat));
  return driveSync(finetuneSteps(L, S, input.quantized, o, hooks, kernel.engine), (step) => blocks.map(([r0, r1]) => runBlockSync(L, S, stat, kernel, step, r0, r1)));
}

/** H as float64 (a copy when it is kept in float32), for the legacy whole-layer engines. */
const asFloat64 = (h: Float32Array | Float64Array): Float64Array => (h instanceof Float64Array ? h : Float64Array.from(h));

/**
 * Fine-tunes one layer with another engine (a legacy whole-layer `ProductEngine`, gram form only, or a
 * `StatEngine` over the layer's blocks; for example onnxruntime's MatMul, from outside core). Same
 * algorithm as `finetuneLayer`; the bytes depend on the engine's rounding.
 */
export async function finetuneLayerWith(
  engine: ProductEngine | StatEngine,
  input: FinetuneInputAny,
  settings: FinetuneSettings | FinetuneOptions = {},
  hooks: FinetuneHooks = {},
): Promise<FinetuneResult> {
  const { L, S, stat, o } = prepare(input, settings, "local");
  let kernel: StatKernel;
  let blocks: Array<[number, number]>;
  if ("forLayer" in engine) {
    if (isFactor(stat)) throw new InputError(`the product engine ${engine.name} takes H only, not a factor statistic`);
    kernel = legacyKernel(await engine.forLayer(asFloat64(stat.H), stat.groups, L.rows, L.cols), engine.name);
    blocks = [[0, L.rows]];
  } else {
    kernel = await engine.kernel(stat, L.rows);
    blocks = rowBlocks(L.rows, stat.groups, productRowFlops(stat));
  }
  try {
    return await driveAsync(finetuneSteps(L, S, input.quantized, o, hooks, kernel.engine), async (step) => {
      const outs: BlockOut[] = [];
      for (const [r0, r1] of blocks) outs.push(await runBlock(L, S, stat, kernel, step, r0, r1));
      return outs;
    });
  } finally {
    await kernel.dispose?.();
  }
}

// ---- tasks: a layer in one task, or its blocks across the pool ------------------------------------------

/** Input of the "finetune.layer" task: a layer and fully resolved options. */
export type FinetuneTaskInput = FinetuneInputAny & {
  options: FinetuneOptions;
  /**
   * An engine registered in the thread that runs the task (`registerStatEngine`, or a legacy
   * `registerProductEngine`), by name; without one, or when it is not registered there, the default
   * (WebAssembly) engine.
   */
  engine?: string;
  /**
   * A check record (`createCheckRecord`, backed by a SharedArrayBuffer) the task publishes every check
   * into as it happens, so that the caller can read them while the task still runs (`readCheckRecord`).
   * Write-only for the task and read-only for the caller: it never changes the result.
   */
  progress?: Float64Array;
};
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


/** The "finetune.layer" task (`tasks.ts`): a whole layer in the thread that runs it. */
export function finetuneLayerTask(input: FinetuneTaskInput): FinetuneResult | Promise<FinetuneResult> {
  const record = input.progress;
  if (record) validateCheckRecord(record);
  const hooks: FinetuneHooks = record ? { onCheck: (check) => void writeCheckRecord(record, check) } : {};
  const legacy = input.engine !== undefined && !hasStatEngine(input.engine) ? productEngines.get(input.engine) : undefined;
  if (legacy) return finetuneLayerWith(legacy, input, input.options, hooks);
  const engine = statEngine(input.engine);
  const handle = "stat" in input && input.stat && "key" in input.stat ? input.stat : undefined;
  if (!handle && isSyncStatEngine(engine)) return finetuneLayer(input, input.options, hooks, engine);
  return finetuneLayerAsync(input, input.options, hooks, engine, handle);
}

/** A layer in this thread with any engine; the kernel comes from this thread's cache for a shared statistic. */
async function finetuneLayerAsync(input: FinetuneInputAny, settings: FinetuneOptions, hooks: FinetuneHooks, engine: StatEngine, handle: StatHandle | undefined): Promise<FinetuneResult> {
  const { L, S, stat, o } = prepare(input, settings, "local");
  const blocks = rowBlocks(L.rows, stat.groups, productRowFlops(stat));
  const run = (kernel: StatKernel) =>
    driveAsync(finetuneSteps(L, S, input.quantized, o, hooks, engine.name), async (step) => {
      const outs: BlockOut[] = [];
      for (const [r0, r1] of blocks) outs.push(await runBlock(L, S, stat, kernel, step, r0, r1));
      return outs;
    });
  if (handle) return withCachedKernel(handle, engine.name, L.rows, run);
  const kernel = await engine.kernel(stat, L.rows);
  try {
    return await run(kernel);
  } finally {
    await kernel.dispose?.();
  }
}

/**
 * Fine-tunes several layers, one task each, through `map` (a thread pool runs them in parallel); the
 * results come back in input order and do not depend on the map or its thread count.
 */
export async function finetuneLayers(map: ParallelMap, layers: readonly FinetuneInputAny[], settings: FinetuneSettings = {}): Promise<FinetuneResult[]> {
  const options = resolveFinetuneOptions(settings);
  return map.run<FinetuneTaskInput, FinetuneResult>(
    "finetune.layer",
    layers.map((l) => ({ ...l, options })),
  );
}

/** Input of the "finetune.block" task: one step of a layer on one block of rows (state in shared memory). */
export interface FinetuneBlockTaskInput {
  layer: LayerSetup;
  state: LayerState;
  stat: StatHandle;
  engine?: string;
  step: BlockStep;
  r0: number;
  r1: number;
}

/** The "finetune.block" task (`tasks.ts`). */
export async function finetuneBlockTask(t: FinetuneBlockTaskInput): Promise<BlockOut> {
  return withCachedKernel(t.stat, t.engine, t.layer.rows, (kernel) => runBlock(t.layer, t.state, t.stat.stat, kernel, t.step, t.r0, t.r1));
}

export interface SplitOptions {
  /** An engine registered in every thread of the map (default: WebAssembly). */
  engine?: string;
  /** A check record the run publishes every check into (as a "finetune.layer" task does). */
  progress?: Float64Array;
  hooks?: FinetuneHooks;
}

/**
 * Fine-tunes one layer with each step's blocks (`finetuneBlocks`) run as tasks on `map`, so one large
 * layer uses every thread: the iterations are driven from this thread (the codebook's Adam step and the
 * checks, a few microseconds), the products, gradients and latent updates run on the blocks, the layer's
 * state in shared memory. The same bytes as `finetuneLayer` / the "finetune.layer" task with the same
 * engine, for any map and thread count.
 */
export async function finetuneLayerOn(
  map: ParallelMap,
  input: FinetuneInputAny,
  settings: FinetuneSettings | FinetuneOptions = {},
  opts: SplitOptions = {},
): Promise<FinetuneResult> {
  const record = opts.progress;
  if (record) validateCheckRecord(record);
  const hooks: FinetuneHooks = { ...opts.hooks };
  if (record) {
    const inner = hooks.onCheck;
    hooks.onCheck = (check, state) => {
      writeCheckRecord(record, check);
      inner?.(check, state);
    };
  }
  const { L, S, stat, o } = prepare(input, settings, "shared");
  const handle = shareStatistic("stat" in input && input.stat ? input.stat : stat);
  const blocks = rowBlocks(L.rows, stat.groups, productRowFlops(stat));
  const engine = opts.engine;
  return driveAsync(finetuneSteps(L, S, input.quantized, o, hooks, statEngine(engine).name), (step) =>
    map.run<FinetuneBlockTaskInput, BlockOut>(
      "finetune.block",
      blocks.map(([r0, r1]) => ({ layer: L, state: S, stat: handle, ...(engine !== undefined ? { engine } : {}), step, r0, r1 })),
    ),
  );
}

// ---- gradients for checks ---------------------------------------------------------------------------------

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
export function layerGradients(input: FinetuneInputAny, codebook: ArrayLike<number>, negative?: Uint8Array): LayerGradients {
  const { L, S, stat } = prepare(input, { fixedSigns: true }, "local");
  const { k, d, n, ws, hs } = L;
  const lossUnit = ws * ws * hs;
  const cbook = new Float64Array(k * d);
  for (let i = 0; i < k * d; i++) cbook[i] = codebook[i]! / ws;
  S.neg.set(negative ?? new Uint8Array(n));
  const kernel = defaultStatEngine.kernel(stat, L.rows);
  const step: BlockStep = { kind: "iterate", cbook, threshold: null, update: null, grad: true };
  const outs = rowBlocks(L.rows, stat.groups, productRowFlops(stat)).map(([r0, r1]) => runBlockSync(L, S, stat, kernel, step, r0, r1));
  const loss = (sum(outs, (x) => x.loss) / hs) * lossUnit;
  const gC = new Float64Array(k * d);
  sumGradients(outs, gC);
  // loss = lossUnit loss', C = ws C', G = ws hs G'.
  for (let i = 0; i < k * d; i++) gC[i] *= lossUnit / ws;
  const gL = new Float64Array(n);
  const weights = new Float64Array(n);
  const scale = 2 / hs;
  for (let p = 0; p < n; p++) {
    gL[p] = scale * S.p[p]! * cbook[S.cb[p]!]! * lossUnit;
    weights[p] = 2 * S.p[p]! * ws;
  }
  return { loss, codebook: gC, latent: gL, weights };
}
