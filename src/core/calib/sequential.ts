/**
 * The sequential variant of layer fine-tuning (DESIGN.md section 1, "Fine-tuning"; issue 5 item 1,
 * `--sequential`): the layer's input X_q is taken from the network whose earlier layers are already
 * compressed, the target output W X_fp from the original network. Pure (no I/O).
 *
 * Per group g of rows (rows split evenly over the groups, as everywhere; columns in the order of the
 * layer's H, see im2col.ts), with n samples:
 *
 *     H_qq = X_q X_q^T / n,   H_fq = X_fp X_q^T / n,   H_ff = X_fp X_fp^T / n
 *     loss(W_hat) = ||W_hat X_q - W X_fp||^2 / n
 *                 = tr(W_hat H_qq W_hat^T) - 2 tr(W_hat H_fq^T W^T) + tr(W H_ff W^T)
 *                 = tr((W_hat - W') H_qq (W_hat - W')^T) + constant,   W' = W H_fq H_qq^{-1},
 *     constant    = tr(W H_ff W^T) - tr(W' H_qq W'^T).
 *
 * So the existing fine-tuning (finetune.ts, which minimises tr((W_hat - W) H (W_hat - W)^T)) runs
 * unchanged with w = W' and h = H_qq. Its own errors (FinetuneStats, FreezeCheck) are then relative to
 * W' X_q; the sequential error, relative to W X_fp, is `sequentialEvaluator` / `sequentialOutputError`.
 *
 * Damping. H_qq may be singular (a constant or dead input channel, fewer samples than columns), so W'
 * solves the damped normal equations
 *
 *     W' (H_qq + lambda I) = W (H_fq + lambda I),   i.e.   W' = W + W (H_fq - H_qq) (H_qq + lambda I)^{-1},
 *
 * the minimiser of loss(W') + lambda ||W' - W||^2: the ridge pulls towards W rather than towards 0, so
 * W' = W exactly when X_q = X_fp (an uncompressed prefix), and a column whose input is always zero keeps
 * its original weights. lambda = 1e-6 * mean(diag H_qq,g) per group, multiplied by 10 and retried while
 * the Cholesky factorisation fails (a pivot below lambda / 2, which for a positive semi-definite H_qq
 * cannot happen in exact arithmetic), up to `maxRetries` times. The inverse is never formed: each row
 * is two triangular solves against the Cholesky factor. With damping the decomposition above holds up
 * to 2 lambda tr((W_hat - W') (W - W')^T), small while W' stays near W (see `SequentialTarget.constant`).
 * When X_q has fewer independent samples than columns (a Gemm fed one row per image, n close to cols),
 * W' fits the calibration samples closely and its norm can grow well past W's; a larger `damping` pulls
 * it back towards W. (On fashion_tinyvit, SSVQ k16 d8, a fine-tuned prefix per layer: accuracy 85.6% at
 * 1e-6, 86.1% at 1e-4, 86.3% at 1e-2; on fashion_lenet5 k16 d4 90.1% at all three.)
 *
 * A group whose H_qq is zero (its input is always zero) gets W' = W: every W_hat gives the same loss.
 */
import { InputError } from "../errors.js";
import { sharedArray, type ParallelMap } from "../parallel.js";
import {
  withCachedKernel,
  defaultStatEngine,
  isFactor,
  productRowFlops,
  productsOn,
  quadraticForms,
  rowBlocks,
  shareStatistic,
  type FactorStatistic,
  type LayerStatistic,
  type StatHandle,
  type SyncStatKernel,
} from "../ssvq/stat-product.js";
import type { ActivationSampler } from "./im2col.js";

/** The three statistics of one layer, `groups` blocks of [cols, cols] each, row-major. */
export interface SequentialStatistic {
  /** X_q X_q^T / n (the compressed prefix's input), symmetric. */
  hqq: Float64Array;
  /** X_fp X_q^T / n (rows: original input features, columns: compressed-prefix features). */
  hfq: Float64Array;
  /** X_fp X_fp^T / n (the original input), symmetric. */
  hff: Float64Array;
  groups: number;
  cols: number;
}

export interface SequentialTargetOptions {
  /** X_fp X_fp^T / n: when given, `constant` and `reference` are computed. */
  hff?: Float64Array;
  /** The first damping, relative to mean(diag H_qq) of the group (default 1e-6). */
  damping?: number;
  /** Times the damping is multiplied by 10 and the factorisation retried (default 6). */
  maxRetries?: number;
}

