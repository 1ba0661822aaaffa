/**
 * k-means on row-major Float32Array points [n, d] (DESIGN.md section 1): seeded k-means++ on a sample of
 * at most SAMPLE_PER_CENTROID points per centroid, then Lloyd iterations over all points until no
 * assignment changes or `maxIters`, empty clusters re-seeded from the worst-fitted points.
 *
 * Exactness. Every assignment is the centroid with the smallest squared distance computed as
 * sum_t (x_t - c_t)^2 in float64, from t = 0 up, ties going to the lowest index: exactly what a brute-force
 * double loop returns. The fast paths below only skip centroids (and points) that the triangle inequality
 * proves to be strictly farther, with a relative slack (SLACK) far above float64 rounding, so they never
 * change a result, only the time it takes.
 *
 * Determinism. The points are cut into chunks whose boundaries depend on n and d only; each chunk is one
 * task (`kmeansAssignTask`, ...) of a `ParallelMap`; a point's result depends only on the point, the
 * centroids and its own bounds; partial sums are added in chunk order. So the same seed gives the same
 * bytes whatever the map and its thread count.
 *
 * Speed (the nearest-centroid search is the hot loop):
 *  - per point, Hamerly's bounds: an upper bound u on the distance to its centroid and a lower bound l on
 *    the distance to every other one, carried across passes by the centroid shifts. A point with u < l
 *    (or u < half the distance from its centroid to the nearest other one) keeps its centroid without
 *    any search, often without computing any distance;
 *  - the other points are searched by one of three exact methods chosen from n, d and k (`Method`):
 *    walking neighbour lists (each centroid's others by distance; the walk moves to any closer centroid
 *    and stops at the first neighbour farther than twice the best distance: none beyond can be closer),
 *    walking the centroids sorted along one axis, or scanning all centroids four points at a time;
 *  - unrolled distances for d = 4 and d = 8;
 *  - all cores through the caller's `ParallelMap`, with the points and per-point state in shared memory.
 */
import { InputError } from "../errors.js";
import { chunkRanges, sharedArray, sharedCopy, type ParallelMap } from "../parallel.js";
import { Rng } from "../rng.js";
import type { TaskName } from "../task-names.js";

/** k-means++ runs on a random sample of at most this many points per centroid. */
export const SAMPLE_PER_CENTROID = 256;
/** Each task covers about this many coordinates (a fixed count of points for a given d). */
const CHUNK_COORDS = 1 << 16;
/** Relative slack on every pruning test and bound: rounding errors are below 1e-13 for d < 1e3. */
const SLACK = 1e-9;
/** Bounds are stored as float32, rounded outwards by this relative amount (float32 rounds by <= 2^-24). */
const F32_OUTWARD = 2 ** -20;
/** Neighbour lists take k(k-1) entries and O(k^2) work per pass: used while k <= this and k^2 <= 16n. */
const NEIGHBOUR_MAX_K = 1024;
/** Largest d for the "lists" and "axis" searches (measured: beyond, "scan" is faster; see `Method`). */
const LISTS_MAX_D = 8;
const AXIS_MAX_D = 4;

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
  /** The nearest centroid of each point (ties to the lowest index) for the returned centroids. */
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
  checkPoints(points, n, d, k);
  const { seed, maxIters, map, init } = options;
  if (!Number.isInteger(maxIters) || maxIters < 0) {
    throw new InputError(`maxIters must be an integer >= 0, got ${maxIters}`);
  }
  if (n <= k) return ownCentroids(points, n, d, k);
  if (init) checkCentroids(init, k, d, "init");
  const lloyd = new Lloyd(points, n, d, k, init ?? kmeansPlusPlus(points, n, d, k, seed).centroids, map);
  let iterations = 0;
  let reseeds = 0;
  let converged = false;
  for (;;) {
    const changed = await lloyd.assign();
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
  return { centroids: lloyd.centroids(), assignments: lloyd.assignments(), sse, iterations, converged, reseeds };
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
  checkPoints(points, n, d, k);
  checkCentroids(centroids, k, d, "centroids");
  const lloyd = new Lloyd(points, n, d, k, centroids, map);
  await lloyd.assign();
  return { assignments: lloyd.assignments(), sse: await lloyd.sse() };
}

