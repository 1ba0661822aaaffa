/**
 * The run report (`<name>.ssvq.json`, DESIGN.md section 2): one schema shared by the background job, the
 * CLI, the panel and the tests. Later issues add fields; none is ever renamed. Bump `SCHEMA_VERSION` only
 * for a change that breaks readers.
 */
import type { DataInfo } from "./calib/source.js";
import type { EvaluationReport } from "./calib/eval-metrics.js";
import type { LayerBits } from "./ssvq/bits.js";
import type { FinetuneOptions, FreezeCheck } from "./ssvq/finetune.js";
import type { Mode } from "./ssvq/quantize.js";

export const SCHEMA_VERSION = 1;

export interface CompressConfig {
  mode: Mode;
  /** Codebook size and sub-vector length (SSVQ and VQ). */
  k: number;
  d: number;
  /**
   * --bits B: the target average bits per weight over the compressed layers, codebooks, signs and scales
   * included; each layer gets its own operating point (`Report.search`), and `k`, `d` are 0. (Reports
   * written before issue 12 used it for the value that picked one (k, d) from a table.)
   */
  bits?: number;
  /** --ratio R: the target whole-model tensor ratio; each layer gets its own operating point (`Report.search`). */
  ratio?: number;
  seed: number;
  kmeansIters: number;
  minWeights: number;
  /** The --layers pattern (source text), when given. */
  layers?: string;
  format: "ssvq" | "dense";
  /** Fine-tune codebooks (and SSVQ's signs) on the calibration statistics. */
  finetune: boolean;
  /** The fine-tuning settings, fully resolved (with `finetune`). */
  finetuning?: FinetuneOptions;
  /**
   * --sequential: each layer is fine-tuned, in graph order, on its inputs in the network whose earlier
   * layers are already compressed, towards the original network's output (errors are then relative to
   * ||W X_fp||).
   */
  sequential?: boolean;
}

/** What fine-tuning did to one layer. */
export interface LayerFinetune {
  iters: number;
  /** Relative output error before (k-means) and after fine-tuning. */
  errorBefore: number;
  errorAfter: number;
  /** SSVQ: weights whose final sign differs from sign(W), and their fraction. */
  signsChanged: number;
  signsChangedFraction: number;
  frozenFraction: number;
  reassigned: number;
  /** The k-means codebook, before fine-tuning ([k][d]). */
  codebookBefore: number[][];
  /** Per check: iteration, loss, relative output error, flips since the last check, newly frozen, frozen fraction. */
  checks: FreezeCheck[];
  /** The engine that computed the products (W_hat - W) H. */
  product: string;
  /** Wall time from the layer's submission to its result (layers share the worker threads). */
  seconds: number;
}

export interface LayerReport {
  name: string;
  graphPath: string;
  opType: string;
  consumers: string[];
  dims: number[];
  dtype: string;
  rows: number;
  cols: number;
  groups: number;
  mode: Mode;
  k?: number;
  d?: number;
  bits: LayerBits;
  /** Relative Frobenius error of the weight, ||W_hat - W|| / ||W||. */
  weightError: number;
  /** With calibration data: the layer's relative output error ||W_hat X - W X|| / ||W X|| (after fine-tuning, if any). */
  outputError?: number;
  /** With fine-tuning. */
  finetune?: LayerFinetune;
  /** SSVQ/VQ: the codebook [k][d] as stored. */
  codebook?: number[][];
  /** SSVQ/VQ: sub-vectors per codeword. */
  usage?: number[];
  kmeansIterations?: number;
  /** INT modes: the per-row scales' range. */
  scaleRange?: [number, number];
}

/** One operating point the search tried for a layer. */
export interface SearchCandidate {
  /** "fp": the layer stays at full precision. */
  mode: Mode | "fp";
  k: number;
  d: number;
  /** Stored bits, as `layers[].bits.totalBits` counts them. */
  bits: number;
  bitsPerWeight: number;
  /** Relative output error after k-means (or rounding), on the calibration statistic. */
  outputError: number;
  /** sensitivity * outputError^2: the estimated loss the allocator weighs against the bits. */
  damage: number;
  /** On the lower convex hull of (bits, damage): a point the Lagrangian sweep can stop at. */
  hull: boolean;
}

/** How the search chose one layer's operating point. */
export interface SearchLayer {
  name: string;
  graphPath: string;
  weights: number;
  /**
   * How much the model's output moves per unit of this layer's squared relative output error:
   * modelChange / reference.outputError^2.
   */
  sensitivity: number;
  /** The perturbation the sensitivity was measured with: this layer alone quantized at one candidate. */
  reference: { mode: Mode | "fp"; k: number; d: number; outputError: number; modelChange: number };
  /** Every candidate tried, cheapest first. */
  candidates: SearchCandidate[];
  /** Index of the chosen candidate. */
  pick: number;
}