export interface SequentialTarget {
  /** W' [rows, cols], float32: fine-tune against it with h = H_qq. */
  target: Float32Array;
  /** The largest relative damping used (lambda / mean diag H_qq) over the groups: 1e-6 unless retried. */
  damping: number;
  /** lambda used per group (0 for a group whose H_qq is zero). */
  lambdas: number[];
  /** Factorisations retried with a larger damping, over all groups. */
  retries: number;
  /**
   * With `hff`: the sequential loss of W' itself, ||W' X_q - W X_fp||^2 / n (about the least any weights
   * reach). Without damping it is tr(W H_ff W^T) - tr(W' H_qq W'^T), and the sequential loss of any W_hat
   * is tr((W_hat - W') H_qq (W_hat - W')^T) + constant exactly. In general the two differ by
   * 2 tr((W_hat - W') R^T), R = W' H_qq - W H_fq the residual of the undamped normal equations
   * (lambda (W - W') for the damped solve, plus W''s float32 rounding): zero at W_hat = W', small while
   * W' stays near W.
   */
  constant?: number;
  /** With `hff`: tr(W H_ff W^T) = ||W X_fp||^2 / n, what relative errors are relative to. */
  reference?: number;
}

export const DEFAULT_SEQUENTIAL_DAMPING = 1e-6;
export const DEFAULT_SEQUENTIAL_RETRIES = 6;

function checkShape(what: string, rows: number, cols: number, groups: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || !Number.isInteger(groups) || rows < 1 || cols < 1 || groups < 1)
    throw new InputError(`${what}: rows ${rows}, cols ${cols} and groups ${groups} must be positive integers`);
  if (rows % groups !== 0) throw new InputError(`${what}: ${rows} rows do not split evenly over ${groups} groups`);
}

function checkLength(what: string, name: string, a: ArrayLike<number>, n: number): void {
  if (a.length !== n) throw new InputError(`${what}: ${name} holds ${a.length} values, expected ${n}`);
}

function checkFinite(what: string, name: string, a: ArrayLike<number>): void {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) throw new InputError(`${what}: ${name} holds a non-finite value at ${i}`);
}

/** Rows of the Cholesky factor computed together (each row j of L then streams once per block). */
const CHOL_BLOCK = 4; // (unrolled for 4 in `cholesky`)
/** Right-hand sides solved together (each row of L streams once per block). */
const SOLVE_BLOCK = 16;

/**
 * The Cholesky factor L (lower, row-major, c x c) of the block of H at `off` plus lambda I; false when a
 * pivot falls below lambda / 2. Rows are computed CHOL_BLOCK at a time, column by column.
 */
function cholesky(h: Float64Array, off: number, c: number, lambda: number, L: Float64Array): boolean {
  const minPivot = 0.5 * lambda;
  for (let i0 = 0; i0 < c; i0 += CHOL_BLOCK) {
    const i1 = Math.min(c, i0 + CHOL_BLOCK);
    let j = 0;
    if (i1 - i0 === 4) {
      // Columns left of the block: four rows against row j at once.
      const r0 = i0 * c;
      const r1 = r0 + c;
      const r2 = r1 + c;
      const r3 = r2 + c;
      for (; j < i0; j++) {
        const rj = j * c;
        let s0 = h[off + r0 + j]!;
        let s1 = h[off + r1 + j]!;
        let s2 = h[off + r2 + j]!;
        let s3 = h[off + r3 + j]!;
        for (let k = 0; k < j; k++) {
          const l = L[rj + k]!;
          s0 -= L[r0 + k]! * l;
          s1 -= L[r1 + k]! * l;
          s2 -= L[r2 + k]! * l;
          s3 -= L[r3 + k]! * l;
        }
        const ljj = L[rj + j]!;
        L[r0 + j] = s0 / ljj;
        L[r1 + j] = s1 / ljj;
        L[r2 + j] = s2 / ljj;
        L[r3 + j] = s3 / ljj;
      }
    }
    for (; j < i1; j++) {
      const rj = j * c;
      for (let i = Math.max(i0, j); i < i1; i++) {
        const ri = i * c;
        let s = h[off + ri + j]!;
        for (let k = 0; k < j; k++) s -= L[ri + k]! * L[rj + k]!;
        if (i === j) {
          s += lambda;
          if (!(s > minPivot)) return false;
          L[ri + i] = Math.sqrt(s);
        } else {
          L[ri + j] = s / L[rj + j]!;
        }
      }
    }
  }
  return true;
}

/**
 * Solves X L L^T = D in place for the `m` row vectors of D ([m, c], row-major): as L L^T is symmetric,
 * each row is L L^T x^T = d^T, a forward and a backward substitution; four rows at a time, so that each
 * element of L read serves four of them.
 */