/**
 * Seeded k-means++ (D^2 sampling) on a uniform sample of min(n, SAMPLE_PER_CENTROID * k) points, whose
 * indices (increasing) are returned as `sample`. The centroids are sample points. Needs n >= 1, k >= 1.
 */
export function kmeansPlusPlus(
  points: Float32Array,
  n: number,
  d: number,
  k: number,
  seed: number,
): { centroids: Float32Array; sample: Uint32Array } {
  const rng = new Rng(seed);
  const sample = Uint32Array.from(rng.sampleIndices(n, Math.min(n, SAMPLE_PER_CENTROID * k)));
  const m = sample.length;
  const xs = new Float32Array(m * d);
  for (let i = 0; i < m; i++) xs.set(points.subarray(sample[i] * d, sample[i] * d + d), i * d);
  const centroids = new Float64Array(k * d);
  const nearest = new Uint32Array(m); // index of the closest centroid chosen so far
  const best = new Float64Array(m); // squared distance to it
  const between = new Float64Array(k); // squared distances from the newest centroid to the earlier ones
  let pick = rng.int(m);
  centroids.set(xs.subarray(pick * d, pick * d + d), 0);
  for (let i = 0; i < m; i++) best[i] = dist2(xs, i * d, centroids, 0, d);
  for (let c = 1; c < k; c++) {
    let total = 0;
    for (let i = 0; i < m; i++) total += best[i];
    if (total > 0) {
      // The first point where the running sum passes r; the last positive one if rounding leaves r unreached.
      const r = rng.next() * total;
      let acc = 0;
      for (let i = 0; i < m; i++) {
        if (best[i] === 0) continue;
        pick = i;
        acc += best[i];
        if (acc > r) break;
      }
    } else {
      pick = rng.int(m); // fewer than k distinct points: any point, a duplicate
    }
    centroids.set(xs.subarray(pick * d, pick * d + d), c * d);
    for (let j = 0; j < c; j++) between[j] = centroidDist2(centroids, j * d, centroids, c * d, d);
    for (let i = 0; i < m; i++) {
      // |x - new| >= |own - new| - |x - own| > |x - own| when |own - new|^2 > 4 |x - own|^2: no change.
      if (between[nearest[i]] > 4 * best[i] * (1 + SLACK)) continue;
      const dd = dist2(xs, i * d, centroids, c * d, d);
      if (dd < best[i]) {
        best[i] = dd;
        nearest[i] = c;
      }
    }
  }
  return { centroids: Float32Array.from(centroids), sample };
}

/**
 * Lloyd's algorithm step by step from given initial centroids, for `kmeans`, `assignNearest` and the
 * benchmark: `assign()` first, then `update()` (and `reseed()` for the empty clusters it reports) and
 * `assign()` again, as often as wanted. The arguments are not checked (`kmeans` does that).
 */
export class Lloyd {
  private readonly points: Float32Array;
  private readonly chunks: Array<[number, number]>;
  /** The shared per-point state the assignment tasks read and write. */
  private readonly state: { assignments: Uint32Array; upper: Float32Array; lower: Float32Array };
  /** The geometry of the centroids of the current pass, shared with the tasks (see `AssignInput`). */
  private readonly geometry: Geometry;
  /** The current centroids; `geometry` catches up with them at the next pass. */
  private readonly current: Float32Array;
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;
  private readonly method: Method;
  /** The coordinate along which `geometry.order` sorts the centroids. */
  private axis = 0;
  private passes = 0;
  private moved = false;
  private summed = false;

