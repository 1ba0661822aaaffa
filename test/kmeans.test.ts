import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { isInputError } from "../src/core/errors.js";
import type { ParallelMap } from "../src/core/parallel.js";
import { Rng } from "../src/core/rng.js";
import {
  assignNearest,
  kmeans,
  kmeansPlusPlus,
  Lloyd,
  SAMPLE_PER_CENTROID,
  type KmeansResult,
  type SseInput as SseIn,
  type SseOutput as SseOut,
} from "../src/core/ssvq/kmeans.js";
import { disableKernel, kernelAvailable } from "../src/core/ssvq/kmeans-kernel.js";
import { INT_SCAN_MIN_D, intScanQ, intScanScale, setIntScan } from "../src/core/ssvq/kmeans-scan-int.js";
import { serialMap, type TaskName } from "../src/core/tasks.js";
import { createThreadPool } from "../src/io/pool.js";

const pool1 = createThreadPool(1);
const pool2 = createThreadPool(2);
after(() => Promise.all([pool1.close(), pool2.close()]));

/** n standard normal points of dimension d. */
function normalPoints(n: number, d: number, seed: number): Float32Array {
  return new Rng(seed).fillNormal(new Float32Array(n * d));
}

/** The textbook answer: squared distances summed from coordinate 0 in float64, ties to the lowest index. */
function bruteNearest(points: Float32Array, n: number, d: number, centroids: Float32Array, k: number) {
  const assignments = new Uint32Array(n);
  let sse = 0;
  for (let i = 0; i < n; i++) {
    let best = Infinity;
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let t = 0; t < d; t++) {
        const v = points[i * d + t] - centroids[j * d + t];
        s += v * v;
      }
      if (s < best) {
        best = s;
        assignments[i] = j;
      }
    }
    sse += best;
  }
  return { assignments, sse };
}

