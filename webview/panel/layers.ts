/**
 * Layers: a sortable, filterable table of every compressed layer (from the report, or the layers a
 * running job announced); clicking a row (or Enter on it) selects the layer the other views show.
 */
import type { LayerReport } from "../../src/core/report.js";
import { h } from "../shared/dom.js";
import { int, pct, shape } from "../shared/format.js";
import type { PanelModel } from "./model.js";

interface Row {
  name: string;
  op: string;
  shape: string;
  weights: number;
  k: number | null;
  d: number | null;
  bits: number | null;
  weightError: number | null;
  before: number | null;
  after: number | null;
  flipped: number | null;
  frozen: number | null;
  checks: number;
  calibrated: string;
}

interface Col {
  key: keyof Row;
  header: string;
  numeric?: boolean;
  text: (r: Row) => string;
}

const opt = (x: number | null, f: (x: number) => string): string => (x === null ? "-" : f(x));

const COLUMNS: Col[] = [
  { key: "name", header: "layer", text: (r) => r.name },
  { key: "op", header: "op", text: (r) => r.op },
  { key: "shape", header: "shape", text: (r) => r.shape },
  { key: "weights", header: "weights", numeric: true, text: (r) => int(r.weights) },
  { key: "k", header: "k", numeric: true, text: (r) => opt(r.k, String) },
  { key: "d", header: "d", numeric: true, text: (r) => opt(r.d, String) },
  { key: "bits", header: "bits/weight", numeric: true, text: (r) => opt(r.bits, (x) => x.toFixed(3)) },
  { key: "weightError", header: "weight error", numeric: true, text: (r) => opt(r.weightError, (x) => pct(x)) },
  { key: "before", header: "output error, k-means", numeric: true, text: (r) => opt(r.before, (x) => pct(x)) },
  { key: "after", header: "output error, tuned", numeric: true, text: (r) => opt(r.after, (x) => pct(x)) },
  { key: "flipped", header: "signs flipped", numeric: true, text: (r) => opt(r.flipped, (x) => pct(x)) },
  { key: "frozen", header: "frozen", numeric: true, text: (r) => opt(r.frozen, (x) => pct(x)) },
  { key: "calibrated", header: "calibrated", text: (r) => r.calibrated },
];

function reportRow(l: LayerReport, uncalibrated: Set<string>, calibration: boolean): Row {
  const f = l.finetune;
  return {
    name: l.name,
    op: l.opType,
    shape: shape(l.dims),
    weights: l.bits.weights,
    k: l.k ?? null,
    d: l.d ?? null,
    bits: l.bits.bitsPerWeight,
    weightError: l.weightError,
    before: f ? f.errorBefore : (l.outputError ?? null),
    after: f ? f.errorAfter : null,
    flipped: f && l.mode === "ssvq" ? f.signsChangedFraction : null,
    frozen: f && l.mode === "ssvq" ? f.frozenFraction : null,
    checks: f?.checks.length ?? 0,
    calibrated: !calibration ? "no data" : uncalibrated.has(l.name) || l.outputError === undefined ? "no" : "yes",
  };
}

export function layerRows(m: PanelModel): Row[] {
  const r = m.shown?.report;
  if (r) {
    const un = new Set((r.calibration?.uncalibrated ?? []).map((u) => u.name));
    return r.layers.map((l) => reportRow(l, un, !!r.calibration));
  }
  return [...m.live.values()].map((l) => {
    const last = l.checks[l.checks.length - 1];
    return {
      name: l.name,
      op: "-",
      shape: l.rows !== undefined ? `${l.rows} x ${l.cols}` : "-",
      weights: l.rows !== undefined && l.cols !== undefined ? l.rows * l.cols : 0,
      k: null,
      d: null,
      bits: null,
      weightError: null,
      before: l.checks[0] ? l.checks[0].relativeError : null,
      after: last ? last.relativeError : null,
      flipped: null,
      frozen: last ? last.frozenFraction : null,
      checks: l.checks.length,
      calibrated: "-",
    };
  });
}

export function layersView(m: PanelModel): HTMLElement {
  const ui = m.ui;
  const all = layerRows(m);
  const filter = ui.filter.trim().toLowerCase();
  const rows = all.filter((r) => !filter || `${r.name} ${r.op}`.toLowerCase().includes(filter));
  const col = COLUMNS.find((c) => c.key === ui.sortKey);
  if (col) {
    const dir = ui.sortAscending ? 1 : -1;
    rows.sort((a, b) => {
      const x = a[col.key];
      const y = b[col.key];
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * dir;
    });
  }
  const input = h("input", { type: "search", id: "layer-filter", placeholder: "Filter layers by name or op", "aria-label": "Filter layers", value: ui.filter });
  return h(
    "div",
    { id: "layers" },
    h("div", { class: "toolbar" }, input, h("span", { class: "footnote", id: "layer-count" }, `${rows.length} of ${all.length} layers; select one to see its codebook and sign flips`)),
    h(
      "table",
      { class: "data selectable", id: "layers-table" },
      h("caption", { class: "visually-hidden" }, "Compressed layers"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          COLUMNS.map((c) =>
            h(
              "th",
              { scope: "col", class: c.numeric ? "num" : undefined, "aria-sort": ui.sortKey === c.key ? (ui.sortAscending ? "ascending" : "descending") : undefined },
              h("button", { class: "sort", "data-sort": c.key, title: `Sort by ${c.header}` }, c.header, ui.sortKey === c.key ? (ui.sortAscending ? " ▲" : " ▼") : ""),
            ),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((r) =>
          h(
            "tr",
            { "data-layer": r.name, tabindex: 0, "aria-selected": ui.layer === r.name ? "true" : "false", class: ui.layer === r.name ? "selected" : undefined },
            COLUMNS.map((c) => h("td", { class: c.numeric ? "num" : undefined, "data-value": r[c.key] === null ? "" : String(r[c.key]) }, c.text(r))),
          ),
        ),
      ),
    ),
  );
}