  constructor(
    points: Float32Array,
    readonly n: number,
    readonly d: number,
    readonly k: number,
    init: Float32Array,
    private readonly map?: ParallelMap,
  ) {
    this.points = map ? sharedCopy(points) : points;
    this.chunks = chunkRanges(n, Math.max(1, Math.floor(CHUNK_COORDS / d)));
    this.state = {
      assignments: sharedArray(Uint32Array, n),
      upper: sharedArray(Float32Array, n),
      lower: sharedArray(Float32Array, n),
    };
    this.method = chooseMethod(n, d, k);
    const lists = this.method === "lists" ? k : 0; // each method fills only its own arrays
    const sorted = this.method === "axis" ? k : 0;
    this.geometry = {
      centroids: sharedArray(Float64Array, k * d),
      shift: sharedArray(Float64Array, k),
      order: sharedArray(Uint32Array, sorted),
      orderValue: sharedArray(Float64Array, sorted),
      neighbours: sharedArray(Uint32Array, lists * (k - 1)),
      neighbourDist: sharedArray(Float32Array, lists * (k - 1)),
      tree: sharedArray(Uint32Array, lists),
      treeDim: sharedArray(Uint32Array, lists),
      treeValue: sharedArray(Float64Array, lists),
    };
    this.current = Float32Array.from(init);
    this.sums = new Float64Array(k * d);
    this.counts = new Float64Array(k);
  }

  /** Assigns every point to its nearest current centroid; returns how many changed (all, the first time). */
  async assign(): Promise<number> {
    const { k, d } = this;
    const shifts = this.refreshGeometry();
    const base: Omit<AssignInput, "start" | "end"> = {
      points: this.points,
      d,
      k,
      ...this.state,
      ...this.geometry,
      fresh: this.passes === 0,
      axis: this.axis,
      method: this.method,
      maxShift: shifts.max,
      maxShiftAt: shifts.at,
      secondShift: shifts.second,
    };
    const outs = await this.run<AssignInput, AssignOutput>(
      "kmeans.assign",
      kmeansAssignTask,
      this.chunks.map(([start, end]) => ({ ...base, start, end })),
    );
    this.sums.fill(0);
    this.counts.fill(0);
    let changed = 0;
    for (const o of outs) {
      for (let i = 0; i < k * d; i++) this.sums[i] += o.sums[i];
      for (let j = 0; j < k; j++) this.counts[j] += o.counts[j];
      changed += o.changed;
    }
    this.passes++;
    this.summed = true;
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
    return used;
  }

