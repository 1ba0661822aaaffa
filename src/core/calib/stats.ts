/**
 * Per-layer activation statistics, in either form of `ssvq/stat-product.ts`: H = X X^T / n (float64),
 * accumulated chunk by chunk from the samplers of `im2col.ts`, one [cols, cols] block per group
 * (`GramAccumulator`); or X itself, its columns kept as they come, sample-major, in float32 when the
 * activations are float32 (exact) (`FactorAccumulator`), for layers whose calibration columns are fewer
 * than half their reduction size (`chooseStatisticForm`). Both keep their arrays in shared memory, so a
 * thread pool reads them without copies.
 *
 * The hot loop is the symmetric rank-r update H += Xt Xt^T. `syrkUpper` computes it on the upper
 * triangle only, in 2 x 4 register tiles over feature-major chunks (each tile streams 6 rows of the
 * chunk and keeps 8 sums in registers); `finishGram` mirrors the triangle and divides by n. A
 * `GramEngine` lets the caller swap the update for a faster one (src/io/capture.ts offers one that runs
 * the products through onnxruntime's float64 GEMM); every engine fills at least the upper triangle.
 */
import { CancelledError } from "../errors.js";
import { sharedArray } from "../parallel.js";
import type { FactorStatistic } from "../ssvq/stat-product.js";
import type { Activation, ActivationSampler } from "./im2col.js";

/**
 * H[off + i*c + j] += sum_k Xt[i*r + k] * Xt[j*r + k] for j >= i (entries below the diagonal inside the
 * diagonal tiles may be written too; `finishGram` overwrites them). Xt is [c, r], feature-major.
 */
export function syrkUpper(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number): void {
  const cEven = c - (c % 2);
  for (let i0 = 0; i0 < cEven; i0 += 2) {
    const a0 = i0 * r;
    const a1 = a0 + r;
    let j0 = i0;
    for (; j0 + 4 <= c; j0 += 4) {
      const b0 = j0 * r;
      const b1 = b0 + r;
      const b2 = b1 + r;
      const b3 = b2 + r;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      for (let k = 0; k < r; k++) {
        const x0 = Xt[a0 + k]!;
        const x1 = Xt[a1 + k]!;
        const y0 = Xt[b0 + k]!;
        const y1 = Xt[b1 + k]!;
        const y2 = Xt[b2 + k]!;
        const y3 = Xt[b3 + k]!;
        s00 += x0 * y0;
        s01 += x0 * y1;
        s02 += x0 * y2;
        s03 += x0 * y3;
        s10 += x1 * y0;
        s11 += x1 * y1;
        s12 += x1 * y2;
        s13 += x1 * y3;
      }
      let h = off + i0 * c + j0;
      H[h] += s00;
      H[h + 1] += s01;
      H[h + 2] += s02;
      H[h + 3] += s03;
      h += c;
      H[h] += s10;
      H[h + 1] += s11;
      H[h + 2] += s12;
      H[h + 3] += s13;
    }
    for (; j0 < c; j0++) {
      const b = j0 * r;
      let s0 = 0;
      let s1 = 0;
      for (let k = 0; k < r; k++) {
        const y = Xt[b + k]!;
        s0 += Xt[a0 + k]! * y;
        s1 += Xt[a1 + k]! * y;
      }
      H[off + i0 * c + j0] += s0;
      H[off + (i0 + 1) * c + j0] += s1;
    }
  }
  if (cEven < c) {
    const i = c - 1;
    const a = i * r;
    let s = 0;
    for (let k = 0; k < r; k++) s += Xt[a + k]! * Xt[a + k]!;
    H[off + i * c + i] += s;
  }
}

/** Copies the upper triangle of the c x c block at `off` onto the lower one and multiplies by `scale`. */
export function finishGram(H: Float32Array | Float64Array, off: number, c: number, scale: number): void {
  for (let i = 0; i < c; i++) {
    const row = off + i * c;
    for (let j = i; j < c; j++) {
      const v = H[row + j]! * scale;
      H[row + j] = v;
      H[off + j * c + i] = v;
    }
  }
}

/** Adds Xt Xt^T (Xt [c, r], feature-major) into the c x c block of H at `off`: at least its upper triangle. */
export interface GramEngine {
  readonly name: string;
  add(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number): void | Promise<void>;
  /**
   * Adds only the products of the rows [i0, i1) of H (on and above the diagonal), one of the ranges
   * `gramRowBlocks(c)` gives: what `add` adds is the same as every range added this way, bit for bit.
   */
  addRows?(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number, i0: number, i1: number): void | Promise<void>;
  /**
   * For an engine that keeps the chunks it is given (`PooledGram`): a buffer of n values to fill and pass
   * to `add`, which then takes it as it is instead of copying it.
   */
  chunkBuffer?(n: number): Float64Array;
  /**
   * For an engine whose `add` may return before H holds the products (`PooledGram`): waits until all do;
   * with `drop`, skips those not started (H is not to be read).
   */
  flush?(opts?: { drop?: boolean }): Promise<void>;
}

