/**
 * Evaluation figures (pure): fidelity of a compressed model's outputs to the original's, and top-1
 * accuracy against labels, accumulated batch by batch in float64.
 *
 * Per output: relative error ||y' - y|| / ||y|| and cosine similarity <y, y'> / (||y|| ||y'||) over all
 * elements of all samples, the mean of the per-sample cosines, the largest absolute difference, and,
 * for outputs with a class axis, top-1 agreement (the share of samples whose argmax is the same).
 * An output has a class axis when it is [batch, C] with C >= 2 (logits or probabilities); the first such
 * output is the one compared with labels, unless the caller names another.
 * The JSON shapes below (`EvaluationReport`) are what the run report's `evaluation` field holds.
 */
import type { DataInfo } from "./source.js";

export type Values = ArrayLike<number>;

export interface OutputFidelity {
  name: string;
  /** Per-sample dims (without the batch), from the first batch. */
  sampleDims: number[];
  elements: number;
  relError: number;
  cosine: number;
  meanSampleCosine: number;
  maxAbsError: number;
  /** Samples whose top-1 class is the same in both models; absent without a class axis. */
  top1Agreement?: number;
  /** Non-finite values met (NaN/Inf in either model): the figures above then are NaN. */
  nonFinite: number;
}

export interface ModelAccuracy {
  correct: number;
  accuracy: number;
}

export interface AccuracyReport {
  /** The output whose argmax is compared with the labels. */
  output: string;
  labelled: number;
  original: ModelAccuracy;
  compressed?: ModelAccuracy;
}

export interface EvaluationReport {
  /** The models, as the caller names them. */
  models: { original: string; compressed?: string };
  data: DataInfo | undefined;
  samples: number;
  batches: number;
  /** Fidelity per output; empty when no compressed model was given. */
  outputs: OutputFidelity[];
  accuracy?: AccuracyReport;
  /** Outputs that were not compared, with the reason (non-tensor, different shapes...). */
  skipped: { name: string; reason: string }[];
  warnings: string[];
  seconds: number;
}

/** Index of the largest of `n` values starting at `off` (first one on ties; NaN never wins). */
export function argmax(v: Values, off: number, n: number): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = v[off + i]!;
    if (x > bv) {
      bv = x;
      best = i;
    }
  }
  return best;
}

/** True when dims (with batch) describe [batch, C] with C >= 2. */
export const hasClassAxis = (dims: readonly number[], batch: number): boolean => dims.length === 2 && dims[0] === batch && dims[1]! >= 2;

/** Accumulates the fidelity of one output over batches. */
export class FidelityAccumulator {
  private sumRef = 0;
  private sumCmp = 0;
  private sumDiff = 0;
  private dot = 0;
  private maxAbs = 0;
  private elements = 0;
  private cosSum = 0;
  private samples = 0;
  private agree = 0;
  private classified = 0;
  private nonFinite = 0;
  private sampleDims: number[] | undefined;
  private classAxis: boolean | undefined;

  constructor(readonly name: string) {}

  /** Adds one batch: `ref` from the original model, `cmp` from the compressed one, same dims. */
  add(ref: Values, cmp: Values, dims: readonly number[], batch: number): void {
    const n = ref.length;
    if (cmp.length !== n) throw new Error(`output ${this.name}: ${n} vs ${cmp.length} values`);
    const perSample = dims[0] === batch && batch > 0 ? n / batch : n;
    const samples = dims[0] === batch && batch > 0 ? batch : 1;
    this.sampleDims ??= dims[0] === batch ? dims.slice(1) : [...dims];
    const cls = hasClassAxis(dims, batch);
    this.classAxis = this.classAxis === undefined ? cls : this.classAxis && cls;
    for (let s = 0; s < samples; s++) {
      let r2 = 0;
      let c2 = 0;
      let rc = 0;
      const off = s * perSample;
      for (let i = 0; i < perSample; i++) {
        const a = ref[off + i]!;
        const b = cmp[off + i]!;
        if (!Number.isFinite(a) || !Number.isFinite(b)) this.nonFinite++;
        const d = b - a;
        r2 += a * a;
        c2 += b * b;
        rc += a * b;
        this.sumDiff += d * d;
        const ad = Math.abs(d);
        if (ad > this.maxAbs || Number.isNaN(ad)) this.maxAbs = ad;
      }
      this.sumRef += r2;
      this.sumCmp += c2;
      this.dot += rc;
      this.cosSum += cosine(rc, r2, c2);
      if (cls) {
        this.classified++;
        if (argmax(ref, off, perSample) === argmax(cmp, off, perSample)) this.agree++;
      }
    }
    this.samples += samples;
    this.elements += n;
  }

  result(): OutputFidelity {
    const out: OutputFidelity = {
      name: this.name,
      sampleDims: this.sampleDims ?? [],
      elements: this.elements,
      relError: this.sumRef > 0 ? Math.sqrt(this.sumDiff / this.sumRef) : this.sumDiff === 0 ? 0 : Infinity,
      cosine: cosine(this.dot, this.sumRef, this.sumCmp),
      meanSampleCosine: this.samples > 0 ? this.cosSum / this.samples : 1,
      maxAbsError: this.maxAbs,
      nonFinite: this.nonFinite,
    };
    if (this.classAxis && this.classified > 0) out.top1Agreement = this.agree / this.classified;
    return out;
  }
}

/** Cosine of two vectors from their dot product and squared norms; 1 when both are zero. */
function cosine(dot: number, a2: number, b2: number): number {
  if (a2 === 0 && b2 === 0) return 1;
  if (a2 === 0 || b2 === 0) return 0;
  return dot / Math.sqrt(a2 * b2);
}

/** Counts top-1 hits of a [batch, C] output against labels. */
export class AccuracyAccumulator {
  correct = 0;
  total = 0;

  add(v: Values, dims: readonly number[], labels: readonly number[]): void {
    const [batch, classes] = [dims[0]!, dims[1]!];
    if (labels.length !== batch) throw new Error(`${labels.length} labels for a batch of ${batch}`);
    for (let s = 0; s < batch; s++) {
      if (argmax(v, s * classes, classes) === labels[s]) this.correct++;
      this.total++;
    }
  }

  result(): ModelAccuracy {
    return { correct: this.correct, accuracy: this.total > 0 ? this.correct / this.total : 0 };
  }
}