function choleskySolve(L: Float64Array, c: number, D: Float64Array, m: number): void {
  let q = 0;
  for (; q + 4 <= m; q += 4) {
    const d0 = q * c;
    const d1 = d0 + c;
    const d2 = d1 + c;
    const d3 = d2 + c;
    // Forward: L y = d.
    for (let i = 0; i < c; i++) {
      const ri = i * c;
      let s0 = D[d0 + i]!;
      let s1 = D[d1 + i]!;
      let s2 = D[d2 + i]!;
      let s3 = D[d3 + i]!;
      for (let k = 0; k < i; k++) {
        const l = L[ri + k]!;
        s0 -= l * D[d0 + k]!;
        s1 -= l * D[d1 + k]!;
        s2 -= l * D[d2 + k]!;
        s3 -= l * D[d3 + k]!;
      }
      const lii = L[ri + i]!;
      D[d0 + i] = s0 / lii;
      D[d1 + i] = s1 / lii;
      D[d2 + i] = s2 / lii;
      D[d3 + i] = s3 / lii;
    }
    // Backward: L^T x = y, column by column so that row i of L is read contiguously.
    for (let i = c - 1; i >= 0; i--) {
      const ri = i * c;
      const lii = L[ri + i]!;
      const x0 = D[d0 + i]! / lii;
      const x1 = D[d1 + i]! / lii;
      const x2 = D[d2 + i]! / lii;
      const x3 = D[d3 + i]! / lii;
      D[d0 + i] = x0;
      D[d1 + i] = x1;
      D[d2 + i] = x2;
      D[d3 + i] = x3;
      for (let k = 0; k < i; k++) {
        const l = L[ri + k]!;
        D[d0 + k]! -= l * x0;
        D[d1 + k]! -= l * x1;
        D[d2 + k]! -= l * x2;
        D[d3 + k]! -= l * x3;
      }
    }
  }
  for (; q < m; q++) {
    const dq = q * c;
    for (let i = 0; i < c; i++) {
      const ri = i * c;
      let s = D[dq + i]!;
      for (let k = 0; k < i; k++) s -= L[ri + k]! * D[dq + k]!;
      D[dq + i] = s / L[ri + i]!;
    }
    for (let i = c - 1; i >= 0; i--) {
      const ri = i * c;
      const x = D[dq + i]! / L[ri + i]!;
      D[dq + i] = x;
      for (let k = 0; k < i; k++) D[dq + k]! -= L[ri + k]! * x;
    }
  }
}

/** D[q, :] += w[rows q0 + q, j] * diff for q < m, four rows at a time. */
function addScaledRow(D: Float64Array, c: number, m: number, w: Float32Array, q0: number, j: number, diff: Float64Array): void {
  let q = 0;
  for (; q + 4 <= m; q += 4) {
    const v0 = w[(q0 + q) * c + j]!;
    const v1 = w[(q0 + q + 1) * c + j]!;
    const v2 = w[(q0 + q + 2) * c + j]!;
    const v3 = w[(q0 + q + 3) * c + j]!;
    const d0 = q * c;
    const d1 = d0 + c;
    const d2 = d1 + c;
    const d3 = d2 + c;
    for (let i = 0; i < c; i++) {
      const dv = diff[i]!;
      D[d0 + i]! += v0 * dv;
      D[d1 + i]! += v1 * dv;
      D[d2 + i]! += v2 * dv;
      D[d3 + i]! += v3 * dv;
    }
  }
  for (; q < m; q++) {
    const v = w[(q0 + q) * c + j]!;
    const dq = q * c;
    for (let i = 0; i < c; i++) D[dq + i]! += v * diff[i]!;
  }
}

/**
 * The effective target W' of the sequential variant (see the module comment) for a row matrix
 * w [rows, cols] and its statistics H_qq, H_fq (`groups` blocks [cols, cols]). Throws an InputError on
 * mismatched sizes, non-finite statistics, or an H_qq that stays indefinite after every retry.
 */
