/**
 * `ssvq bench kmeans`: times the engine's Lloyd iterations against a plain single-threaded loop.
 *
 * Data: n points of dimension d, float32 standard normal values from `new Rng(seed).fillNormal`; the same
 * Rng then picks k distinct point indices (`sampleIndices`) as the initial centroids. Both runs then do
 * exactly `iters` Lloyd iterations (assign every point to its nearest centroid, move every centroid to
 * the mean of its points, summed in float64 and stored as float32; an empty cluster keeps its centroid,
 * no re-seeding, no early stop), then a final assignment and its sum of squared distances (SSE).
 * Timed: from the start of the iterations to the SSE (thread start-up included, data generation not).
 * The two SSEs must agree to a relative 1e-6, or the benchmark throws.
 */
import { InputError } from "../core/errors.js";
import { Rng } from "../core/rng.js";
import { Lloyd } from "../core/ssvq/kmeans.js";
import { createThreadPool } from "../io/pool.js";

export interface KmeansBenchOptions {
  n: number;
  d: number;
  k: number;
  iters: number;
  seed: number;
  threads: number;
}

export interface KmeansBenchResult extends KmeansBenchOptions {
  /** Engine: wall-clock seconds, and the final SSE. */
  seconds: number;
  sse: number;
  /** The plain loop, same data and start, same process. */
  baselineSeconds: number;
}

export async function runKmeansBench(o: KmeansBenchOptions): Promise<KmeansBenchResult> {
  const { n, d, k, iters, seed, threads } = o;
  const limits = [["n", n, 1], ["d", d, 1], ["k", k, 1], ["iters", iters, 0], ["threads", threads, 1]] as const;
  for (const [name, v, min] of limits) {
    if (!Number.isInteger(v) || v < min) throw new InputError(`--${name} must be an integer >= ${min}, got ${v}`);
  }
  if (k > n) throw new InputError(`--k (${k}) must not exceed --n (${n})`);
  const rng = new Rng(seed);
  const points = rng.fillNormal(new Float32Array(n * d));
  const init = new Float32Array(k * d);
  rng.sampleIndices(n, k).forEach((p, j) => init.set(points.subarray(p * d, p * d + d), j * d));

  const pool = createThreadPool(threads);
  let seconds: number;
  let sse: number;
  try {
    const t0 = performance.now();
    const lloyd = new Lloyd(points, n, d, k, init, pool);
    for (let it = 0; it < iters; it++) {
      await lloyd.assign();
      lloyd.update();
    }
    await lloyd.assign();
    sse = await lloyd.sse();
    seconds = (performance.now() - t0) / 1000;
  } finally {
    await pool.close();
  }

  const t1 = performance.now();
  const baselineSse = plainLloyd(points, n, d, k, init, iters);
  const baselineSeconds = (performance.now() - t1) / 1000;
  if (!(Math.abs(sse - baselineSse) <= 1e-6 * Math.abs(baselineSse))) {
    throw new Error(`k-means benchmark: engine SSE ${sse} differs from the plain loop's ${baselineSse}`);
  }
  return { seconds, sse, baselineSeconds, n, d, k, iters, seed, threads };
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
