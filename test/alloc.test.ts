import { test } from "node:test";
import assert from "node:assert/strict";
import { allocate, lowerHull, minimumCost, paretoFront, type AllocLayer } from "../src/core/alloc/allocate.js";
import { candidateGrid, evaluateCandidates, pointBits, referenceCandidate } from "../src/core/alloc/candidates.js";
import { budgetBits, compressedTensorBytes, searchOperatingPoints, sensitivities } from "../src/core/alloc/search.js";
import { Rng } from "../src/core/rng.js";

function randomLayers(rng: Rng, layers: number, candidates: number): AllocLayer[] {
  return Array.from({ length: layers }, (_, i) => ({
    name: `l${i}`,
    candidates: Array.from({ length: candidates }, () => ({ cost: 1 + rng.int(5000), damage: rng.next() * 10 })),
  }));
}

test("allocate: the total cost never exceeds the budget, and no single swap within it lowers the damage", () => {
  const rng = new Rng(7);
  for (let trial = 0; trial < 200; trial++) {
    const layers = randomLayers(rng, 1 + rng.int(8), 1 + rng.int(12));
    const min = minimumCost(layers);
    const max = layers.reduce((a, l) => a + Math.max(...l.candidates.map((c) => c.cost)), 0);
    const budget = min + rng.int(max - min + 1);
    const a = allocate(layers, budget);
    const cost = layers.reduce((s, l, i) => s + l.candidates[a.picks[i]!]!.cost, 0);
    const damage = layers.reduce((s, l, i) => s + l.candidates[a.picks[i]!]!.damage, 0);
    assert.equal(a.cost, cost);
    assert.ok(cost <= budget, `trial ${trial}: ${cost} > ${budget}`);
    assert.ok(Math.abs(a.damage - damage) < 1e-9);
    for (const [i, l] of layers.entries())
      for (const c of l.candidates)
        if (cost - l.candidates[a.picks[i]!]!.cost + c.cost <= budget) assert.ok(c.damage >= l.candidates[a.picks[i]!]!.damage, `trial ${trial}: a swap helps`);
  }
});

test("allocate: matches the exhaustive optimum on small problems where the hull steps fill the budget", () => {
  const rng = new Rng(11);
  let exact = 0;
  for (let trial = 0; trial < 100; trial++) {
    const layers = randomLayers(rng, 3, 4);
    const min = minimumCost(layers);
    const budget = min + rng.int(6000);
    let best = Infinity;
    for (let a = 0; a < 4; a++)
      for (let b = 0; b < 4; b++)
        for (let c = 0; c < 4; c++) {
          const p = [a, b, c];
          const cost = p.reduce((s, j, i) => s + layers[i]!.candidates[j]!.cost, 0);
          if (cost <= budget) best = Math.min(best, p.reduce((s, j, i) => s + layers[i]!.candidates[j]!.damage, 0));
        }
    const got = allocate(layers, budget).damage;
    assert.ok(got >= best - 1e-12);
    if (got <= best + 1e-12) exact++;
  }
  // A greedy knapsack is not always optimal, but on these it nearly always is.
  assert.ok(exact >= 85, `${exact} of 100 optimal`);
});

test("allocate: deterministic, and refuses a budget below the cheapest points", () => {
  const layers = randomLayers(new Rng(3), 6, 10);
  const budget = minimumCost(layers) + 9000;
  assert.deepEqual(allocate(layers, budget), allocate(layers, budget));
  // Shuffled candidate order inside a layer: the same points are chosen.
  const a = allocate(layers, budget);
  assert.throws(() => allocate(layers, minimumCost(layers) - 1), /target is too small/);
  assert.equal(allocate(layers, minimumCost(layers)).cost, minimumCost(layers));
  assert.ok(a.lambda >= 0);
});

test("convex hull: Pareto front first, then the lower hull", () => {
  const c = [
    { cost: 10, damage: 10 },
    { cost: 20, damage: 4 },
    { cost: 30, damage: 3.5 },
    { cost: 25, damage: 9 }, // dominated
    { cost: 40, damage: 0 },
  ];
  assert.deepEqual(paretoFront(c), [0, 1, 2, 4]);
  // (30, 3.5) lies above the segment (20, 4)-(40, 0).
  assert.deepEqual(lowerHull(c), [0, 1, 4]);
});

test("budget: a ratio or bits target in whole bits, met as the report counts it", () => {
  const basis = { originalTensorBytes: 246_824, selectedBytes: 241_200, selectedWeights: 60_300 };
  for (const ratio of [4, 8, 12.5, 16, 24]) {
    const b = budgetBits({ ratio }, basis);
    assert.ok(Number.isInteger(b));
    assert.ok(basis.originalTensorBytes / compressedTensorBytes(basis, b) >= ratio);
    assert.ok(basis.originalTensorBytes / compressedTensorBytes(basis, b + 8) < ratio, "the budget is the largest that fits (to the byte)");
  }
  for (const bits of [1, 1.5, 2, 2.37]) {
    const b = budgetBits({ bits }, basis);
    assert.ok(b / basis.selectedWeights <= bits);
    assert.ok((b + 1) / basis.selectedWeights > bits);
  }
  assert.throws(() => budgetBits({ ratio: 100 }, basis), /cannot be reached/);
  assert.throws(() => budgetBits({ ratio: 1 }, basis), /above 1/);
});

