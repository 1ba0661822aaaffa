/**
 * k-means++ seeding (D^2 sampling) on a seeded uniform sample of the points (DESIGN.md section 1).
 */
import { Rng } from "../rng.js";
import { SLACK } from "./kmeans-bounds.js";
import { centroidDist2, dist2 } from "./kmeans-assign.js";

/** k-means++ runs on a random sample of at most this many points per centroid. */
export const SAMPLE_PER_CENTROID = 256;

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
