/**
 * `ssvq bench panel`: the SSVQ panel's page (dist/webview/panel.js) in headless Chromium, driven as the
 * extension drives it, without VS Code. The page is served with its stylesheets from a loopback HTTP
 * server (ES modules do not load from file://) under a CSP like the real one, with a stand-in
 * `acquireVsCodeApi` that records what the page posts and answers its latency requests.
 *
 * 1. Render: a generated chain of 200 MatMul layers (64 x 64) compressed for real by the bundled CLI
 *    with fine-tuning and a simulation; its report message is posted into the page, then each tab is
 *    clicked. Times are taken in the page (performance.now), from the post or the click to the view's
 *    content in the DOM and to the next frame after it, so no CDP round trip is counted.
 * 2. Stream: a real compression job (20 layers x 500 fine-tuning checks = 10,000 freezeCheck events)
 *    followed the way src/extension/panel/ssvqPanel.ts follows one: a `jobStarted` snapshot, then the
 *    events through the extension's own EventBatcher as `jobEvents` messages, then the report. Host side:
 *    every message's time, the busiest second. Page side: before the report, every layer's checks are
 *    counted in the sign-flip table; none may be missing.
 *
 * Figures, not pass/fail. Needs /usr/bin/chromium (Debian's `chromium` package) and playwright-core.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { DEFAULT_PRESET, PRESETS } from "../core/accel/presets.js";
import { gemmsOf, simulateReport } from "../core/accel/report-latency.js";
import { CancelledError, InputError } from "../core/errors.js";
import { valueInfo } from "../core/onnx/build.js";
import {
  create,
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProtoSchema,
  TensorProto_DataType,
} from "../core/onnx/proto.js";
import type { Report } from "../core/report.js";
import { Rng } from "../core/rng.js";
import { EventBatcher } from "../extension/panel/eventBatcher.js";
import { JobProgress } from "../job/job-progress.js";
import { shellQuote } from "../extension/settings-table.js";
import { reportPathFor } from "../io/paths.js";
import { startJob, type Job } from "../job/client.js";
import { parseCompressArgs } from "../job/compress-args.js";
import { isOutcome, type SimulationJson, type WorkerEvent } from "../job/protocol.js";
import type { JobProgressView, PresetInfo, ToPanelMessage } from "../webview-protocol.js";

const CHROMIUM = "/usr/bin/chromium";
/** As test/e2e/harness.ts launches it. */
const CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WIDTH = 64;

export interface PanelBenchOptions {
  /** Layers of the rendered report (default 200). */
  renderLayers: number;
  /** Fine-tuning iterations of the rendered report's compression (default 60). */
  renderIters: number;
  /** Layers and checks per layer of the streamed job (default 20 x 500). */
  streamLayers: number;
  streamChecks: number;
  /** Worker threads of both compressions; default: the CLI's default. */
  threads?: number;
  /** A folder for screenshots of the views (taken after the timed steps). */
  screenshots?: string;
  log: (line: string) => void;
  signal: AbortSignal;
}

// ---------------------------------------------------------------- the page