/** Indices of the points where two assignments differ (empty when equal), for readable failures. */
function differences(a: Uint32Array, b: Uint32Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length && out.length < 5; i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

describe("kmeans", () => {
  it("recovers well-separated clusters", async () => {
    const d = 3;
    const centres = [
      [0, 0, 0],
      [10, 0, 0],
      [0, 10, 0],
      [0, 0, 10],
      [10, 10, 10],
    ];
    const perCluster = 200;
    const n = centres.length * perCluster;
    const rng = new Rng(3);
    const points = new Float32Array(n * d);
    const labels = new Uint32Array(n);
    // Interleaved so that no cluster sits in one contiguous block.
    for (let i = 0; i < n; i++) {
      labels[i] = i % centres.length;
      for (let t = 0; t < d; t++) points[i * d + t] = centres[labels[i]][t] + 0.1 * rng.normal();
    }
    const r = await kmeans(points, n, d, centres.length, { seed: 1, maxIters: 50 });
    assert.ok(r.converged);
    const found = new Set<number>();
    for (const c of centres) {
      const near: number[] = [];
      for (let j = 0; j < centres.length; j++) {
        const dist = Math.hypot(...c.map((v, t) => r.centroids[j * d + t] - v));
        if (dist < 0.05) near.push(j);
      }
      assert.equal(near.length, 1, `exactly one centroid near ${c}`);
      found.add(near[0]);
    }
    assert.equal(found.size, centres.length);
    const clusterOf = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const c = clusterOf.get(labels[i]) ?? r.assignments[i];
      clusterOf.set(labels[i], c);
      assert.equal(r.assignments[i], c, `point ${i} with its cluster`);
    }
    // Noise variance 0.01 per coordinate: SSE close to n * d * 0.01.
    assert.ok(Math.abs(r.sse / (n * d * 0.01) - 1) < 0.15, `sse ${r.sse}`);
    const exact = bruteNearest(points, n, d, r.centroids, centres.length).sse;
    assert.ok(Math.abs(r.sse - exact) <= 1e-12 * exact, `sse ${r.sse} vs ${exact}`);
  });

  describe("is deterministic", () => {
    // Each search of the SIMD kernel (kmeans-kernel.ts: every centroid four points at a time up to
    // scanMaxK(d), groups with boxes above), unrolled and generic distances, each over several chunks and tasks.
    const cases = [
      { n: 50000, d: 4, k: 32 }, // scan
      { n: 20000, d: 3, k: 600 }, // groups
      { n: 12000, d: 12, k: 20 }, // scan, generic d
      { n: 30000, d: 8, k: 700 }, // scan, bounds kept
      { n: 30000, d: 8, k: 1200 }, // groups
      { n: 40000, d: 8, k: 12 }, // scan, every point every pass (k <= 16)
    ];
    for (const { n, d, k } of cases) {
      it(`n=${n} d=${d} k=${k}: same seed, same bytes, with any map and thread count`, async () => {
        const points = normalPoints(n, d, 11);
        const runs: Array<[string, ParallelMap | undefined]> = [
          ["in-process", undefined],
          ["serialMap", serialMap],
          ["pool of 1", pool1],
          ["pool of 2", pool2],
        ];
        const results: Array<[string, KmeansResult]> = [];
        for (const [name, map] of runs) {
          results.push([name, await kmeans(points, n, d, k, { seed: 7, maxIters: 30, map })]);
        }
        results.push(["in-process again", await kmeans(points, n, d, k, { seed: 7, maxIters: 30 })]);
        const [, ref] = results[0];
        assert.ok(ref.iterations > 1);
        for (const [name, r] of results) {
          assert.deepEqual(Buffer.from(r.centroids.buffer), Buffer.from(ref.centroids.buffer), `${name}: centroids`);
          assert.deepEqual(differences(r.assignments, ref.assignments), [], `${name}: assignments`);
          assert.equal(r.sse, ref.sse, `${name}: sse`);
          assert.equal(r.iterations, ref.iterations, `${name}: iterations`);
        }
        const other = await kmeans(points, n, d, k, { seed: 8, maxIters: 30 });
        assert.notDeepEqual(other.centroids, ref.centroids, "another seed gives another result");
      });
    }
  });

  it("sums the SSE in the last assignment pass with the same bits as the separate SSE pass", async () => {
    // kmeans() asks its last pass for the SSE (Lloyd.assign(true)); sse() must give what its own pass gives,
    // for the scan (with and without bounds), the groups, a generic d, and the float64 search alone (WebAssembly off).
    for (const off of [false, true]) {
      disableKernel(off);
      try {
        for (const { n, d, k } of [{ n: 70000, d: 4, k: 16 }, { n: 40000, d: 8, k: 64 }, { n: 30000, d: 8, k: 300 }, { n: 30000, d: 4, k: 300 }, { n: 9000, d: 5, k: 20 }]) {
          const points = normalPoints(n, d, 41);
          const init = points.slice(0, k * d);
          for (const map of [undefined, pool2]) {
            const [a, b] = [new Lloyd(points, n, d, k, init, map), new Lloyd(points, n, d, k, init, map)];
            for (let pass = 0; pass < 3; pass++) {
              await a.assign(true);
              await b.assign();
              const [sa, sb] = [await a.sse(), await b.sse()];
              assert.equal(sa, sb, `n=${n} d=${d} k=${k} pass ${pass} ${off ? "no wasm" : ""}`);
              const want = bruteNearest(points, n, d, a.centroids(), k).sse;
              assert.ok(Math.abs(sa - want) <= 1e-12 * want, `sse ${sa} vs ${want}`);
              a.update();
              b.update();
              // After an update the centroids moved: sse() must not return the old pass's sum.
              assert.equal(await a.sse(), await b.sse());
            }
          }
        }
      } finally {
        disableKernel(false);
      }
    }
  });

  it("re-seeds an empty cluster from the worst-fitted point", async () => {
    // Centroid 1 starts far from every point, so it is empty after the first pass; the worst-fitted
    // point is then (5, 5), at distance 2 * 3.725^2 from the mean of the four points.
    const points = Float32Array.from([0, 0, 0.1, 0, 0, 0.1, 5, 5]);
    const init = Float32Array.from([0, 0, 100, 100]);
    const r = await kmeans(points, 4, 2, 2, { seed: 1, maxIters: 10, init });
    assert.equal(r.reseeds, 1);
    assert.ok(r.converged);
    assert.deepEqual([...r.assignments], [0, 0, 0, 1]);
    assert.deepEqual([...r.centroids.subarray(2)], [5, 5]);
    assert.deepEqual([...r.centroids.subarray(0, 2)], [Math.fround(0.1 / 3), Math.fround(0.1 / 3)]);
  });

  it("leaves no cluster empty after re-seeding on random data", async () => {
    const n = 5000;
    const d = 2;
    const k = 20;
    const points = normalPoints(n, d, 5);
    // Half of the initial centroids far away: all of them start empty.
    const init = new Float32Array(k * d);
    init.set(points.subarray(0, (k / 2) * d));
    for (let j = k / 2; j < k; j++) init.set([1e3 + j, -1e3], j * d);
    const results: KmeansResult[] = [];
    for (const map of [undefined, pool2]) {
      const r = await kmeans(points, n, d, k, { seed: 1, maxIters: 100, init, map });
      results.push(r);
      assert.ok(r.reseeds >= k / 2, `reseeds ${r.reseeds}`);
      const counts = new Uint32Array(k);
      for (const a of r.assignments) counts[a]++;
      assert.ok(counts.every((c) => c > 0), `counts ${counts}`);
      const exact = bruteNearest(points, n, d, r.centroids, k).sse;
      assert.ok(Math.abs(r.sse - exact) <= 1e-12 * exact, `sse ${r.sse} vs ${exact}`);
    }
    assert.deepEqual(results[1].centroids, results[0].centroids, "same result in this thread and in the pool");
    assert.equal(results[1].reseeds, results[0].reseeds);
  });

  it("gives every point its own centroid when n <= k", async () => {
    const points = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const r = await kmeans(points, 3, 2, 5, { seed: 1, maxIters: 10 });
    assert.deepEqual([...r.centroids], [1, 2, 3, 4, 5, 6, 0, 0, 0, 0]);
    assert.deepEqual([...r.assignments], [0, 1, 2]);
    assert.equal(r.sse, 0);
  });

  it("rejects bad input with InputError", async () => {
    const points = Float32Array.from([1, 2, 3, Number.NaN]);
    await assert.rejects(kmeans(points, 2, 2, 1, { seed: 1, maxIters: 5 }), { name: "InputError", message: /NaN/ });
    await assert.rejects(kmeans(points, 3, 2, 1, { seed: 1, maxIters: 5 }), isInputError);
    await assert.rejects(kmeans(new Float32Array(4), 2, 2, 0, { seed: 1, maxIters: 5 }), isInputError);
    const init = new Float32Array(3);
    await assert.rejects(kmeans(new Float32Array(8), 4, 2, 2, { seed: 1, maxIters: 5, init }), isInputError);
  });
});