test("candidate grid: pruned to points that fit, cheaper than INT8, with at least 4 sub-vectors per codeword", () => {
  const g = candidateGrid(16, 150, 32, { family: "ssvq", allowFp: true });
  for (const p of g) {
    if (p.mode === "ssvq") {
      assert.ok(p.k * 4 <= 16 * Math.ceil(150 / p.d));
      assert.ok(pointBits(p, 16, 150, 32).totalBits < pointBits({ mode: "int8", k: 0, d: 0 }, 16, 150, 32).totalBits);
    }
  }
  const costs = g.map((p) => pointBits(p, 16, 150, 32).totalBits);
  assert.deepEqual(costs, [...costs].sort((a, b) => a - b));
  assert.ok(g.some((p) => p.mode === "fp") && g.some((p) => p.mode === "int8") && g.some((p) => p.mode === "int4"));
  assert.ok(!candidateGrid(16, 150, 32, { family: "vq", allowFp: false }).some((p) => p.mode === "fp" || p.mode === "ssvq"));
  const capped = candidateGrid(256, 256, 32, { family: "ssvq", allowFp: false, maxBits: 65536 * 2 });
  assert.ok(capped.every((p) => pointBits(p, 256, 256, 32).totalBits <= 65536 * 2));
});

test("sensitivity: output change per squared error; an unmeasurable layer gets the median", () => {
  assert.deepEqual(
    sensitivities([
      { modelChange: 0.04, error: 0.1 },
      { modelChange: 0.02, error: 0 },
      { modelChange: 0.09, error: 0.1 },
    ]).map((x) => Math.round(x * 1000) / 1000),
    [4, 4, 9],
  );
});

test("search: one large and one tiny layer at 3 bits per weight: the large layer gets the larger codebook, within the budget", async () => {
  // Sub-vectors of 4 magnitudes from 256 patterns (random signs, a little noise): a large codebook pays
  // off where its cost is shared by many weights, not on a layer of 1,024 weights (256 x 4 floats alone
  // would be 32 bits per weight there).
  const rng = new Rng(5);
  const patterns = Float32Array.from({ length: 256 * 4 }, () => 0.2 + rng.next());
  const layer = (rows: number, cols: number) => {
    const w = new Float32Array(rows * cols);
    for (let i = 0; i < w.length; i += 4) {
      const c = rng.int(256);
      for (let j = 0; j < 4; j++) w[i + j] = (rng.next() < 0.5 ? -1 : 1) * (patterns[c * 4 + j]! + 0.01 * rng.normal());
    }
    return w;
  };
  const shapes = [
    { key: "big", rows: 256, cols: 256 },
    { key: "tiny", rows: 16, cols: 64 },
  ];
  const inputs = [];
  for (const s of shapes) {
    const w = layer(s.rows, s.cols);
    const points = candidateGrid(s.rows, s.cols, 32, { family: "ssvq", allowFp: false }).filter((p) => p.mode === "ssvq");
    const candidates = await evaluateCandidates(w, s.rows, s.cols, undefined, points, { seed: 0, kmeansIters: 8, storedBits: 32 });
    const ref = referenceCandidate(candidates, 3);
    inputs.push({
      key: s.key,
      name: s.key,
      graphPath: "",
      weights: s.rows * s.cols,
      candidates,
      // Damage as the absolute squared weight error (relative error^2 * ||W||^2): every weight matters alike.
      sensitivity: w.reduce((a, x) => a + x * x, 0),
      reference: { ...candidates[ref]!.point, outputError: candidates[ref]!.error, modelChange: 0 },
    });
  }
  const weights = inputs.reduce((a, l) => a + l.weights, 0);
  const budget = budgetBits({ bits: 3 }, { originalTensorBytes: weights * 4, selectedBytes: weights * 4, selectedWeights: weights });
  const r = searchOperatingPoints(inputs, "ssvq", { bits: 3 }, budget);
  const big = r.plan.get("big")!;
  const tiny = r.plan.get("tiny")!;
  assert.ok(big.k > tiny.k && big.k >= 64, `big ${big.k}x${big.d}, tiny ${tiny.k}x${tiny.d}`);
  assert.ok(r.report.costBits <= budget);
  assert.equal(
    r.report.costBits,
    r.report.layers.reduce((a, l) => a + l.candidates[l.pick]!.bits, 0),
  );
  assert.ok(r.report.costBits / weights <= 3);
  // Same inputs, same choice.
  assert.deepEqual(searchOperatingPoints(inputs, "ssvq", { bits: 3 }, budget).report, r.report);
});