  /** Sum of squared distances of the points to their assigned current centroids, exactly, in float64. */
  async sse(): Promise<number> {
    const centroids = Float64Array.from(this.current);
    const outs = await this.run<SseInput, SseOutput>(
      "kmeans.sse",
      kmeansSseTask,
      this.chunks.map(([start, end]) => ({
        points: this.points,
        d: this.d,
        start,
        end,
        centroids,
        assignments: this.state.assignments,
      })),
    );
    let sse = 0;
    for (const o of outs) sse += o.sse;
    return sse;
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
   * Brings `geometry` to the current centroids and returns the largest shift since the previous pass
   * (with its centroid) and the second largest, which update the lower bounds.
   */
  private refreshGeometry(): Shifts {
    const { k, d, current, geometry: g } = this;
    const shifts: Shifts = { max: 0, at: -1, second: 0 };
    if (this.passes > 0) {
      if (!this.moved) {
        g.shift.fill(0);
        return shifts;
      }
      for (let j = 0; j < k; j++) {
        const s = Math.sqrt(dist2(current, j * d, g.centroids, j * d, d)) * (1 + SLACK);
        g.shift[j] = s;
        if (s > shifts.max) {
          shifts.second = shifts.max;
          shifts.max = s;
          shifts.at = j;
        } else if (s > shifts.second) shifts.second = s;
      }
    }
    for (let i = 0; i < k * d; i++) g.centroids[i] = current[i];
    if (this.method === "lists") {
      sortNeighbours(g, k, d, this.passes > 0);
      if (this.passes === 0) buildTree(g, k, d);
    } else if (this.method === "axis") {
      this.axis = sortAlongAxis(g, k, d);
    }
    this.moved = false;
    return shifts;
  }

  private run<I, O>(task: TaskName, direct: (input: I) => O, inputs: I[]): Promise<O[]> {
    return this.map ? this.map.run<I, O>(task, inputs) : Promise.resolve(inputs.map(direct));
  }
}

/**
 * How a pass searches for the nearest centroid of a point whose bounds do not settle it. All are exact
 * and give the same results; they differ in speed:
 *  - "lists": walk the neighbour lists (low d, where a centroid has few neighbours within reach);
 *  - "axis": walk the centroids sorted along one axis (low d, k too large for lists);
 *  - "scan": every centroid, four points at a time (higher d, where pruning examines most centroids
 *    anyway); it gives the exact second nearest too, the tightest lower bound.
 */
type Method = "lists" | "axis" | "scan";

function chooseMethod(n: number, d: number, k: number): Method {
  if (k >= 2 && k <= NEIGHBOUR_MAX_K && k * k <= 16 * n && d <= LISTS_MAX_D) return "lists";
  return d <= AXIS_MAX_D ? "axis" : "scan";
}

/**
 * Centroid data shared by all chunks of one assignment pass. Only the arrays of the pass's method are
 * filled: `order` for "axis", the neighbour lists and the k-d tree for "lists".
 */
interface Geometry {
  /** [k, d], the float32 centroids widened. */
  centroids: Float64Array;
  /** Upper bound on how far each centroid moved since the previous pass. */
  shift: Float64Array;
  /** Centroid indices sorted by their coordinate `axis` (ties by index), and those coordinates. */
  order: Uint32Array;
  orderValue: Float64Array;
  /** Row a (k - 1 entries) lists the other centroids by distance from a, ascending (ties by index), and
   *  `neighbourDist` lower bounds of those distances. */
  neighbours: Uint32Array;
  neighbourDist: Float32Array;
  /** A k-d tree over the centroids (first pass only, see `buildTree`). */
  tree: Uint32Array;
  treeDim: Uint32Array;
  treeValue: Float64Array;
}

interface Shifts {
  max: number;
  at: number;
  second: number;
}

/** Fills `order`/`orderValue` along the coordinate in which the centroids vary most; returns it. */
function sortAlongAxis(g: Geometry, k: number, d: number): number {
  const c = g.centroids;
  let axis = 0;
  let bestVar = -1;
  for (let t = 0; t < d; t++) {
    let mean = 0;
    for (let j = 0; j < k; j++) mean += c[j * d + t];
    mean /= k;
    let v = 0;
    for (let j = 0; j < k; j++) v += (c[j * d + t] - mean) ** 2;
    if (v > bestVar) {
      bestVar = v;
      axis = t;
    }
  }
  const order = Array.from({ length: k }, (_, j) => j).sort((a, b) => c[a * d + axis] - c[b * d + axis] || a - b);
  for (let r = 0; r < k; r++) {
    g.order[r] = order[r];
    g.orderValue[r] = c[order[r] * d + axis];
  }
  return axis;
}

/**
 * Fills the neighbour lists. Distances are stored as float32 rounded down (still lower bounds), so a row
 * sorts natively as numbers with key = float32 bits * NEIGHBOUR_MAX_K + index (distance, then index).
 * Centroids move little between passes, so with `fromPrevious` each row starts from its previous order,
 * nearly sorted: an insertion sort then costs about one comparison per entry.
 */
function sortNeighbours(g: Geometry, k: number, d: number, fromPrevious: boolean): void {
  const c = g.centroids;
  const dist = new Float32Array(k * k);
  const bits = new Uint32Array(dist.buffer);
  for (let a = 0; a < k; a++) {
    for (let b = a + 1; b < k; b++) {
      const v = Math.sqrt(centroidDist2(c, a * d, c, b * d, d)) * (1 - SLACK);
      dist[a * k + b] = v;
      if (dist[a * k + b] > v) bits[a * k + b]--;
      dist[b * k + a] = dist[a * k + b];
    }
  }
  const keys = new Float64Array(k - 1);
  for (let a = 0; a < k; a++) {
    const row = a * (k - 1);
    if (fromPrevious) {
      for (let r = 0; r < k - 1; r++) {
        const j = g.neighbours[row + r];
        keys[r] = bits[a * k + j] * NEIGHBOUR_MAX_K + j;
      }
      insertionSort(keys);
    } else {
      for (let b = 0, r = 0; b < k; b++) if (b !== a) keys[r++] = bits[a * k + b] * NEIGHBOUR_MAX_K + b;
      keys.sort();
    }
    for (let r = 0; r < k - 1; r++) {
      const j = keys[r] - Math.floor(keys[r] / NEIGHBOUR_MAX_K) * NEIGHBOUR_MAX_K; // exact: a power of 2
      g.neighbours[row + r] = j;
      g.neighbourDist[row + r] = dist[a * k + j];
    }
  }
}

/**
 * A k-d tree over the centroids, to start the first pass's search from a nearby centroid. Implicit: the
 * node covering ranks [lo, hi) of `tree` (centroid indices) splits at mid = (lo + hi) >>> 1 along
 * `treeDim[mid]` (the coordinate with the largest range there) at `treeValue[mid]`: ranks below mid hold
 * the centroids with smaller coordinates.
 */
function buildTree(g: Geometry, k: number, d: number): void {
  const c = g.centroids;
  for (let j = 0; j < k; j++) g.tree[j] = j;
  const build = (lo: number, hi: number): void => {
    if (hi - lo < 2) return;
    let dim = 0;
    let range = -1;
    for (let t = 0; t < d; t++) {
      let min = Infinity;
      let max = -Infinity;
      for (let r = lo; r < hi; r++) {
        const v = c[g.tree[r] * d + t];
        min = Math.min(min, v);
        max = Math.max(max, v);
      }
      if (max - min > range) {
        range = max - min;
        dim = t;
      }
    }
    g.tree.subarray(lo, hi).sort((a, b) => c[a * d + dim] - c[b * d + dim] || a - b);
    const mid = (lo + hi) >>> 1;
    g.treeDim[mid] = dim;
    g.treeValue[mid] = c[g.tree[mid] * d + dim];
    build(lo, mid);
    build(mid, hi);
  };
  build(0, k);
}

export interface AssignInput extends Geometry {
  points: Float32Array;
  d: number;
  k: number;
  start: number;
  end: number;
  /** Shared [n]: the previous assignment, overwritten with the new one. */
  assignments: Uint32Array;
  /** Shared [n]: upper bound on the distance to the assigned centroid, lower bound to any other one. */
  upper: Float32Array;
  lower: Float32Array;
  /** First pass: no previous assignment or bounds. */
  fresh: boolean;
  method: Method;
  axis: number;
  /** The largest shift, its centroid, and the second largest. */
  maxShift: number;
  maxShiftAt: number;
  secondShift: number;
}

export interface AssignOutput {
  /** [k, d] sums of the chunk's points per assigned centroid, and their counts. */
  sums: Float64Array;
  counts: Uint32Array;
  /** Points whose assignment changed (every point on the first pass). */
  changed: number;
}

/** One chunk of an assignment pass (see the file comment). */
export function kmeansAssignTask(t: AssignInput): AssignOutput {
  const { points, d, k, start, end, assignments, upper, lower, centroids, shift, neighbourDist } = t;
  const { fresh, method, maxShift, maxShiftAt, secondShift } = t;
  const search = new Search(t);
  const lists = method === "lists";
  // Points left for the four-at-a-time scan (method "scan"), as point indices.
  const waiting = new Uint32Array(method === "scan" ? end - start : 0);
  let waited = 0;
  let changed = 0;
  /** Records point i's new centroid a, at squared distance bestSq, every other one at least `l` away. */
  const settle = (i: number, a: number, bestSq: number, l: number): void => {
    if (fresh || a !== assignments[i]) changed++;
    assignments[i] = a;
    upper[i] = Math.fround(Math.sqrt(bestSq) * (1 + SLACK) * (1 + F32_OUTWARD));
    lower[i] = l > 0 ? Math.fround(l * (1 - F32_OUTWARD)) : 0;
  };
  for (let i = start; i < end; i++) {
    const xo = i * d;
    let from = -1;
    let fromSq = Infinity;
    if (!fresh) {
      from = assignments[i];
      // Hamerly: bounds carried over from the previous pass by the centroid shifts. When u < half,
      // every other centroid j has |x - c_j| >= |c_a - c_j| - u >= 2 half - u > u.
      let u = (upper[i] + shift[from]) * (1 + SLACK);
      const l = lower[i] * (1 - SLACK) - (from === maxShiftAt ? secondShift : maxShift);
      const half = lists ? neighbourDist[from * (k - 1)] * 0.5 : 0;
      if (!(u < l || u < half)) {
        fromSq = dist2(points, xo, centroids, from * d, d);
        u = Math.sqrt(fromSq) * (1 + SLACK);
      }
      if (u < l || u < half) {
        upper[i] = Math.fround(u * (1 + F32_OUTWARD));
        lower[i] = l > 0 ? Math.fround(l * (1 - F32_OUTWARD)) : 0;
        continue;
      }
    }
    if (waiting.length > 0) {
      waiting[waited++] = i;
    } else {
      search.nearest(xo, from, fromSq);
      settle(i, search.bestIndex, search.bestSq, search.lowerBound());
    }
  }
  for (let w = 0; w < waited; w += 4) {
    // A short last group repeats its last point.
    const p0 = waiting[w];
    const p1 = waiting[Math.min(w + 1, waited - 1)];
    const p2 = waiting[Math.min(w + 2, waited - 1)];
    const p3 = waiting[Math.min(w + 3, waited - 1)];
    search.scanFour(p0 * d, p1 * d, p2 * d, p3 * d);
    const { fourIndex, fourBest, fourSecond } = search;
    for (let q = 0; q < 4 && w + q < waited; q++) {
      settle(waiting[w + q], fourIndex[q], fourBest[q], Math.sqrt(fourSecond[q]) * (1 - SLACK));
    }
  }
  const sums = new Float64Array(k * d);
  const counts = new Uint32Array(k);
  for (let i = start; i < end; i++) {
    const a = assignments[i];
    counts[a]++;
    for (let q = 0, co = a * d, xo = i * d; q < d; q++) sums[co + q] += points[xo + q];
  }
  return { sums, counts, changed };
}

/**
 * The nearest-centroid search, one point at a time. After `nearest`, the best centroid (index, squared
 * distance) and `lowerBound()`, a lower bound on the distance to every other centroid.
 */
class Search {
  bestIndex = 0;
  bestSq = Infinity;
  /** The second smallest squared distance among the centroids examined. */
  private secondSq = Infinity;
  /** A lower bound on the distance to the centroids not examined. */
  private skipped = Infinity;
  private readonly points: Float32Array;
  private readonly centroids: Float64Array;
  private readonly d: number;
  private readonly k: number;
  private readonly axis: number;
  private readonly order: Uint32Array;
  private readonly orderValue: Float64Array;
  private readonly lists: boolean;
  private readonly neighbourIndex: Uint32Array;
  private readonly neighbourDist: Float32Array;
  private readonly tree: Uint32Array;
  private readonly treeDim: Uint32Array;
  private readonly treeValue: Float64Array;

