/**
 * `ssvq bench kmeans`: times the engine's Lloyd iterations against a plain single-threaded JavaScript
 * loop (`--compare plain`) or against scikit-learn's KMeans (`--compare sklearn`), on the same points and
 * the same start, in the same run.
 *
 * Data, per shape n x d x k: n points of dimension d, float32 standard normal values from
 * `new Rng(seed).fillNormal`; the same Rng then picks k distinct point indices (`sampleIndices`) as the
 * initial centroids. Every side does exactly `iters` Lloyd iterations (assign every point to its nearest
 * centroid, move every centroid to the mean of its points; an empty cluster keeps its centroid here, no
 * re-seeding, no early stop), then a final assignment and its sum of squared distances (SSE).
 *
 * Timing (the same rules for both sides): warm. The engine's thread pool is started, and its code
 * compiled, by an untimed run on the first 20,000 points before the timed runs (`warmupSeconds` says how
 * long that took, worker start-up included); scikit-learn is likewise imported and its OpenMP threads
 * started by an untimed fit on a subset (`sklearn.importSeconds` is the import alone); data generation and
 * loading are outside the clock. Timed: the engine's public `kmeans(points, { init, maxIters: iters })`, as
 * compress calls it (its input check, the copy of the points into shared memory, the passes, the SSE), and
 * for scikit-learn the whole `KMeans(k, init=<the same k points>, n_init=1, max_iter=iters, tol=0,
 * algorithm="lloyd").fit(X)` call on the float32 points (its validation and copies included), as
 * `sklearn.setting` names it. Best of `repeat` runs each (all are listed). The JSON's `timing` says the same.
 *
 * scikit-learn runs on all its OpenMP threads (its default; the JSON lists them), or on `sklearnThreads`
 * (`--sklearn-threads`: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS set for its process),
 * and the engine on `threads` workers. Both sides also report CPU seconds (user + system of every thread
 * of their process: `process.cpuUsage()` here, `time.process_time()` in Python), which say more than
 * wall-clock time on a loaded machine. scikit-learn computes in float32 (distances as |x|^2 - 2 x.c + |c|^2), so its SSE
 * is recomputed here from its centroids and labels in float64 the way the engine's is (`sklearnSse`;
 * its own float32 `inertia_` is listed too); `n_iter_` must equal `iters` (tol=0 stops earlier only when
 * no label changes, and then both sides sit at the same fixed point). The engine's SSE must not exceed
 * scikit-learn's by more than a relative 1e-6 (`sseOk`). Untimed, scikit-learn also fits the points widened
 * to float64 (`sklearnFloat64`): its float32 sums and distances are what separate its trajectory from an
 * exact Lloyd's, and in float64 the two agree. With `--compare plain` the plain loop must
 * agree with the engine to a relative 1e-6, or the benchmark throws.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseNpy, writeNpy } from "../core/calib/npy.js";
import { InputError } from "../core/errors.js";
import { Rng } from "../core/rng.js";
import { kmeans, Lloyd, type KmeansResult } from "../core/ssvq/kmeans.js";
import { dist2 } from "../core/ssvq/kmeans-assign.js";
import { createThreadPool, type ThreadPool } from "../io/pool.js";

export interface KmeansShape {
  n: number;
  d: number;
  k: number;
}

/** The shapes of the `--bits` table (d 4 and 8; k 16, 64, 256, 4096) at n = 500k (d 4) and 250k (d 8). */
export const TABLE_SHAPES: readonly KmeansShape[] = [4, 8].flatMap((d) =>
  [16, 64, 256, 4096].map((k) => ({ n: d === 4 ? 500000 : 250000, d, k })),
);

export type KmeansCompare = "plain" | "sklearn" | "none";

export interface KmeansBenchOptions {
  shapes: readonly KmeansShape[];
  iters: number;
  seed: number;
  threads: number;
  compare: KmeansCompare;
  /** Timed runs per side and shape (the best is reported). */
  repeat: number;
  /** The Python with scikit-learn (default: /usr/bin/python3, then python3 on PATH). */
  python?: string;
  /**
   * scikit-learn's threads: sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS for the Python
   * child (default: unset, all its OpenMP threads).
   */
  sklearnThreads?: number;
  /** Skip scikit-learn's untimed float64 reference fit (`sklearnFloat64`). */
  noFloat64?: boolean;
}