export function sequentialTarget(
  w: Float32Array,
  rows: number,
  cols: number,
  groups: number,
  hqq: Float64Array,
  hfq: Float64Array,
  opts: SequentialTargetOptions = {},
): SequentialTarget {
  const what = "sequential target";
  checkShape(what, rows, cols, groups);
  checkLength(what, "w", w, rows * cols);
  checkLength(what, "H_qq", hqq, groups * cols * cols);
  checkLength(what, "H_fq", hfq, groups * cols * cols);
  if (opts.hff) checkLength(what, "H_ff", opts.hff, groups * cols * cols);
  checkFinite(what, "w", w);
  checkFinite(what, "H_qq", hqq);
  checkFinite(what, "H_fq", hfq);
  if (opts.hff) checkFinite(what, "H_ff", opts.hff);
  const rel0 = opts.damping ?? DEFAULT_SEQUENTIAL_DAMPING;
  const maxRetries = opts.maxRetries ?? DEFAULT_SEQUENTIAL_RETRIES;
  if (!(Number.isFinite(rel0) && rel0 > 0)) throw new InputError(`${what}: damping must be a finite number > 0, not ${rel0}`);
  if (!(Number.isInteger(maxRetries) && maxRetries >= 0)) throw new InputError(`${what}: maxRetries must be an integer >= 0, not ${maxRetries}`);

  const perGroup = rows / groups;
  const cc = cols * cols;
  const target = new Float32Array(rows * cols);
  const lambdas: number[] = [];
  let damping = 0;
  let retries = 0;
  const L = new Float64Array(cc);
  const D = new Float64Array(Math.min(SOLVE_BLOCK, perGroup) * cols);
  const diff = new Float64Array(cols);
  for (let g = 0; g < groups; g++) {
    const off = g * cc;
    let trace = 0;
    for (let i = 0; i < cols; i++) trace += hqq[off + i * cols + i]!;
    const meanDiag = trace / cols;
    const r0 = g * perGroup;
    if (meanDiag === 0) {
      // X_q is zero on this group: the loss does not depend on W_hat; keep W.
      for (let i = r0 * cols; i < (r0 + perGroup) * cols; i++) target[i] = w[i]!;
      lambdas.push(0);
      continue;
    }
    if (!(meanDiag > 0)) throw new InputError(`${what}: H_qq of group ${g} has a negative mean diagonal (${meanDiag}); it is not a Gram matrix`);
    let rel = rel0;
    let lambda = rel * meanDiag;
    let attempt = 0;
    while (!cholesky(hqq, off, cols, lambda, L)) {
      if (attempt++ >= maxRetries)
        throw new InputError(`${what}: H_qq of group ${g} is not positive definite even with damping ${rel} x its mean diagonal`);
      retries++;
      rel *= 10;
      lambda = rel * meanDiag;
    }
    lambdas.push(lambda);
    damping = Math.max(damping, rel);
    for (let q0 = r0; q0 < r0 + perGroup; q0 += SOLVE_BLOCK) {
      const q1 = Math.min(r0 + perGroup, q0 + SOLVE_BLOCK);
      const m = q1 - q0;
      // D = W_rows (H_fq - H_qq): exactly zero where the two statistics agree.
      D.fill(0, 0, m * cols);
      for (let j = 0; j < cols; j++) {
        const row = off + j * cols;
        let nonzero = false;
        for (let i = 0; i < cols; i++) {
          const v = hfq[row + i]! - hqq[row + i]!;
          diff[i] = v;
          if (v !== 0) nonzero = true;
        }
        if (nonzero) addScaledRow(D, cols, m, w, q0, j, diff);
      }
      choleskySolve(L, cols, D, m);
      for (let q = 0; q < m; q++) {
        const wr = (q0 + q) * cols;
        const dq = q * cols;
        let zero = true;
        for (let i = 0; i < cols; i++) if (D[dq + i] !== 0) zero = false;
        for (let i = 0; i < cols; i++) target[wr + i] = zero ? w[wr + i]! : w[wr + i]! + D[dq + i]!;
      }
    }
  }
  const out: SequentialTarget = { target, damping, lambdas, retries };
  if (opts.hff) {
    const l = sequentialLoss(target, w, rows, { hqq, hfq, hff: opts.hff, groups, cols });
    out.reference = l.reference;
    out.constant = l.loss;
  }
  return out;
}

export interface SequentialLoss {
  /** ||W_hat X_q - W X_fp||^2 / n (clamped at 0 against rounding). */
  loss: number;
  /** ||W X_fp||^2 / n = tr(W H_ff W^T). */
  reference: number;
  /** sqrt(loss / reference) (sqrt(loss) when the reference is 0). */
  relativeError: number;
}

/** The sequential loss of any W_hat for one layer, with what depends on W alone computed once. */
export interface SequentialEvaluator {
  /** ||W X_fp||^2 / n = tr(W H_ff W^T). */
  readonly reference: number;
  /** The sequential loss of W_hat [rows, cols]. */
  loss(wHat: ArrayLike<number>): SequentialLoss;
}

/**
 * Evaluates the sequential loss as
 *     tr(E H_qq E^T) + 2 tr(E P^T) + tr(W S W^T),   E = W_hat - W,
 *     P = W (H_qq - H_fq^T)^T rows (P_r = (H_qq - H_fq^T) W_r^T),  S = H_qq + H_ff - H_fq - H_fq^T
 * (the expansion of ||E X_q + W (X_q - X_fp)||^2 / n), whose terms are small when W_hat is close to W and
 * X_q to X_fp, so there is no cancellation between large terms; with X_q = X_fp it is the usual
 * tr(E H E^T) exactly. Building it costs three products with the statistics per row of W (P, S W and
 * H_ff W); each `loss` one (H_qq E). Memory: P, rows x cols float64.
 */