  constructor(t: AssignInput) {
    this.points = t.points;
    this.centroids = t.centroids;
    this.d = t.d;
    this.k = t.k;
    this.axis = t.axis;
    this.order = t.order;
    this.orderValue = t.orderValue;
    this.lists = t.method === "lists";
    this.neighbourIndex = t.neighbours;
    this.neighbourDist = t.neighbourDist;
    this.tree = t.tree;
    this.treeDim = t.treeDim;
    this.treeValue = t.treeValue;
  }

  /**
   * Finds the nearest centroid to the point at offset xo, starting from centroid `from` at squared
   * distance `fromSq` (its previous one), or from scratch when from = -1.
   */
  nearest(xo: number, from: number, fromSq: number): void {
    if (!this.lists) {
      this.alongAxis(xo, from, fromSq);
    } else if (from >= 0) {
      this.descend(xo, from, fromSq);
    } else {
      const g = this.treeLeaf(xo);
      this.descend(xo, g, dist2(this.points, xo, this.centroids, g * this.d, this.d));
    }
  }

  lowerBound(): number {
    return Math.min(Math.sqrt(this.secondSq) * (1 - SLACK), this.skipped);
  }

  /**
   * Walks the neighbour lists from centroid a: examines a's neighbours nearest first and, as soon as one
   * is closer to the point, carries on from that one's list. The centroid whose list is read is always
   * the best so far, at distance u: a neighbour j farther from it than 2u cannot be closer to the point
   * (|x - c_j| >= |c_a - c_j| - u > u), nor can any later one, so the search ends there.
   */
  private descend(xo: number, a: number, uSq: number): void {
    const { points, centroids, d, k, neighbourIndex, neighbourDist } = this;
    this.start(a, uSq);
    let u = Math.sqrt(uSq);
    let reach = 2 * u * (1 + SLACK);
    let r = a * (k - 1);
    let end = r + k - 1;
    this.skipped = Infinity;
    while (r < end) {
      const dc = neighbourDist[r];
      if (dc > reach) {
        this.skipped = dc - u - (dc + u) * SLACK;
        return;
      }
      const j = neighbourIndex[r++];
      if (this.consider(j, dist2(points, xo, centroids, j * d, d))) {
        u = Math.sqrt(this.bestSq);
        reach = 2 * u * (1 + SLACK);
        r = j * (k - 1);
        end = r + k - 1;
      }
    }
  }

