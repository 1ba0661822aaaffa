/**
 * The messages between the extension and its webviews (the SSVQ Inspector; the live panel uses the same
 * file): discriminated unions both ways, plain JSON. The only module both sides import; the webview
 * imports its types alone. Messages from a webview are validated (`parseFromWebview`) before use.
 */
import type { ModelInspection } from "./io/inspect-file.js";

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
  | { type: "showLog" };

export type FromWebviewMessage = FromInspectorMessage;
export type ToWebviewMessage = ToInspectorMessage;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

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
      return only() ? ({ type: raw["type"] } as FromWebviewMessage) : undefined;
    case "compress":
      return only("chooseSettings") && typeof raw["chooseSettings"] === "boolean" ? { type: "compress", chooseSettings: raw["chooseSettings"] } : undefined;
    default:
      return undefined;
  }
}