export function sequentialEvaluator(w: ArrayLike<number>, rows: number, stat: SequentialStatistic): SequentialEvaluator {
  const what = "sequential loss";
  const { groups, cols, hqq, hfq, hff } = stat;
  checkShape(what, rows, cols, groups);
  checkLength(what, "w", w, rows * cols);
  checkLength(what, "H_qq", hqq, groups * cols * cols);
  checkLength(what, "H_fq", hfq, groups * cols * cols);
  checkLength(what, "H_ff", hff, groups * cols * cols);
  const perGroup = rows / groups;
  const cc = cols * cols;
  const m = new Float64Array(cc); // H_qq - H_fq^T
  const s = new Float64Array(cc); // H_qq + H_ff - H_fq - H_fq^T
  const p = new Float64Array(rows * cols);
  // Rows two at a time (each matrix element read serves both); the second is zero past the group's end.
  const w0 = new Float64Array(cols);
  const w1 = new Float64Array(cols);
  let t3 = 0;
  let reference = 0;
  for (let g = 0; g < groups; g++) {
    const off = g * cc;
    for (let i = 0; i < cols; i++)
      for (let j = 0; j < cols; j++) {
        const ij = off + i * cols + j;
        const fqT = hfq[off + j * cols + i]!;
        m[i * cols + j] = hqq[ij]! - fqT;
        s[i * cols + j] = hqq[ij]! + hff[ij]! - hfq[ij]! - fqT;
      }
    const end = (g + 1) * perGroup;
    for (let r = g * perGroup; r < end; r += 2) {
      const second = r + 1 < end;
      for (let i = 0; i < cols; i++) {
        w0[i] = w[r * cols + i]!;
        w1[i] = second ? w[(r + 1) * cols + i]! : 0;
      }
      for (let i = 0; i < cols; i++) {
        const row = i * cols;
        const hrow = off + row;
        let b0 = 0, b1 = 0; // (M w)_i
        let c0 = 0, c1 = 0; // (S w)_i
        let f0 = 0, f1 = 0; // (H_ff w)_i
        for (let j = 0; j < cols; j++) {
          const mm = m[row + j]!;
          const ss = s[row + j]!;
          const ff = hff[hrow + j]!;
          const x0 = w0[j]!;
          const x1 = w1[j]!;
          b0 += mm * x0;
          b1 += mm * x1;
          c0 += ss * x0;
          c1 += ss * x1;
          f0 += ff * x0;
          f1 += ff * x1;
        }
        p[r * cols + i] = b0;
        if (second) p[(r + 1) * cols + i] = b1;
        t3 += w0[i]! * c0 + w1[i]! * c1;
        reference += w0[i]! * f0 + w1[i]! * f1;
      }
    }
  }
  // The loss reads H_qq once per four rows (rows past the group's end are zero).
  const e = [0, 1, 2, 3].map(() => new Float64Array(cols)) as [Float64Array, Float64Array, Float64Array, Float64Array];
  return {
    reference,
    loss(wHat) {
      checkLength(what, "w_hat", wHat, rows * cols);
      let t1 = 0;
      let t2 = 0;
      const [e0, e1, e2, e3] = e;
      for (let g = 0; g < groups; g++) {
        const off = g * cc;
        const end = (g + 1) * perGroup;
        for (let r = g * perGroup; r < end; r += 4) {
          for (let q = 0; q < 4; q++) {
            const eq = e[q]!;
            if (r + q >= end) {
              eq.fill(0);
              continue;
            }
            const base = (r + q) * cols;
            for (let i = 0; i < cols; i++) {
              const v = wHat[base + i]! - w[base + i]!;
              eq[i] = v;
              t2 += v * p[base + i]!;
            }
          }
          for (let i = 0; i < cols; i++) {
            const hrow = off + i * cols;
            let a0 = 0;
            let a1 = 0;
            let a2 = 0;
            let a3 = 0;
            for (let j = 0; j < cols; j++) {
              const h = hqq[hrow + j]!;
              a0 += h * e0[j]!;
              a1 += h * e1[j]!;
              a2 += h * e2[j]!;
              a3 += h * e3[j]!;
            }
            t1 += e0[i]! * a0 + e1[i]! * a1 + e2[i]! * a2 + e3[i]! * a3;
          }
        }
      }
      const loss = Math.max(0, t1 + 2 * t2 + t3);
      return { loss, reference, relativeError: reference > 0 ? Math.sqrt(loss / reference) : Math.sqrt(loss) };
    },
  };
}

/** The sequential loss of W_hat from the statistics (see `sequentialEvaluator`, to evaluate several W_hat). */
export function sequentialLoss(wHat: ArrayLike<number>, w: ArrayLike<number>, rows: number, stat: SequentialStatistic): SequentialLoss {
  checkLength("sequential loss", "w_hat", wHat, w.length);
  return sequentialEvaluator(w, rows, stat).loss(wHat);
}

