/**
 * A compressed model's SSVQ parameters and layers, read back from the file (not from a report): the
 * per-layer table (mode, k, d, bits, stored bytes, signs, codewords used) and, per SSVQ/VQ layer, its
 * codebook as a heatmap with its usage histogram and the numbers as a table.
 */
import type { ModelInspection } from "../../src/io/inspect-file.js";
import { barChart } from "../charts/bars.js";
import { codebookHeatmap } from "../charts/heatmap.js";
import { dataTable, facts, h } from "../shared/dom.js";
import { bytes, int, num, pct, shape } from "../shared/format.js";

type Readback = NonNullable<ModelInspection["compression"]>;
type Layer = Readback["layers"][number];

/** Codewords listed as numbers per layer; the heatmap shows all of them. */
const MAX_CODEWORD_ROWS = 256;

export function compressionSections(i: ModelInspection): HTMLElement[] {
  const c = i.compression;
  if (!c) return [];
  const cfg = c.config ?? {};
  const t = c.totals;
  const params = h(
    "section",
    { id: "compression", "aria-labelledby": "compression-title" },
    h("h2", { id: "compression-title" }, "SSVQ compression (read back from this file)"),
    facts(
      [
        ["Written by", `ssvq ${c.version ?? "(unknown version)"}`],
        ["Method", cfg.mode === "ssvq" || cfg.mode === "vq" ? `${String(cfg.mode).toUpperCase()} k=${cfg.k} d=${cfg.d}` : String(cfg.mode ?? "?").toUpperCase()],
        ["Seed", String(cfg.seed ?? "?")],
        ["k-means iterations", String(cfg.kmeansIters ?? "?")],
        ["Format", cfg.format === "dense" ? "dense (decoded weights)" : "decode subgraphs"],
        ["Fine-tuned", finetuneText(cfg)],
        ["Compressed layers", h("span", { id: "compressed-layers", "data-value": t.compressedLayers }, `${int(t.compressedLayers)}, ${int(t.compressedWeights)} weights`)],
        ["Bits per weight", h("span", { id: "bits-per-weight", "data-value": t.bitsPerWeight ?? "" }, t.bitsPerWeight === undefined ? "-" : t.bitsPerWeight.toFixed(3))],
        ["Stored", `${bytes(t.storedBytes)} of codebooks, indices, signs and scales; lookup tables ${bytes(t.lookupTableBytes)}`],
      ],
      { id: "compression-facts" },
    ),
    ...c.problems.map((p) => h("p", { class: "problem", role: "alert" }, p)),
  );
  const table = h(
    "section",
    { id: "compressed-layers-section", "aria-labelledby": "compressed-layers-title" },
    h("h2", { id: "compressed-layers-title" }, `Compressed layers: ${c.layers.length}`),
    dataTable<Layer>(
      "Compressed layers",
      [
        { header: "layer", cell: (l) => l.name },
        { header: "op", cell: (l) => l.opType ?? "-" },
        { header: "shape", cell: (l) => (l.dims ? shape(l.dims) : "-") },
        { header: "rows x cols", cell: (l) => (l.rows !== undefined ? `${l.rows} x ${l.cols}` : "-"), numeric: true },
        { header: "mode", cell: (l) => (l.mode ?? "-").toUpperCase() },
        { header: "k", cell: (l) => l.k ?? "-", numeric: true, value: (l) => l.k ?? "" },
        { header: "d", cell: (l) => l.d ?? "-", numeric: true, value: (l) => l.d ?? "" },
        { header: "bits/weight", cell: (l) => (l.bits ? l.bits.bitsPerWeight.toFixed(3) : "-"), numeric: true, value: (l) => l.bits?.bitsPerWeight ?? "" },
        { header: "stored", cell: (l) => (l.bytes ? bytes(l.bytes.total) : l.stored), numeric: true, value: (l) => l.bytes?.total ?? "" },
        { header: "negative signs", cell: (l) => (l.signs ? pct(l.signs.fraction, 1) : "-"), numeric: true, value: (l) => l.signs?.fraction ?? "" },
        {
          header: "codewords used",
          cell: (l) => (l.usage ? `${l.usage.filter((u) => u > 0).length} of ${l.usage.length}` : "-"),
          numeric: true,
          value: (l) => (l.usage ? l.usage.filter((u) => u > 0).length : ""),
        },
        { header: "notes", cell: (l) => (l.problem ? h("span", { class: "problem" }, l.problem) : l.scaleRange ? `scales ${num(l.scaleRange[0])} to ${num(l.scaleRange[1])}` : "") },
      ],
      c.layers,
      { id: "compressed-layers-table" },
    ),
  );
  const withCodebooks = c.layers.filter((l) => l.codebook && l.codebook.length);
  const codebooks = withCodebooks.length
    ? h(
        "section",
        { id: "codebooks", "aria-labelledby": "codebooks-title" },
        h("h2", { id: "codebooks-title" }, "Codebooks"),
        h(
          "p",
          { class: "footnote" },
          "Each codebook as k rows (codewords) by d columns, shaded by magnitude",
          withCodebooks.some((l) => l.mode === "vq") ? " (VQ: negative values in the second colour)" : "",
          "; beside it, how many sub-vectors use each codeword.",
        ),
        h("div", { class: "layer-cards" }, withCodebooks.map(codebookCard)),
      )
    : null;
  return [params, table, ...(codebooks ? [codebooks] : [])];
}

