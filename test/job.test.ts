import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeModel } from "../src/core/onnx/proto.js";
import type { CompressConfig } from "../src/core/report.js";
import { startJob } from "../src/job/client.js";
import type { JobSpec, WorkerEvent } from "../src/job/protocol.js";
import { graph, model, node, randomTensor, valueInfo } from "./helpers/models.js";
import { cliPath, fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-job-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const config: CompressConfig = { mode: "vq", k: 256, d: 4, seed: 1, kmeansIters: 50, minWeights: 1024, format: "ssvq", finetune: false };

/** A model whose compression takes a few seconds: 8 MatMul layers of 768 x 768 at k = 256. */
function slowModel(dir: string): string {
  const inits = Array.from({ length: 8 }, (_, i) => randomTensor(`w${i}`, [768, 768], 50 + i));
  const nodes = inits.map((t, i) => node("MatMul", [i ? `h${i}` : "x", t.name], [i === 7 ? "y" : `h${i + 1}`]));
  const path = join(dir, "slow.onnx");
  writeFileSync(path, encodeModel(model(graph({ nodes, inputs: [valueInfo("x", [1, 768])], outputs: [valueInfo("y", [1, 768])], initializers: inits }))));
  return path;
}

const ssvqFiles = (dir: string) => readdirSync(dir).filter((f) => f.includes(".ssvq.") || f.endsWith(".tmp"));

function waitFor(events: WorkerEvent[], pred: (e: WorkerEvent) => boolean): Promise<void> {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (events.some(pred)) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
}

test("a job streams stages and progress and ends with its report", async () => {
  const dir = mkdtempSync(join(work, "ok-"));
  const input = join(dir, "lenet.onnx");
  copyFileSync(fixture("fashion_lenet5.onnx"), input);
  const events: WorkerEvent[] = [];
  const job = startJob({ kind: "compress", input, config: { ...config, mode: "ssvq", k: 16 }, threads: 2 }, { onEvent: (e) => events.push(e) });
  const outcome = await job.outcome;
  assert.equal(outcome.type, "result", JSON.stringify(outcome));
  if (outcome.type !== "result") return;
  assert.equal(outcome.report.layers.length, 3);
  assert.deepEqual(events.filter((e) => e.type === "stage").map((e) => (e as { stage: string }).stage), ["check", "read", "quantize", "write"]);
  assert.deepEqual(
    events.flatMap((e) => (e.type === "progress" && e.layer ? [e.layer.name] : [])),
    ["c2.weight", "f1.weight", "f2.weight"],
  );
  assert.equal(events.filter((e) => e.type === "layerDone").length, 3);
  assert.deepEqual(ssvqFiles(dir).sort(), ["lenet.ssvq.json", "lenet.ssvq.onnx"]);
});

test("cancel during compression: the worker exits promptly and no output remains", async () => {
  const dir = mkdtempSync(join(work, "cancel-"));
  const input = slowModel(dir);
  const events: WorkerEvent[] = [];
  const job = startJob({ kind: "compress", input, config, threads: 2 }, { onEvent: (e) => events.push(e) });
  await waitFor(events, (e) => e.type === "progress");
  const t0 = Date.now();
  job.cancel();
  const outcome = await job.outcome;
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(outcome.type, "error");
  assert.equal(outcome.type === "error" && outcome.kind, "cancelled");
  assert.ok(seconds < 10, `cancel took ${seconds} s`);
  assert.deepEqual(ssvqFiles(dir), []);
});

test("a worker killed from outside is an error with its last stage, and the next job runs", async () => {
  const dir = mkdtempSync(join(work, "kill-"));
  const input = slowModel(dir);
  const events: WorkerEvent[] = [];
  const spec: JobSpec = { kind: "compress", input, config, threads: 1 };
  const job = startJob(spec, { onEvent: (e) => events.push(e) });
  await waitFor(events, (e) => e.type === "progress");
  process.kill(job.pid!, "SIGKILL");
  const outcome = await job.outcome;
  assert.equal(outcome.type, "error");
  if (outcome.type !== "error") return;
  assert.equal(outcome.kind, "internal");
  assert.equal(outcome.lastStage, "quantize");
  assert.match(outcome.message, /killed \(SIGKILL\) during quantize/);
  assert.deepEqual(outcome.exit, { code: null, signal: "SIGKILL", outOfMemory: false });
  assert.deepEqual(ssvqFiles(dir), []);
  const lenet = join(dir, "lenet.onnx");
  copyFileSync(fixture("fashion_lenet5.onnx"), lenet);
  const next = await startJob({ ...spec, input: lenet }).outcome;
  assert.equal(next.type, "result");
});

test("a bad input is reported as an input error, not a crash", async () => {
  const dir = mkdtempSync(join(work, "bad-"));
  const input = join(dir, "bad.onnx");
  writeFileSync(input, "not a model");
  const outcome = await startJob({ kind: "compress", input, config, threads: 1 }).outcome;
  assert.equal(outcome.type === "error" && outcome.kind, "input");
  assert.match(outcome.type === "error" ? outcome.message : "", /text file/);
});

test("ssvq compress: Ctrl-C cancels cleanly with exit 130 and leaves nothing", async () => {
  const dir = mkdtempSync(join(work, "sigint-"));
  const input = slowModel(dir);
  const child = spawn(process.execPath, [cliPath, "compress", input, "--mode", "vq", "--k", "256", "--d", "4", "--kmeans-iters", "50"], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  await new Promise<void>((resolve) =>
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (/\[1\/8\]/.test(stderr)) resolve();
    }),
  );
  child.kill("SIGINT");
  assert.equal(await exit, 130);
  assert.match(stderr, /cancelled/);
  assert.deepEqual(ssvqFiles(dir), []);
});

