/**
 * k-means on row-major Float32Array points [n, d] (DESIGN.md section 1): seeded k-means++ on a sample of
 * at most SAMPLE_PER_CENTROID points per centroid, then Lloyd iterations over all points until no
 * assignment changes or `maxIters`, empty clusters re-seeded from the worst-fitted points. The public
 * entry; the parts live beside it:
 *  - kmeans-seeding.ts: k-means++;
 *  - kmeans-bounds.ts: the centroid side of each pass (shifts for Hamerly's bounds, the centroid
 *    groups and their boxes);
 *  - kmeans-assign.ts: the assignment pass as tasks (bounds, then the SIMD search, then the exact
 *    float64 check), the SSE and worst-point tasks, the exact distance;
 *  - kmeans-kernel.ts: the WebAssembly SIMD nearest-centroid search (float32, with an error bound), and
 *    its scans: kmeans-scan.ts (float32) and kmeans-scan-int.ts (16-bit integers, from d = 6 up).
 *
 * Exactness: every assignment is the centroid with the smallest squared distance computed as
 * sum_t (x_t - c_t)^2 in float64, from t = 0 up, ties going to the lowest index: exactly what a brute-force
 * double loop returns (kmeans-assign.ts says how the fast paths keep to it).
 *
 * Determinism: the points are cut into chunks whose boundaries depend on n and d only; a pass's tasks
 * each take a run of whole chunks, and the chunks' sums are added in chunk order. So the same seed gives
 * the same bytes whatever the map and its thread count.
 */
import { InputError } from "../errors.js";
import { chunkRanges, sharedArray, type ParallelMap } from "../parallel.js";
import { giveBackShared, takeShared } from "../shared-recycle.js";
import type { TaskName } from "../task-names.js";
import {
  kmeansAssignTask,
  scanMaxK,
  kmeansSseTask,
  kmeansWorstTask,
  type AssignInput,
  type AssignOutput,
  type SseInput,
  type SseOutput,
  type WorstInput,
  type WorstOutput,
} from "./kmeans-assign.js";
import { centroidShifts, CentroidGroups } from "./kmeans-bounds.js";
import { intScanScale } from "./kmeans-scan-int.js";
import { kmeansPlusPlus } from "./kmeans-seeding.js";

export { kmeansPlusPlus, SAMPLE_PER_CENTROID } from "./kmeans-seeding.js";
export { kmeansAssignTask, kmeansSseTask, kmeansWorstTask } from "./kmeans-assign.js";
export type { AssignInput, AssignOutput, SseInput, SseOutput, WorstInput, WorstOutput } from "./kmeans-assign.js";

/** Each chunk covers about this many coordinates (a fixed count of points for a given d). */
const CHUNK_COORDS = 1 << 16;
/** Up to this k, every pass after the first searches every point (`rescanNext`). */
const RESCAN_MAX_K = 16;
/** With bounds and the scan, a pass after one that moved more than this share of the points to another
 *  centroid searches every point (`rescanOnce`). */
const RESCAN_CHANGED = 0.15;
/**
 * An assignment pass is cut into about this many tasks per thread (whole chunks each), for balance where
 * the bounds leave some points more work than others; where every pass after the first scans every
 * point (k <= RESCAN_MAX_K) the work per point is the same, and one task per thread saves the messages
 * (500k x d4 k16 on 2 threads: 10 to 20% less time).
 */
const TASKS_PER_THREAD = 3;

export interface KmeansOptions {
  /** Seeds the k-means++ sample and choices. */
  seed: number;
  /** At most this many Lloyd iterations (centroid updates); 0 only assigns to the initial centroids. */
  maxIters: number;
  /** Runs the passes over the points; without one they run in this thread. */
  map?: ParallelMap;
  /** Initial centroids [k, d] instead of k-means++. */
  init?: Float32Array;
}

export interface KmeansResult {
  /** [k, d]. When n <= k: row i is point i for i < n, the remaining rows are zero. */
  centroids: Float32Array;
  /** The nearest centroid of each point (ties to the lowest index) for the returned centroids (in shared
   *  memory, the caller's alone: thread pools share it rather than copy it). */
  assignments: Uint32Array;
  /** Sum over points of the squared distance to their centroid, summed exactly in float64. */
  sse: number;
  /** Centroid updates performed. */
  iterations: number;
  /** An assignment pass changed nothing, so the centroids are the means of their points. */
  converged: boolean;
  /** Empty clusters re-seeded from the worst-fitted points, over the whole run. */
  reseeds: number;
}

