/**
 * Quantizing one weight (its row matrix) with SSVQ, conventional VQ, or uniform INT4/INT8
 * round-to-nearest per output row (DESIGN.md section 1).
 */
import { InputError } from "../errors.js";
import type { ParallelMap } from "../parallel.js";
import { giveBackShared, takeShared } from "../shared-recycle.js";
import { kmeans } from "./kmeans.js";
import { fromSubvectors, subvectorShape, toSubvectors, type SubvectorShape } from "./layout.js";

export type Mode = "ssvq" | "vq" | "int4" | "int8";
export const MODES: readonly Mode[] = ["ssvq", "vq", "int4", "int8"];

export interface VqQuantized {
  mode: "ssvq" | "vq";
  k: number;
  d: number;
  shape: SubvectorShape;
  /** [k, d]; non-negative for SSVQ (magnitudes). */
  codebook: Float32Array;
  /** One codeword index per sub-vector. */
  assignments: Uint32Array;
  /** SSVQ only: one bit per padded element, 1 = negative (zero counts as positive). */
  signs?: Uint8Array;
  kmeansIterations: number;
}

export interface IntQuantized {
  mode: "int4" | "int8";
  bits: 4 | 8;
  rows: number;
  cols: number;
  /** One scale per row (output channel). */
  scales: Float32Array;
  /** Signed integers in [-2^(b-1), 2^(b-1) - 1], row-major [rows, cols]. */
  q: Int8Array;
}

export type Quantized = VqQuantized | IntQuantized;

export const isIntQuantized = (q: Quantized): q is IntQuantized => q.mode === "int4" || q.mode === "int8";

export interface QuantizeOptions {
  mode: Mode;
  k: number;
  d: number;
  seed: number;
  /** Lloyd iterations at most. */
  kmeansIters: number;
  map?: ParallelMap;
  /** Rounds codebook or scale values to what the output stores (float16 weights keep float16 codebooks). */
  roundStored?: (v: Float32Array) => Float32Array;
}

export async function quantizeRows(w: Float32Array, rows: number, cols: number, o: QuantizeOptions): Promise<Quantized> {
  if (o.mode === "int4" || o.mode === "int8") return quantizeInt(w, rows, cols, o.mode === "int4" ? 4 : 8);
  if (!Number.isInteger(o.k) || o.k < 2 || o.k > 65536) throw new InputError(`k must be an integer from 2 to 65536, not ${o.k}`);
  if (!Number.isInteger(o.d) || o.d < 1 || o.d > 64) throw new InputError(`d must be an integer from 1 to 64, not ${o.d}`);
  const shape = subvectorShape(rows, cols, o.d);
  const sub = toSubvectors(w, shape);
  let signs: Uint8Array | undefined;
  let points = sub;
  if (o.mode === "ssvq") {
    // Sign split: cluster magnitudes; the sign of each weight is kept as one bit.
    signs = new Uint8Array(sub.length);
    // With a thread pool, straight into shared memory kmeans' tasks read (lent, given back below): no copy.
    points = o.map ? takeShared(Float32Array, sub.length) : new Float32Array(sub.length);
    for (let i = 0; i < sub.length; i++) {
      const v = sub[i]!;
      signs[i] = v < 0 ? 1 : 0;
      points[i] = Math.abs(v);
    }
  }
  let km;
  try {
    km = await kmeans(points, shape.count, o.d, o.k, { seed: o.seed, maxIters: o.kmeansIters, map: o.map });
  } finally {
    if (points !== sub) giveBackShared(points);
  }
  const codebook = o.roundStored ? o.roundStored(km.centroids) : km.centroids;
  return { mode: o.mode, k: o.k, d: o.d, shape, codebook, assignments: km.assignments, signs, kmeansIterations: km.iterations };
}

function quantizeInt(w: Float32Array, rows: number, cols: number, bits: 4 | 8): IntQuantized {
  const qmax = (1 << (bits - 1)) - 1;
  const qmin = -(1 << (bits - 1));
  const scales = new Float32Array(rows);
  const q = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w[r * cols + c]!));
    const s = Math.fround(m > 0 ? m / qmax : 1);
    scales[r] = s;
    for (let c = 0; c < cols; c++) q[r * cols + c] = Math.min(qmax, Math.max(qmin, Math.round(w[r * cols + c]! / s)));
  }
  return { mode: bits === 4 ? "int4" : "int8", bits, rows, cols, scales, q };
}

/** The reconstructed row matrix [rows, cols] in float32, exactly as the decode subgraph computes it. */
export function reconstructRows(qz: Quantized): Float32Array {
  if (isIntQuantized(qz)) {
    const out = new Float32Array(qz.rows * qz.cols);
    for (let r = 0; r < qz.rows; r++) {
      const s = qz.scales[r]!;
      for (let c = 0; c < qz.cols; c++) out[r * qz.cols + c] = Math.fround(qz.q[r * qz.cols + c]! * s);
    }
    return out;
  }
  const { shape, d, codebook, assignments, signs } = qz;
  const sub = new Float32Array(shape.count * d);
  for (let i = 0; i < shape.count; i++) {
    const base = assignments[i]! * d;
    for (let j = 0; j < d; j++) {
      const v = codebook[base + j]!;
      sub[i * d + j] = signs && signs[i * d + j] ? -v : v;
    }
  }
  return fromSubvectors(sub, shape);
}

/** Relative Frobenius error ||W_hat - W|| / ||W||. */
export function relativeError(w: Float32Array, w2: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    const e = w2[i]! - w[i]!;
    num += e * e;
    den += w[i]! * w[i]!;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/**
 * relativeError(rows, reconstructRows(qz)), the same float64 sums in the same order, without making the
 * reconstruction for INT modes (a layer-sized array less per layer on a large model).
 */
export function quantizedError(rows: Float32Array, qz: Quantized): number {
  if (!isIntQuantized(qz)) return relativeError(rows, reconstructRows(qz));
  let num = 0;
  let den = 0;
  for (let r = 0; r < qz.rows; r++) {
    const s = qz.scales[r]!;
    for (let c = 0, i = r * qz.cols; c < qz.cols; c++, i++) {
      const w = rows[i]!;
      const e = Math.fround(qz.q[i]! * s) - w;
      num += e * e;
      den += w * w;
    }
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/** Codeword usage counts. */
export function usageHistogram(qz: VqQuantized): number[] {
  const h = new Array<number>(qz.k).fill(0);
  for (const a of qz.assignments) h[a]!++;
  return h;
}
