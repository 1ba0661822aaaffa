/**
 * The messages between the job client (CLI, extension) and the background worker process.
 * Discriminated unions both ways; everything is structured-clone data sent over the IPC channel.
 */
import type { CompressConfig, Report } from "../core/report.js";
import type { FreezeCheck } from "../core/ssvq/finetune.js";
import type { DataOptions } from "../io/compress-file.js";
import type { ModelInspection } from "../io/inspect-file.js";
import type { GemmLayer } from "../core/accel/gemm.js";
import type { SimulationResult } from "../core/accel/simulate.js";

/** A simulation as JSON (`ssvq simulate --json`, the report's `simulation`): the result and the shapes simulated. */
export type SimulationJson = Pick<SimulationResult, "preset" | "config" | "layers" | "totals" | "speedup"> & { gemms?: GemmLayer[] };

/** What to run. Paths are absolute or relative to the worker's working directory (the client's). */
export interface CompressJobSpec {
  kind: "compress";
  input: string;
  out?: string;
  force?: boolean;
  dryRun?: boolean;
  config: CompressConfig;
  threads: number;
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
 * Simulate a compression's latency on a preset (the panel's latency view, for a report that carries no
 * GEMM shapes yet): the model is run once to measure its shapes; the outcome keeps them (`gemms`), so
 * other presets are then computed without a job.
 */
export interface SimulateJobSpec {
  kind: "simulate";
  /** The source model (the report's `source.path`). */
  input: string;
  preset: string;
  /** The compression whose per-layer bits are simulated. */
  report: Pick<Report, "config" | "layers" | "comparison">;
  /** NAME=DIMS for inputs with dynamic dimensions, as `--shape` takes them. */
  shape?: string[];
}

export type JobSpec = CompressJobSpec | InspectJobSpec | SimulateJobSpec;

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
}

/** Worker -> client. */
export type WorkerEvent =
  | { type: "stage"; stage: string }
  /** Within a stage: the fraction done and, while layers are processed one by one, which one. */
  | { type: "progress"; stage: string; fraction: number; layer?: LayerPosition }
  | { type: "layerDone"; stats: LayerStats }
  /** One progressive-freezing check of a layer (iteration, loss, relative output error, flips, freezing). */
  | ({ type: "freezeCheck"; layer: string } & FreezeCheck)
  | { type: "log"; level: LogLevel; text: string }
  /** A compress job's outcome: the report, and the files written (none for a dry run). */
  | { type: "result"; report: Report; outPath?: string; reportPath?: string }
  /** An inspect job's outcome. */
  | { type: "inspection"; inspection: ModelInspection }
  /** A simulate job's outcome: `ssvq simulate --json`'s object, with the GEMM shapes. */
  | { type: "simulation"; simulation: SimulationJson; warnings: string[] }
  | {
      type: "error";
      /** "input": bad input (exit 2); "cancelled"; "internal": a bug or a crash (exit 1). */
      kind: "input" | "cancelled" | "internal";
      message: string;
      detail?: string;
      lastStage: string;
    };
