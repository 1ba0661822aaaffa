/**
 * `ssvq bench inspect`: how fast the SSVQ Inspector gets its summary, and what activating the extension
 * costs. The summary: the inspect job the inspector starts (a background process reads and summarises
 * the model), timed from the request to the summary message, on a generated model of about 100 MB,
 * with the size of the message the webview receives. Activation: a fresh Node process loads the
 * bundled extension with a stand-in `vscode` module and calls `activate`; it reports the time and
 * whether onnxruntime or the engine's modules were loaded (they must not be).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startJob } from "../job/client.js";
import { writeMatMulChain } from "./io.js";

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Run by `node -e` in a fresh process: loads the extension against a stand-in vscode module and activates it. */
const ACTIVATE_SCRIPT = `
const Module = require("node:module");
const stub = () => new Proxy(function () {}, {
  get: (_t, p) => (p === "then" ? undefined : p === Symbol.toPrimitive ? () => "" : stub()),
  apply: () => stub(),
  construct: () => stub(),
  set: () => true,
});
// The namespaces and classes the extension touches at activation, each a stand-in that accepts anything.
const vscode = {};
for (const k of ["window", "commands", "workspace", "Uri", "env", "l10n", "extensions", "languages"]) vscode[k] = stub();
for (const k of ["EventEmitter", "MarkdownString", "TabInputCustom", "TabInputText", "RelativePattern", "Disposable", "ThemeColor", "ThemeIcon"]) vscode[k] = stub();
vscode.StatusBarAlignment = { Left: 1, Right: 2 };
vscode.ProgressLocation = { SourceControl: 1, Window: 10, Notification: 15 };
const load = Module._load;
Module._load = function (request, ...rest) {
  return request === "vscode" ? vscode : load.call(this, request, ...rest);
};
const path = process.argv[1];
const t0 = performance.now();
const ext = require(path);
const t1 = performance.now();
const context = { subscriptions: [], extensionPath: require("node:path").dirname(require("node:path").dirname(path)), extensionUri: stub() };
ext.activate(context);
const t2 = performance.now();
const loaded = Object.keys(require.cache);
console.log(JSON.stringify({
  loadMs: t1 - t0,
  activateMs: t2 - t1,
  totalMs: t2 - t0,
  disposables: context.subscriptions.length,
  onnxruntimeLoaded: loaded.some((k) => k.includes("onnxruntime")),
  modulesLoaded: loaded.map((k) => k.replace(/^.*node_modules\\//, "")),
}));
`;

export async function runInspectBench(o: { megabytes: number; runs: number }): Promise<Record<string, unknown>> {
  const dist = dirname(fileURLToPath(import.meta.url));
  const workerPath = join(dist, "job-worker.js");
  const extension = join(dist, "extension.cjs");
  if (!existsSync(workerPath) || !existsSync(extension)) throw new Error(`run the bundled ssvq (dist/cli.js): ${workerPath} and ${extension} are needed`);
  const width = 1024;
  const layers = Math.max(1, Math.round((o.megabytes * 1e6) / (width * width * 4)));
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-inspect-"));
  try {
    const model = join(dir, "chain.onnx");
    writeMatMulChain(model, layers);
    const summaryMs: number[] = [];
    let messageBytes = 0;
    let weights = 0;
    for (let i = 0; i < o.runs; i++) {
      const t0 = performance.now();
      const job = startJob({ kind: "inspect", input: model }, { workerPath });
      const outcome = await job.outcome;
      const ms = performance.now() - t0;
      if (outcome.type !== "inspection") throw new Error(`the inspect job failed: ${outcome.type === "error" ? outcome.message : outcome.type}`);
      summaryMs.push(ms);
      messageBytes = JSON.stringify({ type: "inspection", inspection: outcome.inspection, elapsedMs: ms }).length;
      weights = outcome.inspection.weights.length;
    }
    const activations = Array.from({ length: o.runs }, () => {
      const r = spawnSync(process.execPath, ["-e", ACTIVATE_SCRIPT, extension], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`activation process failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as { loadMs: number; activateMs: number; totalMs: number; disposables: number; onnxruntimeLoaded: boolean; modulesLoaded: string[] };
    });
    const last = activations[activations.length - 1]!;
    return {
      bench: "inspect",
      model: { layers, fileBytes: statSync(model).size, weights },
      summary: {
        what: "inspect job (as the inspector starts it): request to summary message",
        runs: o.runs,
        medianMs: median(summaryMs),
        maxMs: Math.max(...summaryMs),
        allMs: summaryMs,
        messageBytes,
      },
      activation: {
        what: "fresh process: load dist/extension.cjs with a stand-in vscode module, then activate()",
        runs: o.runs,
        medianTotalMs: median(activations.map((a) => a.totalMs)),
        medianLoadMs: median(activations.map((a) => a.loadMs)),
        medianActivateMs: median(activations.map((a) => a.activateMs)),
        extensionBytes: statSync(extension).size,
        disposables: last.disposables,
        onnxruntimeLoaded: activations.some((a) => a.onnxruntimeLoaded),
        modulesLoaded: last.modulesLoaded,
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