  /**
   * Walks the centroids outwards along the axis from the point's coordinate: a centroid whose gap along
   * the axis exceeds the best distance is farther, and so is every centroid beyond it on that side.
   * `from` (-1 for none) is examined first.
   */
  private alongAxis(xo: number, from: number, fromSq: number): void {
    const { points, centroids, d, k, order, orderValue: value } = this;
    this.start(from, fromSq);
    const px = points[xo + this.axis];
    let right = this.axisRank(xo);
    let left = right - 1;
    let gapLeft = left >= 0 ? px - value[left] : Infinity;
    let gapRight = right < k ? value[right] - px : Infinity;
    while (left >= 0 || right < k) {
      const limit = this.bestSq * (1 + SLACK);
      let j: number;
      if (gapLeft <= gapRight) {
        if (gapLeft * gapLeft > limit) break;
        j = order[left--];
        gapLeft = left >= 0 ? px - value[left] : Infinity;
      } else {
        if (gapRight * gapRight > limit) break;
        j = order[right++];
        gapRight = right < k ? value[right] - px : Infinity;
      }
      this.consider(j, dist2(points, xo, centroids, j * d, d));
    }
    this.skipped = Math.min(gapLeft, gapRight) * (1 - SLACK);
  }

  /** After `scanFour`: for each of the four points, its nearest centroid and the two smallest distances. */
  readonly fourIndex = new Int32Array(4);
  readonly fourBest = new Float64Array(4);
  readonly fourSecond = new Float64Array(4);

