/**
 * Overview: sizes (tensor-only and on disk) and ratios, the size breakdown, accuracy and fidelity, time
 * per stage, and SSVQ beside VQ when the job compared them. While a job runs: its stages and progress.
 */
import type { Report } from "../../src/core/report.js";
import { dataTable, facts, h, type Child } from "../shared/dom.js";
import { bytes, int, pct, ratio } from "../shared/format.js";
import type { PanelModel } from "./model.js";

const seconds = (s: number | undefined): string => (s === undefined ? "-" : s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`);

export function overviewView(m: PanelModel): HTMLElement {
  const r = m.shown?.report;
  if (!r) return h("div", { id: "overview" }, jobStages(m));
  return h("div", { id: "overview" }, sizes(r), breakdown(r), evaluation(r), comparison(r), timings(r), warnings(r));
}

function jobStages(m: PanelModel): Child {
  const job = m.job;
  if (!job) return h("p", {}, m.message ?? "Waiting for the extension...");
  const at = job.progress.stages.indexOf(job.progress.stage);
  return h(
    "section",
    {},
    h("h2", {}, job.running ? "Compressing" : job.failed ? "The compression did not finish" : "Compressed"),
    h(
      "ol",
      { class: "stages", id: "job-stages" },
      job.progress.stages.map((s, i) =>
        h("li", { class: i < at ? "done" : i === at && job.running ? "current" : job.failed && i === at ? "failed" : "" }, s, i === at && job.running ? ` (${job.progress.text.replace(/^\S+\s*/, "")})` : ""),
      ),
    ),
    job.failed ? h("p", { class: "problem", role: "alert" }, job.failed.kind === "cancelled" ? "Cancelled: nothing was written." : job.failed.message) : null,
    job.warnings.length ? h("ul", { class: "warnings" }, job.warnings.map((w) => h("li", {}, w))) : null,
  );
}

function sizes(r: Report): HTMLElement {
  const s = r.sizes;
  const c = r.config;
  const method = c.mode === "ssvq" || c.mode === "vq" ? `${c.mode.toUpperCase()} k=${c.k} d=${c.d}` : c.mode.toUpperCase();
  return h(
    "section",
    { id: "sizes" },
    h("h2", {}, "Size"),
    facts([
      ["Method", `${method}, seed ${c.seed}${c.format === "dense" ? ", dense output" : ""}${c.finetune && c.finetuning ? `, fine-tuned${c.sequential ? " sequentially" : ""} (${c.finetuning.iters} iterations per layer)` : ""}`],
      ["Compressed", `${int(s.compressedLayers)} layers, ${int(s.compressedWeights)} weights at ${s.bitsPerWeight.toFixed(3)} bits/weight`],
      ["Tensors", h("span", { id: "tensor-ratio", "data-value": s.tensorRatio }, `${bytes(s.originalTensorBytes)} → ${bytes(s.compressedTensorBytes)} (${ratio(s.tensorRatio)}, tensor-only)`)],
      ["On disk", h("span", { id: "disk-ratio", "data-value": s.diskRatio }, `${bytes(s.sourceFileBytes)} → ${bytes(s.outputFileBytes)} (${ratio(s.diskRatio)}; theoretical ${bytes(s.theoreticalFileBytes)})`)],
    ]),
  );
}

/** Bytes of the compressed model by what they hold. */
export function sizeParts(r: Report): { part: string; bytes: number }[] {
  let index = 0;
  let signs = 0;
  let codebooks = 0;
  let values = 0;
  for (const l of r.layers) {
    index += l.bits.indexBits / 8;
    signs += l.bits.signBits / 8;
    codebooks += l.bits.codebookBits / 8;
    values += (l.bits.valueBits + l.bits.scaleBits) / 8;
  }
  const kept = r.sizes.compressedTensorBytes - index - signs - codebooks - values;
  return [
    { part: "indices", bytes: index },
    { part: "sign bits", bytes: signs },
    { part: "codebooks", bytes: codebooks },
    { part: "INT values and scales", bytes: values },
    { part: "tensors left as they were", bytes: kept },
  ].filter((p) => p.bytes > 0 || p.part === "tensors left as they were");
}

function breakdown(r: Report): HTMLElement {
  const parts = sizeParts(r);
  const total = r.sizes.compressedTensorBytes;
  return h(
    "section",
    { id: "breakdown" },
    h("h3", {}, "What the compressed tensors hold"),
    h(
      "div",
      { class: "stacked", role: "img", "aria-label": parts.map((p) => `${p.part} ${pct(p.bytes / total, 1)}`).join(", ") },
      parts.map((p, i) => {
        const el = h("span", { class: `stack-part part-${i}`, title: `${p.part}: ${bytes(p.bytes)}` });
        // Through the CSSOM: the CSP allows no style attributes.
        el.style.flexGrow = String(Math.max(0, p.bytes / total));
        return el;
      }),
    ),
    h("div", { class: "legend" }, parts.map((p, i) => h("span", { class: "legend-item" }, h("span", { class: `swatch part-${i}` }), p.part))),
    dataTable("Size breakdown", [
      { header: "part", cell: (p) => p.part },
      { header: "bytes", cell: (p) => bytes(p.bytes), numeric: true, value: (p) => p.bytes },
      { header: "share", cell: (p) => pct(p.bytes / total, 1), numeric: true, value: (p) => p.bytes / total },
    ], parts, { id: "breakdown-table", class: "data compact" }),
  );
}

function evaluation(r: Report): HTMLElement | null {
  const ev = r.evaluation;
  if (!ev) return null;
  const acc = ev.accuracy;
  return h(
    "section",
    { id: "evaluation" },
    h("h2", {}, `Evaluation on ${int(ev.samples)} samples`),
    acc
      ? facts([
          ["Accuracy", h("span", { id: "accuracy", "data-original": acc.original.accuracy, "data-compressed": acc.compressed?.accuracy ?? "" }, `${pct(acc.original.accuracy)} → ${acc.compressed ? pct(acc.compressed.accuracy) : "-"} (${int(acc.labelled)} labelled, output ${acc.output})`)],
        ])
      : h("p", {}, "No labels: fidelity to the original only."),
    dataTable("Fidelity per output", [
      { header: "output", cell: (o) => o.name },
      { header: "relative error", cell: (o) => pct(o.relError), numeric: true, value: (o) => o.relError },
      { header: "cosine", cell: (o) => o.cosine.toFixed(4), numeric: true, value: (o) => o.cosine },
      { header: "top-1 agreement", cell: (o) => (o.top1Agreement === undefined ? "-" : pct(o.top1Agreement)), numeric: true, value: (o) => o.top1Agreement ?? "" },
      { header: "largest difference", cell: (o) => o.maxAbsError.toPrecision(3), numeric: true, value: (o) => o.maxAbsError },
    ], ev.outputs, { id: "fidelity-table" }),
  );
}

function comparison(r: Report): HTMLElement | null {
  const v = r.comparison?.vq;
  if (!v) return null;
  const c = r.config;
  const mean = (ls: Report["layers"]) => {
    const e = ls.filter((l) => l.outputError !== undefined).map((l) => l.outputError!);
    return e.length ? e.reduce((a, b) => a + b, 0) / e.length : NaN;
  };
  const rows = [
    { method: r.search ? "SSVQ, each layer searched" : `SSVQ k=${c.k} d=${c.d}`, sizes: r.sizes, layers: r.layers, ev: r.evaluation },
    { method: v.search ? "VQ, each layer searched" : `VQ k=${v.config.k} d=${v.config.d}`, sizes: v.sizes, layers: v.layers, ev: v.evaluation },
  ];
  return h(
    "section",
    { id: "comparison" },
    h("h2", {}, "SSVQ beside VQ at the nearest size not larger"),
    dataTable("SSVQ and VQ", [
      { header: "method", cell: (x) => x.method },
      { header: "bits/weight", cell: (x) => x.sizes.bitsPerWeight.toFixed(3), numeric: true, value: (x) => x.sizes.bitsPerWeight },
      { header: "tensors", cell: (x) => bytes(x.sizes.compressedTensorBytes), numeric: true, value: (x) => x.sizes.compressedTensorBytes },
      { header: "tensor ratio", cell: (x) => ratio(x.sizes.tensorRatio), numeric: true, value: (x) => x.sizes.tensorRatio },
      { header: "mean layer output error", cell: (x) => pct(mean(x.layers)), numeric: true, value: (x) => mean(x.layers) },
      { header: "model output error", cell: (x) => (x.ev?.outputs[0] ? pct(x.ev.outputs[0].relError) : "-"), numeric: true },
      { header: "accuracy", cell: (x) => (x.ev?.accuracy?.compressed ? pct(x.ev.accuracy.compressed.accuracy) : "-"), numeric: true, value: (x) => x.ev?.accuracy?.compressed?.accuracy ?? "" },
    ], rows, { id: "comparison-table" }),
  );
}

function timings(r: Report): HTMLElement {
  const entries = Object.entries(r.timings);
  const total = entries.reduce((a, [, s]) => a + s, 0);
  return h(
    "section",
    { id: "timings" },
    h("h3", {}, `Time per stage (${seconds(total)} in all)`),
    dataTable("Time per stage", [
      { header: "stage", cell: ([s]) => s },
      { header: "seconds", cell: ([, s]) => seconds(s), numeric: true, value: ([, s]) => s },
    ], entries, { id: "timings-table", class: "data compact" }),
  );
}

function warnings(r: Report): HTMLElement | null {
  if (!r.warnings.length && !r.kept.length) return null;
  return h(
    "section",
    { id: "notes" },
    r.kept.length ? [h("h3", {}, `Kept as they were: ${r.kept.length}`), h("ul", {}, r.kept.map((k) => h("li", {}, `${k.name} (${k.opType}): ${k.reason}`)))] : null,
    r.warnings.length ? [h("h3", {}, "Warnings"), h("ul", { class: "warnings" }, r.warnings.map((w) => h("li", {}, w)))] : null,
  );
}