describe("assignNearest", () => {
  // Both searches of the kernel (scan up to scanMaxK(d), groups above), unrolled and generic distances.
  const cases = [
    { n: 4000, d: 4, k: 4096 },
    { n: 5000, d: 8, k: 1024 },
    { n: 3000, d: 1, k: 1 },
    { n: 3000, d: 1, k: 50 },
    { n: 3000, d: 2, k: 7 },
    { n: 3000, d: 3, k: 300 },
    { n: 20000, d: 4, k: 64 },
    { n: 3000, d: 4, k: 256 },
    { n: 3000, d: 5, k: 40 },
    { n: 3000, d: 8, k: 16 },
    { n: 3000, d: 8, k: 256 },
    { n: 3000, d: 8, k: 100 },
    { n: 1000, d: 16, k: 30 },
  ];
  for (const { n, d, k } of cases) {
    it(`equals brute force on random data (n=${n} d=${d} k=${k})`, async () => {
      const points = normalPoints(n, d, 100 + d);
      const centroids = normalPoints(k, d, 200 + k);
      const want = bruteNearest(points, n, d, centroids, k);
      for (const map of [undefined, pool2]) {
        const got = await assignNearest(points, n, d, centroids, k, map);
        assert.deepEqual(differences(got.assignments, want.assignments), []);
        assert.ok(Math.abs(got.sse - want.sse) <= 1e-12 * want.sse);
      }
    });
  }

  it("breaks ties by the lowest index", async () => {
    const centroids = Float32Array.from([0, 2, 2, 4, 0]);
    const points = Float32Array.from([1, 3, 2, 0, -1, 5]);
    const got = await assignNearest(points, 6, 1, centroids, 5);
    assert.deepEqual([...got.assignments], [0, 1, 1, 0, 0, 3]);
  });

  it("equals brute force at every Lloyd pass, ties included", async () => {
    for (const { n, d, k } of [
      { n: 20000, d: 4, k: 64 }, // scan
      { n: 20000, d: 4, k: 16 }, // scan, every point every pass
      { n: 4000, d: 2, k: 40 }, // scan
      { n: 2000, d: 3, k: 200 }, // scan, bounds kept
      { n: 2000, d: 3, k: 300 }, // groups
      { n: 2000, d: 5, k: 200 }, // scan, bounds kept
      { n: 20000, d: 4, k: 1024 }, // groups
      { n: 8000, d: 8, k: 512 }, // scan, bounds kept
      { n: 8000, d: 8, k: 1200 }, // groups
    ]) {
      const rng = new Rng(d);
      // Points on a coarse grid, so that many are exactly as far from two centroids.
      const points = Float32Array.from({ length: n * d }, () => Math.round(rng.normal() * 4) / 2);
      const init = new Float32Array(k * d);
      for (let j = 0; j < k; j++) init.set(points.subarray(((j * 37) % n) * d, ((j * 37) % n) * d + d), j * d);
      init.set(init.subarray(0, d), (k - 1) * d); // a duplicate centroid: never chosen over centroid 0
      const lloyd = new Lloyd(points, n, d, k, init, pool2);
      for (let pass = 0; pass < 8; pass++) {
        await lloyd.assign();
        const want = bruteNearest(points, n, d, lloyd.centroids(), k);
        assert.deepEqual(differences(lloyd.assignments(), want.assignments), [], `n=${n} d=${d} k=${k} pass ${pass}`);
        lloyd.update();
      }
    }
  });
});