function finetuneText(cfg: NonNullable<Readback["config"]>): string {
  if (cfg.finetune === undefined) return "?";
  if (!cfg.finetune) return "no (k-means only)";
  const f = cfg["finetuning"] as { iters?: number; freeze?: { every?: number } | null; fixedSigns?: boolean; reassign?: boolean } | undefined;
  if (!f) return "yes";
  const parts = [`${f.iters} iterations per layer`];
  if (cfg["sequential"]) parts.push("sequentially");
  if (f.fixedSigns) parts.push("fixed signs");
  else if (f.freeze) parts.push(`sign freezing${f.freeze.every ? ` checked every ${f.freeze.every}` : ""}`);
  if (f.reassign) parts.push("re-assigned");
  return `yes: ${parts.join(", ")}`;
}

function codebookCard(l: Layer): HTMLElement {
  const cb = l.codebook!;
  const usage = l.usage ?? [];
  const k = cb.length;
  const d = cb[0]?.length ?? 0;
  const label = `${l.name}: ${(l.mode ?? "").toUpperCase()} codebook, ${k} codewords of ${d} values`;
  const shown = cb.slice(0, MAX_CODEWORD_ROWS);
  return h(
    "div",
    { class: "layer-card", "data-layer": l.name },
    h("h3", {}, l.name, " ", h("span", { class: "footnote" }, `${(l.mode ?? "").toUpperCase()} k=${k} d=${d}`)),
    h(
      "div",
      { class: "charts" },
      h("figure", {}, h("figcaption", { class: "chart-label" }, "codewords (rows) x sub-vector (columns)"), codebookHeatmap(cb, { label })),
      usage.length
        ? h("figure", {}, h("figcaption", { class: "chart-label" }, `usage: ${usage.filter((u) => u > 0).length} of ${k} codewords used`), barChart(usage, { label: `${l.name}: sub-vectors per codeword` }))
        : null,
    ),
    l.signs ? h("p", { class: "footnote" }, `Signs: ${int(l.signs.negative)} of ${int(l.signs.weights)} weights negative (${pct(l.signs.fraction, 1)}).`) : null,
    h(
      "vscode-collapsible",
      { title: `Codewords as numbers${k > MAX_CODEWORD_ROWS ? ` (first ${MAX_CODEWORD_ROWS} of ${k})` : ""}` },
      dataTable<{ index: number; values: number[] }>(
        `${l.name} codebook`,
        [
          { header: "#", cell: (r) => r.index, numeric: true },
          ...Array.from({ length: d }, (_, c) => ({ header: `v${c}`, cell: (r: { values: number[] }) => num(r.values[c]!), numeric: true, value: (r: { values: number[] }) => r.values[c]! })),
          { header: "used by", cell: (r) => int(usage[r.index] ?? 0), numeric: true, value: (r) => usage[r.index] ?? 0 },
        ],
        shown.map((values, index) => ({ index, values })),
        { class: "data compact codebook-table", "data-layer": l.name },
      ),
    ),
  );
}
