/**
 * The messages between the job client (CLI, extension) and the background worker process.
 * Discriminated unions both ways; everything is structured-clone data sent over the IPC channel.
 */
import type { CompressConfig, Report } from "../core/report.js";
import type { FreezeCheck } from "../core/ssvq/finetune.js";
import type { DataOptions } from "../io/compress-file.js";
import type { ModelInspection } from "../io/inspect-file.js";
import type { EvaluationReport } from "../core/calib/eval-metrics.js";
import type { RawPreprocess } from "../core/calib/preprocess.js";
import type { GemmLayer } from "../core/accel/gemm.js";
import type { SimulationResult } from "../core/accel/simulate.js";
import type { SweepOptions, SweepResult } from "../io/sweep.js";

/** A simulation as JSON (`ssvq simulate --json`, the report's `simulation`): the result and the shapes simulated. */
export type SimulationJson = Pick<SimulationResult, "preset" | "config" | "layers" | "totals" | "speedup"> & { gemms?: GemmLayer[] };

/** What to run. Paths are absolute or relative to the worker's working directory (the client's). */
export interface CompressJobSpec {
  kind: "compress";
  input: string;
  out?: string;
  force?: boolean;
  dryRun?: boolean;
  /** --external-data: the output's large tensors in `<out>.data` even when it fits in one file. */
  externalData?: boolean;
  config: CompressConfig;
  threads: number;
  /** --memory-budget in bytes (default: half the machine's memory, at most 16 GiB); never changes the result. */
  memoryBudget?: number;
  /** Simulate on an accelerator too: { preset?, config?, shape?: string[] } as `ssvq simulate` spells them. */
  simulate?: { preset?: string; config?: string; shape?: string[] };
  /** Calibration (--calib) and evaluation (--eval) data. */
  data?: DataOptions;
  /** --compare vq */
  compare?: "vq";
  /** The `ssvq compress` arguments that reproduce this run (paths absolute), recorded in the report. */
  command?: string[];
}

/** Read a model and summarise it (`ssvq inspect --json`): the inspector's data, parsed away from the editor. */
export interface InspectJobSpec {
  kind: "inspect";
  input: string;
}

/**
 * `ssvq simulate` in the worker (onnxruntime measures the model's shapes there, away from the CLI and
 * the extension host): the panel's latency view and the command line. The outcome keeps the GEMM
 * shapes (`gemms`), so other presets are then computed without a job.
 */
export interface SimulateJobSpec {
  kind: "simulate";
  /** An ONNX model (for a report, its `source.path`) or a SCALE-Sim topology CSV. */
  input: string;
  /** `ssvq simulate` options as the command line spells them: preset, cfg, config, shape, formats, k, d. */
  options: Record<string, string | string[]>;
  /** A compression whose per-layer bits are simulated (SSVQ's, VQ's from its comparison; its (k, d) for the rest). */
  report?: Pick<Report, "config" | "layers" | "comparison">;
  /** Take dynamic input dimensions no shape gives as 1, with a warning, instead of refusing. */
  dynamicAsOne?: boolean;
}

/** `ssvq eval` in the worker: a model (and another to compare) on evaluation data, in onnxruntime. */
export interface EvaluateJobSpec {
  kind: "evaluate";
  model: string;
  compare?: string;
  /** The samples, as --eval/--eval-range/--eval-count/--labels give them. */
  data: { path: string; range?: string; count?: number; labels?: string };
  preprocess: RawPreprocess;
  batchSize?: number;
}

/**
 * `ssvq sweep` in the worker (its capture, search, fine-tuning and evaluations run onnxruntime): the
 * frontier's settings, and the threads of the worker's pool. The client writes the outputs.
 */
export interface SweepJobSpec extends Pick<SweepOptions, "input" | "config" | "calib" | "eval" | "preprocess" | "batchSize" | "targets" | "methods"> {
  kind: "sweep";
  threads: number;
}

export type JobSpec = CompressJobSpec | InspectJobSpec | SimulateJobSpec | EvaluateJobSpec | SweepJobSpec;

/** Client -> worker. */
export type ClientMessage = { type: "start"; spec: JobSpec } | { type: "cancel" };

export type LogLevel = "info" | "warning" | "error";

export interface LayerStats {
  index: number;
  count: number;
  name: string;
  weightError: number;
  bitsPerWeight: number;
}

/** Which layer a stage is at: i of n, and the layer's row matrix (rows x cols, cols = the reduction). */
export interface LayerPosition {
  index: number;
  count: number;
  name: string;
  rows: number;
  cols: number;
  /** Quantizing: the source bytes of the layers done before this one, and of all the layers. */
  bytes?: { done: number; total: number };
}

/** Worker -> client. */
export type WorkerEvent =
  | { type: "stage"; stage: string }
  /** Within a stage: the fraction done and, while layers are processed one by one, which one. */
  | { type: "progress"; stage: string; fraction: number; layer?: LayerPosition }
  | { type: "layerDone"; stats: LayerStats }
  /** Statistics in waves under the memory budget: wave `index` of `count` (of `layers` layers) starts. */
  | { type: "wave"; index: number; count: number; layers: number }
  /** One progressive-freezing check of a layer (iteration, loss, relative output error, flips, freezing). */
  | ({ type: "freezeCheck"; layer: string } & FreezeCheck)
  | { type: "log"; level: LogLevel; text: string }
  /** An onnxruntime call on the model started or ended; `running`: one is still in progress (the client's stall watchdog). */
  | { type: "onnxruntime"; running: boolean }
  /** A compress job's outcome: the report, and the files written (none for a dry run). */
  | { type: "result"; report: Report; outPath?: string; reportPath?: string }
  /** An inspect job's outcome. */
  | { type: "inspection"; inspection: ModelInspection }
  /** A simulate job's outcome: `ssvq simulate --json`'s object, with the GEMM shapes, and the (k, d) used. */
  | { type: "simulation"; simulation: SimulationJson; warnings: string[]; k: number; d: number }
  /** An evaluate job's outcome, with the data source's warnings. */
  | { type: "evaluation"; report: EvaluationReport; warnings: string[] }
  /** A sweep job's outcome: every point of the frontier. */
  | { type: "sweep"; result: SweepResult }
  | {
      type: "error";
      /** "input": bad input (exit 2); "cancelled"; "internal": a bug or a crash (exit 1). */
      kind: "input" | "cancelled" | "internal";
      message: string;
      detail?: string;
      lastStage: string;
      /** Set by the client when the worker ended without saying why: how the process ended. */
      exit?: WorkerExit;
    };

/** How a worker process that sent no outcome ended: its exit code or the signal that ended it, and whether it ran out of memory. */
export interface WorkerExit {
  code: number | null;
  signal: string | null;
  outOfMemory: boolean;
}

export type JobOutcome = Extract<WorkerEvent, { type: "result" | "inspection" | "simulation" | "evaluation" | "sweep" | "error" }>;

const OUTCOME_TYPES: ReadonlySet<WorkerEvent["type"]> = new Set<JobOutcome["type"]>(["result", "inspection", "simulation", "evaluation", "sweep", "error"]);

/** Whether an event ends the job (its outcome) rather than reporting on it. */
export function isOutcome(e: WorkerEvent): e is JobOutcome {
  return OUTCOME_TYPES.has(e.type);
}