describe("the scan with bounds", () => {
  it("reads each run's own points when runs of the same shape share (and interleave on) the pool's threads", async () => {
    // The kernel keeps a run's points in its memory between passes (by run): a run must never see
    // another's, whether the runs follow each other or alternate pass by pass on the same worker.
    const [n, d, k] = [30000, 4, 40];
    const data = [normalPoints(n, d, 71), normalPoints(n, d, 72).map((x) => 3 * x)];
    for (const map of [undefined, pool1, pool2]) {
      const runs = data.map((points) => new Lloyd(points, n, d, k, points.slice(0, k * d), map));
      for (let pass = 0; pass < 4; pass++) {
        for (const [r, lloyd] of runs.entries()) {
          await lloyd.assign(true);
          const want = bruteNearest(data[r], n, d, lloyd.centroids(), k);
          assert.deepEqual(differences(lloyd.assignments(), want.assignments), [], `run ${r} pass ${pass}`);
          assert.ok(Math.abs((await lloyd.sse()) - want.sse) <= 1e-12 * want.sse);
          lloyd.update();
        }
      }
      // One after the other: a new run with other points of the same shape.
      const again = await kmeans(data[1], n, d, k, { seed: 2, maxIters: 3, map });
      assert.deepEqual(differences(again.assignments, bruteNearest(data[1], n, d, again.centroids, k).assignments), []);
    }
  });

  it("settles points by the scan's float32 bounds only where brute force agrees (k above 16 up to scanMaxK(d))", async () => {
    // After the early passes (searched in full) the kernel tests each point's float32 bounds, four at a
    // time, tightens them with the float32 distance to its own centroid, and scans only the points left:
    // every pass must still equal brute force, and the later passes must have settled points.
    for (const { n, d, k, grid } of [
      { n: 12000, d: 2, k: 24, grid: false },
      { n: 12000, d: 4, k: 64, grid: false },
      { n: 12000, d: 4, k: 64, grid: true }, // many exact ties
      { n: 9000, d: 5, k: 100, grid: false }, // a d that is not a multiple of 4
      { n: 9000, d: 8, k: 40, grid: false },
      { n: 9000, d: 8, k: 40, grid: true },
      { n: 5001, d: 3, k: 17, grid: false }, // a last group of one point
    ]) {
      let points = normalPoints(n, d, 61 + d);
      if (grid) points = points.map((x) => Math.round(x * 3) / 4);
      const init = points.slice(0, k * d);
      for (const map of [undefined, pool2]) {
        const lloyd = new Lloyd(points, n, d, k, init, map);
        let settled = 0;
        for (let pass = 0; pass < 12; pass++) {
          await lloyd.assign();
          if (pass >= 6) settled += n - lloyd.stats.searched;
          const want = bruteNearest(points, n, d, lloyd.centroids(), k);
          assert.deepEqual(differences(lloyd.assignments(), want.assignments), [], `n=${n} d=${d} k=${k}${grid ? " grid" : ""} pass ${pass}`);
          lloyd.update();
        }
        if (kernelAvailable(d)) assert.ok(settled > n, `d=${d} k=${k}: ${settled} points settled by the bounds in passes 6 to 11`);
      }
    }
  });
});

