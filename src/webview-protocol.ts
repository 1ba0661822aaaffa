/**
 * The messages between the extension and its webviews (the SSVQ Inspector; the live panel uses the same
 * file): discriminated unions both ways, plain JSON. The only module both sides import; the webview
 * imports its types alone. Messages from a webview are validated (`parseFromWebview`) before use.
 */
import type { ModelInspection } from "./io/inspect-file.js";
import type { Report } from "./core/report.js";
import type { SimulationJson, WorkerEvent } from "./job/protocol.js";

/** Whether a compression of the inspected model runs, and how far it is. */
export interface CompressionState {
  running: boolean;
  /** "finetune 3/12 conv2 45%" while running. */
  text?: string;
  /** 0 to 1, the whole run. */
  fraction?: number;
}

/** Extension -> inspector. */
export type ToInspectorMessage =
  /** Reading has started (the file's name and size, before the summary arrives). */
  | { type: "loading"; fileName: string; fileBytes: number | null }
  /** The model's summary, what `ssvq inspect --json` prints; `elapsedMs` from the open request. */
  | { type: "inspection"; inspection: ModelInspection; elapsedMs: number }
  /** The model could not be read: the engine's one-line message ("input": damaged or foreign file). */
  | { type: "inspectionFailed"; kind: "input" | "internal"; message: string }
  | { type: "compressionState"; state: CompressionState }
  /** Restricted Mode: compressing needs trust (the buttons say so). */
  | { type: "trust"; trusted: boolean };

/** Inspector -> extension. */
export type FromInspectorMessage =
  /** The page has loaded and listens: send what there is. */
  | { type: "ready" }
  /** "Compress with SSVQ" (with `chooseSettings`: the quick picks first). */
  | { type: "compress"; chooseSettings: boolean }
  | { type: "cancelCompression" }
  /** Read the file again (after an error, or on request). */
  | { type: "reload" }
  /** Show the SSVQ log. */
  | { type: "showLog" }
  /** Open the SSVQ panel of this model (its running compression, or its report). */
  | { type: "openPanel" };

/** A job's progress as the status bar shows it. */
export interface JobProgressView {
  /** "finetune 3/12 conv2 45%". */
  text: string;
  stage: string;
  /** 0 to 1, the whole run. */
  fraction: number;
  stages: string[];
}

/** The accelerator presets the latency view offers. */
export interface PresetInfo {
  name: string;
  description: string;
}

/** Extension -> panel. */
export type ToPanelMessage =
  /**
   * A compression of the panel's model started (or the panel opened while it runs): the events so far,
   * in order, so a late or hidden panel catches up.
   */
  | { type: "jobStarted"; model: string; command: string; progress: JobProgressView; events: WorkerEvent[] }
  /** New events of the running job since the last message (at most ten messages a second). */
  | { type: "jobEvents"; progress: JobProgressView; events: WorkerEvent[] }
  /** The job ended without a result: cancelled, bad input or a crash. */
  | { type: "jobFailed"; kind: "cancelled" | "input" | "internal"; message: string }
  /** A finished compression's report (at the end of a job, or read from a `.ssvq.json`). */
  | { type: "report"; report: Report; reportPath: string | null; outPath: string | null; command: string; presets: PresetInfo[]; preset: string }
  /** The report could not be read. */
  | { type: "reportFailed"; message: string }
  /** Simulated latency of the report's compression on a preset (`ssvq simulate --json`'s object). */
  | { type: "latency"; preset: string; simulation: SimulationJson; warnings: string[] }
  | { type: "latencyFailed"; preset: string; message: string }
  | { type: "latencyPending"; preset: string };

/** Panel -> extension. */
export type FromPanelMessage =
  | { type: "panelReady" }
  /** Simulate the report's compression on this preset. */
  | { type: "selectPreset"; preset: string }
  | { type: "exportReport"; format: "json" | "markdown" }
  | { type: "openOutput" }
  | { type: "revealOutput" }
  | { type: "copyCommand" }
  /** "Compress again with changed settings": the quick picks, then a new job for the same model. */
  | { type: "compressAgain" }
  | { type: "cancelJob" }
  | { type: "openInspector" };

export type FromWebviewMessage = FromInspectorMessage | FromPanelMessage;
export type ToWebviewMessage = ToInspectorMessage | ToPanelMessage;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Preset names are short identifiers (see src/core/accel/presets.ts). */
const PRESET_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** A message from a webview, or undefined when it is not one of ours (ignored, never trusted). */
export function parseFromWebview(raw: unknown): FromWebviewMessage | undefined {
  if (!isObject(raw) || typeof raw["type"] !== "string") return undefined;
  const keys = Object.keys(raw);
  const only = (...allowed: string[]) => keys.every((k) => k === "type" || allowed.includes(k));
  switch (raw["type"]) {
    case "ready":
    case "cancelCompression":
    case "reload":
    case "showLog":
    case "openPanel":
    case "panelReady":
    case "openOutput":
    case "revealOutput":
    case "copyCommand":
    case "compressAgain":
    case "cancelJob":
    case "openInspector":
      return only() ? ({ type: raw["type"] } as FromWebviewMessage) : undefined;
    case "compress":
      return only("chooseSettings") && typeof raw["chooseSettings"] === "boolean" ? { type: "compress", chooseSettings: raw["chooseSettings"] } : undefined;
    case "selectPreset":
      return only("preset") && typeof raw["preset"] === "string" && PRESET_NAME.test(raw["preset"]) ? { type: "selectPreset", preset: raw["preset"] } : undefined;
    case "exportReport":
      return only("format") && (raw["format"] === "json" || raw["format"] === "markdown") ? { type: "exportReport", format: raw["format"] } : undefined;
    default:
      return undefined;
  }
}
