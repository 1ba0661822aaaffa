/**
 * The assignment pass of k-means, as tasks of a `ParallelMap` (one task covers a run of consecutive
 * chunks; the chunks, not the tasks, fix the summation order), and the exact distances every answer is
 * checked against.
 *
 * Exactness. A point's centroid is the one with the smallest squared distance computed as
 * sum_t (x_t - c_t)^2 in float64 from t = 0 up (`dist2`), ties to the lowest index: what a brute-force
 * double loop returns. Each pass, per point:
 *  1. Hamerly's bounds (kmeans-bounds.ts) carried over by the centroid shifts: u < l proves the point
 *     keeps its centroid, with no distance computed; else u is tightened to the exact distance to its
 *     centroid and tested again (skipped on a "rescan", which `Lloyd` asks for when k <= 16, where the
 *     bounds cost about what they save, and in the first passes, while many points move); with the
 *     scan (k <= scanMaxK(d)) the test runs in float32, four points at a time, rounded outwards
 *     (kmeans-kernel.ts's BOUNDS);
 *  2. otherwise the point is queued for the SIMD kernel (kmeans-kernel.ts), which returns the nearest
 *     centroid by float32 distances and a2, a lower bound (up to the relative error rho) on the distance
 *     to every other centroid. Its answer is taken when a2 > a1 (1 + 4 rho): then every other centroid is
 *     provably farther in exact arithmetic, so also in the float64 sums (their rounding is far below rho);
 *  3. anything else (near ties, exact ties, distances the float32 error bound does not cover) is
 *     searched again over all centroids with `dist2`, exactly as the brute-force loop does.
 * So bounds and float32 only decide how much work a point takes, never its answer.
 *
 * Determinism. A point's answer depends on the point, the centroids and its own bounds only, and each
 * chunk's sums (points in index order, float64) do not depend on which task or thread computed them:
 * the caller adds them chunk after chunk. The same bits for any thread count and any map.
 */
import { F32_OUTWARD, nearestKernel, SLACK } from "./kmeans-kernel.js";

/**
 * Up to this k, the kernel scans every centroid four points at a time (kmeans-scan.ts) instead of
 * searching by groups. Measured (10 iterations from sample points, standard normal data, one thread, the
 * passes' time): the scan is 1.6 to 2.5 times faster per searched point at k = 16, up to 1.3 at 64; at
 * d = 4 it is 1.3 times faster at k = 256 and 7% slower at 512; at d = 8, 1.4 times faster at k = 256 to
 * 1024 (the groups' boxes prune little there). The groups win at k = 4096.
 */
export const scanMaxK = (d: number): number => (d <= 4 ? 256 : 1024);

export interface AssignInput {
  points: Float32Array;
  d: number;
  k: number;
  /** Points start .. end - 1, in chunks of `chunk` points (the last may be shorter). */
  start: number;
  end: number;
  chunk: number;
  /** Shared [n]: the previous assignment, overwritten with the new one. */
  assignments: Uint32Array;
  /** Shared [n] (empty when no pass keeps bounds): upper bound on the distance to the assigned centroid,
   *  lower bound to any other one. */
  upper: Float32Array;
  lower: Float32Array;
  /** First pass: no previous assignment or bounds. */
  fresh: boolean;
  /** Search every point, without the bounds (which the kernel then leaves as they were: the caller
   *  rescans every pass after the first, or none). */
  rescan: boolean;
  /** Some later pass reads the bounds this one leaves (else they are not computed). */
  keepBounds: boolean;
  /**
   * Names the k-means run (a `Lloyd`): its points never change, so a thread may keep those it was given
   * in one pass for the next ones (kmeans-kernel.ts's `cachePoints`).
   */
  runKey?: number;
  /**
   * The run's scale for the integer scan (kmeans-scan-int.ts's `intScanScale` of the largest |coordinate|
   * of the points and the initial centroids); 0 or absent: the float32 scan only.
   */
  intScale?: number;
  /** Also sum the squared distances of the points to their new centroids (`AssignOutput.sse`). */
  withSse?: boolean;
  /** [k, d], the float32 centroids widened. */
  centroids: Float64Array;
  /** Upper bound on how far each centroid moved since the previous pass. */
  shift: Float64Array;
  /** The largest shift, its centroid, and the second largest. */
  maxShift: number;
  maxShiftAt: number;
  secondShift: number;
  /** The centroid groups (`CentroidGroups` in kmeans-bounds.ts). */
  groups: number;
  blockCount: number;
  blocks: Float32Array;
  laneCentroid: Int32Array;
  groupStart: Int32Array;
  boxes: Float32Array;
  groupOf: Int32Array;
  /** Half the distance from each centroid to its nearest other one, at most. */
  half: Float64Array;
}

