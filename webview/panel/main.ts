/**
 * The SSVQ panel's page: a header (the model, the run's state, the buttons) and five views in tabs:
 * overview, layers, codebooks, sign flips, latency. Everything comes from the extension's messages
 * (src/webview-protocol.ts); live updates redraw the header and the visible view only. The model, the
 * report and the page's choices are kept with setState, so the panel comes back after a reload.
 */
import "@vscode-elements/elements/dist/vscode-button/index.js";
import "@vscode-elements/elements/dist/vscode-tabs/index.js";
import "@vscode-elements/elements/dist/vscode-tab-header/index.js";
import "@vscode-elements/elements/dist/vscode-tab-panel/index.js";
import "@vscode-elements/elements/dist/vscode-progress-ring/index.js";
import "./panel.css";
import type { ToPanelMessage } from "../../src/webview-protocol.js";
import { h, replaceChildren } from "../shared/dom.js";
import { onThemeChange } from "../shared/theme.js";
import { getState, post, setState } from "../shared/vscode-api.js";
import { codebooksView } from "./codebooks.js";
import { header } from "./header.js";
import { latencyView } from "./latency.js";
import { layersView } from "./layers.js";
import { apply, emptyUi, newModel, type PanelModel, type Ui } from "./model.js";
import { overviewView } from "./overview.js";
import { signFlipsView } from "./signFlips.js";

interface Saved {
  modelPath: string;
  reportPath?: string | null;
  ui: Ui;
}

const TABS: { title: string; view: (m: PanelModel) => HTMLElement }[] = [
  { title: "Overview", view: overviewView },
  { title: "Layers", view: layersView },
  { title: "Codebooks", view: codebooksView },
  { title: "Sign flips", view: signFlipsView },
  { title: "Latency", view: latencyView },
];
const LIVE_TABS = new Set([0, 1, 3]);

const saved = getState<Saved>();
const model = newModel(saved?.modelPath ?? "", { ...emptyUi(), ...saved?.ui });
const app = document.getElementById("app")!;
const headerBox = h("div", { id: "header-box" });
const tabs = h("vscode-tabs", { "selected-index": model.ui.tab, id: "tabs" });
const panels = TABS.map(() => h("vscode-tab-panel", {}));
TABS.forEach((t, i) => tabs.append(h("vscode-tab-header", { slot: "header", "data-tab": i }, t.title), panels[i]!));
app.append(headerBox, tabs);
const dirty = new Set<number>(TABS.map((_, i) => i));

function save(): void {
  setState<Saved>({ modelPath: model.modelPath, reportPath: model.shown?.reportPath ?? saved?.reportPath ?? null, ui: model.ui });
}

/** Draws a view, keeping the focus (and the caret of the filter box) where it was. */
function draw(i: number): void {
  const focused = document.activeElement as HTMLInputElement | null;
  const focusId = focused?.id;
  const caret = focused && "selectionStart" in focused ? focused.selectionStart : null;
  replaceChildren(panels[i]!, TABS[i]!.view(model));
  dirty.delete(i);
  if (focusId) {
    const again = document.getElementById(focusId) as HTMLInputElement | null;
    if (again && again !== focused) {
      again.focus();
      if (caret !== null && "setSelectionRange" in again) again.setSelectionRange(caret, caret);
    }
  }
}

let frame = 0;
let pendingAll = false;
let lastLiveDraw = 0;
let liveTimer: ReturnType<typeof setTimeout> | undefined;
/** A live view (a table of hundreds of checks) is redrawn at most this often while a job streams. */
const LIVE_REDRAW_MS = 400;

/**
 * Redraws at most once per frame: the header and the visible view, the others when shown. While a job
 * streams, the visible view itself at most every LIVE_REDRAW_MS (the header at every batch).
 */
function schedule(all: boolean): void {
  pendingAll ||= all;
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    replaceChildren(headerBox, header(model));
    const full = pendingAll;
    if (pendingAll) for (let i = 0; i < TABS.length; i++) dirty.add(i);
    else for (const i of LIVE_TABS) dirty.add(i);
    pendingAll = false;
    if (!dirty.has(model.ui.tab)) return;
    const wait = lastLiveDraw + LIVE_REDRAW_MS - performance.now();
    if (full || wait <= 0) {
      if (liveTimer) clearTimeout(liveTimer);
      liveTimer = undefined;
      lastLiveDraw = performance.now();
      draw(model.ui.tab);
    } else liveTimer ??= setTimeout(() => {
      liveTimer = undefined;
      lastLiveDraw = performance.now();
      if (dirty.has(model.ui.tab)) draw(model.ui.tab);
    }, wait);
  });
}

function selectPreset(preset: string): void {
  model.ui.preset = preset;
  save();
  post({ type: "selectPreset", preset });
}

window.addEventListener("message", (ev: MessageEvent<ToPanelMessage>) => {
  const what = apply(model, ev.data);
  if (ev.data.type === "report") selectPreset(model.ui.preset && ev.data.presets.some((p) => p.name === model.ui.preset) ? model.ui.preset : ev.data.preset);
  if (what === "latency") {
    dirty.add(4);
    if (model.ui.tab === 4) schedule(false);
    return;
  }
  save();
  schedule(what === "all");
});

tabs.addEventListener("vsc-tabs-select", (ev) => {
  model.ui.tab = (ev as CustomEvent<{ selectedIndex: number }>).detail.selectedIndex;
  save();
  if (dirty.has(model.ui.tab)) draw(model.ui.tab);
});

function selectLayer(name: string): void {
  model.ui.layer = name;
  save();
  for (const i of [1, 2, 3]) dirty.add(i);
  draw(model.ui.tab);
}

app.addEventListener("click", (ev) => {
  const target = ev.target as HTMLElement;
  const sort = target.closest<HTMLElement>("[data-sort]");
  if (sort) {
    const key = sort.dataset["sort"]!;
    model.ui.sortAscending = model.ui.sortKey === key ? !model.ui.sortAscending : true;
    model.ui.sortKey = key;
    save();
    draw(1);
    return;
  }
  const row = target.closest<HTMLElement>("#layers-table tbody tr[data-layer]");
  if (row) return selectLayer(row.dataset["layer"]!);
  const button = target.closest<HTMLElement>("vscode-button[id]");
  switch (button?.id) {
    case "export-json":
      return post({ type: "exportReport", format: "json" });
    case "export-markdown":
      return post({ type: "exportReport", format: "markdown" });
    case "open-output":
      return post({ type: "openOutput" });
    case "reveal-output":
      return post({ type: "revealOutput" });
    case "copy-command":
      return post({ type: "copyCommand" });
    case "compress-again":
      return post({ type: "compressAgain" });
    case "cancel-job":
      return post({ type: "cancelJob" });
  }
});

app.addEventListener("keydown", (ev) => {
  const row = (ev.target as HTMLElement).closest<HTMLElement>("#layers-table tbody tr[data-layer]");
  if (row && (ev.key === "Enter" || ev.key === " ")) {
    ev.preventDefault();
    selectLayer(row.dataset["layer"]!);
  }
});

app.addEventListener("input", (ev) => {
  const t = ev.target as HTMLInputElement;
  if (t.id === "layer-filter") {
    model.ui.filter = t.value;
    save();
    draw(1);
  }
});

app.addEventListener("change", (ev) => {
  const t = ev.target as HTMLSelectElement;
  if (t.id === "codebook-layer" || t.id === "signflips-layer") selectLayer(t.value);
  else if (t.id === "preset-select") selectPreset(t.value);
});

onThemeChange(() => schedule(true));
schedule(true);
post({ type: "panelReady" });