/**
 * Clusters `points` [n, d] into k centroids. When n <= k every point becomes its own centroid (the other
 * k - n rows are zero, `init` is ignored). A centroid may end without points only when the run stops at
 * maxIters (the last assignment pass is not followed by re-seeding) or fewer than k points are distinct.
 */
export async function kmeans(
  points: Float32Array,
  n: number,
  d: number,
  k: number,
  options: KmeansOptions,
): Promise<KmeansResult> {
  const maxAbs = checkPoints(points, n, d, k);
  const { seed, maxIters, map, init } = options;
  if (!Number.isInteger(maxIters) || maxIters < 0) {
    throw new InputError(`maxIters must be an integer >= 0, got ${maxIters}`);
  }
  if (n <= k) return ownCentroids(points, n, d, k);
  if (init) checkCentroids(init, k, d, "init");
  const lloyd = new Lloyd(points, n, d, k, init ?? kmeansPlusPlus(points, n, d, k, seed).centroids, map, maxAbs);
  let iterations = 0;
  let reseeds = 0;
  let converged = false;
  for (;;) {
    // The pass before the maxIters-th update is the last: it sums the SSE too (`sse()` then reads it).
    const changed = await lloyd.assign(iterations === maxIters);
    if (iterations > 0 && changed === 0) {
      converged = true;
      break;
    }
    if (iterations === maxIters) break;
    const empty = lloyd.update();
    iterations++;
    if (empty.length > 0) reseeds += await lloyd.reseed(empty);
  }
  const sse = await lloyd.sse();
  return { centroids: lloyd.centroids(), assignments: lloyd.finish(), sse, iterations, converged, reseeds };
}

/**
 * The nearest of k centroids [k, d] for each point [n, d] (ties to the lowest index), and the sum of the
 * squared distances.
 */
export async function assignNearest(
  points: Float32Array,
  n: number,
  d: number,
  centroids: Float32Array,
  k: number,
  map?: ParallelMap,
): Promise<{ assignments: Uint32Array; sse: number }> {
  const maxAbs = checkPoints(points, n, d, k);
  checkCentroids(centroids, k, d, "centroids");
  const lloyd = new Lloyd(points, n, d, k, centroids, map, maxAbs);
  await lloyd.assign(true);
  const sse = await lloyd.sse();
  return { assignments: lloyd.finish(), sse };
}

/**
 * Lloyd's algorithm step by step from given initial centroids, for `kmeans`, `assignNearest` and the
 * benchmark: `assign()` first, then `update()` (and `reseed()` for the empty clusters it reports) and
 * `assign()` again, as often as wanted, and `finish()` at the end. The arguments are not checked (`kmeans`
 * does that).
 *
 * Its shared arrays (the copy of the points a thread pool reads, the assignments, the bounds) are lent by
 * shared-recycle.ts; `finish()` hands the assignments to the caller and gives the others back, so the next
 * run (the next layer) reuses memory already touched instead of paying for fresh pages.
 */
export class Lloyd {
  private readonly points: Float32Array;
  /** Whether `points` is this run's copy (given back by `finish()`). */
  private readonly ownsPoints: boolean;
  /** The chunks (fixed by n and d: they fix the summation order) and the tasks' runs of chunks. */
  private readonly chunks: Array<[number, number]>;
  private readonly chunkSize: number;
  private readonly slices: Array<[start: number, end: number, chunks: number]>;
  /** The shared per-point state the assignment tasks read and write (the bounds empty when not kept). */
  private readonly state: { assignments: Uint32Array; upper: Float32Array; lower: Float32Array };
  /** The centroids of the current pass (float64, shared with the tasks) and their shifts. */
  private readonly widened: Float64Array;
  private readonly shift: Float64Array;
  private readonly groups: CentroidGroups;
  /** The current centroids; the shared copies catch up with them at the next pass. */
  private readonly current: Float32Array;
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;
  /** The last pass: points that changed centroid, that their bounds did not settle, and of those the ones
   *  searched again exactly in float64 (the SIMD search's answer was not provably exact), and the ones the
   *  integer scan settled alone (in fours: kmeans-scan-int.ts). */
  stats = { changed: 0, searched: 0, exact: 0, intProven: 0 };
  private passes = 0;
  /** Names this run for the kernel's point cache (kmeans-assign.ts's `runKey`). */
  private readonly runKey = nextRunKey();
  /** The integer scan's scale for this run (kmeans-scan-int.ts; 0: none). */
  private readonly intScale: number;
  private moved = false;
  private summed = false;
  private finished = false;
  /** The SSE summed by the last pass (`assign(true)`), while the centroids have not moved since. */
  private passSse: number | undefined;