export interface AssignOutput {
  /** Per chunk of the task, in order: [k, d] sums of its points per assigned centroid, and [k] counts. */
  sums: Float64Array;
  counts: Uint32Array;
  /** With `withSse`, per chunk of the task: the sum of dist2 from its points to their new centroids, in
   *  point order from zero (what `kmeansSseTask` gives as its parts for the same chunks). */
  sse?: Float64Array;
  /** Points whose assignment changed (every point on the first pass). */
  changed: number;
  /** Points the bounds did not settle (searched), and of those, searched again exactly. */
  searched: number;
  exact: number;
  /** Of the searched points, those the integer scan (kmeans-scan-int.ts) settled alone (counted in fours). */
  intProven: number;
}

/** One task of an assignment pass (see the file comment). */
export function kmeansAssignTask(t: AssignInput): AssignOutput {
  const { points, d, k, start, end, chunk, assignments, upper, lower, fresh } = t;
  const kernel = nearestKernel(d);
  if (!kernel) return assignJs(t);
  // The whole chunk in WebAssembly (`pass` in kmeans-kernel.ts, the same steps as `assignJs`), on this
  // run's points kept in the kernel's memory from the first pass that met them (`cachePoints`).
  const intScale = t.intScale ?? 0;
  const cached = t.runKey !== undefined ? kernel.cachePoints(t.runKey, points, start, end, intScale, chunk) : null;
  kernel.load(t, Math.min(chunk, end - start), k <= scanMaxK(d), intScale);
  const chunks = Math.ceil((end - start) / chunk);
  const sums = new Float64Array(chunks * k * d);
  const counts = new Uint32Array(chunks * k);
  const sse = t.withSse ? new Float64Array(chunks) : undefined;
  let changed = 0;
  let searched = 0;
  let exact = 0;
  let intProven = 0;
  for (let c = 0; c < chunks; c++) {
    const s = start + c * chunk;
    const e = Math.min(end, s + chunk);
    if (cached) kernel.usePoints(cached.at + (s - start) * d * 4, cached.intAt >= 0 ? cached.intAt + c * cached.chunkIntBytes : -1);
    else kernel.points.set(points.subarray(s * d, e * d));
    if (!fresh) kernel.assignments.set(assignments.subarray(s, e));
    // The lanes past the chunk's end (its count rounded up to 4) must name a centroid: the bounds' test
    // reads per-centroid tables through them (their answers are never used).
    kernel.assignments.fill(0, e - s, Math.min(kernel.capacity, e - s + 4));
    if (!fresh && !t.rescan) {
      kernel.upper.set(upper.subarray(s, e));
      kernel.lower.set(lower.subarray(s, e));
    }
    const mode = fresh ? "fresh" : t.rescan ? "rescan" : "bounds";
    const [ch, se, ex, ip] = kernel.pass(e - s, mode, t.maxShift, t.maxShiftAt, t.secondShift, t.keepBounds, sse !== undefined);
    intProven += ip;
    if (sse) sse[c] = kernel.passSse();
    changed += ch;
    searched += se;
    exact += ex;
    assignments.set(kernel.assignments.subarray(0, e - s), s);
    if (t.keepBounds) {
      // (A rescan's bounds are not kept: the next pass rescans too.)
      upper.set(kernel.upper.subarray(0, e - s), s);
      lower.set(kernel.lower.subarray(0, e - s), s);
    }
    sums.set(kernel.sums, c * k * d);
    counts.set(kernel.counts, c * k);
  }
  return sse ? { sums, counts, sse, changed, searched, exact, intProven } : { sums, counts, changed, searched, exact, intProven };
}