export interface KmeansShapeResult extends KmeansShape {
  /** Engine: best wall-clock seconds, every run's, and the final SSE. */
  seconds: number;
  runs: number[];
  /**
   * Engine: CPU seconds (user + system) of this process, every thread's (the pool's workers included),
   * per timed run, and the smallest. Under load, CPU time shows the work done better than wall-clock time.
   */
  cpuSeconds: number;
  cpuRuns: number[];
  sse: number;
  /** Points the bounds did not settle, as a share of all points, averaged over the passes. */
  searchedShare: number;
  /** Empty clusters met by the engine's updates (scikit-learn relocates them, so runs would differ). */
  emptyClusters: number;
  /** `--compare plain`: the plain loop, same data and start, same process. */
  baselineSeconds?: number;
  /** `--compare sklearn`. */
  sklearnSeconds?: number;
  sklearnRuns?: number[];
  /** scikit-learn's CPU seconds per timed fit (Python's time.process_time(): every thread of the process). */
  sklearnCpuSeconds?: number;
  sklearnCpuRuns?: number[];
  /** scikit-learn's CPU seconds over the engine's. */
  cpuSpeedup?: number;
  sklearnSse?: number;
  sklearnInertia?: number;
  sklearnIterations?: number;
  /** scikit-learn's seconds over the engine's. */
  speedup?: number;
  /** (engine SSE - scikit-learn SSE) / scikit-learn SSE; <= 1e-6 passes (`sseOk`). */
  sseRelativeDifference?: number;
  sseOk?: boolean;
  /** Points whose final label differs between the two. */
  labelsDiffer?: number;
  /**
   * An untimed reference: scikit-learn's same fit on the points widened to float64 (its float32 arithmetic
   * makes its trajectory drift from an exact one; in float64 the two should agree).
   */
  sklearnFloat64?: { sse: number; iterations: number; seconds: number; sseRelativeDifference: number; sseOk: boolean; labelsDiffer: number };
}

export interface KmeansBenchResult {
  bench: "kmeans";
  iters: number;
  seed: number;
  threads: number;
  repeat: number;
  compare: KmeansCompare;
  timing: string;
  /** Seconds of the untimed warm-up run (thread pool start-up included). */
  warmupSeconds: number;
  sklearn?: { python: string; version: string; numpy: string; setting: string; importSeconds: number; threadpools: Array<{ api: string; internal: string; threads: number }> };
  shapes: KmeansShapeResult[];
}

const TIMING_ENGINE =
  "warm: the engine's pool started and its code compiled by an untimed run; timed: kmeans(points, { init, " +
  "maxIters: iters }) as compress calls it (input check, copy into shared memory, iters + 1 assignment " +
  "passes, iters centroid updates, the SSE); best of `repeat`";
const TIMING_SKLEARN =
  "warm on both sides: the engine's pool started and compiled by an untimed run, scikit-learn imported and " +
  "its OpenMP threads started by an untimed fit; points generated and loaded (np.load) before the clock " +
  "starts. Timed, engine: kmeans(points, { init, maxIters: iters }) as compress calls it (input check, copy " +
  "into shared memory, the passes, the SSE); scikit-learn: the whole KMeans(...).fit(X) call as a user " +
  "makes it (its input validation, its own copies, labels and inertia included); best of `repeat` each";
/** scikit-learn's fastest documented setting for a given start, as run (see `sklearn.threadpools`). */
const sklearnSetting = (iters: number, threads: number | undefined): string =>
  `KMeans(n_clusters=k, init=<the engine's k start points, float32>, n_init=1, max_iter=${iters}, tol=0, ` +
  `algorithm="lloyd").fit(X) on float32 X [n, d] (C order), ` +
  (threads === undefined
    ? "on all its OpenMP threads"
    : `on ${threads} thread${threads === 1 ? "" : "s"} (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=${threads})`);

