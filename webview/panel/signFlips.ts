/**
 * Sign flips: for the selected layer or all layers, per fine-tuning check, the signs that flipped since
 * the last check, the fraction frozen and the relative output error, against the iteration. Grows live
 * from the job's freezeCheck events while fine-tuning runs; the numbers are in the table below.
 */
import type { FreezeCheck } from "../../src/core/ssvq/finetune.js";
import { lineChart } from "../charts/line.js";
import { dataTable, h } from "../shared/dom.js";
import { int, pct } from "../shared/format.js";
import { allLayerSeries, checksByLayer, weightsByLayer, type PanelModel, type SeriesPoint } from "./model.js";
import { layerPicker } from "./layerPicker.js";

export function signFlipsView(m: PanelModel): HTMLElement {
  const byLayer = checksByLayer(m);
  const names = [...byLayer.keys()];
  const selected = names.includes(m.ui.layer) ? m.ui.layer : "";
  const running = m.job?.running === true;
  if (names.length === 0)
    return h(
      "div",
      { id: "signflips" },
      h("p", { id: "signflips-empty" }, running ? "Waiting for the first fine-tuning checks..." : "No fine-tuning ran: give calibration data (ssvq.calib) to fine-tune the codebooks and signs."),
    );
  const points: SeriesPoint[] = selected
    ? byLayer.get(selected)!.map((c: FreezeCheck) => ({ iteration: c.iteration, flips: c.flips, frozenFraction: c.frozenFraction, relativeError: c.relativeError }))
    : allLayerSeries(byLayer, weightsByLayer(m));
  const what = selected || `all ${names.length} layers`;
  const xy = (f: (p: SeriesPoint) => number) => points.map((p) => [p.iteration, f(p)] as const);
  return h(
    "div",
    { id: "signflips", "data-layer": selected, "data-points": points.length },
    h("div", { class: "toolbar" }, layerPicker("signflips-layer", names, selected, "All layers"), running ? h("span", { class: "live", role: "status" }, "live") : null),
    h(
      "div",
      { class: "chart-row" },
      h("figure", {}, h("figcaption", {}, "Signs flipped since the last check"), lineChart([{ label: "flips", color: "--vscode-charts-orange", points: xy((p) => p.flips) }], { label: `Sign flips per check, ${what}`, xLabel: "iterations", yFormat: (y) => int(y) })),
      h("figure", {}, h("figcaption", {}, "Signs frozen"), lineChart([{ label: "frozen", color: "--vscode-charts-blue", points: xy((p) => p.frozenFraction) }], { label: `Frozen fraction, ${what}`, xLabel: "iterations", yFormat: (y) => pct(y, 0), yMin: 0 })),
      h("figure", {}, h("figcaption", {}, "Relative output error"), lineChart([{ label: "error", color: "--vscode-charts-green", points: xy((p) => p.relativeError) }], { label: `Relative output error, ${what}`, xLabel: "iterations", yFormat: (y) => pct(y, 1), yMin: 0 })),
    ),
    dataTable<SeriesPoint>(
      `Fine-tuning checks, ${what}`,
      [
        { header: "iteration", cell: (p) => int(p.iteration), numeric: true, value: (p) => p.iteration },
        { header: "signs flipped", cell: (p) => int(p.flips), numeric: true, value: (p) => p.flips },
        { header: "frozen", cell: (p) => pct(p.frozenFraction), numeric: true, value: (p) => p.frozenFraction },
        { header: "relative output error", cell: (p) => pct(p.relativeError), numeric: true, value: (p) => p.relativeError },
      ],
      points,
      { id: "signflips-table", class: "data compact" },
    ),
  );
}