  /**
   * Examines every centroid for four points at once (offsets o0..o3), which reuses each centroid
   * coordinate four times: the exact nearest and second nearest, for high d where pruning fails.
   */
  scanFour(o0: number, o1: number, o2: number, o3: number): void {
    const { points: x, centroids: c, d, k } = this;
    // Per point: best and second best squared distances, and the best index (locals: this is the hot loop).
    let b0 = Infinity;
    let b1 = Infinity;
    let b2 = Infinity;
    let b3 = Infinity;
    let s0 = Infinity;
    let s1 = Infinity;
    let s2 = Infinity;
    let s3 = Infinity;
    let i0 = 0;
    let i1 = 0;
    let i2 = 0;
    let i3 = 0;
    for (let j = 0, co = 0; j < k; j++, co += d) {
      let e0 = 0;
      let e1 = 0;
      let e2 = 0;
      let e3 = 0;
      for (let t = 0; t < d; t++) {
        const ct = c[co + t];
        const v0 = x[o0 + t] - ct;
        const v1 = x[o1 + t] - ct;
        const v2 = x[o2 + t] - ct;
        const v3 = x[o3 + t] - ct;
        e0 += v0 * v0;
        e1 += v1 * v1;
        e2 += v2 * v2;
        e3 += v3 * v3;
      }
      // Centroids come in index order, so a tie keeps the lower index (and the second equals the best).
      if (e0 < b0) {
        s0 = b0;
        b0 = e0;
        i0 = j;
      } else if (e0 < s0) s0 = e0;
      if (e1 < b1) {
        s1 = b1;
        b1 = e1;
        i1 = j;
      } else if (e1 < s1) s1 = e1;
      if (e2 < b2) {
        s2 = b2;
        b2 = e2;
        i2 = j;
      } else if (e2 < s2) s2 = e2;
      if (e3 < b3) {
        s3 = b3;
        b3 = e3;
        i3 = j;
      } else if (e3 < s3) s3 = e3;
    }
    this.fourIndex[0] = i0;
    this.fourIndex[1] = i1;
    this.fourIndex[2] = i2;
    this.fourIndex[3] = i3;
    this.fourBest[0] = b0;
    this.fourBest[1] = b1;
    this.fourBest[2] = b2;
    this.fourBest[3] = b3;
    this.fourSecond[0] = s0;
    this.fourSecond[1] = s1;
    this.fourSecond[2] = s2;
    this.fourSecond[3] = s3;
  }

