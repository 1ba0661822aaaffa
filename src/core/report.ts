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
  /** The --bits value that picked (k, d), when given. */
  bits?: number;
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
  outputFileBytes: number;
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
  output: { path: string; format: "ssvq" | "dense" } | null;
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
  /**
   * With --compare vq: conventional VQ at the nearest operating point whose whole-model size is not larger,
   * compressed and fine-tuned the same way on the same calibration data (its model is not written).
   */
  comparison?: {
    vq: Pick<Report, "config" | "layers" | "sizes" | "evaluation" | "timings">;
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
