/**
 * Latency: the compression simulated on an edge-accelerator preset (chosen here; switching recomputes the
 * figures without compressing again): per layer and format (FP16, INT8, INT4, VQ, SSVQ) the latency and
 * what bounds it, the totals over the GEMM layers and the speedups. Always labelled as simulated.
 */
import type { SimulationJson } from "../../src/job/protocol.js";
import { groupedBars } from "../charts/hbars.js";
import { dataTable, facts, h } from "../shared/dom.js";
import { int } from "../shared/format.js";
import type { PanelModel } from "./model.js";

const FORMATS = ["fp16", "int8", "int4", "vq", "ssvq"] as const;
const COLORS: Record<string, string> = {
  fp16: "--vscode-charts-purple",
  int8: "--vscode-charts-yellow",
  int4: "--vscode-charts-green",
  vq: "--vscode-charts-orange",
  ssvq: "--vscode-charts-blue",
};
const BOUND: Record<string, string> = { compute: "C", weights: "W", activations: "A", decode: "D" };
/** Layers drawn as bars (the table lists all of them). */
const MAX_BARS = 60;

export function formatTime(s: number): string {
  if (s >= 1) return `${s.toFixed(3)} s`;
  if (s >= 1e-3) return `${(s * 1e3).toFixed(3)} ms`;
  return `${(s * 1e6).toFixed(2)} µs`;
}

function accelerator(sim: SimulationJson): string {
  const p = sim.config;
  const bw = p.bus === "calc" ? "bandwidth computed to never stall" : `${+(p.dramBytesPerSecond / 1e9).toFixed(2)} GB/s DRAM, ${p.bus === "shared" ? "one shared bus" : "one port per buffer"}`;
  return `${p.arrayRows} x ${p.arrayCols} ${p.dataflow.toUpperCase()} array at ${+(p.clockHz / 1e6).toFixed(0)} MHz, SRAM ${p.ifmapSramBytes / 1024}/${p.filterSramBytes / 1024}/${p.ofmapSramBytes / 1024} KiB (in/weights/out), ${bw}, ${p.decoders} VQ decoders`;
}

export function latencyView(m: PanelModel): HTMLElement {
  const shown = m.shown;
  if (!shown) return h("div", { id: "latency" }, h("p", {}, "The simulated latency appears when the compression has finished."));
  const lat = m.latency;
  const select = h(
    "select",
    { id: "preset-select", "aria-label": "Accelerator preset" },
    shown.presets.map((p) => h("option", { value: p.name, selected: p.name === (lat?.preset ?? m.ui.preset), title: p.description }, p.name)),
  );
  const head = h("div", { class: "toolbar" }, h("label", { class: "picker" }, "Accelerator ", select));
  if (!lat || lat.status === "pending") return h("div", { id: "latency", "data-status": "pending" }, head, h("p", { role: "status" }, "Simulating..."));
  if (lat.status === "failed") return h("div", { id: "latency", "data-status": "failed" }, head, h("p", { class: "problem", role: "alert" }, `The simulation failed: ${lat.message}`));
  const sim = lat.simulation!;
  const preset = shown.presets.find((p) => p.name === lat.preset);
  const byLayer = new Map<string, Map<string, SimulationJson["layers"][number]>>();
  for (const l of sim.layers) {
    if (!byLayer.has(l.name)) byLayer.set(l.name, new Map());
    byLayer.get(l.name)!.set(l.format, l);
  }
  const layers = [...byLayer.entries()];
  const bars = [...layers].sort((a, b) => (b[1].get("int8")?.latencyCycles ?? 0) - (a[1].get("int8")?.latencyCycles ?? 0)).slice(0, MAX_BARS);
  const us = (cycles: number) => (cycles / sim.config.clockHz) * 1e6;
  return h(
    "div",
    { id: "latency", "data-status": "ready", "data-preset": lat.preset },
    head,
    h("p", { class: "simulated" }, h("strong", {}, "Simulated"), ` on ${lat.preset}${preset ? ` (${preset.description})` : ""}: an analytical model of the accelerator, not a measurement. GEMM layers only; element-wise layers are not modelled.`),
    facts([["Accelerator", accelerator(sim)]]),
    dataTable(
      "Totals over the GEMM layers",
      [
        { header: "format", cell: (f) => f.toUpperCase() },
        { header: "latency", cell: (f) => formatTime(sim.totals[f]!.seconds), numeric: true, value: (f) => sim.totals[f]!.seconds },
        { header: "cycles", cell: (f) => int(sim.totals[f]!.latencyCycles), numeric: true, value: (f) => sim.totals[f]!.latencyCycles },
        { header: "vs INT8", cell: (f) => `${sim.speedup.vsInt8[f]!.toFixed(2)}x`, numeric: true, value: (f) => sim.speedup.vsInt8[f]! },
        { header: "vs FP16", cell: (f) => `${sim.speedup.vsFp16[f]!.toFixed(2)}x`, numeric: true, value: (f) => sim.speedup.vsFp16[f]! },
        { header: "layers bound by compute / weights / activations / decoders", cell: (f) => { const b = sim.totals[f]!.bounds; return `${b.compute} / ${b.weights} / ${b.activations} / ${b.decode}`; } },
      ],
      FORMATS.filter((f) => sim.totals[f]),
      { id: "latency-totals" },
    ),
    h("h3", {}, layers.length > MAX_BARS ? `Per layer (the ${MAX_BARS} slowest in INT8 of ${layers.length})` : "Per layer"),
    groupedBars(
      bars.map(([name, f]) => ({ label: name, values: FORMATS.map((x) => us(f.get(x)?.latencyCycles ?? 0)) })),
      FORMATS.map((f) => ({ label: f.toUpperCase(), color: COLORS[f]! })),
      { label: `Simulated latency per layer on ${lat.preset}`, format: (v) => `${v.toFixed(2)} µs` },
    ),
    dataTable<[string, Map<string, SimulationJson["layers"][number]>]>(
      "Simulated latency per layer (cycles; bound: C compute, W weights, A activations, D decoders)",
      [
        { header: "layer", cell: ([n]) => n },
        { header: "M x K x N", cell: ([, f]) => { const l = [...f.values()][0]!; return `${int(l.M)} x ${int(l.K)} x ${int(l.N)}${l.groups > 1 ? ` x ${l.groups}` : ""}`; } },
        ...FORMATS.map((x) => ({
          header: x.toUpperCase(),
          numeric: true,
          cell: ([, f]: [string, Map<string, SimulationJson["layers"][number]>]) => { const l = f.get(x); return l ? `${int(l.latencyCycles)} ${BOUND[l.bound]}` : "-"; },
          value: ([, f]: [string, Map<string, SimulationJson["layers"][number]>]) => f.get(x)?.latencyCycles ?? "",
        })),
      ],
      layers,
      { id: "latency-table", class: "data compact" },
    ),
    lat.warnings?.length ? h("ul", { class: "warnings" }, lat.warnings.map((w) => h("li", {}, w))) : null,
  );
}