/** Rows of the blocks a blocked Gram engine computes (onnxruntime's: src/io/ort-gram.ts). */
export const GRAM_BLOCK = 512;
/** Below this many columns the Gram products are one TypeScript block (`syrkUpper`). */
export const GRAM_MIN_COLS = 48;

/**
 * The row ranges of a blocked Gram update of c columns: balanced blocks of at most `block` rows (c = 576
 * -> 2 of 288), or one range below `minCols`. Each range's products (its blocks on and above the
 * diagonal) touch only its rows of H, so ranges may run at once.
 */
export function gramRowBlocks(c: number, block = GRAM_BLOCK, minCols = GRAM_MIN_COLS): Array<[number, number]> {
  if (c < minCols) return [[0, c]];
  const B = Math.ceil(c / Math.ceil(c / block));
  const out: Array<[number, number]> = [];
  for (let i0 = 0; i0 < c; i0 += B) out.push([i0, Math.min(c, i0 + B)]);
  return out;
}

/** The plain TypeScript engine: `syrkUpper`. Bit-for-bit reproducible on every machine. */
export const jsGram: GramEngine = { name: "js", add: syrkUpper };

/** The statistic of one weight, as capture returns it: the gram form. */
export interface LayerStats {
  kind?: "gram";
  /** groups blocks of [cols, cols], row-major: H_g = X_g X_g^T / samples (float32 or float64, `GramAccumulator`). */
  H: Float32Array | Float64Array;
  groups: number;
  cols: number;
  /** n: columns of X per group (output positions for Conv, rows for Gemm/MatMul), over all consumers. */
  samples: number;
  /** Sum over groups of tr(H_g): the mean squared norm of a sample column. */
  trace: number;
  /** Mean of x^2 over the elements of the raw input activation(s), for sanity checks. */
  meanSquare: number;
}

/** The statistic of one weight in the factor form (X's columns, H = X X^T / samples). */
export interface FactorLayerStats extends FactorStatistic {
  samples: number;
  /** Sum over groups of tr(H_g). */
  trace: number;
  meanSquare: number;
}

/** Either form. */
export type AnyLayerStats = LayerStats | FactorLayerStats;

export interface AccumulateOptions {
  signal?: AbortSignal;
  /** Values of the float64 chunk buffer (cols x samples per chunk); default 1M (8 MB). */
  chunkValues?: number;
}

export const DEFAULT_CHUNK_VALUES = 1 << 20;

/** Mean of x^2 over every element added (the raw input activations' second moment, for sanity checks). */
class SecondMoment {
  private sumSq = 0;
  private elements = 0;
  add(x: Activation): void {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
    this.sumSq += s;
    this.elements += x.length;
  }
  mean(): number {
    return this.elements > 0 ? this.sumSq / this.elements : 0;
  }
}

/**
 * Accumulates H for one weight over any number of activations (batches, consumers), in float64 or, to
 * halve its memory, float32: each chunk's X X^T is summed in float64 by the engine and rounded once when
 * it is added into H.
 */
export class GramAccumulator {
  readonly H: Float32Array | Float64Array;
  samples = 0;
  private readonly moments = new SecondMoment();
  private scratch: Float64Array | undefined;

  constructor(
    readonly groups: number,
    readonly cols: number,
    readonly precision: "float32" | "float64" = "float64",
  ) {
    this.H = precision === "float32" ? sharedArray(Float32Array, groups * cols * cols) : sharedArray(Float64Array, groups * cols * cols);
  }

  /** Adds the samples of one activation (the sampler must have this accumulator's groups and cols). */
  async add(sampler: ActivationSampler, engine: GramEngine, opts: AccumulateOptions = {}): Promise<void> {
    const { groups, cols } = this;
    if (sampler.groups !== groups || sampler.cols !== cols)
      throw new Error(`activation gives ${sampler.groups} x ${sampler.cols} columns, the weight needs ${groups} x ${cols}`);
    const n = sampler.samples;
    const chunk = Math.max(1, Math.min(n, Math.floor((opts.chunkValues ?? DEFAULT_CHUNK_VALUES) / cols)));
    // An engine that keeps the chunks (PooledGram) lends the buffer they are filled in: no copy.
    if (!engine.chunkBuffer && (!this.scratch || this.scratch.length < chunk * cols)) this.scratch = new Float64Array(chunk * cols);
    for (let g = 0; g < groups; g++) {
      for (let p0 = 0; p0 < n; p0 += chunk) {
        if (opts.signal?.aborted) throw new CancelledError();
        const p1 = Math.min(n, p0 + chunk);
        const r = p1 - p0;
        const view = engine.chunkBuffer ? engine.chunkBuffer(r * cols) : r * cols === this.scratch!.length ? this.scratch! : this.scratch!.subarray(0, r * cols);
        sampler.fill(g, p0, p1, view);
        await engine.add(this.H, g * cols * cols, view, cols, r);
      }
    }
    this.samples += n;
  }

