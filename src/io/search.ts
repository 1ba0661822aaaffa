/**
 * The per-layer operating-point search of --ratio / --bits (issue 12), on a model file: every layer's
 * candidates are quantized once (k-means each, the compression's own seed) and their output errors
 * measured on the calibration statistics; each layer's sensitivity is measured once with onnxruntime
 * (src/io/sensitivity.ts); then any number of targets are allocated from the same measurements
 * (`planFor`), so a sweep pays for k-means once.
 */
import { candidateGrid, evaluateCandidates, pointBits, pointKey, type EvaluatedCandidate, type OperatingPoint } from "../core/alloc/candidates.js";
import { minimumCost } from "../core/alloc/allocate.js";
import { InputError } from "../core/errors.js";
import { budgetBits, compressedTensorBytes, searchOperatingPoints, sensitivities, type BudgetBasis, type SearchLayerInput, type SearchTarget } from "../core/alloc/search.js";
import { boundKernelCache, quantCacheKey, releaseStatistics, tensorBytes, waveGroups, type StatisticWaves } from "../core/compress.js";
import { CancelledError } from "../core/errors.js";
import type { ProgressEvent } from "../core/compress.js";
import type { Batch } from "../core/calib/source.js";
import { floatsAs } from "../core/onnx/decode-graph.js";
import { dtypeBits } from "../core/onnx/dtype.js";
import { declaredBytes, tensorToFloat32 } from "../core/onnx/tensor-data.js";
import { weightKey, type WeightInfo } from "../core/onnx/weights.js";
import type { ParallelMap } from "../core/parallel.js";
import type { CompressConfig, SearchLayer, SearchReport } from "../core/report.js";
import { fromRows, toRows } from "../core/ssvq/layout.js";
import type { LayerStatistic } from "../core/ssvq/objective.js";
import { reconstructRows, type Quantized } from "../core/ssvq/quantize.js";
import type { StatHandle } from "../core/ssvq/stat-product.js";
import { serialMap } from "../core/tasks.js";
import type { LoadedModel } from "./model-file.js";
import { MODEL_CHANGE, measureModelChanges } from "./sensitivity.js";

export type { SearchTarget };

/** A layer's sensitivity and the perturbation it was measured with (reusable by another family's search). */
export type Sensitivity = Pick<SearchLayer, "sensitivity" | "reference">;

export interface PrepareSearchOptions {
  loaded: LoadedModel;
  /** The selected weights (`selectWeights`), in graph order. */
  selected: readonly WeightInfo[];
  stats?: ReadonlyMap<string, LayerStatistic | StatHandle>;
  /** Statistics in waves under a memory budget instead of `stats`: each wave is captured, used and freed. */
  waves?: StatisticWaves;
  config: CompressConfig;
  family: "ssvq" | "vq";
  /** The loosest target to be allocated: candidates that cannot fit it are not tried. */
  loosest: SearchTarget;
  /** Bits per weight of the perturbation that measures each layer's sensitivity (about the target's). */
  referenceBitsPerWeight: number;
  /** Calibration data for the sensitivities (absent: `sensitivity` must be given). */
  data?: { batches(): AsyncGenerator<Batch> };
  /** Sensitivities already measured (by weightKey), e.g. by the SSVQ search this VQ search is compared with. */
  sensitivity?: ReadonlyMap<string, Sensitivity>;
  /** Receives every candidate's quantization (by `quantCacheKey`) for the compressions to reuse. */
  cache?: Map<string, Quantized>;
  map?: ParallelMap;
  engine?: string;
  signal?: AbortSignal;
  /** Fractions of the "search" stage only, increasing (candidates to 0.8, sensitivities to 1). */
  onProgress?: (e: ProgressEvent) => void;
}

export interface PreparedSearch {
  family: "ssvq" | "vq";
  basis: BudgetBasis;
  layers: SearchLayerInput[];
  sensitivity: Map<string, Sensitivity>;
  sensitivitySamples: number;
  seconds: { candidates: number; sensitivity: number };
}

const roundTo = (v: Float32Array, dtype: number): Float32Array => tensorToFloat32(floatsAs("", [v.length], v, dtype));

