/** The inspector's header: the file, what it is, and the compress button or the running compression. */
import type { ModelInspection } from "../../src/io/inspect-file.js";
import type { CompressionState } from "../../src/webview-protocol.js";
import { h } from "../shared/dom.js";
import { bytes, int } from "../shared/format.js";

export function header(o: { fileName: string; inspection: ModelInspection | undefined; compression: CompressionState; trusted: boolean; canCompress: boolean }): HTMLElement {
  const i = o.inspection;
  const c = i?.compression;
  const badge = c ? h("vscode-badge", { variant: "counter", id: "compressed-badge" }, c.config ? describeConfig(c.config) : "SSVQ-compressed") : null;
  const subtitle = i
    ? [
        bytes(i.fileBytes),
        i.producer ? `${i.producer}${i.producerVersion ? ` ${i.producerVersion}` : ""}` : "no producer",
        `IR ${i.irVersion}`,
        i.opsets.map((o) => `${o.domain} ${o.version}`).join(", "),
        `${int(i.parameters.count)} parameters`,
      ].join(" · ")
    : "";
  const actions = o.compression.running
    ? h(
        "div",
        { class: "actions", id: "compression-running" },
        h("vscode-progress-ring", { "aria-hidden": "true" }),
        h("span", { class: "running-text", role: "status" }, `Compressing: ${o.compression.text ?? ""}`),
        h("vscode-button", { id: "cancel", secondary: true }, "Cancel"),
        h("vscode-button", { id: "open-panel", secondary: true }, "Show Progress"),
        h("vscode-button", { id: "show-log", secondary: true }, "Show Log"),
      )
    : !o.canCompress
      ? c
        ? h("div", { class: "actions" }, h("vscode-button", { id: "open-panel", title: "The report of this compression, in the SSVQ panel" }, "Open SSVQ Panel"))
        : null
      : h(
        "div",
        { class: "actions" },
        h("vscode-button", { id: "compress", title: o.trusted ? "Compress with the ssvq.* settings" : "Compressing needs a trusted workspace" }, "Compress with SSVQ"),
        h("vscode-button", { id: "compress-settings", secondary: true }, "Choose Settings..."),
        o.trusted ? null : h("span", { class: "restricted" }, "Restricted Mode: compressing asks for trust first."),
      );
  return h(
    "header",
    { class: "top" },
    h("div", { class: "title" }, h("h1", {}, o.fileName || "Model"), badge),
    subtitle ? h("p", { class: "subtitle" }, subtitle) : null,
    actions,
  );
}

function describeConfig(c: NonNullable<ModelInspection["compression"]>["config"]): string {
  if (!c) return "SSVQ-compressed";
  const mode = String(c.mode ?? "").toUpperCase();
  const target = typeof c["ratio"] === "number" ? `${c["ratio"]}x` : typeof c["bits"] === "number" ? `${c["bits"]} bits/weight` : undefined;
  if ((c.mode === "ssvq" || c.mode === "vq") && target) return `${mode}, each layer's own point (searched for ${target})`;
  return c.mode === "ssvq" || c.mode === "vq" ? `${mode} k=${c.k} d=${c.d}` : mode;
}