  constructor(
    points: Float32Array,
    readonly n: number,
    readonly d: number,
    readonly k: number,
    init: Float32Array,
    private readonly map?: ParallelMap,
    /** The largest |coordinate| of the points, when the caller has it (`checkPoints`). */
    maxAbs?: number,
  ) {
    this.ownsPoints = map !== undefined && !(points.buffer instanceof SharedArrayBuffer);
    if (this.ownsPoints) {
      this.points = takeShared(Float32Array, n * d);
      this.points.set(points.subarray(0, n * d));
    } else {
      this.points = points;
    }
    this.chunkSize = Math.max(1, Math.floor(CHUNK_COORDS / d));
    this.chunks = chunkRanges(n, this.chunkSize);
    const tasks = Math.min(this.chunks.length, (this.rescanNext() ? 1 : TASKS_PER_THREAD) * (map?.threads ?? 1));
    this.slices = [];
    for (let s = 0; s < tasks; s++) {
      const c0 = Math.floor((s * this.chunks.length) / tasks);
      const c1 = Math.floor(((s + 1) * this.chunks.length) / tasks);
      if (c1 > c0) this.slices.push([this.chunks[c0][0], this.chunks[c1 - 1][1], c1 - c0]);
    }
    // Without bounds (every pass after the first searches every point) no pass reads or writes them.
    const bounds = !this.rescanNext() ? n : 0;
    // Lent, not cleared: the first pass writes every point's assignment and bounds before any is read.
    this.state = {
      assignments: takeShared(Uint32Array, n),
      upper: bounds > 0 ? takeShared(Float32Array, bounds) : sharedArray(Float32Array, 0),
      lower: bounds > 0 ? takeShared(Float32Array, bounds) : sharedArray(Float32Array, 0),
    };
    this.widened = sharedArray(Float64Array, k * d);
    this.shift = sharedArray(Float64Array, k);
    this.groups = new CentroidGroups(k, d);
    this.current = Float32Array.from(init);
    // Every later centroid is a mean of points or a point: within the points' and the start's range.
    this.intScale = intScanScale(Math.max(maxAbs ?? maxAbsOf(points.subarray(0, n * d)), maxAbsOf(init)), d);
    this.sums = new Float64Array(k * d);
    this.counts = new Float64Array(k);
  }

  /**
   * Assigns every point to its nearest current centroid; returns how many changed (all, the first time).
   * With `withSse`, the same pass sums the SSE that `sse()` would (the same parts in the same order, so
   * the same bits), and `sse()` returns it until the centroids move.
   */
  async assign(withSse = false): Promise<number> {
    const { k, d, groups: g } = this;
    const fresh = this.passes === 0;
    let shifts = { max: 0, at: -1, second: 0 };
    if (fresh || this.moved) {
      if (!fresh) shifts = centroidShifts(this.current, this.widened, this.shift, k, d);
      for (let i = 0; i < k * d; i++) this.widened[i] = this.current[i];
      g.build(this.current);
    } else {
      this.shift.fill(0);
    }
    this.moved = false;
    const base: Omit<AssignInput, "start" | "end"> = {
      points: this.points,
      d,
      k,
      chunk: this.chunkSize,
      ...this.state,
      fresh,
      rescan: !fresh && (this.rescanNext() || this.rescanOnce()),
      keepBounds: !this.rescanNext(),
      withSse,
      runKey: this.runKey,
      intScale: this.intScale,
      centroids: this.widened,
      shift: this.shift,
      maxShift: shifts.max,
      maxShiftAt: shifts.at,
      secondShift: shifts.second,
      groups: g.groups,
      blockCount: g.blockCount,
      blocks: g.blocks,
      laneCentroid: g.laneCentroid,
      groupStart: g.groupStart,
      boxes: g.boxes,
      groupOf: g.groupOf,
      half: g.half,
    };
    const outs = await this.run<AssignInput, AssignOutput>(
      "kmeans.assign",
      kmeansAssignTask,
      this.slices.map(([start, end]) => ({ ...base, start, end })),
    );
    const { sums, counts } = this;
    sums.fill(0);
    counts.fill(0);
    let sse = 0;
    let changed = 0;
    let searched = 0;
    let exact = 0;
    let intProven = 0;
    const kd = k * d;
    for (const o of outs) {
      // Chunk by chunk, in order: the same additions whatever the tasks.
      for (let c = 0, chunks = o.counts.length / k; c < chunks; c++) {
        for (let i = 0, p = c * kd; i < kd; i++) sums[i] += o.sums[p + i];
        for (let j = 0, p = c * k; j < k; j++) counts[j] += o.counts[p + j];
      }
      // Chunk by chunk, in order, as `sse()` adds its parts.
      if (withSse) for (const part of o.sse!) sse += part;
      changed += o.changed;
      searched += o.searched;
      exact += o.exact;
      intProven += o.intProven;
    }
    this.stats = { changed, searched, exact, intProven };
    this.passes++;
    this.summed = true;
    this.passSse = withSse ? sse : undefined;
    return changed;
  }