/** The budget basis of the selected layers of a model. */
export function budgetBasis(loaded: LoadedModel, selected: readonly WeightInfo[]): BudgetBasis {
  return {
    originalTensorBytes: tensorBytes(loaded.model).originalTensorBytes,
    selectedBytes: selected.reduce((a, w) => a + (declaredBytes(w.tensor) ?? 0), 0),
    selectedWeights: selected.reduce((a, w) => a + w.layout.rows * w.layout.cols, 0),
  };
}

/** Quantizes every layer's candidates, measures their errors and the layers' sensitivities. */
export async function prepareSearch(o: PrepareSearchOptions): Promise<PreparedSearch> {
  const map = o.map ?? serialMap;
  const check = () => {
    if (o.signal?.aborted) throw new CancelledError();
  };
  const basis = budgetBasis(o.loaded, o.selected);
  const maxBudget = budgetBits(o.loosest, basis);
  const grids = o.selected.map((w) =>
    candidateGrid(w.layout.rows, w.layout.cols, dtypeBits(w.dtype)!, { family: o.family, allowFp: true }),
  );
  const minCost = grids.map((g, i) => pointBits(g[0]!, o.selected[i]!.layout.rows, o.selected[i]!.layout.cols, dtypeBits(o.selected[i]!.dtype)!).totalBits);
  const sumMin = minCost.reduce((a, b) => a + b, 0);
  const t0 = performance.now();
  const evaluated: EvaluatedCandidate[][] = [];
  // The reference quantization of each layer is kept compact (indices, signs, codebook) and decoded
  // only when its sensitivity is measured, one layer at a time.
  const refs: { key: string; stored: () => Float32Array; point: OperatingPoint; error: number }[] = [];
  let done = 0;
  for (const group of waveGroups(o.selected.map((_, i) => i), (i) => o.selected[i]!.name, o.waves)) {
    check();
    const stats = group.capture ? await group.capture() : o.stats;
    if (group.cacheBytes !== undefined) await boundKernelCache(map, group.cacheBytes);
    for (const i of group.layers) {
      check();
      const w = o.selected[i]!;
      const stored = dtypeBits(w.dtype)!;
      const maxBits = maxBudget - (sumMin - minCost[i]!);
      const points = grids[i]!.filter((p) => pointBits(p, w.layout.rows, w.layout.cols, stored).totalBits <= maxBits);
      if (points.length === 0) points.push(grids[i]![0]!);
      const ref = referencePoint(points, w, o.referenceBitsPerWeight);
      const rows = toRows(tensorToFloat32(w.tensor, o.loaded.readExternal), w.layout);
      let refQ: Quantized | undefined;
      const c = await evaluateCandidates(rows, w.layout.rows, w.layout.cols, stats?.get(w.name), points, {
        seed: o.config.seed,
        kmeansIters: o.config.kmeansIters,
        storedBits: stored,
        map: group.serial ? serialMap : map,
        ...(o.engine !== undefined ? { engine: o.engine } : {}),
        roundStored: (v) => roundTo(v, w.dtype),
        keep: (p, q) => {
          o.cache?.set(quantCacheKey(w, p), q);
          if (pointKey(p) === pointKey(ref)) refQ = q;
        },
        ...(o.signal ? { signal: o.signal } : {}),
      });
      evaluated[i] = c;
      const refIndex = c.findIndex((x) => pointKey(x.point) === pointKey(ref));
      const q = refQ!;
      refs[i] = { key: weightKey(w), stored: () => fromRows(reconstructRows(q), w.layout), point: ref, error: c[refIndex]!.error };
      o.onProgress?.({ kind: "fraction", stage: "search", fraction: (0.8 * ++done) / o.selected.length });
    }
    if (group.capture) await releaseStatistics(map);
  }
  const candidatesSeconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  let sensitivity = new Map<string, Sensitivity>();
  let samples = 0;
  if (o.sensitivity) sensitivity = new Map(o.sensitivity);
  else {
    if (!o.data) throw new Error("the search needs calibration data or measured sensitivities");
    const measured = await measureModelChanges(o.loaded.bytes, o.loaded.path, refs, o.data, {
      readExternal: o.loaded.readExternal,
      label: o.loaded.path,
      ...(o.signal ? { signal: o.signal } : {}),
      onProgress: (f) => o.onProgress?.({ kind: "fraction", stage: "search", fraction: 0.8 + 0.2 * f }),
    });
    samples = measured.samples;
    const s = sensitivities(refs.map((r, i) => ({ modelChange: measured.changes[i]!, error: r.error })));
    for (const [i, r] of refs.entries())
      sensitivity.set(r.key, {
        sensitivity: s[i]!,
        reference: { ...r.point, outputError: r.error, modelChange: measured.changes[i]! },
      });
  }
  const layers: SearchLayerInput[] = o.selected.map((w, i) => {
    const s = sensitivity.get(weightKey(w));
    if (!s) throw new Error(`no sensitivity for layer ${w.name}`);
    return {
      key: weightKey(w),
      name: w.name,
      graphPath: w.graphPath,
      weights: w.layout.rows * w.layout.cols,
      candidates: evaluated[i]!,
      sensitivity: s.sensitivity,
      reference: s.reference,
    };
  });
  return {
    family: o.family,
    basis,
    layers,
    sensitivity,
    sensitivitySamples: samples,
    seconds: { candidates: candidatesSeconds, sensitivity: (performance.now() - t1) / 1000 },
  };
}