describe("the SIMD kernel's float32 answers", () => {
  it("are taken only when provably exact: extreme magnitudes go to the float64 search", async () => {
    // Squares of 1e20 overflow float32 and squares of 1e-25 underflow it: the kernel's error bound does
    // not hold there, so every such point must be searched again exactly, with the brute-force answer.
    for (const [scale, d, k] of [[1e20, 4, 16], [1e-25, 4, 300], [1e20, 8, 300], [1e-25, 8, 16]] as const) {
      const n = 6000;
      const points = normalPoints(n, d, 31).map((v) => v * scale);
      const init = points.slice(0, k * d);
      const lloyd = new Lloyd(points, n, d, k, init, pool2);
      for (let pass = 0; pass < 4; pass++) {
        await lloyd.assign();
        // All but the k points that are the initial centroids (distance exactly 0, every other one provably
        // positive) are searched again exactly.
        if (pass === 0 && kernelAvailable(d)) assert.ok(lloyd.stats.exact >= n - k, `scale ${scale}: ${lloyd.stats.exact} exact`);
        const want = bruteNearest(points, n, d, lloyd.centroids(), k);
        assert.deepEqual(differences(lloyd.assignments(), want.assignments), [], `scale ${scale} d=${d} k=${k} pass ${pass}`);
        lloyd.update();
      }
    }
  });

  it("of the dot-product scan (k <= scanMaxK(d)) survive cancellation and mixed magnitudes", async () => {
    // |x|^2 + |c|^2 - 2 x.c cancels when the points sit far from the origin and close together, and its
    // error bound grows with the largest centroid: such points must fall to the float64 search, with
    // the brute-force answer, ties to the lowest index included.
    const n = 6000;
    for (const [what, d, k, make] of [
      ["offset 1e3, spread 1e-3", 4, 16, (v: number) => 1000 + v * 1e-3],
      ["offset 1e3, grid of 2^-10", 8, 64, (v: number) => 1000 + Math.round(v * 4) / 1024],
      ["offset -3e4, spread 1", 4, 40, (v: number) => -30000 + v],
      ["ordinary, one centroid at 1e12", 8, 16, (v: number) => v],
      ["ordinary, one centroid at 1e16 (no scan)", 4, 64, (v: number) => v],
    ] as const) {
      const points = normalPoints(n, d, 34).map(make);
      const init = points.slice(0, k * d);
      if (what.includes("1e12")) init.fill(1e12, 0, d);
      if (what.includes("1e16")) init.fill(1e16, 0, d);
      init.set(init.subarray(d, 2 * d), (k - 1) * d); // a duplicate centroid: never chosen over centroid 1
      const lloyd = new Lloyd(points, n, d, k, init, pool2);
      for (let pass = 0; pass < 4; pass++) {
        await lloyd.assign();
        // Distances of 1e-6 beside values of 1e6: nothing the float32 scan says is provable.
        if (pass === 0 && what.includes("spread 1e-3") && kernelAvailable(d)) assert.ok(lloyd.stats.exact >= n - k, `${lloyd.stats.exact} exact`);
        const want = bruteNearest(points, n, d, lloyd.centroids(), k);
        assert.deepEqual(differences(lloyd.assignments(), want.assignments), [], `${what}, d=${d} k=${k} pass ${pass}`);
        lloyd.update();
      }
    }
  });

  it("settle nearly every searched point on ordinary data (few exact re-searches)", async () => {
    const n = 40000;
    const points = normalPoints(n, 4, 32);
    const lloyd = new Lloyd(points, n, 4, 256, points.slice(0, 256 * 4));
    await lloyd.assign();
    assert.equal(lloyd.stats.searched, n);
    // The first pass starts on sample points: those 256 are settled without the float64 search too.
    if (kernelAvailable(4)) assert.ok(lloyd.stats.exact < n / 1000, `exact ${lloyd.stats.exact}`);
  });

  it("give the same bytes as the float64 search alone (WebAssembly off), in this thread and in a pool", async () => {
    const runs: KmeansResult[] = [];
    const cases = [
      { n: 30000, d: 4, k: 16 },
      { n: 30000, d: 8, k: 16 },
      { n: 20000, d: 8, k: 300 },
      { n: 6000, d: 2, k: 40, grid: true },
    ];
    for (const off of [false, true]) {
      disableKernel(off);
      if (off) process.env["SSVQ_KMEANS_NO_WASM"] = "1"; // read by the new pool's workers
      const pool = createThreadPool(2);
      try {
        for (const { n, d, k, grid } of cases) {
          let points = normalPoints(n, d, 33);
          if (grid) points = points.map((v) => Math.round(v * 4) / 2);
          for (const map of [undefined, pool]) runs.push(await kmeans(points, n, d, k, { seed: 3, maxIters: 15, map }));
        }
      } finally {
        delete process.env["SSVQ_KMEANS_NO_WASM"];
        disableKernel(false);
        await pool.close();
      }
    }
    const half = runs.length / 2;
    for (let r = 0; r < half; r++) {
      const [a, b] = [runs[r], runs[half + r]];
      assert.deepEqual(Buffer.from(b.centroids.buffer), Buffer.from(a.centroids.buffer), `run ${r}: centroids`);
      assert.deepEqual(differences(b.assignments, a.assignments), [], `run ${r}: assignments`);
      assert.equal(b.sse, a.sse, `run ${r}: sse`);
    }
  });
});