/** The stand-in for VS Code's webview API and the timing helpers, loaded before panel.js. */
const PAGE_SCRIPT = String.raw`(() => {
  "use strict";
  const posted = [];
  const received = [];
  const longTasks = [];
  const problems = [];
  let answers = new Map();
  let api;
  window.acquireVsCodeApi = () => {
    if (api) throw new Error("acquireVsCodeApi may be called once");
    api = {
      postMessage(message) {
        posted.push({ t: performance.now(), message });
        if (message && message.type === "selectPreset") answerPreset(message.preset);
      },
      getState() { return undefined; },
      setState(state) { return state; },
    };
    return api;
  };
  // As the extension answers: "pending" at once, then the figures (computed by the bench host beforehand).
  function answerPreset(preset) {
    window.postMessage({ type: "latencyPending", preset }, "*");
    const answer = answers.get(preset);
    setTimeout(() => window.postMessage(answer || { type: "latencyFailed", preset, message: "the bench has no figures for " + preset }, "*"), 0);
  }
  const afterFrame = () => new Promise((done) => requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => done(performance.now());
    ch.port2.postMessage(null);
  }));
  // Registered before panel.js's listener: the time a message arrives, and when the frame after it was done.
  window.addEventListener("message", (ev) => {
    const d = ev.data;
    const entry = { t: performance.now(), type: d && d.type, events: d && Array.isArray(d.events) ? d.events.length : 0, drawn: 0 };
    received.push(entry);
    afterFrame().then((t) => { entry.drawn = t; });
  });
  window.addEventListener("error", (ev) => problems.push("error: " + ev.message));
  window.addEventListener("unhandledrejection", (ev) => problems.push("unhandled rejection: " + String(ev.reason)));
  document.addEventListener("securitypolicyviolation", (ev) => problems.push("CSP: " + ev.violatedDirective + " " + ev.blockedURI));
  try {
    new PerformanceObserver((list) => { for (const e of list.getEntries()) longTasks.push({ start: e.startTime, duration: e.duration }); })
      .observe({ type: "longtask", buffered: true });
  } catch (e) { problems.push("no longtask observer: " + e); }

  const $ = (s) => document.querySelector(s);
  const rows = (s) => document.querySelectorAll(s + " tbody tr").length;
  function until(cond, what, timeoutMs) {
    return new Promise((done, fail) => {
      if (cond()) return done(performance.now());
      let over = false;
      let raf = 0;
      const finish = (ok) => {
        if (over) return;
        over = true;
        obs.disconnect();
        cancelAnimationFrame(raf);
        clearTimeout(timer);
        if (ok) done(performance.now()); else fail(new Error("timed out waiting for " + what));
      };
      const obs = new MutationObserver(() => { if (cond()) finish(true); });
      obs.observe(document.body, { subtree: true, childList: true, attributes: true });
      const poll = () => { if (cond()) finish(true); else raf = requestAnimationFrame(poll); };
      raf = requestAnimationFrame(poll);
      const timer = setTimeout(() => finish(false), timeoutMs || 20000);
    });
  }
  async function step(view, action, cond, detail) {
    const t0 = performance.now();
    action();
    const dom = await until(cond, view);
    const painted = await afterFrame();
    return Object.assign({ view, domMs: dom - t0, paintedMs: painted - t0 }, detail ? detail() : {});
  }
  const clickTab = (i) => () => $('vscode-tab-header[data-tab="' + i + '"]').click();
  const choose = (selector, value) => {
    const s = $(selector);
    s.value = value;
    s.dispatchEvent(new Event("change", { bubbles: true }));
  };
  const longTaskStats = (since) => {
    const l = longTasks.filter((x) => x.start >= since);
    return { count: l.length, totalMs: l.reduce((a, x) => a + x.duration, 0), maxMs: l.reduce((a, x) => Math.max(a, x.duration), 0) };
  };
  const panelMessages = () => received.filter((r) => r.type === "jobStarted" || r.type === "jobEvents" || r.type === "report").length;

  let monitor;
  window.__bench = {
    ready: () => posted.some((p) => p.message && p.message.type === "panelReady"),
    setLatencyAnswers(list) { answers = new Map(list.map((m) => [m.preset, m])); },
    problems: () => problems.slice(),
    posted: () => posted.map((p) => p.message),
    now: () => performance.now(),
    selectTab(i) { clickTab(i)(); return afterFrame(); },

    /** Part 1: the report message, then each tab in turn; the total is from the post to the last view painted. */
    async renderReport(message, layers, switchPreset, sortKey) {
      const t0 = performance.now();
      const since = t0;
      const views = [];
      views.push(await step("overview", () => window.postMessage(message, "*"), () => !!$("#sizes") && !!$("#report-summary"), () => {
        const r = received.find((x) => x.type === "report" && x.t >= t0);
        return { messageArrivedMs: r ? r.t - t0 : null, sections: document.querySelectorAll("#overview section").length };
      }));
      views.push(await step("layers", clickTab(1), () => rows("#layers-table") === layers, () => ({ rows: rows("#layers-table") })));
      views.push(await step("codebooks", clickTab(2), () => document.querySelectorAll("#codebooks canvas").length >= 2, () => ({
        layer: $("#codebooks").dataset.layer, canvases: document.querySelectorAll("#codebooks canvas").length, codewordRows: rows(".codebook-table"),
      })));
      views.push(await step("signFlips", clickTab(3), () => rows("#signflips-table") > 0, () => ({
        points: Number($("#signflips").dataset.points), rows: rows("#signflips-table"), canvases: document.querySelectorAll("#signflips canvas").length, pickerOptions: $("#signflips-layer").options.length,
      })));
      views.push(await step("latency", clickTab(4), () => !!$('#latency[data-status="ready"]'), () => ({
        preset: $("#latency").dataset.preset, layerRows: rows("#latency-table"), bars: document.querySelectorAll("#latency canvas").length,
      })));
      const totalMs = performance.now() - t0;
      const longTasksDuringViews = longTaskStats(since);
      // Interactions after the first draw of every view (not in the total).
      const interactions = [];
      interactions.push(await step("latency: switch preset to " + switchPreset, () => choose("#preset-select", switchPreset),
        () => !!$('#latency[data-status="ready"][data-preset="' + switchPreset + '"]')));
      clickTab(3)();
      await afterFrame();
      const first = $("#signflips-layer").options[1].value;
      interactions.push(await step("sign flips: pick one layer", () => choose("#signflips-layer", first), () => $("#signflips").dataset.layer === first,
        () => ({ rows: rows("#signflips-table") })));
      clickTab(1)();
      await afterFrame();
      interactions.push(await step("layers: sort by " + sortKey, () => $('#layers-table [data-sort="' + sortKey + '"]').click(),
        () => !!$("#layers-table th[aria-sort]"), () => ({ rows: rows("#layers-table") })));
      const last = $("#layers-table tbody tr:last-child");
      interactions.push(await step("layers: select the last row", () => last.click(), () => !!$('#layers-table tbody tr.selected'),
        () => ({ layer: $("#layers-table tbody tr.selected").dataset.layer })));
      interactions.push(await step("codebooks of the selected layer", clickTab(2), () => $("#codebooks") && $("#codebooks").dataset.layer === $("#layers-table tbody tr.selected")?.dataset.layer
        , () => ({ layer: $("#codebooks").dataset.layer })));
      return { views, totalMs, longTasks: longTasksDuringViews, interactions };
    },

    /** Part 2: resolves once n job messages have arrived and a frame has been drawn after the last. */
    async waitForMessages(n) {
      await until(() => panelMessages() >= n, n + " messages", 120000);
      await afterFrame();
      return panelMessages();
    },
    startFrames() {
      const m = { last: performance.now(), gaps: [], on: true, since: performance.now(), from: received.length };
      const tick = (t) => { if (!m.on) return; m.gaps.push(t - m.last); m.last = t; requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      monitor = m;
    },
    stopFrames() {
      const m = monitor;
      m.on = false;
      const batches = received.slice(m.from).filter((r) => r.type === "jobEvents" && r.drawn > 0).map((r) => r.drawn - r.t).sort((a, b) => a - b);
      return {
        frames: m.gaps.length,
        maxFrameGapMs: m.gaps.reduce((a, b) => Math.max(a, b), 0),
        framesOver50Ms: m.gaps.filter((g) => g > 50).length,
        batchToPaintedMs: batches.length ? { median: batches[Math.floor(batches.length / 2)], max: batches[batches.length - 1], count: batches.length } : null,
        longTasks: longTaskStats(m.since),
        jobEventsReceived: received.slice(m.from).filter((r) => r.type === "jobEvents").length,
        eventsReceived: received.slice(m.from).reduce((a, r) => a + (r.type === "jobEvents" || r.type === "jobStarted" ? r.events : 0), 0),
      };
    },
    /** Selects each layer in the sign-flip view (a change event, as a person does) and counts its table's rows. */
    checksPerLayer() {
      const picker = () => $("#signflips-layer");
      if (!picker()) return { layers: {}, allRows: 0, points: 0, selectMs: [], allLayersMs: 0 };
      const allRows = rows("#signflips-table");
      const points = Number($("#signflips").dataset.points);
      const names = Array.from(picker().options).map((o) => o.value).filter((v) => v !== "");
      const layers = {};
      const selectMs = [];
      for (const name of names) {
        const t0 = performance.now();
        choose("#signflips-layer", name);
        selectMs.push(performance.now() - t0);
        if ($("#signflips").dataset.layer !== name) throw new Error("the sign-flip view did not switch to " + name);
        layers[name] = rows("#signflips-table");
      }
      const t0 = performance.now();
      choose("#signflips-layer", "");
      const allLayersMs = performance.now() - t0;
      return { layers, allRows, points, selectMs, allLayersMs };
    },
    summary: () => ($("#report-summary") ? $("#report-summary").textContent : null),
  };
})();
`;