/** With --ratio or --bits: the per-layer operating-point search (issue 12). */
export interface SearchReport {
  family: "ssvq" | "vq";
  target: { ratio?: number; bits?: number };
  /** The budget in stored bits over the selected layers (full-precision layers count at their width). */
  budgetBits: number;
  /** The chosen points' bits (<= budgetBits). */
  costBits: number;
  damage: number;
  /** Damage per bit at the last convex-hull step the allocator took. */
  lambda: number;
  /** What the model's output change is measured as: sum ||y' - y||^2 / sum ||y||^2 over all float outputs. */
  modelChange: string;
  /** Calibration samples the sensitivities were measured on. */
  sensitivitySamples: number;
  layers: SearchLayer[];
  seconds: { candidates: number; sensitivity: number; allocate: number };
}

export interface KeptWeight {
  name: string;
  opType: string;
  dims: number[];
  reason: string;
}

export interface SizeReport {
  /** Bytes of every tensor of the source at its own width. */
  originalTensorBytes: number;
  /** The same with compressed layers at their bits / 8. */
  compressedTensorBytes: number;
  tensorRatio: number;
  sourceFileBytes: number;
  /** Bytes of the source file not replaced + compressed bits / 8. */
  theoreticalFileBytes: number;
  /** Bytes of the output on disk: the model file plus its external data file, when it has one. */
  outputFileBytes: number;
  /** Of outputFileBytes, the external data file's (absent for a single-file output). */
  outputDataBytes?: number;
  diskRatio: number;
  compressedLayers: number;
  compressedWeights: number;
  /** Over the compressed layers only. */
  bitsPerWeight: number;
}

export interface Report {
  schemaVersion: number;
  tool: { name: "ssvq"; version: string };
  source: { path: string; fileBytes: number; producer: string; opset: number | undefined };
  /** `data`: the external data file beside the model (outputs over the protobuf limit, or --external-data). */
  output: { path: string; format: "ssvq" | "dense"; data?: { path: string; bytes: number; tensors: number } } | null;
  config: CompressConfig;
  layers: LayerReport[];
  /** Weights found but left as they are (too small, not matched by --layers, or not compressible). */
  kept: KeptWeight[];
  sizes: SizeReport;
  /** With --calib (or random data): what the statistics were computed on. */
  calibration?: {
    data: DataInfo;
    samples: number;
    /** Layers without statistics (inside If/Loop/Scan bodies), with the reason. */
    uncalibrated: { name: string; reason: string }[];
    /**
     * The memory budget (`--memory-budget`) and the waves it gave: layers per wave, each captured,
     * quantized, fine-tuned and freed before the next. Absent for the sequential variant (one layer at a
     * time).
     */
    memory?: {
      budgetBytes: number;
      /** The budget less what the run holds anyway: what the waves were planned in. */
      availableBytes: number;
      /** Estimated bytes of every layer's statistic at once. */
      statisticsBytes: number;
      /** The precision H is kept in. */
      precision: "float32" | "float64";
      waves: number[];
      /** Threads each wave's products used (1 when the wave fitted only so). */
      threads: number[];
    };
  };
  /** With --eval: the original and the compressed model on the evaluation data. */
  evaluation?: EvaluationReport;
  /** With --ratio or --bits: how each layer's operating point was chosen. */
  search?: SearchReport;
  /**
   * With --compare vq: conventional VQ at the nearest operating point whose whole-model size is not larger
   * (with --ratio or --bits: the same search at the same budget), compressed and fine-tuned the same way
   * on the same calibration data (its model is not written).
   */
  comparison?: {
    vq: Pick<Report, "config" | "layers" | "sizes" | "evaluation" | "timings" | "search">;
  };
  /** Simulated latency on an accelerator (with `--preset` / `--shape`): `ssvq simulate --json`'s object. */
  simulation?: {
    preset: string;
    totals: Record<string, { latencyCycles: number; seconds: number }>;
    speedup: { vsInt8: Record<string, number>; vsFp16: Record<string, number> };
    [more: string]: unknown;
  };
  /**
   * The `ssvq compress` arguments that reproduce this run (the model first, paths absolute; without
   * --force, --threads and --json, which do not change the result). Absent when run through the library.
   */
  command?: string[];
  /** Seconds per stage. */
  timings: Record<string, number>;
  warnings: string[];
}