/** sqrt(||W_hat X_q - W X_fp||^2 / ||W X_fp||^2) from the statistics (see `sequentialLoss`). */
export function sequentialOutputError(wHat: ArrayLike<number>, w: ArrayLike<number>, rows: number, stat: SequentialStatistic): number {
  return sequentialLoss(wHat, w, rows, stat).relativeError;
}

/**
 * Two samplers of the same layer stacked feature-wise: its columns are [a's; b's] (cols a.cols +
 * b.cols), so one Gram accumulation of the stacked samples gives a a^T, a b^T and b b^T at once (the
 * blocks of the stacked H; `splitStacked`), at the cost of the three products computed apart.
 */
export function stackedSampler(a: ActivationSampler, b: ActivationSampler): ActivationSampler {
  if (a.groups !== b.groups || a.samples !== b.samples)
    throw new InputError(`stacked samplers differ: ${a.groups} groups x ${a.samples} samples against ${b.groups} x ${b.samples}`);
  return {
    groups: a.groups,
    cols: a.cols + b.cols,
    samples: a.samples,
    fill(group, p0, p1, Xt) {
      const split = a.cols * (p1 - p0);
      a.fill(group, p0, p1, Xt.subarray(0, split));
      b.fill(group, p0, p1, Xt.subarray(split, split + b.cols * (p1 - p0)));
    },
  };
}

/**
 * The blocks of a finished stacked statistic (`groups` blocks [2c, 2c] of [x_fp; x_q]): H_ff (top
 * left), H_fq (top right) and H_qq (bottom right), each `groups` blocks [c, c].
 */
export function splitStacked(h: Float32Array | Float64Array, groups: number, cols: number): { hff: Float64Array; hfq: Float64Array; hqq: Float64Array } {
  const c2 = 2 * cols;
  checkLength("stacked statistic", "H", h, groups * c2 * c2);
  const cc = cols * cols;
  const hff = new Float64Array(groups * cc);
  const hfq = new Float64Array(groups * cc);
  const hqq = new Float64Array(groups * cc);
  for (let g = 0; g < groups; g++) {
    const src = g * c2 * c2;
    const dst = g * cc;
    for (let i = 0; i < cols; i++) {
      const top = src + i * c2;
      const bottom = src + (cols + i) * c2 + cols;
      const o = dst + i * cols;
      hff.set(h.subarray(top, top + cols), o);
      hfq.set(h.subarray(top + cols, top + c2), o);
      hqq.set(h.subarray(bottom, bottom + cols), o);
    }
  }
  return { hff, hfq, hqq };
}

// ---- the stacked statistic, on a ParallelMap (issue 11) ------------------------------------------------

/*
 * What the compression pipeline uses: the statistic of the stacked samples [x_fp; x_q] (2 cols features,
 * as `stackedSampler` gives them) in either form of ssvq/stat-product.ts, S = [[H_ff, H_fq], [H_qf, H_qq]]
 * or the stacked columns X_s = [X_fp; X_q] themselves (when there are fewer than half of 2 cols). Every
 * product goes through the product interface, over row blocks on the map:
 *  - the sequential loss of W_hat is the quadratic form of the stacked row [-W, W_hat]:
 *        ||W_hat X_q - W X_fp||^2 / n = tr([-W, W_hat] S [-W, W_hat]^T)   (exact, and >= 0 from X_s),
 *    the reference ||W X_fp||^2 / n that of [W, 0];
 *  - the target's right-hand side W (H_fq - H_qq) is the second half of [W, -W] S, and with X_s,
 *    W (X_fp - X_q) is [W, -W] X_s; then per group a Cholesky factorisation (of H_qq + lambda I, cols^2,
 *    or of X_q^T X_q + n lambda I, r^2: the push-through identity
 *        (X_fp - X_q) X_q^T / n (X_q X_q^T / n + lambda I)^-1 = (X_fp - X_q) (X_q^T X_q + n lambda I)^-1 X_q^T
 *    gives the same W'), the rows solved in blocks on the map, and for X_s the product with X_q^T.
 * Both forms give the same target and losses to rounding; the same bytes on any map.
 */

/** H_qq (the bottom-right block) or X_q (the second half of every stacked column) of a stacked statistic, shared. */
export function qqStatistic(stacked: LayerStatistic | StatHandle): LayerStatistic {
  const s = "key" in stacked ? stacked.stat : stacked;
  const { groups } = s;
  const c2 = s.cols;
  const c = c2 / 2;
  if (isFactor(s)) {
    const X = s.X instanceof Float32Array ? sharedArray(Float32Array, groups * s.r * c) : sharedArray(Float64Array, groups * s.r * c);
    for (let j = 0; j < groups * s.r; j++) X.set(s.X.subarray(j * c2 + c, (j + 1) * c2), j * c);
    return { kind: "factor", X, r: s.r, n: s.n, groups, cols: c };
  }
  const H = sharedArray(Float64Array, groups * c * c);
  for (let g = 0; g < groups; g++)
    for (let i = 0; i < c; i++) {
      const from = g * c2 * c2 + (c + i) * c2 + c;
      H.set(s.H.subarray(from, from + c), g * c * c + i * c);
    }
  return { kind: "gram", H, groups, cols: c };
}

