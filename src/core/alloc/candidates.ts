/**
 * The operating points the search (issue 12) tries for one layer, their exact cost, and their error
 * after k-means: SSVQ (or VQ) at d in {2, 4, 8, 16} and k = 4, 8, ..., 4096, plus INT8, INT4 and, when
 * the target allows it, full precision. Points that cannot help are pruned before any k-means runs:
 * k above a quarter of the layer's sub-vectors (fewer than 4 points per codeword), and SSVQ/VQ points
 * that cost at least as much as INT8 (INT8 is then nearly lossless for the same bits or fewer).
 */
import { CancelledError } from "../errors.js";
import type { ParallelMap } from "../parallel.js";
import { estimateBits, type LayerBits } from "../ssvq/bits.js";
import { relativeOutputErrorOn, type LayerStatistic } from "../ssvq/objective.js";
import { quantizeRows, reconstructRows, relativeError, type Mode, type Quantized } from "../ssvq/quantize.js";
import { shareStatistic, type StatHandle } from "../ssvq/stat-product.js";
import { serialMap } from "../tasks.js";

/** "fp": the layer stays as it is, at its own width. */
export type PointMode = Mode | "fp";

export interface OperatingPoint {
  mode: PointMode;
  /** SSVQ/VQ: codebook size and sub-vector length; 0 otherwise. */
  k: number;
  d: number;
}

export const SEARCH_D: readonly number[] = [2, 4, 8, 16];
export const SEARCH_K: readonly number[] = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

export const pointLabel = (p: OperatingPoint): string =>
  p.mode === "ssvq" || p.mode === "vq" ? `${p.mode.toUpperCase()} k${p.k} d${p.d}` : p.mode === "fp" ? "full precision" : p.mode.toUpperCase();

export const pointKey = (p: OperatingPoint): string => `${p.mode}:${p.k}:${p.d}`;

/** The exact bits of a point, as the report counts them (`estimateBits`; full precision at the weight's width). */
export function pointBits(p: OperatingPoint, rows: number, cols: number, storedBits: number): LayerBits {
  if (p.mode === "fp") {
    const weights = rows * cols;
    const totalBits = weights * storedBits;
    return { weights, indexBits: 0, signBits: 0, codebookBits: 0, valueBits: totalBits, scaleBits: 0, totalBits, bitsPerWeight: storedBits };
  }
  return estimateBits(p.mode, p.k, p.d, rows, cols, storedBits);
}

export interface GridOptions {
  /** The vector-quantization family searched: SSVQ or conventional VQ. */
  family: "ssvq" | "vq";
  /** Whether the layer may stay at full precision (a whole-model ratio target, not a bits target). */
  allowFp: boolean;
  /** Points above this many bits are left out (they cannot fit the budget). */
  maxBits?: number;
}

/** The candidate points of one layer [rows, cols] stored at `storedBits`, cheapest first (ties: grid order). */
export function candidateGrid(rows: number, cols: number, storedBits: number, o: GridOptions): OperatingPoint[] {
  const int8 = pointBits({ mode: "int8", k: 0, d: 0 }, rows, cols, storedBits).totalBits;
  const out: { p: OperatingPoint; bits: number; order: number }[] = [];
  const add = (p: OperatingPoint) => {
    const bits = pointBits(p, rows, cols, storedBits).totalBits;
    if (o.maxBits !== undefined && bits > o.maxBits) return;
    out.push({ p, bits, order: out.length });
  };
  for (const d of SEARCH_D) {
    const count = rows * Math.ceil(cols / d);
    for (const k of SEARCH_K) {
      if (k * 4 > count) break;
      const p: OperatingPoint = { mode: o.family, k, d };
      if (pointBits(p, rows, cols, storedBits).totalBits >= int8) continue;
      add(p);
    }
  }
  if (storedBits > 4) add({ mode: "int4", k: 0, d: 0 });
  if (storedBits > 8) add({ mode: "int8", k: 0, d: 0 });
  if (o.allowFp) add({ mode: "fp", k: 0, d: 0 });
  return out.sort((a, b) => a.bits - b.bits || a.order - b.order).map((x) => x.p);
}

export interface EvaluatedCandidate {
  point: OperatingPoint;
  bits: LayerBits;
  /** Relative output error ||W_hat X - W X|| / ||W X|| after k-means (or rounding); the weight error without statistics. */
  error: number;
}

export interface EvaluateOptions {
  seed: number;
  kmeansIters: number;
  storedBits: number;
  map?: ParallelMap;
  engine?: string;
  roundStored?: (v: Float32Array) => Float32Array;
  /** Keeps each candidate's quantization (by `pointKey`), for a later compression to reuse. */
  keep?: (point: OperatingPoint, q: Quantized) => void;
  signal?: AbortSignal;
}

/**
 * Quantizes the layer (row matrix `w`) at every point (k-means once each, the same seed as a compression
 * so the same point gives the same bytes) and measures its output error on the statistic.
 */
export async function evaluateCandidates(
  w: Float32Array,
  rows: number,
  cols: number,
  stat: LayerStatistic | StatHandle | undefined,
  points: readonly OperatingPoint[],
  o: EvaluateOptions,
): Promise<EvaluatedCandidate[]> {
  const map = o.map ?? serialMap;
  const shared = stat ? shareStatistic(stat) : undefined;
  const out: EvaluatedCandidate[] = [];
  for (const point of points) {
    if (o.signal?.aborted) throw new CancelledError();
    const bits = pointBits(point, rows, cols, o.storedBits);
    if (point.mode === "fp") {
      out.push({ point, bits, error: 0 });
      continue;
    }
    const q = await quantizeRows(w, rows, cols, {
      mode: point.mode,
      k: point.k,
      d: point.d,
      seed: o.seed,
      kmeansIters: o.kmeansIters,
      map,
      ...(o.roundStored ? { roundStored: o.roundStored } : {}),
    });
    const rec = reconstructRows(q);
    const error = shared ? await relativeOutputErrorOn(map, w, rec, rows, shared, o.engine) : relativeError(w, rec);
    o.keep?.(point, q);
    out.push({ point, bits, error });
  }
  return out;
}

/**
 * The candidate whose bits per weight are nearest `bitsPerWeight` among the SSVQ/VQ points (else any
 * quantized point): the perturbation a layer's sensitivity is measured with.
 */
export function referenceCandidate(c: readonly EvaluatedCandidate[], bitsPerWeight: number): number {
  const vq = c.map((_, i) => i).filter((i) => c[i]!.point.mode === "ssvq" || c[i]!.point.mode === "vq");
  const pool = vq.length ? vq : c.map((_, i) => i).filter((i) => c[i]!.point.mode !== "fp");
  let best = -1;
  for (const i of pool)
    if (best < 0 || Math.abs(c[i]!.bits.bitsPerWeight - bitsPerWeight) < Math.abs(c[best]!.bits.bitsPerWeight - bitsPerWeight)) best = i;
  return best;
}
