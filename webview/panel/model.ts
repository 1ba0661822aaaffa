/**
 * What the panel shows, folded from the extension's messages: a running job's progress and live
 * fine-tuning checks per layer, then the report, and the latency of the chosen preset. Plus the page's
 * own choices (tab, selected layer, sorting, filter, preset), kept across reloads with setState.
 */
import type { FreezeCheck } from "../../src/core/ssvq/finetune.js";
import type { Report } from "../../src/core/report.js";
import type { SimulationJson, WorkerEvent } from "../../src/job/protocol.js";
import type { JobProgressView, PresetInfo, ToPanelMessage } from "../../src/webview-protocol.js";

export interface LiveLayer {
  name: string;
  rows?: number;
  cols?: number;
  checks: FreezeCheck[];
}

export interface ShownReport {
  report: Report;
  reportPath: string | null;
  outPath: string | null;
  command: string;
  presets: PresetInfo[];
  /** The preset the latency view starts on. */
  preset: string;
}

export interface Latency {
  preset: string;
  status: "pending" | "ready" | "failed";
  simulation?: SimulationJson;
  warnings?: string[];
  message?: string;
}

export interface Ui {
  tab: number;
  /** A layer's name, or "" for all layers. */
  layer: string;
  sortKey: string;
  sortAscending: boolean;
  filter: string;
  preset: string;
}

export interface PanelModel {
  modelPath: string;
  /** The stage the job's events are in (the comparison's VQ checks are not SSVQ's). */
  stage?: string;
  job?: { command: string; progress: JobProgressView; running: boolean; failed?: { kind: string; message: string }; warnings: string[]; logs: string[] };
  /** Layers in the order the job announced them, with their checks so far. */
  live: Map<string, LiveLayer>;
  shown?: ShownReport;
  latency?: Latency;
  message?: string;
  ui: Ui;
}

export const emptyUi = (): Ui => ({ tab: 0, layer: "", sortKey: "", sortAscending: true, filter: "", preset: "" });

export function newModel(modelPath: string, ui: Ui = emptyUi()): PanelModel {
  return { modelPath, live: new Map(), ui };
}

function foldEvent(m: PanelModel, e: WorkerEvent): void {
  const layerOf = (name: string): LiveLayer => {
    let l = m.live.get(name);
    if (!l) m.live.set(name, (l = { name, checks: [] }));
    return l;
  };
  switch (e.type) {
    case "stage":
      m.stage = e.stage;
      break;
    case "progress":
      if (e.layer) {
        const l = layerOf(e.layer.name);
        l.rows = e.layer.rows;
        l.cols = e.layer.cols;
      }
      break;
    case "freezeCheck": {
      // --compare vq fine-tunes VQ under the same layer names: its checks are in the report's comparison.
      if (m.stage === "compare") break;
      const { type: _t, layer, ...check } = e;
      layerOf(layer).checks.push(check);
      break;
    }
    case "log":
      if (e.level === "warning") m.job?.warnings.push(e.text);
      else m.job?.logs.push(e.text);
      break;
    default:
      break;
  }
}

/** Applies a message; returns which parts of the page need drawing again. */
export function apply(m: PanelModel, msg: ToPanelMessage): "all" | "live" | "latency" {
  switch (msg.type) {
    case "jobStarted":
      m.modelPath = msg.model;
      m.job = { command: msg.command, progress: msg.progress, running: true, warnings: [], logs: [] };
      m.live = new Map();
      m.stage = undefined;
      m.shown = undefined;
      m.latency = undefined;
      m.message = undefined;
      for (const e of msg.events) foldEvent(m, e);
      return "all";
    case "jobEvents":
      if (m.job) m.job.progress = msg.progress;
      for (const e of msg.events) foldEvent(m, e);
      return "live";
    case "jobFailed":
      if (m.job) {
        m.job.running = false;
        m.job.failed = { kind: msg.kind, message: msg.message };
      }
      return "all";
    case "report":
      if (m.job) m.job.running = false;
      m.shown = { report: msg.report, reportPath: msg.reportPath, outPath: msg.outPath, command: msg.command, presets: msg.presets, preset: msg.preset };
      m.modelPath = msg.report.source.path;
      m.message = undefined;
      return "all";
    case "reportFailed":
      m.message = msg.message;
      return "all";
    case "latencyPending":
      m.latency = { preset: msg.preset, status: "pending" };
      return "latency";
    case "latency":
      m.latency = { preset: msg.preset, status: "ready", simulation: msg.simulation, warnings: msg.warnings };
      return "latency";
    case "latencyFailed":
      m.latency = { preset: msg.preset, status: "failed", message: msg.message };
      return "latency";
  }
}

/** Each layer's fine-tuning checks: the report's when there is one, else the live ones. */
export function checksByLayer(m: PanelModel): Map<string, FreezeCheck[]> {
  const out = new Map<string, FreezeCheck[]>();
  const report = m.shown?.report;
  if (report) {
    for (const l of report.layers) if (l.finetune) out.set(l.name, l.finetune.checks);
    return out;
  }
  for (const l of m.live.values()) if (l.checks.length) out.set(l.name, l.checks);
  return out;
}

/** Weights per layer (rows x cols), for weighting the all-layer series. */
export function weightsByLayer(m: PanelModel): Map<string, number> {
  const out = new Map<string, number>();
  const report = m.shown?.report;
  if (report) for (const l of report.layers) out.set(l.name, l.bits.weights);
  else for (const l of m.live.values()) if (l.rows !== undefined && l.cols !== undefined) out.set(l.name, l.rows * l.cols);
  return out;
}

export interface SeriesPoint {
  iteration: number;
  flips: number;
  frozenFraction: number;
  relativeError: number;
}

/**
 * The all-layer series per check iteration: flips summed over the layers checked at that iteration, the
 * frozen fraction weighted by the layers' weights, the relative output error as sqrt(sum of losses / sum
 * of reference energies) (each layer's reference is loss / relativeError^2). Layers share the schedule,
 * so their checks fall on the same iterations.
 */
export function allLayerSeries(byLayer: Map<string, FreezeCheck[]>, weights: Map<string, number>): SeriesPoint[] {
  const at = new Map<number, { flips: number; frozenW: number; w: number; loss: number; ref: number }>();
  for (const [name, checks] of byLayer) {
    const w = weights.get(name) ?? 1;
    for (const c of checks) {
      const a = at.get(c.iteration) ?? { flips: 0, frozenW: 0, w: 0, loss: 0, ref: 0 };
      a.flips += c.flips;
      a.frozenW += c.frozenFraction * w;
      a.w += w;
      if (c.relativeError > 0 && Number.isFinite(c.loss)) {
        a.loss += c.loss;
        a.ref += c.loss / (c.relativeError * c.relativeError);
      }
      at.set(c.iteration, a);
    }
  }
  return [...at.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([iteration, a]) => ({ iteration, flips: a.flips, frozenFraction: a.w ? a.frozenW / a.w : 0, relativeError: a.ref > 0 ? Math.sqrt(a.loss / a.ref) : 0 }));
}