/** `kmeansAssignTask` in TypeScript alone (no WebAssembly SIMD): the exact search for every point. */
function assignJs(t: AssignInput): AssignOutput {
  const { points, d, k, start, end, chunk, assignments, upper, lower, centroids, fresh } = t;
  const capacity = Math.min(chunk, end - start);
  const queued = new Int32Array(capacity);
  const hints = new Int32Array(capacity);
  const chunks = Math.ceil((end - start) / chunk);
  const sums = new Float64Array(chunks * k * d);
  const counts = new Uint32Array(chunks * k);
  const sse = t.withSse ? new Float64Array(chunks) : undefined;
  const exact = { index: 0, best: 0, second: 0 };
  let changed = 0;
  let searched = 0;
  for (let c = 0; c < chunks; c++) {
    const s = start + c * chunk;
    const e = Math.min(end, s + chunk);
    const m = screen(t, s, e, queued, hints);
    searched += m;
    for (let q = 0; q < m; q++) {
      const i = queued[q];
      nearestExact(points, i * d, centroids, d, k, exact);
      const a = exact.index;
      const l = Math.sqrt(exact.second) * (1 - SLACK);
      if (fresh || a !== assignments[i]) changed++;
      assignments[i] = a;
      if (!t.keepBounds) continue;
      upper[i] = Math.fround(Math.sqrt(exact.best) * (1 + SLACK) * (1 + F32_OUTWARD));
      lower[i] = l > 0 ? Math.fround(l * (1 - F32_OUTWARD)) : 0;
    }
    addPoints(points, d, assignments, s, e, sums.subarray(c * k * d, (c + 1) * k * d), counts.subarray(c * k, (c + 1) * k));
    if (sse) {
      let part = 0;
      for (let i = s; i < e; i++) part += dist2(points, i * d, centroids, assignments[i] * d, d);
      sse[c] = part;
    }
  }
  return sse ? { sums, counts, sse, changed, searched, exact: searched, intProven: 0 } : { sums, counts, changed, searched, exact: searched, intProven: 0 };
}

/**
 * Hamerly's test for points s .. e - 1: a point whose bounds prove it keeps its centroid gets its bounds
 * updated; the others are queued (index and first group). Returns how many were queued.
 */
function screen(t: AssignInput, s: number, e: number, queued: Int32Array, hints: Int32Array): number {
  const { points, d, assignments, upper, lower, centroids, shift, groupOf, half, maxShift, maxShiftAt, secondShift } = t;
  const bounds = !t.fresh && !t.rescan;
  let m = 0;
  for (let i = s; i < e; i++) {
    const xo = i * d;
    let hint = -1;
    if (bounds) {
      const from = assignments[i];
      // Hamerly: every other centroid j has |x - c_j| >= l > u >= |x - c_from|; also when u < half[from]:
      // |x - c_j| >= |c_from - c_j| - u >= 2 half - u > u.
      let u = (upper[i] + shift[from]) * (1 + SLACK);
      const l = lower[i] * (1 - SLACK) - (from === maxShiftAt ? secondShift : maxShift);
      const h = half[from];
      if (!(u < l || u < h)) u = Math.sqrt(dist2(points, xo, centroids, from * d, d)) * (1 + SLACK);
      if (u < l || u < h) {
        upper[i] = Math.fround(u * (1 + F32_OUTWARD));
        lower[i] = l > 0 ? Math.fround(l * (1 - F32_OUTWARD)) : 0;
        continue;
      }
      hint = groupOf[from];
    }
    hints[m] = hint;
    queued[m++] = i;
  }
  return m;
}

/** Adds points s .. e - 1, in index order, to the sums [k, d] and counts [k] of their centroids. */
function addPoints(points: Float32Array, d: number, assignments: Uint32Array, s: number, e: number, sums: Float64Array, counts: Uint32Array): void {
  if (d === 4) {
    for (let i = s; i < e; i++) {
      const a = assignments[i];
      const o = a * 4;
      const xo = i * 4;
      counts[a]++;
      sums[o] += points[xo];
      sums[o + 1] += points[xo + 1];
      sums[o + 2] += points[xo + 2];
      sums[o + 3] += points[xo + 3];
    }
  } else if (d === 8) {
    for (let i = s; i < e; i++) {
      const a = assignments[i];
      const o = a * 8;
      const xo = i * 8;
      counts[a]++;
      sums[o] += points[xo];
      sums[o + 1] += points[xo + 1];
      sums[o + 2] += points[xo + 2];
      sums[o + 3] += points[xo + 3];
      sums[o + 4] += points[xo + 4];
      sums[o + 5] += points[xo + 5];
      sums[o + 6] += points[xo + 6];
      sums[o + 7] += points[xo + 7];
    }
  } else {
    for (let i = s; i < e; i++) {
      const a = assignments[i];
      counts[a]++;
      for (let q = 0, o = a * d, xo = i * d; q < d; q++) sums[o + q] += points[xo + q];
    }
  }
}