/** The sequential loss of W_hat from the stacked statistic, its products on `map`. */
export async function sequentialLossOn(
  map: ParallelMap,
  w: ArrayLike<number>,
  wHat: ArrayLike<number>,
  rows: number,
  stacked: LayerStatistic | StatHandle,
  engine?: string,
): Promise<SequentialLoss> {
  const handle = shareStatistic(stacked);
  const c2 = handle.stat.cols;
  const c = c2 / 2;
  checkLength("sequential loss", "w", w, rows * c);
  checkLength("sequential loss", "w_hat", wHat, rows * c);
  // a = [W, 0], b = [0, W_hat]: b - a = [-W, W_hat].
  const a = sharedArray(Float64Array, rows * c2);
  const b = sharedArray(Float64Array, rows * c2);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < c; j++) {
      a[i * c2 + j] = w[i * c + j]!;
      b[i * c2 + c + j] = wHat[i * c + j]!;
    }
  const q = await quadraticForms(map, a, b, rows, handle, engine);
  const reference = q.a;
  const loss = Math.max(0, q.diff);
  return { loss, reference, relativeError: reference > 0 ? Math.sqrt(loss / reference) : Math.sqrt(loss) };
}

/** Input of the "sequential.solve" task: X L L^T = D in place for rows [r0, r1) of D, group g with its factor. */
export interface SolveTaskInput {
  /** Per group the lower Cholesky factor [c, c] (shared), or an empty slot (lambda 0: the rows are left). */
  factors: Float64Array;
  /** Which groups have a factor (1) or keep their rows (0). */
  solved: Uint8Array;
  c: number;
  /** D [rows, c] (shared). */
  d: Float64Array;
  rowsPerGroup: number;
  r0: number;
  r1: number;
}

/** The "sequential.solve" task (`tasks.ts`). */
export function sequentialSolveTask(t: SolveTaskInput): number {
  const { c, rowsPerGroup } = t;
  for (let s = t.r0; s < t.r1; ) {
    const g = Math.floor(s / rowsPerGroup);
    const e = Math.min(t.r1, (g + 1) * rowsPerGroup);
    if (t.solved[g]) choleskySolve(t.factors.subarray(g * c * c, (g + 1) * c * c), c, t.d.subarray(s * c, e * c), e - s);
    s = e;
  }
  return t.r1 - t.r0;
}

/** Input of the "sequential.expand" task: out = T X^T for rows [r0, r1) (factor statistic, built-in kernel). */
export interface ExpandTaskInput {
  stat: StatHandle;
  rows: number;
  t: Float64Array;
  out: Float64Array;
  r0: number;
  r1: number;
}

/** The "sequential.expand" task (`tasks.ts`): with this thread's WebAssembly (or TypeScript) kernel. */
export function sequentialExpandTask(x: ExpandTaskInput): Promise<number> {
  return withCachedKernel(x.stat, defaultStatEngine.name, x.rows, (kernel) => {
    const s = x.stat.stat as FactorStatistic;
    (kernel as SyncStatKernel).expand!(x.r0, x.r1, x.t.subarray(x.r0 * s.r, x.r1 * s.r), x.out.subarray(x.r0 * s.cols, x.r1 * s.cols));
    return x.r1 - x.r0;
  });
}

/**
 * The effective target W' (see the module comment) from the stacked statistic (`groups` blocks of 2 cols,
 * or stacked columns), its products and solves on `map`. The same damping rules as `sequentialTarget`
 * (lambda relative to mean diag H_qq per group, tenfold retries); a group whose input is always zero, and
 * a row whose right-hand side is exactly zero, keep W.
 */