  /**
   * Moves every centroid to the mean of its points (summed in float64, stored as float32). An empty
   * cluster keeps its centroid; their indices are returned.
   */
  update(): number[] {
    if (!this.summed) throw new Error("Lloyd.update() needs an assign() first");
    const { k, d, sums, counts, current } = this;
    const empty: number[] = [];
    for (let j = 0; j < k; j++) {
      if (counts[j] === 0) {
        empty.push(j);
        continue;
      }
      for (let t = 0; t < d; t++) current[j * d + t] = sums[j * d + t] / counts[j];
    }
    this.summed = false;
    this.moved = true;
    this.passSse = undefined;
    return empty;
  }

  /**
   * Moves the given (empty) centroids onto the worst-fitted points: the largest distances to their own
   * current centroid, ties to the lowest point index, the worst to the first. Points already on their
   * centroid are never used, so fewer may be re-seeded; returns how many were.
   */
  async reseed(empty: readonly number[]): Promise<number> {
    const { d } = this;
    const centroids = Float64Array.from(this.current);
    const outs = await this.run<WorstInput, WorstOutput>(
      "kmeans.worst",
      kmeansWorstTask,
      this.chunks.map(([start, end]) => ({
        points: this.points,
        d,
        start,
        end,
        centroids,
        assignments: this.state.assignments,
        count: empty.length,
      })),
    );
    const candidates: Array<[dist: number, index: number]> = [];
    for (const o of outs) for (let i = 0; i < o.index.length; i++) candidates.push([o.dist[i], o.index[i]]);
    candidates.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    const used = Math.min(empty.length, candidates.length);
    for (let e = 0; e < used; e++) {
      const p = candidates[e][1];
      this.current.set(this.points.subarray(p * d, p * d + d), empty[e] * d);
    }
    this.moved = true;
    this.passSse = undefined;
    return used;
  }

  /** Sum of squared distances of the points to their assigned current centroids, exactly, in float64. */
  async sse(): Promise<number> {
    if (this.passSse !== undefined) return this.passSse;
    const centroids = Float64Array.from(this.current);
    const outs = await this.run<SseInput, SseOutput>(
      "kmeans.sse",
      kmeansSseTask,
      this.slices.map(([start, end]) => ({
        points: this.points,
        d: this.d,
        start,
        end,
        chunk: this.chunkSize,
        centroids,
        assignments: this.state.assignments,
      })),
    );
    // Chunk by chunk, in order.
    let sse = 0;
    for (const o of outs) for (const part of o.parts) sse += part;
    return sse;
  }

  /**
   * Whether every pass should search every point, no bounds kept: at k <= 16 the kernel's scan
   * (kmeans-scan.ts) goes over all centroids of a point, in place, in about the time the bounds take
   * (copying them in and out, testing, tightening, queueing), and they leave 40 to 60% of the points
   * to search anyway. Measured (the passes' time, one thread, standard normal data): with the bounds
   * pass of the scan (kmeans-kernel.ts), 10 to 25% slower at k = 16 (d 4 and 8); at k = 64, once the
   * first passes are over (`rescanOnce`), a bounds pass takes 15 to 25% less than a full scan.
   */
  private rescanNext(): boolean {
    return this.k <= RESCAN_MAX_K;
  }

