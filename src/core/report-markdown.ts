/**
 * A compression report (`<name>.ssvq.json`) as one GitHub-flavoured Markdown document: what the panel's
 * "Export report as Markdown" writes and `ssvq report REPORT.json --markdown` prints, so a CI pipeline
 * gets what the panel shows. Pure: takes the report, returns text; no dates, so the same report always
 * gives the same bytes.
 *
 * The helpers below (`sizeBreakdown`, `allLayerChecks`, `simulatedLayers`, the number formats) are
 * exported for the panel, so that every view formats and aggregates the numbers the same way.
 *
 * Number formats: percentages with 2 decimals (`12.34%`), ratios and speedups `12.34x`, bytes in binary
 * units as `formatBytes` prints them (`20.3 KiB`), counts with thousands separators, bits/weight with
 * 3 decimals, cosines with 4, stage times in seconds with 3. A value a JSON round trip turned into null
 * (NaN, Infinity) prints as `n/a`.
 */
import { candidateLabel, methodText } from "./report-search-text.js";
import type { Report, LayerReport } from "./report.js";
import type { AccelParams } from "./accel/params.js";
import type { Bound, FormatTotals, LayerResult } from "./accel/simulate.js";
import type { FreezeCheck } from "./ssvq/finetune.js";
import { formatBytes, int, shape } from "./text-table.js";

// ---------------------------------------------------------------------------------------------------
// Number formats

/** Finite number, or undefined (JSON turns NaN and Infinity into null). */
const finite = (x: number | null | undefined): x is number => typeof x === "number" && Number.isFinite(x);

export const NA = "n/a";

/** A fraction as a percentage with 2 decimals: 0.12345 -> "12.35%". */
export const formatPercent = (x: number | null | undefined): string => (finite(x) ? `${(100 * x).toFixed(2)}%` : NA);

/** A ratio or speedup: 11.8665 -> "11.87x". */
export const formatRatio = (x: number | null | undefined): string => (finite(x) ? `${x.toFixed(2)}x` : NA);

/** Bytes in binary units, rounded to whole bytes first (sizes with bit-granular parts are fractional). */
export const formatSize = (bytes: number | null | undefined): string => (finite(bytes) ? formatBytes(Math.round(bytes)) : NA);

/** Bits per weight with 3 decimals. */
export const formatBitsPerWeight = (x: number | null | undefined): string => (finite(x) ? x.toFixed(3) : NA);

/** A count with thousands separators. */
export const formatCount = (x: number | null | undefined): string => (finite(x) ? int(x) : NA);

/** A duration: seconds, milliseconds or microseconds, as `ssvq simulate` prints them. */
export function formatDuration(s: number | null | undefined): string {
  if (!finite(s)) return NA;
  if (s >= 1) return `${s.toFixed(3)} s`;
  if (s >= 1e-3) return `${(s * 1e3).toFixed(3)} ms`;
  return `${(s * 1e6).toFixed(2)} µs`;
}

/** A stage time in seconds with 3 decimals (the timings table). */
export const formatSeconds = (s: number | null | undefined): string => (finite(s) ? s.toFixed(3) : NA);

/** "SSVQ k=16 d=4", "VQ k=16 d=2", "INT8". */
export function methodLabel(c: Pick<Report["config"], "mode" | "k" | "d" | "ratio" | "bits">): string {
  return methodText(c);
}

// ---------------------------------------------------------------------------------------------------
// Markdown text

/**
 * Text for Markdown: backslash-escapes the characters that would start emphasis, code, links, HTML or a
 * table cell boundary, and turns line breaks into `<br>` (a table row is one line).
 */
export function escapeMarkdown(text: string): string {
  return String(text)
    .replace(/[\\`*_[\]<>|~&#]/g, (c) => `\\${c}`)
    .replace(/\r\n|\r|\n/g, "<br>");
}

/**
 * A name or path as inline code, for a table cell: `|` escaped as `\|` (GitHub reads it as a pipe inside
 * code in a table), a fence longer than any run of backticks in the text. Text with a line break cannot
 * be one code span: it is escaped as plain text instead.
 */
export function codeCell(text: string): string {
  const t = String(text);
  if (/[\r\n]/.test(t)) return escapeMarkdown(t);
  return codeSpan(t).replace(/\|/g, "\\|");
}

/** Inline code outside a table (pipes need no escape there). */
function codeSpan(t: string): string {
  if (t === "") return "` `";
  const longest = Math.max(0, ...(t.match(/`+/g) ?? []).map((r) => r.length));
  const fence = "`".repeat(longest + 1);
  const pad = t.startsWith("`") || t.endsWith("`") || (t.startsWith(" ") && t.endsWith(" ") && t.trim() !== "") ? " " : "";
  return `${fence}${pad}${t}${pad}${fence}`;
}

/** Inline code anywhere but a table; a name with a line break as escaped text. */
const code = (t: string): string => (/[\r\n]/.test(t) ? escapeMarkdown(t) : codeSpan(t));

export type Align = "left" | "right";

/**
 * A GitHub-flavoured Markdown table. Cells are taken as Markdown (escape them with `escapeMarkdown` or
 * `codeCell` first); columns are padded so the source reads as a table too.
 */