export async function sequentialTargetOn(
  map: ParallelMap,
  w: Float32Array,
  rows: number,
  stacked: LayerStatistic | StatHandle,
  opts: Omit<SequentialTargetOptions, "hff"> & { engine?: string } = {},
): Promise<SequentialTarget> {
  const what = "sequential target";
  const handle = shareStatistic(stacked);
  const S = handle.stat;
  const { groups } = S;
  const c2 = S.cols;
  const c = c2 / 2;
  checkShape(what, rows, c, groups);
  checkLength(what, "w", w, rows * c);
  checkFinite(what, "w", w);
  const rel0 = opts.damping ?? DEFAULT_SEQUENTIAL_DAMPING;
  const maxRetries = opts.maxRetries ?? DEFAULT_SEQUENTIAL_RETRIES;
  if (!(Number.isFinite(rel0) && rel0 > 0)) throw new InputError(`${what}: damping must be a finite number > 0, not ${rel0}`);
  if (!(Number.isInteger(maxRetries) && maxRetries >= 0)) throw new InputError(`${what}: maxRetries must be an integer >= 0, not ${maxRetries}`);
  const perGroup = rows / groups;
  const engine = opts.engine !== undefined ? { engine: opts.engine } : {};

  // [W, -W] S (or X_s): the right-hand side.
  const a = sharedArray(Float64Array, rows * c2);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < c; j++) {
      a[i * c2 + j] = w[i * c + j]!;
      a[i * c2 + c + j] = -w[i * c + j]!;
    }
  const factor = isFactor(S);
  const rhs = await productsOn(map, a, rows, handle, { ...engine, wantT: factor });
  checkFinite(what, "the statistic's product", rhs.p);
  // The matrix to factorise per group: H_qq (c x c) or X_q^T X_q (r x r).
  const m = factor ? S.r : c;
  let gram: Float64Array;
  let nScale = 1;
  if (factor) {
    nScale = S.n;
    const xq = sharedArray(Float64Array, groups * S.r * c2);
    for (let j = 0; j < groups * S.r; j++) for (let k = c; k < c2; k++) xq[j * c2 + k] = S.X[j * c2 + k]!;
    const g = await productsOn(map, xq, groups * S.r, handle, { ...engine, wantT: true });
    gram = g.t!;
  } else {
    gram = new Float64Array(groups * c * c);
    for (let g = 0; g < groups; g++)
      for (let i = 0; i < c; i++) {
        const from = g * c2 * c2 + (c + i) * c2 + c;
        gram.set(S.H.subarray(from, from + c), g * c * c + i * c);
      }
  }
  checkFinite(what, "H_qq", gram);
  const factors = sharedArray(Float64Array, groups * m * m);
  const solved = sharedArray(Uint8Array, groups);
  const lambdas: number[] = [];
  let damping = 0;
  let retries = 0;
  for (let g = 0; g < groups; g++) {
    const off = g * m * m;
    let trace = 0;
    for (let i = 0; i < m; i++) trace += gram[off + i * m + i]!;
    const meanDiag = trace / nScale / c;
    if (meanDiag === 0) {
      lambdas.push(0);
      continue;
    }
    if (!(meanDiag > 0)) throw new InputError(`${what}: H_qq of group ${g} has a negative mean diagonal (${meanDiag}); it is not a Gram matrix`);
    let rel = rel0;
    let attempt = 0;
    const L = factors.subarray(off, off + m * m);
    while (!cholesky(gram, off, m, rel * meanDiag * nScale, L)) {
      if (attempt++ >= maxRetries)
        throw new InputError(`${what}: H_qq of group ${g} is not positive definite even with damping ${rel} x its mean diagonal`);
      retries++;
      rel *= 10;
    }
    lambdas.push(rel * meanDiag);
    damping = Math.max(damping, rel);
    solved[g] = 1;
  }
  // D: W (H_fq - H_qq) [rows, c], or W (X_fp - X_q) [rows, r]; solved in place against the factors.
  const d = sharedArray(Float64Array, rows * m);
  if (factor) d.set(rhs.t!);
  else for (let i = 0; i < rows; i++) d.set(rhs.p.subarray(i * c2 + c, (i + 1) * c2), i * c);
  const blocks = rowBlocks(rows, groups, 2 * m * m);
  await map.run<SolveTaskInput, number>(
    "sequential.solve",
    blocks.map(([r0, r1]) => ({ factors, solved, c: m, d, rowsPerGroup: perGroup, r0, r1 })),
  );
  // The change W' - W: D itself, or D X_q^T (the second half of D X_s^T).
  let change: Float64Array;
  let stride = c;
  let from = 0;
  if (factor) {
    const out = sharedArray(Float64Array, rows * c2);
    await map.run<ExpandTaskInput, number>(
      "sequential.expand",
      rowBlocks(rows, groups, productRowFlops(S)).map(([r0, r1]) => ({ stat: handle, rows, t: d, out, r0, r1 })),
    );
    change = out;
    stride = c2;
    from = c;
  } else change = d;
  const target = new Float32Array(rows * c);
  for (let i = 0; i < rows; i++) {
    const g = Math.floor(i / perGroup);
    let zero = !solved[g];
    if (!zero) {
      zero = true;
      for (let k = 0; k < m; k++) if (rhs.t ? rhs.t[i * m + k] !== 0 : rhs.p[i * c2 + c + k] !== 0) zero = false;
    }
    for (let j = 0; j < c; j++) target[i * c + j] = zero ? w[i * c + j]! : w[i * c + j]! + change[i * stride + from + j]!;
  }
  return { target, damping, lambdas, retries };
}