describe("the integer scan (kmeans-scan-int.ts)", () => {
  it("takes a power-of-two scale that keeps every coordinate within Q, or none", () => {
    for (const d of [6, 8, 16, 64]) {
      for (const m of [1e-20, 0.37, 1, 5.5, 1e5, 3e20]) {
        const s = intScanScale(m, d);
        assert.ok(Number.isInteger(Math.log2(s)), `d=${d} max ${m}: ${s}`);
        assert.ok(m <= intScanQ(d) * s && m > (intScanQ(d) * s) / 2, `d=${d} max ${m}: scale ${s}`);
        // The rounded distances stay below 2^31, and -2 cq fits an int16.
        assert.ok(4 * d * intScanQ(d) ** 2 < 2 ** 31 && 2 * intScanQ(d) <= 32767);
      }
      for (const m of [0, 1e-30, 1e30, Infinity]) assert.equal(intScanScale(m, d), 0, `d=${d} max ${m}`);
    }
    assert.equal(intScanScale(1, INT_SCAN_MIN_D - 1), 0);
  });

  it("settles most points alone on ordinary data, from d = INT_SCAN_MIN_D up", async () => {
    const n = 20000;
    for (const [d, k, used] of [[8, 16, true], [6, 64, true], [4, 16, false]] as const) {
      const points = normalPoints(n, d, 81);
      for (const on of [true, false]) {
        setIntScan(on);
        try {
          const lloyd = new Lloyd(points, n, d, k, points.slice(0, k * d), pool2);
          await lloyd.assign();
          lloyd.update();
          await lloyd.assign();
          if (on && used && kernelAvailable(d)) assert.ok(lloyd.stats.intProven > 0.9 * n, `d=${d} k=${k}: ${lloyd.stats.intProven} of ${n}`);
          else assert.equal(lloyd.stats.intProven, 0, `d=${d} k=${k} on=${on}`);
        } finally {
          setIntScan(true);
        }
      }
    }
  });

  it("equals brute force at every pass and gives the float32 scan's bytes, where its bounds are loose", async () => {
    // Outliers make the scale coarse for every other point, tiny and huge values test the scale's range,
    // a grid makes exact ties, far-out start centroids are clamped: each pass must still be brute force's,
    // and whole runs the same bytes as with the integer scan off.
    const n = 6000;
    const cases = [
      ["normal", 8, 16, (v: number) => v],
      ["heavy tails", 8, 64, (v: number) => v * v * v],
      ["one outlier at 1e4", 6, 16, (v: number, i: number) => (i === 17 ? 1e4 : v)],
      ["tiny (1e-20)", 16, 16, (v: number) => v * 1e-20],
      ["huge (1e20)", 8, 40, (v: number) => v * 1e20],
      ["grid of 1/4", 8, 64, (v: number) => Math.round(v * 4) / 4],
      ["d 7, offset 50", 7, 30, (v: number) => 50 + v],
    ] as const;
    for (const [what, d, k, make] of cases) {
      const points = normalPoints(n, d, 90 + d).map(make);
      const init = points.slice(0, k * d);
      if (what === "normal") init.fill(1e3, 0, d); // a start centroid beyond the points' range: clamped
      init.set(init.subarray(d, 2 * d), (k - 1) * d); // a duplicate centroid: never chosen over centroid 1
      for (const map of [undefined, pool2]) {
        const lloyd = new Lloyd(points, n, d, k, init, map);
        for (let pass = 0; pass < 5; pass++) {
          await lloyd.assign();
          const want = bruteNearest(points, n, d, lloyd.centroids(), k);
          assert.deepEqual(differences(lloyd.assignments(), want.assignments), [], `${what}, d=${d} k=${k} pass ${pass}`);
          lloyd.update();
        }
      }
      const runs: KmeansResult[] = [];
      for (const on of [true, false]) {
        setIntScan(on);
        try {
          runs.push(await kmeans(points, n, d, k, { seed: 5, maxIters: 8, map: pool2, init }));
        } finally {
          setIntScan(true);
        }
      }
      assert.deepEqual(Buffer.from(runs[1].centroids.buffer), Buffer.from(runs[0].centroids.buffer), `${what}: centroids`);
      assert.deepEqual(differences(runs[1].assignments, runs[0].assignments), [], `${what}: assignments`);
      assert.equal(runs[1].sse, runs[0].sse, `${what}: sse`);
    }
  });
});