test("a worker that runs out of memory is an error saying so, never a hang", async () => {
  const dir = mkdtempSync(join(work, "oom-"));
  const input = join(dir, "vit.onnx");
  copyFileSync(fixture("fashion_tinyvit.onnx"), input);
  // A 4 MB JavaScript heap: the worker dies while it starts.
  const outcome = await startJob({ kind: "compress", input, config, threads: 1 }, { execArgv: ["--max-old-space-size=4", "--max-semi-space-size=1"] }).outcome;
  assert.equal(outcome.type, "error");
  if (outcome.type !== "error") return;
  assert.equal(outcome.kind, "internal");
  assert.match(outcome.message, /ran out of memory/);
  assert.equal(outcome.exit?.outOfMemory, true);
  assert.deepEqual(ssvqFiles(dir), []);
});

test("the stall watchdog watches onnxruntime calls, not silence: a search whose k-means is silent for longer than the limit is not stopped", async () => {
  const dir = mkdtempSync(join(work, "search-silent-"));
  // Two 384 x 384 layers: each one's candidates take about a second of k-means, with no event between.
  const inits = [randomTensor("w0", [384, 384], 60), randomTensor("w1", [384, 384], 61)];
  const nodes = [node("MatMul", ["x", "w0"], ["h"]), node("MatMul", ["h", "w1"], ["y"])];
  const input = join(dir, "two.onnx");
  writeFileSync(input, encodeModel(model(graph({ nodes, inputs: [valueInfo("x", [1, 384])], outputs: [valueInfo("y", [1, 384])], initializers: inits }))));
  const events: WorkerEvent[] = [];
  let last = performance.now();
  let longestSilence = 0;
  const t0 = performance.now();
  const stallMs = 400;
  const outcome = await startJob(
    { kind: "compress", input, config: { ...config, mode: "ssvq", k: 16, kmeansIters: 10, ratio: 8 }, threads: 1, out: join(dir, "two.ssvq.onnx") },
    {
      stallMs,
      onEvent: (e) => {
        events.push(e);
        const now = performance.now();
        longestSilence = Math.max(longestSilence, now - last);
        last = now;
      },
    },
  ).outcome;
  assert.equal(outcome.type, "result", JSON.stringify(outcome));
  assert.ok(events.some((e) => e.type === "stage" && e.stage === "search"), "the job went through the search");
  // Not vacuous: the job ran well past the limit, and some stretch of it said nothing for longer.
  assert.ok(performance.now() - t0 > 3 * stallMs, "the job outlasts the limit");
  assert.ok(longestSilence > stallMs, `a silence longer than ${stallMs} ms (longest ${Math.round(longestSilence)} ms)`);
  assert.ok(!events.some((e) => (e as { type: string }).type === "onnxruntime"), "onnxruntime activity is the client's own business");
});
