/**
 * The panel's latency view: a report's compression simulated on a preset. With the GEMM shapes known
 * (kept in the report's simulation, or measured once by a simulate job) a preset switch is a pure
 * computation here; otherwise the background job runs the model once to measure them.
 */
import { join } from "node:path";
import { DEFAULT_PRESET, PRESETS } from "../../core/accel/presets.js";
import { gemmsOf, LATENCY_FORMATS, simulateReport } from "../../core/accel/report-latency.js";
import type { GemmLayer } from "../../core/accel/gemm.js";
import type { Report } from "../../core/report.js";
import { startJob } from "../../job/client.js";
import type { SimulationJson } from "../../job/protocol.js";
import type { PresetInfo } from "../../webview-protocol.js";

export const presetInfos = (): PresetInfo[] => PRESETS.map((p) => ({ name: p.name, description: p.description }));

/** The preset a report's latency view starts on: the one its compression was simulated on, else the default. */
export function initialPreset(report: Report): string {
  const p = report.simulation?.preset;
  return p && PRESETS.some((x) => x.name === p) ? p : DEFAULT_PRESET;
}

export interface LatencyResult {
  simulation: SimulationJson;
  warnings: string[];
}

/** Shapes measured by a simulate job, by source model and report, for later preset switches. */
const measured = new Map<string, GemmLayer[]>();

export async function latencyFor(report: Report, preset: string, opts: { extensionPath: string; shape?: string[] }): Promise<LatencyResult> {
  if (!PRESETS.some((p) => p.name === preset)) throw new Error(`unknown preset ${JSON.stringify(preset)}`);
  const key = `${report.source.path}\u0000${JSON.stringify(opts.shape ?? [])}`;
  const gemms = gemmsOf(report.simulation) ?? measured.get(key);
  if (gemms) {
    const r = simulateReport(report, gemms, preset);
    return { simulation: { preset: r.preset, config: r.config, layers: r.layers, totals: r.totals, speedup: r.speedup, gemms }, warnings: [] };
  }
  const job = startJob(
    {
      kind: "simulate",
      input: report.source.path,
      options: { preset, formats: LATENCY_FORMATS.join(","), ...(opts.shape?.length ? { shape: opts.shape } : {}) },
      report: { config: report.config, layers: report.layers, ...(report.comparison ? { comparison: report.comparison } : {}) },
      dynamicAsOne: true,
    },
    { workerPath: join(opts.extensionPath, "dist", "job-worker.js") },
  );
  const outcome = await job.outcome;
  if (outcome.type === "simulation") {
    if (outcome.simulation.gemms) measured.set(key, outcome.simulation.gemms);
    return { simulation: outcome.simulation, warnings: outcome.warnings };
  }
  throw new Error(outcome.type === "error" ? outcome.message : `the simulate job ended with ${outcome.type}`);
}
