/**
 * The SSVQ Inspector's page: the model's summary, weights and (for a `.ssvq.onnx`) its compression,
 * from the extension's messages (src/webview-protocol.ts). The page asks for nothing but what the
 * protocol allows and renders every model-provided text as text.
 */
import "@vscode-elements/elements/dist/vscode-button/index.js";
import "@vscode-elements/elements/dist/vscode-badge/index.js";
import "@vscode-elements/elements/dist/vscode-collapsible/index.js";
import "@vscode-elements/elements/dist/vscode-progress-ring/index.js";
import "./inspector.css";
import type { CompressionState, ToInspectorMessage } from "../../src/webview-protocol.js";
import { h, replaceChildren } from "../shared/dom.js";
import { bytes } from "../shared/format.js";
import { onThemeChange } from "../shared/theme.js";
import { post } from "../shared/vscode-api.js";
import { header } from "./header.js";
import { summarySections } from "./summary.js";
import { compressionSections } from "./compression.js";

type Inspection = Extract<ToInspectorMessage, { type: "inspection" }>;

const app = document.getElementById("app")!;
let loading: Extract<ToInspectorMessage, { type: "loading" }> | undefined;
let result: Inspection | Extract<ToInspectorMessage, { type: "inspectionFailed" }> | undefined;
let compression: CompressionState = { running: false };
let trusted = true;

function render(): void {
  const name = loading?.fileName ?? "";
  const inspection = result?.type === "inspection" ? result.inspection : undefined;
  // A damaged file, or one with nothing left to compress (a .ssvq.onnx), gets no compress buttons.
  const top = header({ fileName: name, inspection, compression, trusted, canCompress: !!inspection && inspection.weights.length > 0 });
  if (!result) {
    replaceChildren(
      app,
      top,
      h("p", { class: "status", role: "status" }, h("vscode-progress-ring", { "aria-hidden": "true" }), ` Reading ${name}${loading?.fileBytes != null ? ` (${bytes(loading.fileBytes)})` : ""}...`),
    );
    return;
  }
  if (result.type === "inspectionFailed") {
    replaceChildren(
      app,
      top,
      h(
        "section",
        { class: "error", role: "alert", id: "inspection-error" },
        h("h2", {}, result.kind === "input" ? "This file cannot be read as an ONNX model" : "Reading this model failed"),
        h("p", { class: "error-message" }, result.message),
        h("vscode-button", { id: "reload", secondary: true }, "Read Again"),
      ),
    );
    return;
  }
  const i = result.inspection;
  replaceChildren(app, top, ...compressionSections(i), ...summarySections(i), h("p", { class: "footnote" }, `Read in ${result.elapsedMs} ms.`));
}

window.addEventListener("message", (ev: MessageEvent<ToInspectorMessage>) => {
  const m = ev.data;
  switch (m.type) {
    case "loading":
      loading = m;
      result = undefined;
      break;
    case "inspection":
    case "inspectionFailed":
      result = m;
      break;
    case "compressionState":
      compression = m.state;
      break;
    case "trust":
      trusted = m.trusted;
      break;
  }
  render();
});

// Buttons are found by id: no inline handlers under the CSP.
app.addEventListener("click", (ev) => {
  const target = (ev.target as HTMLElement).closest("[id]");
  switch (target?.id) {
    case "compress":
      post({ type: "compress", chooseSettings: false });
      break;
    case "compress-settings":
      post({ type: "compress", chooseSettings: true });
      break;
    case "cancel":
      post({ type: "cancelCompression" });
      break;
    case "reload":
      post({ type: "reload" });
      break;
    case "show-log":
      post({ type: "showLog" });
      break;
    case "open-panel":
      post({ type: "openPanel" });
      break;
  }
});

onThemeChange(render);
render();
post({ type: "ready" });