export async function runKmeansBench(o: KmeansBenchOptions): Promise<KmeansBenchResult> {
  const { iters, seed, threads, repeat, compare } = o;
  const sklearnThreads = o.sklearnThreads;
  for (const [name, v, min] of [["iters", iters, 0], ["threads", threads, 1], ["repeat", repeat, 1], ["sklearn-threads", sklearnThreads ?? 1, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new InputError(`--${name} must be an integer >= ${min}, got ${v}`);
  }
  if (o.shapes.length === 0) throw new InputError("no shapes to measure");
  for (const { n, d, k } of o.shapes) {
    for (const [name, v] of [["n", n], ["d", d], ["k", k]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new InputError(`--${name} must be an integer >= 1, got ${v}`);
    }
    if (k > n) throw new InputError(`k (${k}) must not exceed n (${n})`);
  }
  const python = compare === "sklearn" ? findPython(o.python) : undefined;
  const pool = createThreadPool(threads);
  const shapes: KmeansShapeResult[] = [];
  const data: Array<{ points: Float32Array; init: Float32Array; assignments: Uint32Array }> = [];
  let warmupSeconds = 0;
  try {
    for (const shape of o.shapes) {
      const { points, init } = generate(shape, seed);
      // Untimed: starts the workers and compiles the code paths this shape takes.
      const w0 = performance.now();
      const wn = Math.min(shape.n, Math.max(20000, shape.k));
      await lloydRun(points.subarray(0, wn * shape.d), { ...shape, n: wn }, init, Math.min(iters, 2), pool);
      warmupSeconds += (performance.now() - w0) / 1000;
      const runs: number[] = [];
      const cpuRuns: number[] = [];
      let last: KmeansResult | undefined;
      for (let r = 0; r < repeat; r++) {
        // Timed: the public entry compress calls (input check, copy into shared memory, the passes, SSE).
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        last = await kmeans(points, shape.n, shape.d, shape.k, { seed, maxIters: iters, map: pool, init });
        runs.push((performance.now() - t0) / 1000);
        const c = process.cpuUsage(c0);
        cpuRuns.push((c.user + c.system) / 1e6);
      }
      // Untimed: the same iterations step by step, for the pass statistics (and a check of the above).
      const { sse, assignments, searched, empty } = await lloydRun(points, shape, init, iters, pool);
      if (last!.sse !== sse || (last!.iterations !== iters && !last!.converged)) {
        throw new Error(`k-means benchmark: kmeans() and the Lloyd steps disagree (SSE ${last!.sse} vs ${sse})`);
      }
      shapes.push({
        ...shape,
        seconds: Math.min(...runs),
        runs,
        cpuSeconds: Math.min(...cpuRuns),
        cpuRuns,
        sse,
        searchedShare: searched / ((iters + 1) * shape.n),
        emptyClusters: empty,
      });
      data.push({ points, init, assignments });
    }
  } finally {
    await pool.close();
  }

  if (compare === "plain") {
    o.shapes.forEach((shape, s) => {
      const t1 = performance.now();
      const baselineSse = plainLloyd(data[s].points, shape.n, shape.d, shape.k, data[s].init, iters);
      shapes[s].baselineSeconds = (performance.now() - t1) / 1000;
      const sse = shapes[s].sse;
      if (!(Math.abs(sse - baselineSse) <= 1e-6 * Math.abs(baselineSse))) {
        throw new Error(`k-means benchmark: engine SSE ${sse} differs from the plain loop's ${baselineSse}`);
      }
    });
  }

  let sklearn: KmeansBenchResult["sklearn"];
  if (compare === "sklearn") {
    const dir = mkdtempSync(join(tmpdir(), "ssvq-kmeans-bench-"));
    try {
      const files = o.shapes.map((shape, s) => {
        const f = { points: join(dir, `points${s}.npy`), init: join(dir, `init${s}.npy`), centers: join(dir, `centers${s}.npy`), labels: join(dir, `labels${s}.npy`), labels64: join(dir, `labels64${s}.npy`) };
        writeFileSync(f.points, writeNpy({ elemType: "float32", shape: [shape.n, shape.d], data: data[s].points }));
        writeFileSync(f.init, writeNpy({ elemType: "float32", shape: [shape.k, shape.d], data: data[s].init }));
        return f;
      });
      const out = runSklearn(python!, { iters, repeat, float64: !o.noFloat64, shapes: files }, sklearnThreads);
      sklearn = { python: python!, version: out.version, numpy: out.numpy, setting: sklearnSetting(iters, sklearnThreads), importSeconds: out.importSeconds, threadpools: out.threadpools };
      o.shapes.forEach((shape, s) => {
        const r = out.shapes[s];
        const centers = parseNpy(readFileSync(files[s].centers), files[s].centers).data as Float32Array;
        const labels = parseNpy(readFileSync(files[s].labels), files[s].labels).data as Int32Array;
        const c64 = Float64Array.from(centers);
        let sse = 0;
        let differ = 0;
        for (let i = 0; i < shape.n; i++) {
          sse += dist2(data[s].points, i * shape.d, c64, labels[i] * shape.d, shape.d);
          if (labels[i] !== data[s].assignments[i]) differ++;
        }
        const res = shapes[s];
        res.sklearnSeconds = Math.min(...r.seconds);
        res.sklearnRuns = r.seconds;
        res.sklearnSse = sse;
        res.sklearnInertia = r.inertia;
        res.sklearnIterations = r.nIter;
        res.sklearnCpuRuns = r.cpuSeconds;
        res.sklearnCpuSeconds = Math.min(...r.cpuSeconds);
        res.speedup = res.sklearnSeconds / res.seconds;
        res.cpuSpeedup = res.sklearnCpuSeconds / res.cpuSeconds;
        res.sseRelativeDifference = (res.sse - sse) / sse;
        res.sseOk = res.sseRelativeDifference <= 1e-6 && r.nIter === iters;
        res.labelsDiffer = differ;
        if (o.noFloat64) return;
        const labels64 = parseNpy(readFileSync(files[s].labels64), files[s].labels64).data as Int32Array;
        let differ64 = 0;
        for (let i = 0; i < shape.n; i++) if (labels64[i] !== data[s].assignments[i]) differ64++;
        const rel64 = (res.sse - r.inertia64) / r.inertia64;
        res.sklearnFloat64 = { sse: r.inertia64, iterations: r.nIter64, seconds: r.seconds64, sseRelativeDifference: rel64, sseOk: rel64 <= 1e-6, labelsDiffer: differ64 };
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return { bench: "kmeans", iters, seed, threads, repeat, compare, timing: compare === "sklearn" ? TIMING_SKLEARN : TIMING_ENGINE, warmupSeconds, ...(sklearn ? { sklearn } : {}), shapes };
}

function generate({ n, d, k }: KmeansShape, seed: number): { points: Float32Array; init: Float32Array } {
  const rng = new Rng(seed);
  const points = rng.fillNormal(new Float32Array(n * d));
  const init = new Float32Array(k * d);
  rng.sampleIndices(n, k).forEach((p, j) => init.set(points.subarray(p * d, p * d + d), j * d));
  return { points, init };
}

/** `iters` Lloyd iterations with the engine, then the final assignment and its SSE. */
async function lloydRun(
  points: Float32Array,
  { n, d, k }: KmeansShape,
  init: Float32Array,
  iters: number,
  pool: ThreadPool,
): Promise<{ sse: number; assignments: Uint32Array; searched: number; empty: number }> {
  const lloyd = new Lloyd(points, n, d, k, init, pool);
  let searched = 0;
  let empty = 0;
  for (let it = 0; it < iters; it++) {
    await lloyd.assign();
    searched += lloyd.stats.searched;
    empty += lloyd.update().length;
  }
  await lloyd.assign();
  searched += lloyd.stats.searched;
  const sse = await lloyd.sse();
  return { sse, assignments: lloyd.finish(), searched, empty };
}

/** The Python to run scikit-learn with: the given one, else /usr/bin/python3, else python3 on PATH. */
function findPython(given: string | undefined): string {
  const candidates = given ? [given] : ["/usr/bin/python3", "python3"];
  for (const py of candidates) {
    const r = spawnSync(py, ["-c", "import sklearn, numpy, threadpoolctl"], { encoding: "utf8" });
    if (r.status === 0) return py;
  }
  throw new InputError(
    `--compare sklearn needs a Python with scikit-learn (tried ${candidates.join(", ")}); ` +
      `on Debian: apt-get install python3-sklearn, or name one with --python`,
  );
}

/** scikit-learn's side, in one Python process: warm-up, then `repeat` timed fits per shape. */
const SKLEARN_SCRIPT = String.raw`
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import sklearn
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_info
import_s = time.perf_counter() - t0
args = json.loads(sys.argv[1])
out = []
for shape in args["shapes"]:
    X = np.load(shape["points"])
    init = np.load(shape["init"])
    assert X.dtype == np.float32 and X.flags["C_CONTIGUOUS"] and init.dtype == np.float32
    k = init.shape[0]
    m = min(len(X), max(20000, k))
    KMeans(n_clusters=k, init=init, n_init=1, max_iter=2, tol=0.0, algorithm="lloyd").fit(X[:m])
    seconds = []
    cpu = []
    for r in range(args["repeat"]):
        c = time.process_time()
        t = time.perf_counter()
        km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=args["iters"], tol=0.0, algorithm="lloyd").fit(X)
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    assert km.cluster_centers_.dtype == np.float32
    np.save(shape["centers"], km.cluster_centers_)
    np.save(shape["labels"], km.labels_.astype(np.int32))
    # Untimed reference: the same fit in float64 (sklearn's float32 arithmetic, not the algorithm, is what
    # separates its trajectory from an exact one).
    r = {"seconds": seconds, "cpuSeconds": cpu, "nIter": int(km.n_iter_), "inertia": float(km.inertia_)}
    if args["float64"]:
        t = time.perf_counter()
        km64 = KMeans(n_clusters=k, init=init.astype(np.float64), n_init=1, max_iter=args["iters"], tol=0.0, algorithm="lloyd").fit(X.astype(np.float64))
        r["seconds64"] = time.perf_counter() - t
        np.save(shape["labels64"], km64.labels_.astype(np.int32))
        r["inertia64"] = float(km64.inertia_)
        r["nIter64"] = int(km64.n_iter_)
    out.append(r)
pools = [{"api": i["user_api"], "internal": i["internal_api"], "threads": i["num_threads"]} for i in threadpool_info()]
print(json.dumps({"version": sklearn.__version__, "numpy": np.__version__, "importSeconds": import_s, "threadpools": pools, "shapes": out}))
`;

interface SklearnOut {
  version: string;
  numpy: string;
  importSeconds: number;
  threadpools: Array<{ api: string; internal: string; threads: number }>;
  shapes: Array<{ seconds: number[]; cpuSeconds: number[]; nIter: number; inertia: number; inertia64: number; nIter64: number; seconds64: number }>;
}

function runSklearn(python: string, args: { iters: number; repeat: number; float64: boolean; shapes: unknown[] }, threads: number | undefined): SklearnOut {
  const env = threads === undefined ? process.env : { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
  const r = spawnSync(python, ["-c", SKLEARN_SCRIPT, JSON.stringify(args)], { encoding: "utf8", maxBuffer: 1 << 24, env });
  if (r.status !== 0) throw new Error(`scikit-learn benchmark failed (exit ${r.status}): ${r.stderr.trim().split("\n").slice(-3).join(" ")}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as SklearnOut;
}

/** The reference: the textbook double loop, one thread. Returns the SSE of the final assignment. */
function plainLloyd(points: Float32Array, n: number, d: number, k: number, init: Float32Array, iters: number): number {
  const centroids = Float32Array.from(init);
  const assignments = new Uint32Array(n);
  const assign = (): number => {
    let sse = 0;
    for (let i = 0; i < n; i++) {
      let best = Infinity;
      let bestJ = 0;
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let t = 0; t < d; t++) {
          const v = points[i * d + t] - centroids[j * d + t];
          s += v * v;
        }
        if (s < best) {
          best = s;
          bestJ = j;
        }
      }
      assignments[i] = bestJ;
      sse += best;
    }
    return sse;
  };
  for (let it = 0; it < iters; it++) {
    assign();
    const sums = new Float64Array(k * d);
    const counts = new Float64Array(k);
    for (let i = 0; i < n; i++) {
      const j = assignments[i];
      counts[j]++;
      for (let t = 0; t < d; t++) sums[j * d + t] += points[i * d + t];
    }
    for (let j = 0; j < k; j++) {
      if (counts[j] > 0) for (let t = 0; t < d; t++) centroids[j * d + t] = sums[j * d + t] / counts[j];
    }
  }
  return assign();
}

/** Parses `--shapes`: "table" (TABLE_SHAPES) or a comma-separated list of NxDxK. */
export function parseShapes(text: string): KmeansShape[] {
  if (text === "table") return [...TABLE_SHAPES];
  return text.split(",").map((s) => {
    const m = /^\s*(\d+)x(\d+)x(\d+)\s*$/.exec(s);
    if (!m) throw new InputError(`--shapes takes "table" or NxDxK,NxDxK,... (like 500000x4x256), not ${JSON.stringify(s)}`);
    return { n: Number(m[1]), d: Number(m[2]), k: Number(m[3]) };
  });
}