describe("kmeansPlusPlus", () => {
  it(`seeds from a sample of at most ${SAMPLE_PER_CENTROID} points per centroid`, async () => {
    const n = 100000;
    const d = 2;
    const points = normalPoints(n, d, 9);
    const { centroids, sample } = kmeansPlusPlus(points, n, d, 3, 4);
    assert.equal(sample.length, 3 * SAMPLE_PER_CENTROID);
    for (let i = 1; i < sample.length; i++) assert.ok(sample[i - 1] < sample[i] && sample[i] < n);
    const sampled = new Set<string>();
    for (const i of sample) sampled.add(`${points[i * d]},${points[i * d + 1]}`);
    for (let j = 0; j < 3; j++) {
      assert.ok(sampled.has(`${centroids[j * d]},${centroids[j * d + 1]}`), `centroid ${j} is a sampled point`);
    }
    assert.equal(kmeansPlusPlus(points, 500, d, 3, 4).sample.length, 500);
    // kmeans seeds with it: no iterations leaves the k-means++ centroids.
    const r = await kmeans(points, n, d, 3, { seed: 4, maxIters: 0 });
    assert.deepEqual(r.centroids, centroids);
    assert.equal(r.iterations, 0);
  });

  it("spreads the seeds over well-separated clusters", () => {
    // Four tight clusters far apart: D^2 sampling picks one seed in each.
    const d = 2;
    const rng = new Rng(2);
    const n = 4000;
    const points = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      points[i * d] = (i % 2) * 100 + 0.01 * rng.normal();
      points[i * d + 1] = (Math.floor(i / 2) % 2) * 100 + 0.01 * rng.normal();
    }
    const { centroids } = kmeansPlusPlus(points, n, d, 4, 6);
    const corners = new Set<string>();
    for (let j = 0; j < 4; j++) {
      corners.add(`${Math.round(centroids[j * d] / 100)},${Math.round(centroids[j * d + 1] / 100)}`);
    }
    assert.equal(corners.size, 4);
  });
});

