/**
 * The per-layer operating-point search (issue 12), the pure part: the budget a target means in stored
 * bits, the damage of each candidate (sensitivity * squared output error), the allocation, and the plan
 * and report that come out of it. Measuring the candidates' errors is `candidates.ts`; measuring each
 * layer's sensitivity needs onnxruntime and lives in `src/io/sensitivity.ts`.
 */
import { InputError } from "../errors.js";
import type { SearchLayer, SearchReport } from "../report.js";
import { allocate, type AllocLayer } from "./allocate.js";
import type { EvaluatedCandidate, OperatingPoint } from "./candidates.js";

export interface SearchTarget {
  /** Whole-model tensor ratio: original tensor bytes / compressed tensor bytes >= ratio. */
  ratio?: number;
  /** Average stored bits per weight over the compressed layers <= bits. */
  bits?: number;
}

export interface BudgetBasis {
  /** Every tensor of the source at its own width (the report's sizes.originalTensorBytes). */
  originalTensorBytes: number;
  /** The declared bytes of the selected weights (replaced when compressed). */
  selectedBytes: number;
  /** Weights in the selected layers. */
  selectedWeights: number;
}

/** The whole-model tensor bytes the report counts for selected layers of `bits` stored bits in total. */
export const compressedTensorBytes = (b: BudgetBasis, bits: number): number => b.originalTensorBytes - b.selectedBytes + bits / 8;

/**
 * The largest whole number of stored bits over the selected layers that meets the target as the report
 * counts it: tensorRatio >= ratio (original / (original - selected + bits / 8)), or bitsPerWeight =
 * bits / weights <= bits. Full-precision layers count at their width (their bytes are not replaced).
 */
export function budgetBits(target: SearchTarget, b: BudgetBasis): number {
  if (target.ratio !== undefined) {
    const r = target.ratio;
    if (!(r > 1)) throw new InputError(`--ratio must be a number above 1, not ${r}`);
    let bits = Math.floor(8 * (b.originalTensorBytes / r - (b.originalTensorBytes - b.selectedBytes)));
    const ok = (x: number) => b.originalTensorBytes / compressedTensorBytes(b, x) >= r;
    while (bits > 0 && !ok(bits)) bits--;
    if (bits <= 0)
      throw new InputError(
        `--ratio ${r} cannot be reached: the tensors left as they are already take ${Math.round(b.originalTensorBytes - b.selectedBytes)} of the ${Math.round(b.originalTensorBytes)} bytes`,
      );
    return bits;
  }
  if (target.bits !== undefined) {
    const t = target.bits;
    if (!(t > 0)) throw new InputError(`--bits must be a number above 0, not ${t}`);
    let bits = Math.floor(t * b.selectedWeights);
    while (bits > 0 && bits / b.selectedWeights > t) bits--;
    return bits;
  }
  throw new Error("a search target needs a ratio or bits");
}

export interface SearchLayerInput {
  /** weightKey of the layer (graph path and name). */
  key: string;
  name: string;
  graphPath: string;
  weights: number;
  candidates: readonly EvaluatedCandidate[];
  /** Model output change per unit squared relative output error (see SearchLayer.sensitivity). */
  sensitivity: number;
  reference: SearchLayer["reference"];
}

export interface SearchResult {
  /** The chosen point of each layer, by weightKey. */
  plan: Map<string, OperatingPoint>;
  report: Omit<SearchReport, "seconds" | "sensitivitySamples" | "modelChange">;
}

/** damage = sensitivity * error^2: the squared output error scaled by how much it moves the model's output. */
export const damageOf = (sensitivity: number, error: number): number => sensitivity * error * error;

/** Allocates the budget over the layers and explains the choice. */
export function searchOperatingPoints(layers: readonly SearchLayerInput[], family: "ssvq" | "vq", target: SearchTarget, budget: number): SearchResult {
  const alloc: AllocLayer[] = layers.map((l) => ({
    name: l.name,
    candidates: l.candidates.map((c) => ({ cost: c.bits.totalBits, damage: damageOf(l.sensitivity, c.error) })),
  }));
  const a = allocate(alloc, budget);
  const plan = new Map<string, OperatingPoint>();
  const out: SearchLayer[] = layers.map((l, i) => {
    const hull = new Set(a.hulls[i]);
    plan.set(l.key, l.candidates[a.picks[i]!]!.point);
    return {
      name: l.name,
      graphPath: l.graphPath,
      weights: l.weights,
      sensitivity: l.sensitivity,
      reference: l.reference,
      candidates: l.candidates.map((c, j) => ({
        mode: c.point.mode,
        k: c.point.k,
        d: c.point.d,
        bits: c.bits.totalBits,
        bitsPerWeight: c.bits.bitsPerWeight,
        outputError: c.error,
        damage: alloc[i]!.candidates[j]!.damage,
        hull: hull.has(j),
      })),
      pick: a.picks[i]!,
    };
  });
  return {
    plan,
    report: {
      family,
      target: { ...(target.ratio !== undefined ? { ratio: target.ratio } : {}), ...(target.bits !== undefined ? { bits: target.bits } : {}) },
      budgetBits: budget,
      costBits: a.cost,
      damage: a.damage,
      lambda: a.lambda,
      layers: out,
    },
  };
}

/**
 * Sensitivity from one measured perturbation: the model's output change over the layer's squared output
 * error. A layer whose reference point reproduces it exactly (error 0), or whose change could not be
 * measured (NaN: no float output), gets the median of the others (1 when none could be measured).
 */
export function sensitivities(measured: readonly { modelChange: number; error: number }[]): number[] {
  const s = measured.map((m) => (m.error > 0 && Number.isFinite(m.modelChange) ? m.modelChange / (m.error * m.error) : NaN));
  const known = s.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const median = known.length ? known[Math.floor((known.length - 1) / 2)]! : 1;
  return s.map((x) => (Number.isFinite(x) ? x : median));
}