  /** Adds the raw activation's values to the second moment (meanSquare). */
  addMoments(x: Activation): void {
    this.moments.add(x);
  }

  /** Mirrors and normalises H (once; the accumulator is done afterwards). */
  finish(): LayerStats {
    const { groups, cols, H } = this;
    const scale = this.samples > 0 ? 1 / this.samples : 0;
    let trace = 0;
    for (let g = 0; g < groups; g++) {
      const off = g * cols * cols;
      finishGram(H, off, cols, scale);
      for (let i = 0; i < cols; i++) trace += H[off + i * cols + i]!;
    }
    this.scratch = undefined;
    return { kind: "gram", H, groups, cols, samples: this.samples, trace, meanSquare: this.moments.mean() };
  }
}

/**
 * Keeps a weight's sample columns X (sample-major, per group [r, cols]) in shared memory, float32 or
 * float64; room for `expected` columns per group at first, grown by half when more come.
 */
export class FactorAccumulator {
  private X: Float32Array | Float64Array;
  private capacity: number;
  samples = 0;
  private readonly moments = new SecondMoment();
  private scratch: Float64Array | undefined;

  constructor(
    readonly groups: number,
    readonly cols: number,
    expected: number,
    readonly precision: "float32" | "float64",
  ) {
    this.capacity = Math.max(1, Math.ceil(expected));
    this.X = this.alloc(this.capacity);
  }

  private alloc(capacity: number): Float32Array | Float64Array {
    return this.precision === "float32" ? sharedArray(Float32Array, this.groups * capacity * this.cols) : sharedArray(Float64Array, this.groups * capacity * this.cols);
  }

  private grow(needed: number): void {
    const capacity = Math.max(needed, Math.ceil(this.capacity * 1.5));
    const next = this.alloc(capacity);
    const { groups, cols } = this;
    for (let g = 0; g < groups; g++) next.set(this.X.subarray(g * this.capacity * cols, (g * this.capacity + this.samples) * cols), g * capacity * cols);
    this.X = next;
    this.capacity = capacity;
  }

  /** Adds the samples of one activation (the sampler must have this accumulator's groups and cols). */
  add(sampler: ActivationSampler, opts: AccumulateOptions = {}): void {
    const { groups, cols } = this;
    if (sampler.groups !== groups || sampler.cols !== cols)
      throw new Error(`activation gives ${sampler.groups} x ${sampler.cols} columns, the weight needs ${groups} x ${cols}`);
    const n = sampler.samples;
    if (this.samples + n > this.capacity) this.grow(this.samples + n);
    const chunk = Math.max(1, Math.min(n, Math.floor((opts.chunkValues ?? DEFAULT_CHUNK_VALUES) / cols)));
    if (!this.scratch || this.scratch.length < chunk * cols) this.scratch = new Float64Array(chunk * cols);
    const Xt = this.scratch;
    const X = this.X;
    for (let g = 0; g < groups; g++) {
      for (let p0 = 0; p0 < n; p0 += chunk) {
        if (opts.signal?.aborted) throw new CancelledError();
        const p1 = Math.min(n, p0 + chunk);
        const r = p1 - p0;
        sampler.fill(g, p0, p1, Xt.subarray(0, r * cols));
        // Feature-major chunk -> sample-major rows of X.
        const base = (g * this.capacity + this.samples + p0) * cols;
        for (let c = 0; c < cols; c++) {
          const src = c * r;
          for (let k = 0; k < r; k++) X[base + k * cols + c] = Xt[src + k]!;
        }
      }
    }
    this.samples += n;
  }

  /** Adds the raw activation's values to the second moment (meanSquare). */
  addMoments(x: Activation): void {
    this.moments.add(x);
  }

  /** X with exactly `samples` columns per group (compacted in place), n = samples. */
  finish(): FactorLayerStats {
    const { groups, cols, samples } = this;
    for (let g = 1; g < groups; g++) this.X.copyWithin(g * samples * cols, g * this.capacity * cols, (g * this.capacity + samples) * cols);
    const X = this.X.subarray(0, groups * samples * cols);
    this.scratch = undefined;
    let trace = 0;
    for (let i = 0; i < X.length; i++) trace += X[i]! * X[i]!;
    const n = Math.max(1, samples);
    return { kind: "factor", X, r: samples, n, groups, cols, samples, trace: trace / n, meanSquare: this.moments.mean() };
  }
}