describe("thread pool", () => {
  const sseInput = (value: number): SseIn => ({
    points: Float32Array.from([value]),
    d: 1,
    start: 0,
    end: 1,
    centroids: new Float64Array(1),
    assignments: new Uint32Array(1),
  });

  it("returns outputs in input order", async () => {
    const out = await pool2.run<SseIn, SseOut>("kmeans.sse", [1, 2, 3, 4, 5].map(sseInput));
    assert.deepEqual(out.map((o) => o.sse), [1, 4, 9, 16, 25]);
  });

  it("rejects with the worker's error instead of hanging, and keeps working", { timeout: 30000 }, async () => {
    await assert.rejects(pool2.run("no.such.task" as TaskName, [{}]), /unknown task "no.such.task"/);
    const bad = { ...sseInput(1), points: null };
    const inputs = [sseInput(1), bad, sseInput(2)];
    await assert.rejects(pool2.run("kmeans.sse", inputs), { name: "TypeError", message: /null/ });
    const unclonable = { ...sseInput(1), f: () => 1 };
    await assert.rejects(pool2.run("kmeans.sse", [unclonable]), { name: "DataCloneError" });
    const out = await pool2.run<SseIn, SseOut>("kmeans.sse", [sseInput(3)]);
    assert.equal(out[0].sse, 9);
  });

  it("rejects the runs pending at close() and any later one", async () => {
    const pool = createThreadPool(2);
    assert.equal((await pool.run<SseIn, SseOut>("kmeans.sse", [sseInput(2)]))[0].sse, 4);
    const pending = assert.rejects(pool.run("kmeans.sse", Array.from({ length: 50 }, () => sseInput(1))), /closed/);
    await pool.close();
    await pending;
    await assert.rejects(pool.run("kmeans.sse", [sseInput(2)]), /closed/);
  });

  it("refuses a thread count that is not a positive integer", () => {
    assert.throws(() => createThreadPool(0), isInputError);
    assert.throws(() => createThreadPool(1.5), isInputError);
  });
});
