/** The panel's header: the model, what is shown (a running job with its progress, or a report), the buttons. */
import { h } from "../shared/dom.js";
import { pct, ratio } from "../shared/format.js";
import type { PanelModel } from "./model.js";

const base = (p: string): string => p.slice(Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\")) + 1);

export function header(m: PanelModel): HTMLElement {
  const job = m.job;
  const shown = m.shown;
  const r = shown?.report;
  let status: HTMLElement;
  if (job?.running) {
    status = h(
      "div",
      { class: "status", role: "status", id: "job-status" },
      h("vscode-progress-ring", { "aria-hidden": "true" }),
      h("span", { id: "job-progress-text", "data-fraction": job.progress.fraction }, `Compressing: ${job.progress.text}`),
      h("progress", { max: 1, value: job.progress.fraction, "aria-label": "Progress of the run" }),
    );
  } else if (r) {
    const acc = r.evaluation?.accuracy;
    status = h(
      "p",
      { class: "subtitle", id: "report-summary" },
      `${r.config.mode === "ssvq" || r.config.mode === "vq" ? (r.search ? `${r.config.mode.toUpperCase()}, each layer searched` : `${r.config.mode.toUpperCase()} k=${r.config.k} d=${r.config.d}`) : r.config.mode.toUpperCase()} · ` +
        `${ratio(r.sizes.tensorRatio)} tensor-only, ${ratio(r.sizes.diskRatio)} on disk · ${r.sizes.bitsPerWeight.toFixed(3)} bits/weight` +
        (acc?.compressed ? ` · accuracy ${pct(acc.original.accuracy)} → ${pct(acc.compressed.accuracy)}` : "") +
        (shown.reportPath ? ` · ${base(shown.reportPath)}` : ""),
    );
  } else if (job?.failed) {
    status = h("p", { class: job.failed.kind === "cancelled" ? "subtitle" : "problem", role: "alert", id: "job-failed" }, job.failed.kind === "cancelled" ? "The compression was cancelled; nothing was written." : `The compression failed: ${job.failed.message}`);
  } else status = h("p", { class: "subtitle", id: "panel-message" }, m.message ?? "Loading...");
  const buttons = job?.running
    ? [h("vscode-button", { id: "cancel-job", secondary: true }, "Cancel"), h("vscode-button", { id: "copy-command", secondary: true }, "Copy CLI Command")]
    : r
      ? [
          h("vscode-button", { id: "export-json", secondary: true }, "Export JSON"),
          h("vscode-button", { id: "export-markdown", secondary: true }, "Export Markdown"),
          shown?.outPath ? h("vscode-button", { id: "open-output", secondary: true }, "Open Output") : null,
          shown?.outPath ? h("vscode-button", { id: "reveal-output", secondary: true }, "Reveal in Explorer") : null,
          shown?.command ? h("vscode-button", { id: "copy-command", secondary: true }, "Copy CLI Command") : null,
          h("vscode-button", { id: "compress-again" }, "Compress Again..."),
        ]
      : job
        ? [h("vscode-button", { id: "compress-again" }, "Compress Again...")]
        : [];
  return h(
    "header",
    { class: "top" },
    h("h1", {}, base(m.modelPath) || "SSVQ"),
    status,
    h("div", { class: "actions" }, buttons),
  );
}