/** Theme variables VS Code would set (Dark Modern, roughly), so the page looks as it does there. */
const THEME_CSS = `html {
  --vscode-font-family: system-ui, "Ubuntu", "Droid Sans", sans-serif;
  --vscode-font-size: 13px;
  --vscode-font-weight: normal;
  --vscode-editor-font-family: "Droid Sans Mono", "monospace", monospace;
  --vscode-editor-font-size: 14px;
  --vscode-foreground: #cccccc;
  --vscode-descriptionForeground: #9d9d9d;
  --vscode-errorForeground: #f85149;
  --vscode-editor-background: #1f1f1f;
  --vscode-panel-border: #2b2b2b;
  --vscode-editorWidget-border: #313131;
  --vscode-focusBorder: #0078d4;
  --vscode-textLink-foreground: #4daafc;
  --vscode-textBlockQuote-background: #2b2b2b;
  --vscode-progressBar-background: #0078d4;
  --vscode-list-hoverBackground: #2a2d2e;
  --vscode-list-activeSelectionBackground: #04395e;
  --vscode-list-activeSelectionForeground: #ffffff;
  --vscode-input-background: #313131;
  --vscode-input-foreground: #cccccc;
  --vscode-input-border: #3c3c3c;
  --vscode-inputValidation-errorBackground: #5a1d1d;
  --vscode-editorWarning-foreground: #cca700;
  --vscode-charts-foreground: #cccccc;
  --vscode-charts-lines: rgba(204, 204, 204, 0.5);
  --vscode-charts-red: #f14c4c;
  --vscode-charts-blue: #3794ff;
  --vscode-charts-yellow: #cca700;
  --vscode-charts-orange: #d18616;
  --vscode-charts-green: #89d185;
  --vscode-charts-purple: #b180d7;
  --vscode-button-background: #0078d4;
  --vscode-button-foreground: #ffffff;
  --vscode-button-hoverBackground: #026ec1;
  --vscode-button-secondaryBackground: #313131;
  --vscode-button-secondaryForeground: #cccccc;
  --vscode-button-secondaryHoverBackground: #3c3c3c;
  --vscode-panelTitle-activeForeground: #cccccc;
  --vscode-panelTitle-activeBorder: #0078d4;
  --vscode-panelTitle-inactiveForeground: #9d9d9d;
  --vscode-settings-dropdownBackground: #313131;
  --vscode-settings-dropdownForeground: #cccccc;
  --vscode-settings-dropdownBorder: #3c3c3c;
  --vscode-dropdown-background: #313131;
  --vscode-dropdown-foreground: #cccccc;
  --vscode-dropdown-border: #3c3c3c;
}
body {
  background-color: var(--vscode-editor-background);
  color: var(--vscode-foreground);
  font-family: var(--vscode-font-family);
  font-size: var(--vscode-font-size);
  margin: 0;
  padding: 0 20px;
}
`;