export function markdownTable(headers: readonly string[], rows: readonly (readonly string[])[], align: readonly Align[] = []): string {
  const width = headers.map((h, c) => Math.max(3, h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: readonly string[]) =>
    `| ${headers.map((_, c) => (align[c] === "right" ? (cells[c] ?? "").padStart(width[c]!) : (cells[c] ?? "").padEnd(width[c]!))).join(" | ")} |`;
  const rule = `| ${width.map((w, c) => (align[c] === "right" ? `${"-".repeat(w - 1)}:` : "-".repeat(w))).join(" | ")} |`;
  return [line(headers), rule, ...rows.map(line)].join("\n");
}

/** A two-column table of labelled values (the label is plain text, the value Markdown). */
function keyValueTable(rows: readonly [string, string][], headers: [string, string] = ["", "value"]): string {
  return markdownTable(headers, rows.map(([k, v]) => [escapeMarkdown(k), v]));
}

// ---------------------------------------------------------------------------------------------------
// Data helpers shared with the panel

export type SizePartKey = "indices" | "signs" | "codebooks" | "values" | "scales" | "kept";

export interface SizePart {
  key: SizePartKey;
  label: string;
  /** Bits in the compressed model's tensors (for `kept`: 8 x its bytes). */
  bits: number;
  bytes: number;
  /** Bits per weight of the compressed layers; undefined for `kept`. */
  bitsPerWeight: number | undefined;
  /** Share of all tensor bytes of the compressed model (`sizes.compressedTensorBytes`). */
  share: number;
}

export interface SizeBreakdown {
  /** Always all six parts, in this order: indices, signs, codebooks, values, scales, kept. */
  parts: SizePart[];
  /** The compressed layers (every part but `kept`). */
  layers: { bits: number; bytes: number; weights: number; bitsPerWeight: number; share: number };
  /** `sizes.compressedTensorBytes`: the parts add up to it. */
  totalBytes: number;
}

/**
 * Where the compressed model's tensor bytes go: the bit fields of the compressed layers (`layers[].bits`)
 * and the tensors left as they were, which are `sizes.compressedTensorBytes` less the layers' bits / 8
 * (the report computes that size as exactly this sum).
 */
export function sizeBreakdown(report: Pick<Report, "layers" | "sizes">): SizeBreakdown {
  const sum = (f: (l: LayerReport) => number) => report.layers.reduce((a, l) => a + (f(l) || 0), 0);
  const fields: [SizePartKey, string, number][] = [
    ["indices", "codeword indices", sum((l) => l.bits.indexBits)],
    ["signs", "sign bits", sum((l) => l.bits.signBits)],
    ["codebooks", "codebooks", sum((l) => l.bits.codebookBits)],
    ["values", "INT values", sum((l) => l.bits.valueBits)],
    ["scales", "INT scales", sum((l) => l.bits.scaleBits)],
  ];
  const weights = sum((l) => l.bits.weights);
  const layerBits = fields.reduce((a, f) => a + f[2], 0);
  const totalBytes = report.sizes.compressedTensorBytes;
  const keptBytes = Math.max(0, totalBytes - layerBits / 8);
  const share = (bytes: number) => (totalBytes > 0 ? bytes / totalBytes : 0);
  const parts: SizePart[] = fields.map(([key, label, bits]) => ({
    key,
    label,
    bits,
    bytes: bits / 8,
    bitsPerWeight: weights > 0 ? bits / weights : 0,
    share: share(bits / 8),
  }));
  parts.push({ key: "kept", label: "tensors left as they were", bits: keptBytes * 8, bytes: keptBytes, bitsPerWeight: undefined, share: share(keptBytes) });
  return {
    parts,
    layers: { bits: layerBits, bytes: layerBits / 8, weights, bitsPerWeight: weights > 0 ? layerBits / weights : 0, share: share(layerBits / 8) },
    totalBytes,
  };
}

/** One progressive-freezing check summed over all fine-tuned layers. */
export interface AllLayerCheck {
  iteration: number;
  /** Sign flips since the previous check, summed over the layers. */
  flips: number;
  /** Frozen signs / weights over the layers (each layer's frozen fraction weighted by its weight count). */
  frozenFraction: number;
  /** The layers' relative output errors aggregated as `AllLayerChecks.errorAggregate` says. */
  relativeError: number;
  /** Layers with a check at this iteration. */
  layers: number;
}

export interface AllLayerChecks {
  /**
   * How `relativeError` aggregates the layers:
   * - "energy": sqrt(sum loss / sum reference), the error of all layers' outputs taken together, where a
   *   layer's reference tr(W H W^T) is loss / relativeError^2 of its own checks (it is the same at every
   *   check of a layer). Layers with larger output energy weigh more; every layer's loss is in its own
   *   output's units, as the report records it.
   * - "weighted-mean": the mean of the layers' relative errors weighted by their weight counts, used when
   *   some layer's reference cannot be recovered (every check of it has zero or non-finite error or loss).
   */
  errorAggregate: "energy" | "weighted-mean";
  points: AllLayerCheck[];
}

/** A layer's output energy tr(W H W^T) from its checks, when one of them allows it. */
function referenceOf(checks: readonly FreezeCheck[]): number | undefined {
  for (const c of checks) if (finite(c.loss) && finite(c.relativeError) && c.loss > 0 && c.relativeError > 0) return c.loss / (c.relativeError * c.relativeError);
  return undefined;
}

/**
 * The sign-freezing checks of all fine-tuned layers, per iteration: flips summed, frozen fraction over
 * all their weights, relative error aggregated (see `AllLayerChecks.errorAggregate`). A point aggregates
 * the layers that have a check at that iteration; with one schedule for all layers (the compressor's
 * case) that is every fine-tuned layer at every point, and `layers` says so.
 */
export function allLayerChecksDetail(report: Pick<Report, "layers">): AllLayerChecks {
  const tuned = report.layers.filter((l) => (l.finetune?.checks.length ?? 0) > 0);
  const refs = tuned.map((l) => referenceOf(l.finetune!.checks));
  const errorAggregate = refs.every((r) => r !== undefined) ? "energy" : "weighted-mean";
  const byIteration = new Map<number, { flips: number; frozen: number; weights: number; loss: number; ref: number; errSum: number; layers: number }>();
  tuned.forEach((l, i) => {
    const w = l.bits.weights;
    for (const c of l.finetune!.checks) {
      const p = byIteration.get(c.iteration) ?? { flips: 0, frozen: 0, weights: 0, loss: 0, ref: 0, errSum: 0, layers: 0 };
      p.flips += c.flips;
      p.frozen += c.frozenFraction * w;
      p.weights += w;
      p.loss += c.loss;
      p.ref += refs[i] ?? 0;
      p.errSum += c.relativeError * w;
      p.layers++;
      byIteration.set(c.iteration, p);
    }
  });
  const points = [...byIteration]
    .sort((a, b) => a[0] - b[0])
    .map(([iteration, p]) => ({
      iteration,
      flips: p.flips,
      frozenFraction: p.weights > 0 ? p.frozen / p.weights : 0,
      relativeError: errorAggregate === "energy" ? (p.ref > 0 ? Math.sqrt(Math.max(0, p.loss) / p.ref) : 0) : p.weights > 0 ? p.errSum / p.weights : 0,
      layers: p.layers,
    }));
  return { errorAggregate, points };
}

/** `allLayerChecksDetail(report).points`: `{ iteration, flips, frozenFraction, relativeError, layers }[]`. */
export function allLayerChecks(report: Pick<Report, "layers">): AllLayerCheck[] {
  return allLayerChecksDetail(report).points;
}

/** One layer's fine-tuning checks summed up (the per-layer sign-freezing table). */
export interface LayerFreezeSummary {
  name: string;
  checks: number;
  /** Flips over all checks, and at the last check (0 there: the signs had settled). */
  totalFlips: number;
  lastFlips: number;
  frozenFraction: number;
  /** Relative output error of k-means and after fine-tuning. */
  errorBefore: number;
  errorAfter: number;
}

export function layerFreezeSummary(l: LayerReport): LayerFreezeSummary | undefined {
  const f = l.finetune;
  if (!f) return undefined;
  return {
    name: l.name,
    checks: f.checks.length,
    totalFlips: f.checks.reduce((a, c) => a + c.flips, 0),
    lastFlips: f.checks.at(-1)?.flips ?? 0,
    frozenFraction: f.frozenFraction,
    errorBefore: f.errorBefore,
    errorAfter: l.outputError ?? f.errorAfter,
  };
}

/** Mean of the layers' relative output errors (layers without calibration left out), as `ssvq compress` prints it. */
export function meanLayerOutputError(layers: readonly LayerReport[]): number | undefined {
  const e = layers.filter((l) => l.outputError !== undefined && l.outputError !== null).map((l) => l.outputError!);
  return e.length ? e.reduce((a, b) => a + b, 0) / e.length : undefined;
}

/** A simulated layer in every format (the report's `simulation.layers` are one entry per layer and format). */
export interface SimulatedLayer {
  name: string;
  opType: string;
  M: number;
  K: number;
  N: number;
  groups: number;
  /** By format, in the simulation's order. */
  formats: Record<string, { latencyCycles: number; bound: Bound; bitsPerWeight: number; note?: string }>;
}

export interface SimulationView {
  preset: string;
  /** The accelerator's parameters, when the report has them. */
  config: AccelParams | undefined;
  /** Formats in the order the simulation lists them. */
  formats: string[];
  layers: SimulatedLayer[];
  totals: Record<string, Partial<FormatTotals> & { latencyCycles: number; seconds: number }>;
  speedup: { vsInt8: Record<string, number>; vsFp16: Record<string, number> };
}

/** The report's `simulation` in typed form, its per-layer entries grouped by layer; undefined without one. */
export function simulatedLayers(report: Pick<Report, "simulation">): SimulationView | undefined {
  const sim = report.simulation;
  if (!sim) return undefined;
  const raw = Array.isArray(sim["layers"]) ? (sim["layers"] as LayerResult[]) : [];
  const formats: string[] = [];
  const layers = new Map<string, SimulatedLayer>();
  for (const l of raw) {
    if (!formats.includes(l.format)) formats.push(l.format);
    const key = `${l.name}\u0000${l.opType}`;
    let s = layers.get(key);
    if (!s) layers.set(key, (s = { name: l.name, opType: l.opType, M: l.M, K: l.K, N: l.N, groups: l.groups, formats: {} }));
    s.formats[l.format] = { latencyCycles: l.latencyCycles, bound: l.bound, bitsPerWeight: l.bitsPerWeight, ...(l.note ? { note: l.note } : {}) };
  }
  for (const f of Object.keys(sim.totals ?? {})) if (!formats.includes(f)) formats.push(f);
  const config = typeof sim["config"] === "object" && sim["config"] !== null ? (sim["config"] as AccelParams) : undefined;
  return { preset: sim.preset, config, formats, layers: [...layers.values()], totals: sim.totals ?? {}, speedup: sim.speedup ?? { vsInt8: {}, vsFp16: {} } };
}

// ---------------------------------------------------------------------------------------------------
// The document

export interface ReportMarkdownOptions {
  /** The document's title (default "SSVQ report: <model file name>"). */
  title?: string;
}

const fileName = (path: string): string => path.split(/[\\/]/).pop() || path;

const BOUND_LETTER: Record<Bound, string> = { compute: "C", weights: "W", activations: "A", decode: "D" };

/** The sentence `ssvq compress` starts with, without "Compressed <path> with": method, seed, tuning. */
function methodSentence(r: Report): string {
  const c = r.config;
  const parts = [`**${escapeMarkdown(methodLabel(c))}**`, `seed ${c.seed}`];
  if (c.format === "dense") parts.push("dense output");
  if (c.finetune && c.finetuning) {
    const f = c.finetuning;
    parts.push(
      `fine-tuned ${c.sequential ? "sequentially, " : ""}${f.iters} iterations${f.fixedSigns ? " (fixed signs)" : f.freeze ? " with sign freezing" : ""}`,
    );
  } else parts.push("not fine-tuned");
  return parts.join(" · ");
}

function runSection(r: Report): string[] {
  const c = r.config;
  const f = c.finetuning;
  const yesNo = (b: boolean | undefined) => (b ? "yes" : "no");
  const rows: [string, string][] = [
    [
      "source",
      `${codeCell(r.source.path)} (${formatSize(r.source.fileBytes)}${r.source.producer ? `, from ${escapeMarkdown(r.source.producer)}` : ""}${r.source.opset !== undefined && r.source.opset !== null ? `, opset ${r.source.opset}` : ""})`,
    ],
    ["output", r.output ? `${codeCell(r.output.path)} (${r.output.format === "dense" ? "dense weights" : "SSVQ decode subgraphs"})` : "none (estimate only)"],
    ["method", `${escapeMarkdown(methodLabel(c))}${c.ratio !== undefined ? ` (--ratio ${c.ratio})` : c.bits !== undefined ? ` (--bits ${c.bits})` : ""}`],
    ["seed", String(c.seed)],
    ["k-means iterations (at most)", formatCount(c.kmeansIters)],
    ["minimum weights per layer", formatCount(c.minWeights)],
  ];
  if (c.layers !== undefined) rows.push(["layers matching", codeCell(c.layers)]);
  rows.push(["output format", c.format === "dense" ? "dense (decoded weights)" : "ssvq (decode subgraphs)"]);
  if (c.finetune && f) {
    rows.push(["fine-tuning", `${formatCount(f.iters)} iterations, codebook lr ${f.lrCodebook}, sign lr ${f.lrSign}, latent alpha ${f.alpha}`]);
    rows.push([
      "sign freezing",
      f.fixedSigns ? "fixed signs (sign(W) kept)" : f.freeze ? `every ${f.freeze.every} iterations, threshold ${f.freeze.thresholdFrom} → ${f.freeze.thresholdTo}, momentum ${f.freeze.momentum}` : "off",
    ]);
    rows.push(["re-assignment after tuning", yesNo(f.reassign)]);
    rows.push(["sequential", yesNo(c.sequential)]);
  } else rows.push(["fine-tuning", "off"]);
  rows.push(["tool", `ssvq ${escapeMarkdown(r.tool?.version ?? NA)}, report schema ${r.schemaVersion}`]);
  const out = ["### Run", "", keyValueTable(rows, ["setting", "value"])];
  if (r.command?.length) {
    // A dry run's report does not record --dry-run; without it the command would write the model.
    const args = r.output === null && !r.command.includes("--dry-run") ? [...r.command, "--dry-run"] : r.command;
    const quoted = args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`));
    const body = `ssvq compress ${quoted.join(" ")}`;
    const fence = "`".repeat(Math.max(3, ...(body.match(/`+/g) ?? []).map((x) => x.length + 1)));
    out.push("", "To reproduce:", "", `${fence}sh`, body, fence);
  }
  return out;
}

function sizesSection(r: Report): string[] {
  const s = r.sizes;
  const dry = r.output === null;
  const rows: string[][] = [
    ["tensors (tensor-only)", formatSize(s.originalTensorBytes), formatSize(s.compressedTensorBytes), formatRatio(s.tensorRatio)],
    dry
      ? ["file (estimate)", formatSize(s.sourceFileBytes), formatSize(s.theoreticalFileBytes), formatRatio(s.diskRatio)]
      : ["file on disk", formatSize(s.sourceFileBytes), formatSize(s.outputFileBytes), formatRatio(s.diskRatio)],
  ];
  if (!dry) rows.push(["file, theoretical", formatSize(s.sourceFileBytes), formatSize(s.theoreticalFileBytes), formatRatio(s.sourceFileBytes / s.theoreticalFileBytes)]);
  const b = sizeBreakdown(r);
  const parts = b.parts.filter((p) => p.bits > 0 || p.key === "kept");
  const bRows = [
    ...parts
      .filter((p) => p.key !== "kept")
      .map((p) => [escapeMarkdown(p.label), formatCount(p.bits), formatSize(p.bytes), formatBitsPerWeight(p.bitsPerWeight), formatPercent(p.share)]),
    ["compressed layers", formatCount(b.layers.bits), formatSize(b.layers.bytes), formatBitsPerWeight(b.layers.bitsPerWeight), formatPercent(b.layers.share)],
    ...parts.filter((p) => p.key === "kept").map((p) => [escapeMarkdown(p.label), formatCount(p.bits), formatSize(p.bytes), "-", formatPercent(p.share)]),
    ["all tensors", formatCount(b.totalBytes * 8), formatSize(b.totalBytes), "-", formatPercent(b.totalBytes > 0 ? 1 : 0)],
  ];
  return [
    "### Sizes",
    "",
    markdownTable(["", "original", "compressed", "ratio"], rows, ["left", "right", "right", "right"]),
    "",
    `${formatCount(s.compressedLayers)} layers compressed: ${formatCount(s.compressedWeights)} weights at ${formatBitsPerWeight(s.bitsPerWeight)} bits/weight.`,
    "",
    "### Size breakdown",
    "",
    "Tensor bytes of the compressed model, by part:",
    "",
    markdownTable(["part", "bits", "bytes", "bits/weight", "share"], bRows, ["left", "right", "right", "right", "right"]),
  ];
}

function dataRows(d: NonNullable<Report["calibration"]>["data"]): [string, string][] {
  const rows: [string, string][] = [
    ["data", d.source === "random" ? `random inputs (seed ${d.seed})` : d.paths.map(codeCell).join(", ") || NA],
  ];
  if (d.source !== "random") {
    rows.push(["source kind", escapeMarkdown(d.source)]);
    rows.push(["range", `${d.range[0]}:${d.range[1]} of ${formatCount(d.available)} available`]);
    rows.push(["inputs matched by", escapeMarkdown(d.matchedBy)]);
  }
  const pre = Object.entries(d.preprocess ?? {}).filter(([, v]) => v !== undefined && v !== null);
  rows.push(["preprocessing", pre.length ? pre.map(([k, v]) => `${escapeMarkdown(k)} ${escapeMarkdown(Array.isArray(v) ? v.join(",") : String(v))}`).join(", ") : "none"]);
  return rows;
}

function calibrationSection(r: Report): string[] {
  const cal = r.calibration;
  if (!cal) return ["### Calibration", "", "No calibration data: layer output errors were not measured and nothing was fine-tuned on data."];
  const rows = dataRows(cal.data);
  rows.splice(1, 0, ["samples", formatCount(cal.samples)]);
  rows.push(["uncalibrated layers", formatCount(cal.uncalibrated.length)]);
  const out = ["### Calibration", "", keyValueTable(rows, ["", "value"])];
  if (cal.uncalibrated.length) {
    out.push("", markdownTable(["uncalibrated layer", "reason"], cal.uncalibrated.map((u) => [codeCell(u.name), escapeMarkdown(u.reason)])));
  }
  return out;
}

function fidelityRows(ev: NonNullable<Report["evaluation"]>): string[][] {
  return ev.outputs.map((o) => [
    codeCell(o.name),
    formatPercent(o.relError),
    finite(o.cosine) ? o.cosine.toFixed(4) : NA,
    finite(o.meanSampleCosine) ? o.meanSampleCosine.toFixed(4) : NA,
    finite(o.maxAbsError) ? o.maxAbsError.toPrecision(4) : NA,
    o.top1Agreement === undefined ? "-" : formatPercent(o.top1Agreement),
    formatCount(o.nonFinite),
  ]);
}

function evaluationSection(r: Report): string[] {
  const ev = r.evaluation;
  if (!ev) return ["### Evaluation", "", "No evaluation data: the compressed model was not compared with the original."];
  const info: [string, string][] = [["samples", formatCount(ev.samples)]];
  if (ev.data) info.push(...dataRows(ev.data));
  if (ev.data?.labels) info.push(["labels", codeCell(ev.data.labels)]);
  const out = ["### Evaluation", "", keyValueTable(info, ["", "value"])];
  const acc = ev.accuracy;
  if (acc) {
    const rows = [["original", formatCount(acc.original.correct), formatCount(acc.labelled), formatPercent(acc.original.accuracy)]];
    if (acc.compressed) {
      rows.push(["compressed", formatCount(acc.compressed.correct), formatCount(acc.labelled), formatPercent(acc.compressed.accuracy)]);
      const delta = 100 * (acc.compressed.accuracy - acc.original.accuracy);
      rows.push(["change", formatCount(acc.compressed.correct - acc.original.correct), "", `${delta >= 0 ? "+" : ""}${delta.toFixed(2)} pp`]);
    }
    out.push("", `Top-1 accuracy on output ${code(acc.output)}:`, "", markdownTable(["model", "correct", "labelled", "accuracy"], rows, ["left", "right", "right", "right"]));
  }
  if (ev.outputs.length) {
    out.push(
      "",
      "Fidelity of the compressed model's outputs to the original's:",
      "",
      markdownTable(
        ["output", "relative error", "cosine", "mean sample cosine", "max abs error", "top-1 agreement", "non-finite"],
        fidelityRows(ev),
        ["left", "right", "right", "right", "right", "right", "right"],
      ),
    );
  }
  if (ev.skipped.length) out.push("", markdownTable(["output not compared", "reason"], ev.skipped.map((s) => [codeCell(s.name), escapeMarkdown(s.reason)])));
  return out;
}

function timingsSection(r: Report): string[] {
  const entries = Object.entries(r.timings ?? {});
  if (!entries.length) return ["### Time per stage", "", "No timings recorded."];
  const total = entries.reduce((a, [, s]) => a + (finite(s) ? s : 0), 0);
  const rows = entries.map(([stage, s]) => [escapeMarkdown(stage), formatSeconds(s), formatPercent(total > 0 && finite(s) ? s / total : 0)]);
  rows.push(["total", formatSeconds(total), formatPercent(total > 0 ? 1 : 0)]);
  return ["### Time per stage", "", markdownTable(["stage", "seconds", "share"], rows, ["left", "right", "right"])];
}

function comparisonSection(r: Report): string[] {
  const v = r.comparison?.vq;
  if (!v) return [];
  const a = { label: methodLabel(r.config), config: r.config, layers: r.layers, sizes: r.sizes, evaluation: r.evaluation };
  const b = { label: methodLabel(v.config), config: v.config, layers: v.layers, sizes: v.sizes, evaluation: v.evaluation };
  const both = (f: (x: typeof a) => string) => [f(a), f(b)];
  const rows: [string, ...string[]][] = [
    ["bits/weight", ...both((x) => formatBitsPerWeight(x.sizes.bitsPerWeight))],
    ["compressed tensors", ...both((x) => formatSize(x.sizes.compressedTensorBytes))],
    ["tensor ratio", ...both((x) => formatRatio(x.sizes.tensorRatio))],
    ["file", ...both((x) => formatSize(x.sizes.outputFileBytes || x.sizes.theoreticalFileBytes))],
    ["file ratio", ...both((x) => formatRatio(x.sizes.diskRatio))],
    ["mean layer output error", ...both((x) => formatPercent(meanLayerOutputError(x.layers)))],
  ];
  if (a.evaluation || b.evaluation) {
    const o = (x: typeof a) => x.evaluation?.outputs[0];
    rows.push(["model output relative error", ...both((x) => formatPercent(o(x)?.relError))]);
    rows.push(["model output cosine", ...both((x) => (finite(o(x)?.cosine) ? o(x)!.cosine.toFixed(4) : NA))]);
    rows.push(["top-1 agreement", ...both((x) => formatPercent(o(x)?.top1Agreement))]);
    rows.push(["accuracy", ...both((x) => formatPercent(x.evaluation?.accuracy?.compressed?.accuracy))]);
  }
  const out = [
    "## SSVQ vs VQ",
    "",
    `Conventional VQ at the nearest operating point whose whole-model size is not larger, compressed and fine-tuned the same way on the same data (its model is not written).`,
    "",
    markdownTable(["", escapeMarkdown(a.label), escapeMarkdown(b.label)], rows.map(([k, ...vs]) => [escapeMarkdown(k), ...vs]), ["left", "right", "right"]),
  ];
  const byName = new Map(b.layers.map((l) => [l.name, l]));
  const calibrated = a.layers.some((l) => l.outputError !== undefined) || b.layers.some((l) => l.outputError !== undefined);
  const lRows = a.layers.map((l) => {
    const m = byName.get(l.name);
    return [
      codeCell(l.name),
      formatBitsPerWeight(l.bits.bitsPerWeight),
      m ? formatBitsPerWeight(m.bits.bitsPerWeight) : "-",
      formatPercent(l.weightError),
      m ? formatPercent(m.weightError) : "-",
      ...(calibrated ? [l.outputError === undefined ? "-" : formatPercent(l.outputError), m?.outputError === undefined ? "-" : formatPercent(m.outputError)] : []),
    ];
  });
  const la = escapeMarkdown(a.config.mode.toUpperCase());
  const lb = escapeMarkdown(b.config.mode.toUpperCase());
  out.push(
    "",
    markdownTable(
      ["layer", `${la} bits/weight`, `${lb} bits/weight`, `${la} weight error`, `${lb} weight error`, ...(calibrated ? [`${la} output error`, `${lb} output error`] : [])],
      lRows,
      ["left", "right", "right", "right", "right", "right", "right"],
    ),
  );
  return out;
}

/** With --ratio / --bits: each layer's candidates on its convex hull (and the chosen one), as the search saw them. */
function searchSection(r: Report): string[] {
  const searches = [r.search, r.comparison?.vq.search].filter((x): x is NonNullable<Report["search"]> => x !== undefined);
  if (!searches.length) return [];
  const out = ["## Operating-point search"];
  for (const s of searches) {
    const target = s.target.ratio !== undefined ? `${s.target.ratio}x whole-model tensors` : `${s.target.bits} bits/weight`;
    out.push(
      "",
      `${s.family.toUpperCase()}, target ${target}: ${int(s.costBits)} of ${int(s.budgetBits)} bits. Damage = sensitivity × (output error after k-means)²; ` +
        `sensitivities measured on ${s.sensitivitySamples} calibration samples (${escapeMarkdown(s.modelChange)}). Hull points shown; the chosen one in bold.`,
      "",
    );
    const rows: string[][] = [];
    for (const l of s.layers)
      for (const [i, c] of l.candidates.entries()) {
        if (!c.hull && i !== l.pick) continue;
        const label = escapeMarkdown(candidateLabel(c));
        rows.push([
          codeCell(l.name),
          l.sensitivity.toPrecision(3),
          i === l.pick ? `**${label}**` : label,
          c.bitsPerWeight.toFixed(3),
          formatPercent(c.outputError),
          c.damage.toPrecision(3),
        ]);
      }
    out.push(markdownTable(["layer", "sensitivity", "candidate", "bits/weight", "output error", "damage"], rows, ["left", "right", "left", "right", "right", "right"]));
  }
  return out;
}

function layersSection(r: Report): string[] {
  const tuned = r.layers.some((l) => l.finetune);
  const signs = tuned && r.layers.some((l) => l.finetune && l.mode === "ssvq");
  const cal = r.calibration;
  const why = new Map((cal?.uncalibrated ?? []).map((u) => [u.name, u.reason]));
  const headers = [
    "layer",
    "op",
    "shape",
    "rows x cols",
    "k",
    "d",
    "bits/weight",
    "weight error",
    ...(cal ? (tuned ? ["output error, k-means", "output error, fine-tuned"] : ["output error"]) : []),
    ...(signs ? ["signs flipped", "frozen"] : []),
    ...(cal ? ["calibrated"] : []),
  ];
  const rows = r.layers.map((l) => {
    const ssvq = l.finetune && l.mode === "ssvq";
    return [
      codeCell(l.name) + (l.graphPath ? ` (in ${codeCell(l.graphPath)})` : ""),
      escapeMarkdown(l.opType),
      shape(l.dims),
      `${l.rows} x ${l.cols}`,
      l.k === undefined ? "-" : String(l.k),
      l.d === undefined ? "-" : String(l.d),
      formatBitsPerWeight(l.bits.bitsPerWeight),
      r.output === null ? "-" : formatPercent(l.weightError),
      ...(cal
        ? tuned
          ? [l.finetune ? formatPercent(l.finetune.errorBefore) : "-", l.outputError === undefined ? "-" : formatPercent(l.outputError)]
          : [l.outputError === undefined ? "-" : formatPercent(l.outputError)]
        : []),
      ...(signs ? [ssvq ? formatPercent(l.finetune!.signsChangedFraction) : "-", ssvq ? formatPercent(l.finetune!.frozenFraction) : "-"] : []),
      ...(cal ? [l.outputError !== undefined ? "yes" : `no: ${escapeMarkdown(why.get(l.name) ?? "no statistics")}`] : []),
    ];
  });
  const align: Align[] = headers.map((_, i) => (i >= 3 && i < headers.length - (cal ? 1 : 0) ? "right" : "left"));
  const out = ["## Layers", ""];
  if (!r.layers.length) out.push("No layer was compressed.");
  else {
    out.push(markdownTable(headers, rows, align));
    out.push(
      "",
      "Weight error: ‖W_hat − W‖ / ‖W‖. " +
        (cal
          ? `Output error: ‖W_hat X − W X‖ / ‖W X‖ on the calibration data${r.config.sequential ? " (relative to the original network's layer output)" : ""}.`
          : "Output errors need calibration data (--calib)."),
    );
  }
  return out;
}

function freezingSection(r: Report): string[] {
  const tuned = r.layers.filter((l) => (l.finetune?.checks.length ?? 0) > 0);
  if (!tuned.length) return [];
  const signs = tuned.some((l) => l.mode === "ssvq") && !r.config.finetuning?.fixedSigns;
  const rows = tuned.map((l) => {
    const s = layerFreezeSummary(l)!;
    return [
      codeCell(l.name),
      formatCount(s.checks),
      ...(signs ? [formatCount(s.totalFlips), formatCount(s.lastFlips), formatPercent(s.frozenFraction)] : []),
      `${formatPercent(s.errorBefore)} → ${formatPercent(s.errorAfter)}`,
    ];
  });
  const detail = allLayerChecksDetail(r);
  const varying = detail.points.some((p) => p.layers !== tuned.length);
  const pRows = detail.points.map((p) => [
    formatCount(p.iteration),
    ...(signs ? [formatCount(p.flips), formatPercent(p.frozenFraction)] : []),
    formatPercent(p.relativeError),
    ...(varying ? [formatCount(p.layers)] : []),
  ]);
  const how =
    detail.errorAggregate === "energy"
      ? "relative error of all layers' outputs together, sqrt(Σ loss / Σ ‖W X‖²)"
      : "relative error as the mean of the layers' errors weighted by their weights (some layer's output energy could not be recovered from its checks)";
  return [
    signs ? "## Sign freezing" : "## Fine-tuning checks",
    "",
    markdownTable(
      ["layer", "checks", ...(signs ? ["flips, all checks", "flips, last check", "frozen"] : []), "output error, k-means → fine-tuned"],
      rows,
      ["left", "right", "right", "right", "right", "right"],
    ),
    "",
    `All layers per check: ${signs ? "flips summed, frozen signs over all weights, " : ""}${how}.`,
    "",
    markdownTable(["iteration", ...(signs ? ["flips", "frozen"] : []), "relative error", ...(varying ? ["layers"] : [])], pRows, ["right", "right", "right", "right", "right"]),
  ];
}

function accelRows(p: AccelParams): [string, string][] {
  const kib = (b: number) => (b % 1024 === 0 ? `${b / 1024}` : `${(b / 1024).toFixed(1)}`);
  const bw = (b: number) => (b >= 1e9 ? `${+(b / 1e9).toFixed(3)} GB/s` : `${+(b / 1e6).toFixed(3)} MB/s`);
  const dataflow: Record<string, string> = { ws: "weight-stationary", os: "output-stationary", is: "input-stationary" };
  const bus = p.bus === "calc" ? "bandwidth that never stalls (SCALE-Sim CALC)" : `${bw(p.dramBytesPerSecond)}, ${p.bus === "shared" ? "one shared bus" : "per buffer"}`;
  return [
    ["array", `${p.arrayRows} x ${p.arrayCols} (${formatCount(p.arrayRows * p.arrayCols)} MACs)`],
    ["dataflow", `${dataflow[p.dataflow] ?? escapeMarkdown(String(p.dataflow))} (${escapeMarkdown(String(p.dataflow))})`],
    ["clock", `${+(p.clockHz / 1e6).toFixed(3)} MHz`],
    ["SRAM in / weights / out", `${kib(p.ifmapSramBytes)} / ${kib(p.filterSramBytes)} / ${kib(p.ofmapSramBytes)} KiB`],
    ["DRAM", bus],
    ["VQ decoders", `${p.decoders} x ${p.codebookPorts} codebook port${p.codebookPorts === 1 ? "" : "s"}`],
    ["activation width", `${p.bytesPerActivation} byte${p.bytesPerActivation === 1 ? "" : "s"}`],
  ];
}

function simulationSection(r: Report): string[] {
  const sim = simulatedLayers(r);
  if (!sim) return [];
  const out = [
    "## Simulated latency",
    "",
    `> **Simulated, not measured**: the analytical accelerator model of \`ssvq simulate\` (compute cycles, DRAM traffic, VQ decoders) with ${r.config.mode === "ssvq" || r.config.mode === "vq" ? "this compression's own bits per layer for VQ and SSVQ" : "each format's bits"}, over the GEMM layers only (element-wise, normalisation and softmax layers are not modelled).`,
    "",
    keyValueTable([["preset", codeCell(sim.preset)], ...(sim.config ? accelRows(sim.config) : [])], ["accelerator", "value"]),
  ];
  const mode = r.config.mode;
  const vqf = sim.formats.includes(mode) && mode !== "int8" ? mode : undefined;
  const ratioCol = vqf && sim.formats.includes("int8") ? `${vqf} vs int8` : undefined;
  const notes: string[] = [];
  if (sim.layers.length) {
    const rows = sim.layers.map((l) => {
      const cells = sim.formats.map((f) => {
        const x = l.formats[f];
        if (!x) return "-";
        if (x.note) notes.push(`${code(l.name)}, ${escapeMarkdown(f)}: ${escapeMarkdown(x.note)}`);
        return `${formatCount(x.latencyCycles)} ${BOUND_LETTER[x.bound] ?? "?"}${x.note ? " †" : ""}`;
      });
      const a = l.formats["int8"];
      const b = vqf ? l.formats[vqf] : undefined;
      return [
        codeCell(l.name),
        escapeMarkdown(l.opType),
        formatCount(l.M),
        formatCount(l.K),
        formatCount(l.N),
        formatCount(l.groups),
        ...cells,
        ...(ratioCol ? [a && b && b.latencyCycles > 0 ? formatRatio(a.latencyCycles / b.latencyCycles) : "-"] : []),
      ];
    });
    const headers = ["layer", "op", "M", "K", "N", "groups", ...sim.formats.map((f) => `${f} cycles`), ...(ratioCol ? [ratioCol] : [])];
    out.push("", "Per layer (latency cycles and what bounds it):", "", markdownTable(headers, rows, headers.map((_, i) => (i >= 2 ? "right" : "left"))));
    out.push("", "Bound: C compute, W weights (DRAM), A activations (DRAM), D VQ decoders.");
    if (notes.length) out.push("", "† weights not in that format:", "", ...notes.map((n) => `- ${n}`));
  }
  const tRows = sim.formats
    .filter((f) => sim.totals[f])
    .map((f) => {
      const t = sim.totals[f]!;
      const bounds = t.bounds ? (Object.entries(t.bounds) as [Bound, number][]).filter(([, n]) => n > 0).map(([b, n]) => `${BOUND_LETTER[b] ?? b} ${n}`).join(", ") : "";
      return [
        escapeMarkdown(f),
        formatCount(t.latencyCycles),
        formatDuration(t.seconds),
        formatCount(t.computeCycles),
        formatCount(t.decodeCycles),
        formatSize(t.dramBytes?.weights),
        formatSize(t.dramBytes?.ifmap),
        formatSize(t.dramBytes?.ofmap),
        bounds || "-",
        formatRatio(sim.speedup.vsInt8[f]),
        formatRatio(sim.speedup.vsFp16[f]),
      ];
    });
  out.push(
    "",
    `Totals over ${formatCount(sim.layers.length)} GEMM layers:`,
    "",
    markdownTable(
      ["format", "latency cycles", "time", "compute cycles", "decode cycles", "DRAM weights", "DRAM in", "DRAM out", "layers by bound", "vs INT8", "vs FP16"],
      tRows,
      ["left", "right", "right", "right", "right", "right", "right", "right", "left", "right", "right"],
    ),
  );
  return out;
}

function keptSection(r: Report): string[] {
  const kept = r.kept ?? [];
  if (!kept.length) return ["## Kept as is", "", "None: every weight found was compressed."];
  return [
    "## Kept as is",
    "",
    markdownTable(["weight", "op", "shape", "reason"], kept.map((k) => [codeCell(k.name), escapeMarkdown(k.opType), shape(k.dims), escapeMarkdown(k.reason)])),
  ];
}

function warningsSection(r: Report): string[] {
  const w = r.warnings ?? [];
  return ["## Warnings", "", ...(w.length ? w.map((x) => `- ${escapeMarkdown(x)}`) : ["None."])];
}

/**
 * The report as a Markdown document: title, method line, Overview (run settings, sizes and their
 * breakdown, calibration, evaluation, time per stage), SSVQ vs VQ (with `comparison`), Layers, Sign
 * freezing (with fine-tuning), Simulated latency (with `simulation`), Kept as is, Warnings. Ends with a
 * newline.
 */
export function reportMarkdown(report: Report, opts: ReportMarkdownOptions = {}): string {
  const r = report;
  const title =
    opts.title !== undefined ? escapeMarkdown(opts.title.replace(/\s*[\r\n]+\s*/g, " ")) : `SSVQ report: ${code(fileName(r.source.path).replace(/[\r\n]+/g, " "))}`;
  const s = r.sizes;
  const headline = [
    `Tensors ${formatSize(s.originalTensorBytes)} → ${formatSize(s.compressedTensorBytes)} (${formatRatio(s.tensorRatio)})`,
    `${r.output === null ? "file about" : "file"} ${formatSize(s.sourceFileBytes)} → ${formatSize(r.output === null ? s.theoreticalFileBytes : s.outputFileBytes)} (${formatRatio(s.diskRatio)})`,
    `${formatBitsPerWeight(s.bitsPerWeight)} bits/weight`,
  ];
  const acc = r.evaluation?.accuracy;
  if (acc?.compressed) headline.push(`accuracy ${formatPercent(acc.original.accuracy)} → ${formatPercent(acc.compressed.accuracy)}`);
  const blocks: string[][] = [
    [`# ${title}`, "", `${methodSentence(r)}${r.output === null ? " · estimate only (dry run)" : ""}`, "", `${headline.join(" · ")}.`],
    ["## Overview"],
    runSection(r),
    sizesSection(r),
    calibrationSection(r),
    evaluationSection(r),
    timingsSection(r),
    comparisonSection(r),
    searchSection(r),
    layersSection(r),
    freezingSection(r),
    simulationSection(r),
    keptSection(r),
    warningsSection(r),
  ];
  return blocks.filter((b) => b.length).map((b) => b.join("\n")).join("\n\n") + "\n";
}