  /** The first rank along the axis whose coordinate is not below the point's. */
  private axisRank(xo: number): number {
    const { k, orderValue: value } = this;
    const px = this.points[xo + this.axis];
    let lo = 0;
    let hi = k;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (value[mid] < px) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The centroid of the k-d tree leaf where the point falls: usually one of its nearest. */
  private treeLeaf(xo: number): number {
    const { points, tree, treeDim, treeValue } = this;
    let lo = 0;
    let hi = this.k;
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (points[xo + treeDim[mid]] < treeValue[mid]) hi = mid;
      else lo = mid;
    }
    return tree[lo];
  }

  private start(index: number, sq: number): void {
    this.bestIndex = index;
    this.bestSq = sq;
    this.secondSq = Infinity;
  }

  /** Takes centroid j at squared distance dd into account; true when it became the best. */
  private consider(j: number, dd: number): boolean {
    if (dd < this.bestSq || (dd === this.bestSq && j < this.bestIndex)) {
      this.secondSq = this.bestSq;
      this.bestSq = dd;
      this.bestIndex = j;
      return true;
    }
    if (j !== this.bestIndex && dd < this.secondSq) this.secondSq = dd;
    return false;
  }
}

export interface SseInput {
  points: Float32Array;
  d: number;
  start: number;
  end: number;
  centroids: Float64Array;
  assignments: Uint32Array;
}

export interface SseOutput {
  sse: number;
}

/** The chunk's sum of squared distances to the assigned centroids. */
export function kmeansSseTask(t: SseInput): SseOutput {
  const { points, d, centroids, assignments } = t;
  let sse = 0;
  for (let i = t.start; i < t.end; i++) sse += dist2(points, i * d, centroids, assignments[i] * d, d);
  return { sse };
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
function dist2(x: Float32Array, xo: number, c: Float64Array, co: number, d: number): number {
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
function centroidDist2(x: Float64Array, xo: number, c: Float64Array, co: number, d: number): number {
  let s = 0;
  for (let t = 0; t < d; t++) {
    const v = x[xo + t] - c[co + t];
    s += v * v;
  }
  return s;
}

/** Sorts ascending in place; linear time on nearly sorted input. */
function insertionSort(a: Float64Array): void {
  for (let i = 1; i < a.length; i++) {
    const v = a[i];
    let j = i - 1;
    if (a[j] <= v) continue;
    while (j >= 0 && a[j] > v) {
      a[j + 1] = a[j];
      j--;
    }
    a[j + 1] = v;
  }
}

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

function checkPoints(points: Float32Array, n: number, d: number, k: number): void {
  if (!Number.isInteger(n) || n < 0) throw new InputError(`point count must be an integer >= 0, got ${n}`);
  if (!Number.isInteger(d) || d < 1) throw new InputError(`dimension must be an integer >= 1, got ${d}`);
  if (!Number.isInteger(k) || k < 1) throw new InputError(`centroid count must be an integer >= 1, got ${k}`);
  if (points.length !== n * d) throw new InputError(`expected ${n} x ${d} = ${n * d} values, got ${points.length}`);
  checkFinite(points, "points");
}

function checkCentroids(c: Float32Array, k: number, d: number, what: string): void {
  if (c.length !== k * d) throw new InputError(`${what}: expected ${k} x ${d} = ${k * d} values, got ${c.length}`);
  checkFinite(c, what);
}

function checkFinite(a: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new InputError(`${what}: value ${i} is ${a[i]}, not a finite number`);
  }
}