  /**
   * With bounds kept and the kernel's scan (k <= scanMaxK(d)): whether this pass should still search
   * every point (and leave fresh bounds), because the last one moved more than RESCAN_CHANGED of them:
   * the early passes, while the centroids move far, when the bounds would settle few points (measured on
   * standard normal data, k = 64 and 256: after the first pass 20 to 30% of the points move and the bounds
   * leave 85 to 100% to search; after the second, 11 to 14% and 50 to 90%) and cost more than they save.
   */
  private rescanOnce(): boolean {
    return this.k <= scanMaxK(this.d) && this.stats.changed > RESCAN_CHANGED * this.n;
  }

  /** A copy of the current centroids [k, d]. */
  centroids(): Float32Array {
    return this.current.slice();
  }

  /** A copy (in ordinary memory) of the assignments of the last pass. */
  assignments(): Uint32Array {
    return this.state.assignments.slice();
  }

  /**
   * Ends the run: returns the assignments of the last pass (the array itself, in shared memory, now the
   * caller's) and gives this run's other shared arrays back for reuse. No method may be called after.
   */
  finish(): Uint32Array {
    if (this.finished) throw new Error("Lloyd.finish() called twice");
    this.finished = true;
    giveBackShared(this.ownsPoints ? this.points : undefined, this.state.upper, this.state.lower);
    return this.state.assignments;
  }

  private run<I, O>(task: TaskName, direct: (input: I) => O, inputs: I[]): Promise<O[]> {
    return this.map ? this.map.run<I, O>(task, inputs) : Promise.resolve(inputs.map(direct));
  }
}

/** Run keys: a random base per thread (threads sharing a pool do not collide), then counted up. */
const runKeyBase = Math.floor(Math.random() * 2 ** 20) * 2 ** 32;
let runKeys = 0;
const nextRunKey = (): number => runKeyBase + ++runKeys;

function ownCentroids(points: Float32Array, n: number, d: number, k: number): KmeansResult {
  const centroids = new Float32Array(k * d);
  centroids.set(points.subarray(0, n * d));
  return {
    centroids,
    assignments: Uint32Array.from({ length: n }, (_, i) => i),
    sse: 0,
    iterations: 0,
    converged: true,
    reseeds: 0,
  };
}

/** Checks the points (finite, as many as n x d); returns their largest |coordinate|. */
function checkPoints(points: Float32Array, n: number, d: number, k: number): number {
  if (!Number.isInteger(n) || n < 0) throw new InputError(`point count must be an integer >= 0, got ${n}`);
  if (!Number.isInteger(d) || d < 1) throw new InputError(`dimension must be an integer >= 1, got ${d}`);
  if (!Number.isInteger(k) || k < 1) throw new InputError(`centroid count must be an integer >= 1, got ${k}`);
  if (points.length !== n * d) throw new InputError(`expected ${n} x ${d} = ${n * d} values, got ${points.length}`);
  return checkFinite(points, "points");
}

function checkCentroids(c: Float32Array, k: number, d: number, what: string): void {
  if (c.length !== k * d) throw new InputError(`${what}: expected ${k} x ${d} = ${k * d} values, got ${c.length}`);
  checkFinite(c, what);
}

/** Throws on a value that is not finite; returns the largest |value|. */
function checkFinite(a: Float32Array, what: string): number {
  // Fast test on the bits first: an exponent field of all ones (Infinity, NaN) makes
  // (bits & 0x7f800000) + 0x00800000 reach 2^31, the sign bit once truncated to int32 by `|`. The bits
  // without the sign order the magnitudes of finite floats as integers.
  const bits = new Int32Array(a.buffer, a.byteOffset, a.length);
  let bad = 0;
  let max = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    bad |= (b & 0x7f800000) + 0x00800000;
    const m = b & 0x7fffffff;
    max = m > max ? m : max;
  }
  if (bad < 0) {
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(a[i])) throw new InputError(`${what}: value ${i} is ${a[i]}, not a finite number`);
    }
  }
  return new Float32Array(Int32Array.of(max).buffer)[0]!;
}

/** The largest |value| of finite values. */
function maxAbsOf(a: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]!));
  return max;
}