/** The real page's shell (src/extension/webviewHtml.ts) with the stand-in API and the theme before panel.js. */
const PAGE_HTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="/codicon.css" id="vscode-codicon-stylesheet">
<link rel="stylesheet" href="/theme.css">
<link rel="stylesheet" href="/panel.css">
<script src="/bench.js"></script>
<title>SSVQ: bench</title>
</head>
<body class="vscode-dark" data-vscode-theme-kind="vscode-dark">
<main id="app" aria-live="polite"></main>
<script type="module" src="/panel.js"></script>
</body>
</html>`;

/** Like the real page's CSP, with the bench's own files allowed by origin instead of a nonce. */
const CSP = [
  "default-src 'none'",
  "img-src 'self' data:",
  "style-src 'self'",
  "font-src 'self'",
  "script-src 'self'",
  "connect-src 'none'",
  "form-action 'none'",
  "base-uri 'none'",
].join("; ");

const TYPES: Record<string, string> = { ".js": "text/javascript", ".css": "text/css", ".ttf": "font/ttf", ".map": "application/json" };

/** Serves the bench page and dist/webview/ on 127.0.0.1 (a free port). */
async function serve(webviewDir: string): Promise<{ server: Server; url: string }> {
  const root = resolve(webviewDir);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const send = (status: number, type: string, body: string | Buffer) => {
      res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store", ...(type.startsWith("text/html") ? { "Content-Security-Policy": CSP } : {}) });
      res.end(body);
    };
    if (path === "/") return send(200, "text/html; charset=utf-8", PAGE_HTML);
    if (path === "/bench.js") return send(200, "text/javascript", PAGE_SCRIPT);
    if (path === "/theme.css") return send(200, "text/css", THEME_CSS);
    // Chromium asks a top-level page for its icon (a webview never does).
    if (path === "/favicon.ico") return send(204, "text/plain", "");
    const file = resolve(root, "." + path);
    const ext = file.slice(file.lastIndexOf("."));
    if (!file.startsWith(root + sep) || !TYPES[ext] || !existsSync(file)) return send(404, "text/plain", "not found");
    send(200, TYPES[ext]!, readFileSync(file));
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => ok());
  });
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

/** What the page's `window.__bench` offers (bench.js above); only its types are used here. */
interface PageStep {
  view: string;
  domMs: number;
  paintedMs: number;
  [detail: string]: unknown;
}
interface LongTasks {
  count: number;
  totalMs: number;
  maxMs: number;
}
interface FrameStats {
  frames: number;
  maxFrameGapMs: number;
  framesOver50Ms: number;
  batchToPaintedMs: { median: number; max: number; count: number } | null;
  longTasks: LongTasks;
  jobEventsReceived: number;
  eventsReceived: number;
}
interface LayerCounts {
  layers: Record<string, number>;
  allRows: number;
  points: number;
  selectMs: number[];
  allLayersMs: number;
}
interface PageBench {
  ready(): boolean;
  setLatencyAnswers(list: ToPanelMessage[]): void;
  problems(): string[];
  posted(): unknown[];
  selectTab(i: number): Promise<number>;
  renderReport(message: ToPanelMessage, layers: number, switchPreset: string, sortKey: string): Promise<{ views: PageStep[]; totalMs: number; longTasks: LongTasks; interactions: PageStep[] }>;
  waitForMessages(n: number): Promise<number>;
  startFrames(): void;
  stopFrames(): FrameStats;
  checksPerLayer(): LayerCounts;
  summary(): string | null;
}
type PageWindow = { __bench: PageBench; postMessage(message: unknown, targetOrigin: string): void };

async function openPanelPage(browser: Browser, url: string, problems: string[]): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  await page.goto(url);
  // The page says it is ready (panelReady) once it listens for messages.
  await page.waitForFunction(() => (globalThis as unknown as PageWindow).__bench.ready(), undefined, { timeout: 30_000 });
  return { context, page };
}

async function screenshot(page: Page, dir: string | undefined, name: string): Promise<void> {
  if (dir) await page.screenshot({ path: join(dir, `${name}.png`), fullPage: false });
}

// ---------------------------------------------------------------- models and messages

/** A chain of MatMul layers [1, width] x [width, width], weights N(0, 1/width) so the activations stay in range. */
function writeChain(path: string, layers: number, width: number, seed: number): void {
  const rng = new Rng(seed);
  const inits = [];
  const nodes = [];
  for (let i = 0; i < layers; i++) {
    const values = new Float32Array(width * width);
    for (let j = 0; j < values.length; j++) values[j] = rng.normal() / Math.sqrt(width);
    inits.push(create(TensorProtoSchema, { name: `fc${i}.weight`, dims: [BigInt(width), BigInt(width)], dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(values.buffer) }));
    nodes.push(create(NodeProtoSchema, { name: `fc${i}`, opType: "MatMul", input: [i === 0 ? "x" : `h${i}`, `fc${i}.weight`], output: [i === layers - 1 ? "y" : `h${i + 1}`] }));
  }
  const model = create(ModelProtoSchema, {
    irVersion: 8n,
    producerName: "ssvq-bench-panel",
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
    graph: create(GraphProtoSchema, { name: "chain", node: nodes, initializer: inits, input: [valueInfo("x", [1, width])], output: [valueInfo("y", [1, width])] }),
  });
  writeFileSync(path, encodeModel(model));
}

const presetInfos = (): PresetInfo[] => PRESETS.map((p) => ({ name: p.name, description: p.description }));
/** As src/extension/panel/latency.ts picks it. */
const initialPreset = (r: Report): string => (r.simulation?.preset && PRESETS.some((p) => p.name === r.simulation!.preset) ? r.simulation.preset : DEFAULT_PRESET);
const commandOf = (args: readonly string[]): string => `ssvq compress ${shellQuote(args)}`;

function reportMessage(report: Report, reportPath: string | null, outPath: string | null): ToPanelMessage {
  return { type: "report", report, reportPath, outPath, command: commandOf(report.command ?? []), presets: presetInfos(), preset: initialPreset(report) };
}

/** The latency message the extension sends for each preset (src/extension/panel/latency.ts), and the time to compute it. */
function latencyAnswers(report: Report): { messages: ToPanelMessage[]; ms: Record<string, number> } {
  const gemms = gemmsOf(report.simulation);
  if (!gemms) throw new Error("the report carries no GEMM shapes (simulation.gemms): was it compressed with --preset?");
  const messages: ToPanelMessage[] = [];
  const ms: Record<string, number> = {};
  for (const p of PRESETS) {
    const t0 = performance.now();
    const r = simulateReport(report, gemms, p.name);
    const simulation: SimulationJson = { preset: r.preset, config: r.config, layers: r.layers, totals: r.totals, speedup: r.speedup, gemms };
    ms[p.name] = performance.now() - t0;
    messages.push({ type: "latency", preset: p.name, simulation, warnings: [] });
  }
  return { messages, ms };
}

/** The most timestamps in any window [t, t + ms). */
function busiestWindow(times: number[], ms = 1000): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (j < t.length && t[j]! < t[i]! + ms) j++;
    best = Math.max(best, j - i);
  }
  return best;
}

const median = (xs: number[]): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : NaN);
const round = (x: number, digits = 1): number => Number(x.toFixed(digits));
const roundSteps = (steps: PageStep[]): PageStep[] => steps.map((s) => ({ ...s, domMs: round(s.domMs), paintedMs: round(s.paintedMs), ...(typeof s["messageArrivedMs"] === "number" ? { messageArrivedMs: round(s["messageArrivedMs"]) } : {}) }));

// ---------------------------------------------------------------- the bench

export async function runPanelBench(o: PanelBenchOptions): Promise<Record<string, unknown>> {
  const started = performance.now();
  const dist = dirname(fileURLToPath(import.meta.url));
  const cli = join(dist, "cli.js");
  const workerPath = join(dist, "job-worker.js");
  const webviewDir = join(dist, "webview");
  for (const f of [cli, workerPath, join(webviewDir, "panel.js"), join(webviewDir, "panel.css"), join(webviewDir, "codicon.css")])
    if (!existsSync(f)) throw new InputError(`run the bundled ssvq (npm run build, then npm run bench -- panel): ${f} is missing`);
  if (!existsSync(CHROMIUM)) throw new InputError(`${CHROMIUM} is missing: the panel bench drives Debian's Chromium; install it with: sudo apt-get install -y chromium`);
  let chromium: typeof import("playwright-core").chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (e) {
    throw new InputError(`playwright-core could not be loaded (${(e as Error).message.split("\n")[0]}): it is a devDependency; run npm install in the project`);
  }
  const checkCancel = () => {
    if (o.signal.aborted) throw new CancelledError();
  };
  const threads = o.threads !== undefined ? ["--threads", String(o.threads)] : [];
  if (o.screenshots) mkdirSync(o.screenshots, { recursive: true });

  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-panel-"));
  let server: Server | undefined;
  let browser: Browser | undefined;
  let job: Job | undefined;
  let jobDone = false;
  const cancelJob = () => job?.cancel();
  o.signal.addEventListener("abort", cancelJob);
  const problems: string[] = [];
  try {
    // ---- 1. a 200-layer report, compressed for real
    const model = join(dir, "chain200.onnx");
    writeChain(model, o.renderLayers, WIDTH, 1);
    const out = join(dir, "chain200.ssvq.onnx");
    const args = ["compress", model, "--finetune", "--iters", String(o.renderIters), "--preset", "ethos-u65-512", "--shape", `x=1,${WIDTH}`, "--out", out, ...threads];
    o.log(`bench panel: compressing a ${o.renderLayers}-layer model (${WIDTH} x ${WIDTH} MatMuls, --iters ${o.renderIters}) with the bundled CLI`);
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", signal: o.signal });
    checkCancel();
    if (r.status !== 0) throw new Error(`ssvq ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stderr}`);
    const compressSeconds = (performance.now() - t0) / 1000;
    const reportPath = reportPathFor(out);
    const report = JSON.parse(readFileSync(reportPath, "utf8")) as Report;
    const latency = latencyAnswers(report);
    const message = reportMessage(report, reportPath, out);
    const firstPreset = initialPreset(report);
    const switchTo = PRESETS.find((p) => p.name !== firstPreset)!.name;

    const served = await serve(webviewDir);
    server = served.server;
    // Ctrl-C is the CLI's (it cancels the job, then the finally below closes the browser).
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, handleSIGINT: false });
    o.log(`bench panel: Chromium ${browser.version()}; rendering the report in the panel page`);
    const one = await openPanelPage(browser, served.url, problems);
    await one.page.evaluate((list) => (globalThis as unknown as PageWindow).__bench.setLatencyAnswers(list), latency.messages);
    const rendered = await one.page.evaluate(
      ([m, n, preset, sortKey]) => (globalThis as unknown as PageWindow).__bench.renderReport(m, n, preset, sortKey),
      [message, report.layers.length, switchTo, "after"] as const,
    );
    if (o.screenshots) {
      for (const [i, name] of ["overview", "layers", "codebooks", "signflips", "latency"].entries()) {
        await one.page.evaluate((tab) => (globalThis as unknown as PageWindow).__bench.selectTab(tab), i);
        await screenshot(one.page, o.screenshots, `render-${i}-${name}`);
      }
    }
    const renderProblems = await one.page.evaluate(() => (globalThis as unknown as PageWindow).__bench.problems());
    await one.context.close();
    checkCancel();

    // ---- 2. a job streaming its freezeCheck events through the extension's EventBatcher
    const streamModel = join(dir, `chain${o.streamLayers}.onnx`);
    writeChain(streamModel, o.streamLayers, WIDTH, 2);
    const streamOut = join(dir, `chain${o.streamLayers}.ssvq.onnx`);
    const spec = parseCompressArgs([streamModel, "--finetune", "--iters", String(o.streamChecks), "--freeze-every", "1", "--out", streamOut, ...threads]);
    const two = await openPanelPage(browser, served.url, problems);
    const page = two.page;
    // The sign-flip view is open while the job runs (the live view with the most to draw).
    await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.selectTab(3));
    await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.startFrames());

    const posts: { t: number; type: string; events: number }[] = [];
    let postError: unknown;
    let posting: Promise<void> = Promise.resolve();
    const post = (m: ToPanelMessage): void => {
      posts.push({ t: performance.now(), type: m.type, events: m.type === "jobEvents" || m.type === "jobStarted" ? m.events.length : 0 });
      posting = posting.then(() =>
        page.evaluate((msg) => (globalThis as unknown as PageWindow).postMessage(msg, "*"), m).catch((e: unknown) => {
          postError ??= e;
        }),
      );
    };
    const progress = new JobProgress(spec);
    const progressView = (): JobProgressView => ({ text: progress.text(), stage: progress.stage, fraction: progress.overallFraction(), stages: progress.stages });
    const eventsByType: Record<string, number> = {};
    let totalEvents = 0;
    let freezeChecksSent = 0;
    let batcher: EventBatcher<WorkerEvent> | undefined;
    o.log(`bench panel: streaming a ${o.streamLayers}-layer job (--iters ${o.streamChecks} --freeze-every 1) into the panel page`);
    const jobStart = performance.now();
    job = startJob(spec, {
      workerPath,
      onEvent: (e) => {
        if (isOutcome(e)) return;
        progress.add(e);
        totalEvents++;
        eventsByType[e.type] = (eventsByType[e.type] ?? 0) + 1;
        if (e.type === "freezeCheck") freezeChecksSent++;
        // Before the snapshot is sent, the events are in progress.events (the snapshot carries them).
        batcher?.push(e);
      },
    });
    // ssvqPanel.sendJobSnapshot: the events so far, then a batcher that keeps its distance from the snapshot.
    post({ type: "jobStarted", model: streamModel, command: commandOf(spec.command ?? []), progress: progressView(), events: [...progress.events] });
    batcher = new EventBatcher<WorkerEvent>((events) => post({ type: "jobEvents", progress: progressView(), events }));
    batcher.markSent();
    const outcome = await job.outcome;
    jobDone = true;
    checkCancel();
    const jobSeconds = (performance.now() - jobStart) / 1000;
    // ssvqPanel.jobEnded: the last events go out before the outcome, keeping the rate.
    await batcher.drain();
    batcher.dispose();
    const flushedAt = performance.now();
    await posting;
    if (postError) throw postError;
    checkCancel();
    if (outcome.type !== "result") throw new Error(`the streamed job ended with ${outcome.type === "error" ? `${outcome.kind}: ${outcome.message}` : outcome.type}`);
    const jobMessages = posts.length;
    await page.evaluate((n) => (globalThis as unknown as PageWindow).__bench.waitForMessages(n), jobMessages);
    const live = await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.stopFrames());
    if (o.screenshots) await screenshot(page, o.screenshots, "stream-1-signflips-before-report");
    const before = await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.checksPerLayer());

    // Then the report, as ssvqPanel.sendReport posts it.
    post(reportMessage(outcome.report, outcome.reportPath ?? null, outcome.outPath ?? null));
    const reportPostedAfterFlushMs = posts[posts.length - 1]!.t - flushedAt;
    await posting;
    if (postError) throw postError;
    await page.evaluate((n) => (globalThis as unknown as PageWindow).__bench.waitForMessages(n), posts.length);
    const summary = await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.summary());
    const after = await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.checksPerLayer());
    if (o.screenshots) await screenshot(page, o.screenshots, "stream-2-signflips-after-report");
    const streamProblems = await page.evaluate(() => (globalThis as unknown as PageWindow).__bench.problems());
    await two.context.close();

    const reportChecks = Object.fromEntries(outcome.report.layers.map((l) => [l.name, l.finetune?.checks.length ?? 0]));
    const sum = (x: Record<string, number>) => Object.values(x).reduce((a, b) => a + b, 0);
    const checksShownBeforeReport = sum(before.layers);
    const checksInReport = sum(reportChecks);
    const mismatches = Object.keys({ ...reportChecks, ...before.layers })
      .filter((name) => before.layers[name] !== reportChecks[name] || after.layers[name] !== reportChecks[name])
      .map((name) => ({ layer: name, live: before.layers[name] ?? 0, afterReport: after.layers[name] ?? 0, report: reportChecks[name] ?? 0 }));
    const jobPosts = posts.slice(0, jobMessages);
    const eventPosts = jobPosts.filter((p) => p.type === "jobEvents");
    const gaps = eventPosts.slice(1).map((p, i) => p.t - eventPosts[i]!.t);
    const flushGap = eventPosts.length >= 2 ? eventPosts[eventPosts.length - 1]!.t - eventPosts[eventPosts.length - 2]!.t : null;

    return {
      bench: "panel",
      browser: { executable: CHROMIUM, version: browser.version(), headless: true, viewport: "1400x900" },
      render: {
        what: "a real report of a generated MatMul chain posted into the panel page; in-page times from the post (or the tab click) to the view's content in the DOM (domMs) and to the end of the next frame (paintedMs)",
        model: { layers: o.renderLayers, width: WIDTH, fileBytes: statSync(model).size },
        compress: { command: `ssvq ${args.join(" ").split(dir).join("$TMP")}`, seconds: round(compressSeconds, 2) },
        report: {
          layers: report.layers.length,
          checksPerLayer: report.layers[0]?.finetune?.checks.length ?? 0,
          messageBytes: JSON.stringify(message).length,
          preset: firstPreset,
        },
        hostLatencyMs: Object.fromEntries(Object.entries(latency.ms).map(([k, v]) => [k, round(v, 2)])),
        views: roundSteps(rendered.views),
        totalMs: round(rendered.totalMs),
        longTasks: { ...rendered.longTasks, totalMs: round(rendered.longTasks.totalMs), maxMs: round(rendered.longTasks.maxMs) },
        interactions: roundSteps(rendered.interactions),
      },
      stream: {
        what: "a real compression job's events forwarded as ssvqPanel does (jobStarted snapshot, EventBatcher at 100 ms, flush, report); eventsSent counts the freezeCheck events among them",
        model: { layers: o.streamLayers, width: WIDTH, iters: o.streamChecks, freezeEvery: 1 },
        jobSeconds: round(jobSeconds, 2),
        totalEvents,
        eventsByType,
        eventsSent: freezeChecksSent,
        messagesPosted: posts.length,
        jobEventsMessages: eventPosts.length,
        eventsPerMessage: { median: median(eventPosts.map((p) => p.events)), max: Math.max(0, ...eventPosts.map((p) => p.events)) },
        maxMessagesPer1s: busiestWindow(posts.map((p) => p.t)),
        maxMessagesPer1sJobEventsOnly: busiestWindow(eventPosts.map((p) => p.t)),
        // The bench checks the page between the flush and the report; the extension posts the report right away.
        maxMessagesPer1sIfReportAtFlush: busiestWindow([...jobPosts.map((p) => p.t), flushedAt]),
        minGapBetweenBatchesMs: gaps.length ? round(Math.min(...gaps)) : null,
        lastGapBeforeFlushMs: flushGap === null ? null : round(flushGap, 1),
        reportPostedAfterFlushMs: round(reportPostedAfterFlushMs),
        page: {
          liveTab: "Sign flips, all layers",
          jobEventsReceived: live.jobEventsReceived,
          eventsReceived: live.eventsReceived,
          batchToPaintedMs: live.batchToPaintedMs && { median: round(live.batchToPaintedMs.median), max: round(live.batchToPaintedMs.max), count: live.batchToPaintedMs.count },
          frames: live.frames,
          maxFrameGapMs: round(live.maxFrameGapMs),
          framesOver50Ms: live.framesOver50Ms,
          longTasks: { ...live.longTasks, totalMs: round(live.longTasks.totalMs), maxMs: round(live.longTasks.maxMs) },
          allLayersPointsBeforeReport: before.points,
          selectLayerMs: { median: round(median(before.selectMs)), max: round(Math.max(0, ...before.selectMs)) },
          selectAllLayersMs: round(before.allLayersMs),
        },
        layersShown: Object.keys(before.layers).length,
        checksShownBeforeReport,
        checksInReport,
        checksShownAfterReport: sum(after.layers),
        lost: freezeChecksSent - checksShownBeforeReport,
        layerMismatches: mismatches,
        reportSummary: summary,
      },
      pageProblems: [...renderProblems, ...streamProblems, ...problems],
      seconds: round((performance.now() - started) / 1000, 1),
    };
  } finally {
    o.signal.removeEventListener("abort", cancelJob);
    if (job && !jobDone) {
      job.cancel();
      await job.outcome.catch(() => undefined);
    }
    await browser?.close().catch(() => undefined);
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((ok) => server!.close(() => ok()));
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