/**
 * The nearest centroid by `dist2` over all k (ties to the lowest index), its squared distance and the
 * second smallest one: the brute-force loop itself.
 */
export function nearestExact(
  points: Float32Array,
  xo: number,
  centroids: Float64Array,
  d: number,
  k: number,
  out: { index: number; best: number; second: number },
): void {
  let best = Infinity;
  let second = Infinity;
  let index = 0;
  for (let j = 0; j < k; j++) {
    const dd = dist2(points, xo, centroids, j * d, d);
    if (dd < best) {
      second = best;
      best = dd;
      index = j;
    } else if (dd < second) second = dd;
  }
  out.index = index;
  out.best = best;
  out.second = second;
}

export interface SseInput {
  points: Float32Array;
  d: number;
  start: number;
  end: number;
  centroids: Float64Array;
  assignments: Uint32Array;
  /** Sum in parts of this many points (default: one part), each from zero, reported in `parts`. */
  chunk?: number;
}

export interface SseOutput {
  sse: number;
  /** The parts' sums in order (`sse` is their sum, added in order from zero). */
  parts: Float64Array;
}

/** The points' sum of squared distances to their assigned centroids. */
export function kmeansSseTask(t: SseInput): SseOutput {
  const { points, d, centroids, assignments, start, end } = t;
  const chunk = t.chunk ?? Math.max(1, end - start);
  const parts = new Float64Array(Math.ceil((end - start) / chunk));
  let sse = 0;
  for (let p = 0; p < parts.length; p++) {
    let part = 0;
    for (let i = start + p * chunk, e = Math.min(end, i + chunk); i < e; i++) part += dist2(points, i * d, centroids, assignments[i] * d, d);
    parts[p] = part;
    sse += part;
  }
  return { sse, parts };
}

export interface WorstInput extends SseInput {
  count: number;
}

export interface WorstOutput {
  /** Up to `count` points of the chunk at a positive distance from their centroid, worst first. */
  index: Uint32Array;
  dist: Float64Array;
}

/** The chunk's `count` worst-fitted points (largest squared distance, ties to the lower index). */
export function kmeansWorstTask(t: WorstInput): WorstOutput {
  const { points, d, centroids, assignments, count } = t;
  const index: number[] = [];
  const dist: number[] = [];
  for (let i = t.start; i < t.end; i++) {
    const dd = dist2(points, i * d, centroids, assignments[i] * d, d);
    if (dd === 0 || (index.length === count && dd <= dist[count - 1])) continue;
    let at = index.length;
    while (at > 0 && dist[at - 1] < dd) at--;
    index.splice(at, 0, i);
    dist.splice(at, 0, dd);
    if (index.length > count) {
      index.pop();
      dist.pop();
    }
  }
  return { index: Uint32Array.from(index), dist: Float64Array.from(dist) };
}

/**
 * Squared distance between a row of `x` and a row of `c`, summed from coordinate 0 up in float64
 * (the unrolled d = 4 and d = 8 cases add in the same order, so they give the same bits).
 */
export function dist2(x: Float32Array, xo: number, c: Float64Array, co: number, d: number): number {
  if (d === 4) {
    const v0 = x[xo] - c[co];
    const v1 = x[xo + 1] - c[co + 1];
    const v2 = x[xo + 2] - c[co + 2];
    const v3 = x[xo + 3] - c[co + 3];
    return v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3;
  }
  if (d === 8) {
    const v0 = x[xo] - c[co];
    const v1 = x[xo + 1] - c[co + 1];
    const v2 = x[xo + 2] - c[co + 2];
    const v3 = x[xo + 3] - c[co + 3];
    const v4 = x[xo + 4] - c[co + 4];
    const v5 = x[xo + 5] - c[co + 5];
    const v6 = x[xo + 6] - c[co + 6];
    const v7 = x[xo + 7] - c[co + 7];
    return v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3 + v4 * v4 + v5 * v5 + v6 * v6 + v7 * v7;
  }
  let s = 0;
  for (let t = 0; t < d; t++) {
    const v = x[xo + t] - c[co + t];
    s += v * v;
  }
  return s;
}

/** `dist2` between two float64 rows (kept apart so each call site sees one array type). */
export function centroidDist2(x: Float64Array, xo: number, c: Float64Array, co: number, d: number): number {
  let s = 0;
  for (let t = 0; t < d; t++) {
    const v = x[xo + t] - c[co + t];
    s += v * v;
  }
  return s;
}
