/**
 * The messages between the job client (CLI, extension) and the background worker process.
 * Discriminated unions both ways; everything is structured-clone data sent over the IPC channel.
 */
import type { CompressConfig, Report } from "../core/report.js";
import type { FreezeCheck } from "../core/ssvq/finetune.js";
import type { DataOptions } from "../io/compress-file.js";
import type { ModelInspection } from "../io/inspect-file.js";

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
}

/** Read a model and summarise it (`ssvq inspect --json`): the inspector's data, parsed away from the editor. */
export interface InspectJobSpec {
  kind: "inspect";
  input: string;
}

export type JobSpec = CompressJobSpec | InspectJobSpec;

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

/** Worker -> client. */
export type WorkerEvent =
  | { type: "stage"; stage: string }
  /** Within a stage: the fraction done and, while layers are processed one by one, which one. */
  | { type: "progress"; stage: string; fraction: number; layer?: { index: number; count: number; name: string } }
  | { type: "layerDone"; stats: LayerStats }
  /** One progressive-freezing check of a layer (iteration, loss, relative output error, flips, freezing). */
  | ({ type: "freezeCheck"; layer: string } & FreezeCheck)
  | { type: "log"; level: LogLevel; text: string }
  /** A compress job's outcome: the report, and the files written (none for a dry run). */
  | { type: "result"; report: Report; outPath?: string; reportPath?: string }
  /** An inspect job's outcome. */
  | { type: "inspection"; inspection: ModelInspection }
  | {
      type: "error";
      /** "input": bad input (exit 2); "cancelled"; "internal": a bug or a crash (exit 1). */
      kind: "input" | "cancelled" | "internal";
      message: string;
      detail?: string;
      lastStage: string;
    };
