/**
 * Codebooks of the selected layer: the codewords as a heatmap (k rows by d columns) and their usage, before
 * and after fine-tuning, and conventional VQ's beside SSVQ's when the job compared them; each with its
 * numbers in a table.
 */
import type { LayerReport } from "../../src/core/report.js";
import { barChart } from "../charts/bars.js";
import { codebookHeatmap } from "../charts/heatmap.js";
import { dataTable, h } from "../shared/dom.js";
import { int, num } from "../shared/format.js";
import type { PanelModel } from "./model.js";
import { layerPicker } from "./layerPicker.js";

const MAX_ROWS = 256;

function codebookFigure(id: string, title: string, codebook: number[][], usage: number[] | undefined, label: string): HTMLElement {
  const k = codebook.length;
  const d = codebook[0]?.length ?? 0;
  const shown = codebook.slice(0, MAX_ROWS).map((values, index) => ({ index, values }));
  return h(
    "figure",
    { class: "codebook", id },
    h("figcaption", {}, h("strong", {}, title), ` k=${k} d=${d}`),
    h(
      "div",
      { class: "charts" },
      codebookHeatmap(codebook, { label: `${label}: ${title}, ${k} codewords of ${d} values` }),
      usage ? h("div", {}, h("div", { class: "chart-label" }, `usage: ${usage.filter((u) => u > 0).length} of ${k} codewords used`), barChart(usage, { label: `${label}: ${title} usage`, width: 300, height: 110 })) : null,
    ),
    h(
      "details",
      {},
      h("summary", {}, `Codewords as numbers${k > MAX_ROWS ? ` (first ${MAX_ROWS} of ${k})` : ""}`),
      dataTable<{ index: number; values: number[] }>(
        `${label}: ${title}`,
        [
          { header: "#", cell: (r) => r.index, numeric: true },
          ...Array.from({ length: d }, (_, c) => ({ header: `v${c}`, cell: (r: { values: number[] }) => num(r.values[c]!), numeric: true, value: (r: { values: number[] }) => r.values[c]! })),
          ...(usage ? [{ header: "used by", cell: (r: { index: number }) => int(usage[r.index] ?? 0), numeric: true, value: (r: { index: number }) => usage[r.index] ?? 0 }] : []),
        ],
        shown,
        { class: "data compact codebook-table", "data-codebook": id },
      ),
    ),
  );
}

export function codebooksView(m: PanelModel): HTMLElement {
  const r = m.shown?.report;
  if (!r) return h("div", { id: "codebooks" }, h("p", {}, "The codebooks appear when the compression has finished."));
  const withCodebooks = r.layers.filter((l) => l.codebook);
  if (!withCodebooks.length) return h("div", { id: "codebooks" }, h("p", {}, `${r.config.mode.toUpperCase()} has no codebooks.`));
  const layer: LayerReport = withCodebooks.find((l) => l.name === m.ui.layer) ?? withCodebooks[0]!;
  const vq = r.comparison?.vq.layers.find((l) => l.name === layer.name);
  const mode = layer.mode.toUpperCase();
  return h(
    "div",
    { id: "codebooks", "data-layer": layer.name },
    h("div", { class: "toolbar" }, layerPicker("codebook-layer", withCodebooks.map((l) => l.name), layer.name)),
    h(
      "div",
      { class: "codebook-grid" },
      layer.finetune?.codebookBefore.length
        ? codebookFigure("codebook-before", `${mode} before fine-tuning (k-means)`, layer.finetune.codebookBefore, undefined, layer.name)
        : null,
      codebookFigure("codebook-after", layer.finetune ? `${mode} after fine-tuning` : `${mode} (k-means)`, layer.codebook!, layer.usage, layer.name),
      vq?.codebook ? codebookFigure("codebook-vq", `VQ k=${vq.k} d=${vq.d}${vq.finetune ? " after fine-tuning" : ""}`, vq.codebook, vq.usage, layer.name) : null,
    ),
    h("p", { class: "footnote" }, mode === "SSVQ" ? "SSVQ's codebook holds magnitudes (non-negative); each weight's sign is stored apart." : "Shaded by magnitude; negative values in the second colour."),
  );
}