/** The family's point nearest `bpw` bits per weight (else any quantized point; else the cheapest). */
function referencePoint(points: readonly OperatingPoint[], w: WeightInfo, bpw: number): OperatingPoint {
  const stored = dtypeBits(w.dtype)!;
  const dist = (p: OperatingPoint) => Math.abs(pointBits(p, w.layout.rows, w.layout.cols, stored).bitsPerWeight - bpw);
  const vq = points.filter((p) => p.mode === "ssvq" || p.mode === "vq");
  const pool = vq.length ? vq : points.filter((p) => p.mode !== "fp");
  let best = pool[0] ?? points[0]!;
  for (const p of pool) if (dist(p) < dist(best)) best = p;
  return best;
}

/**
 * One target's allocation from a prepared search: the plan for `compressModel` and the report's `search`.
 * A --bits target keeps every layer quantized (full precision is not among its candidates, as the bits
 * per weight count compressed layers only).
 */
export function planFor(p: PreparedSearch, target: SearchTarget, seconds = 0): { plan: Map<string, OperatingPoint>; search: SearchReport } {
  const budget = budgetBits(target, p.basis);
  const layers = target.ratio !== undefined ? p.layers : p.layers.map((l) => ({ ...l, candidates: l.candidates.filter((c) => c.point.mode !== "fp") }));
  const t0 = performance.now();
  let r: ReturnType<typeof searchOperatingPoints>;
  try {
    r = searchOperatingPoints(layers, p.family, target, budget);
  } catch (e) {
    if (!(e instanceof InputError) || target.ratio === undefined) throw e;
    const min = minimumCost(layers.map((l) => ({ name: l.name, candidates: l.candidates.map((c) => ({ cost: c.bits.totalBits, damage: 0 })) })));
    const most = p.basis.originalTensorBytes / compressedTensorBytes(p.basis, min);
    throw new InputError(
      `--ratio ${target.ratio} cannot be reached with ${p.family.toUpperCase()}: at most ${most.toFixed(2)}x, every layer at its cheapest point` +
        (p.family === "ssvq" ? " (SSVQ stores a sign bit per weight)" : ""),
    );
  }
  return {
    plan: r.plan,
    search: {
      ...r.report,
      modelChange: MODEL_CHANGE,
      sensitivitySamples: p.sensitivitySamples,
      seconds: { ...p.seconds, allocate: seconds + (performance.now() - t0) / 1000 },
    },
  };
}

/** The search target of a config (--ratio or --bits), or undefined for a fixed (k, d). */
export function searchTarget(c: CompressConfig): SearchTarget | undefined {
  if (c.mode !== "ssvq" && c.mode !== "vq") return undefined;
  if (c.ratio !== undefined) return { ratio: c.ratio };
  if (c.bits !== undefined) return { bits: c.bits };
  return undefined;
}

/** Bits per weight a target means over the selected layers (to pick the sensitivity perturbation). */
export function targetBitsPerWeight(target: SearchTarget, basis: BudgetBasis): number {
  return budgetBits(target, basis) / basis.selectedWeights;
}
