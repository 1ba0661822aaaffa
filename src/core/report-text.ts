/**
 * A compression report as text: the per-layer table and the whole-model lines that \`ssvq compress\`
 * prints and the extension writes to its log.
 */
import type { Report } from "./report.js";
import { formatBytes, table } from "./text-table.js";
import { methodText, renderSearch } from "./report-search-text.js";

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

export function renderReport(r: Report, dryRun: boolean): string {
  const c = r.config;
  const method = methodText(c);
  const tuned = r.layers.some((l) => l.finetune);
  const rows = r.layers.map((l) => [
    l.name,
    l.opType,
    `${l.rows} x ${l.cols}`,
    l.bits.weights.toLocaleString("en-US"),
    l.bits.bitsPerWeight.toFixed(3),
    dryRun ? "-" : pct(l.weightError),
    ...(r.calibration ? [l.outputError === undefined ? "uncalibrated" : l.finetune ? `${pct(l.finetune.errorBefore)} -> ${pct(l.outputError)}` : pct(l.outputError)] : []),
    ...(tuned ? [l.finetune && l.mode === "ssvq" ? `${pct(l.finetune.signsChangedFraction)} / ${pct(l.finetune.frozenFraction)}` : "-"] : []),
  ]);
  const s = r.sizes;
  const lines = [
    `${dryRun ? "Estimate for" : "Compressed"} ${r.source.path} with ${method}, seed ${c.seed}${c.format === "dense" ? ", dense output" : ""}` +
      (c.finetune && c.finetuning
        ? `, fine-tuned ${c.sequential ? "sequentially, " : ""}${c.finetuning.iters} iterations${c.finetuning.fixedSigns ? " (fixed signs)" : c.finetuning.freeze ? " with sign freezing" : ""}`
        : ""),
    "",
    table(
      [
        "layer",
        "op",
        "rows x cols",
        "weights",
        "bits/weight",
        "weight error",
        ...(r.calibration ? [tuned ? "output error (k-means -> tuned)" : "output error"] : []),
        ...(tuned ? ["signs flipped / frozen"] : []),
      ],
      rows,
      [false, false, true, true, true, true, true, true],
    ),
    "",
    `compressed ${s.compressedLayers} layers, ${s.compressedWeights.toLocaleString("en-US")} weights at ${s.bitsPerWeight.toFixed(3)} bits/weight`,
    `tensors     ${formatBytes(s.originalTensorBytes)} -> ${formatBytes(Math.round(s.compressedTensorBytes))}  (${s.tensorRatio.toFixed(2)}x, tensor-only)`,
    dryRun
      ? `file        ${formatBytes(s.sourceFileBytes)} -> about ${formatBytes(Math.round(s.theoreticalFileBytes))}  (${s.diskRatio.toFixed(2)}x)`
      : `file        ${formatBytes(s.sourceFileBytes)} -> ${formatBytes(s.outputFileBytes)} on disk  (${s.diskRatio.toFixed(2)}x; theoretical ${formatBytes(Math.round(s.theoreticalFileBytes))})`,
  ];
  if (!dryRun && s.outputDataBytes !== undefined && r.output?.data)
    lines.push(`            of which ${formatBytes(s.outputDataBytes)} in the external data file ${r.output.data.path}`);
  if (r.calibration) {
    const cal = r.calibration;
    lines.push(`calibration ${cal.data.paths.join(", ") || "random inputs"}, ${cal.samples} samples${cal.uncalibrated.length ? `; ${cal.uncalibrated.length} layers uncalibrated (inside If/Loop/Scan bodies)` : ""}`);
  }
  if (r.evaluation) {
    const ev = r.evaluation;
    const o = ev.outputs[0];
    const acc = ev.accuracy;
    lines.push(
      `evaluation  ${ev.samples} samples` +
        (acc ? `: accuracy ${pct(acc.original.accuracy)} -> ${pct(acc.compressed!.accuracy)}` : "") +
        (o ? `; output "${o.name}": relative error ${pct(o.relError)}, cosine ${o.cosine.toFixed(4)}` : "") +
        (o?.top1Agreement !== undefined ? `, top-1 agreement ${pct(o.top1Agreement)}` : ""),
    );
  }
  if (r.comparison) {
    const v = r.comparison.vq;
    const meanOut = (ls: Report["layers"]) => {
      const e = ls.filter((l) => l.outputError !== undefined).map((l) => l.outputError!);
      return e.length ? `, mean layer output error ${pct(e.reduce((a, b) => a + b, 0) / e.length)}` : "";
    };
    const evalText = (e: Report["evaluation"]) =>
      e ? `, model output error ${pct(e.outputs[0]!.relError)}${e.accuracy?.compressed ? `, accuracy ${pct(e.accuracy.compressed.accuracy)}` : ""}` : "";
    const m = (x: string) => x.padEnd(Math.max(methodText(c).length, methodText(v.config).length));
    lines.push(
      `compare     ${m(methodText(c))}: tensors ${formatBytes(Math.round(s.compressedTensorBytes))}${meanOut(r.layers)}${evalText(r.evaluation)}`,
      `            ${m(methodText(v.config))}: tensors ${formatBytes(Math.round(v.sizes.compressedTensorBytes))}${meanOut(v.layers)}${evalText(v.evaluation)}`,
    );
  }
  if (r.search) lines.push(renderSearch(r.search));
  if (r.comparison?.vq.search) lines.push(renderSearch(r.comparison.vq.search));
  if (r.simulation) {
    const sim = r.simulation;
    const mode = c.mode;
    const t = (f: string) => sim.totals[f]?.seconds ?? NaN;
    const ms = (x: number) => `${(x * 1e3).toFixed(3)} ms`;
    lines.push(
      `simulated   ${sim.preset}: ${mode.toUpperCase()} ${ms(t(mode))}, INT8 ${ms(t("int8"))}, FP16 ${ms(t("fp16"))}` +
        ` (${(sim.speedup.vsInt8[mode] ?? NaN).toFixed(2)}x vs INT8; GEMM layers only)`,
    );
  }
  if (r.kept.length) lines.push(`kept as is  ${r.kept.length} weights: ${summarizeKept(r)}`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join("\n");
}

function summarizeKept(r: Report): string {
  const byReason = new Map<string, number>();
  for (const k of r.kept) {
    const reason = k.reason.replace(/^\d+ weights, fewer than/, "fewer than");
    byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
  }
  return [...byReason].map(([why, n]) => `${n} ${why}`).join("; ");
}

