/**
 * The panel's parts that need no VS Code: the event batcher (at most ten messages a second, nothing lost),
 * the latency of a report on any preset (what `ssvq simulate --report` prints, with or without the GEMM
 * shapes in the report), and the validation of the panel's messages.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PRESETS } from "../src/core/accel/presets.js";
import { gemmsOf, simulateReport } from "../src/core/accel/report-latency.js";
import type { Report } from "../src/core/report.js";
import { startJob } from "../src/job/client.js";
import { EventBatcher } from "../src/extension/panel/eventBatcher.js";
import { parseFromWebview } from "../src/webview-protocol.js";
import { ssvq } from "./helpers/cli.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-panel-units-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

test("the batcher delivers 10,000 fast events in order, at most one batch per 100 ms", async () => {
  const deliveries: { at: number; batch: number[] }[] = [];
  const clock = () => performance.now();
  const b = new EventBatcher<number>((batch) => deliveries.push({ at: clock(), batch }), 100, clock);
  // 50 bursts of 200 events, 10 ms apart: half a second or more, however loaded the machine is.
  let next = 0;
  for (let burst = 0; burst < 50; burst++) {
    for (let i = 0; i < 200; i++) b.push(next++);
    await new Promise((r) => setTimeout(r, 10));
  }
  b.flush();
  const all = deliveries.flatMap((d) => d.batch);
  assert.deepEqual(all, Array.from({ length: 10_000 }, (_, i) => i));
  for (let i = 1; i < deliveries.length - 1; i++)
    assert.ok(deliveries[i]!.at - deliveries[i - 1]!.at >= 99.5, `batches ${i - 1} and ${i} only ${deliveries[i]!.at - deliveries[i - 1]!.at} ms apart`);
  assert.ok(deliveries.length >= 4, `${deliveries.length} batches`);
});

test("a report's latency on every preset is what ssvq simulate --report prints, from the shapes the report keeps", () => {
  const out = join(work, "lenet.ssvq.onnx");
  const lenet = fixture("fashion_lenet5.onnx");
  const x = fixture("fashion_test2000_x_u8.npy");
  const c = ssvq(["compress", lenet, "--out", out, "--calib", x, "--calib-range", "0:128", "--scale", "1/255", "--iters", "30", "--compare", "vq", "--preset", "ethos-u55-256", "--shape", "input=1,1,28,28"]);
  assert.equal(c.status, 0, c.stderr);
  const reportPath = join(work, "lenet.ssvq.json");
  const report = JSON.parse(readFileSync(reportPath, "utf8")) as Report;
  const gemms = gemmsOf(report.simulation);
  assert.ok(gemms && gemms.length === 5, "the report keeps the GEMM shapes");
  for (const p of PRESETS) {
    const cli = ssvq(["simulate", lenet, "--preset", p.name, "--report", reportPath, "--shape", "input=1,1,28,28", "--json"]);
    assert.equal(cli.status, 0, cli.stderr);
    const expected = JSON.parse(cli.stdout) as { totals: unknown; layers: unknown; speedup: unknown };
    const mine = simulateReport(report, gemms!, p.name);
    assert.deepEqual(mine.totals, expected.totals, p.name);
    assert.deepEqual(mine.layers, expected.layers, p.name);
    assert.deepEqual(mine.speedup, expected.speedup, p.name);
  }
  // SSVQ from the report's own layers, VQ from its --compare vq run: not the (k, d) defaults.
  const ssvqBits = report.layers.map((l) => l.bits.bitsPerWeight);
  const sim = simulateReport(report, gemms!, "nvdla-large");
  const compressedLayers = sim.layers.filter((l) => l.format === "ssvq" && l.note === undefined);
  assert.deepEqual(compressedLayers.map((l) => l.bitsPerWeight), ssvqBits);
  const vqBits = report.comparison!.vq.layers.map((l) => l.bits.bitsPerWeight);
  assert.deepEqual(sim.layers.filter((l) => l.format === "vq" && l.note === undefined).map((l) => l.bitsPerWeight), vqBits);
});

test("without shapes in the report, the simulate job measures them once and gives the same figures", async () => {
  const out = join(work, "plain.ssvq.onnx");
  const lenet = fixture("fashion_lenet5.onnx");
  assert.equal(ssvq(["compress", lenet, "--out", out, "--k", "64", "--d", "4"]).status, 0);
  const reportPath = join(work, "plain.ssvq.json");
  const report = JSON.parse(readFileSync(reportPath, "utf8")) as Report;
  assert.equal(report.simulation, undefined);
  const outcome = await startJob({ kind: "simulate", input: lenet, options: { preset: "ethos-u65-512" }, report, dynamicAsOne: true }).outcome;
  assert.equal(outcome.type, "simulation", JSON.stringify(outcome).slice(0, 300));
  if (outcome.type !== "simulation") return;
  // Batch 1 where the model leaves it open, and a warning that says so.
  assert.deepEqual(outcome.warnings, ['input "input" has dynamic dimensions [batch, 1, 28, 28]: simulated as input=1,1,28,28']);
  const cli = JSON.parse(ssvq(["simulate", lenet, "--preset", "ethos-u65-512", "--report", reportPath, "--shape", "input=1,1,28,28", "--json"]).stdout) as { totals: unknown };
  assert.deepEqual(outcome.simulation.totals, cli.totals);
  assert.ok(outcome.simulation.gemms?.length, "the outcome keeps the shapes");
  const again = simulateReport(report, outcome.simulation.gemms!, "ethos-u55-256");
  const cli2 = JSON.parse(ssvq(["simulate", lenet, "--preset", "ethos-u55-256", "--report", reportPath, "--shape", "input=1,1,28,28", "--json"]).stdout) as { totals: unknown };
  assert.deepEqual(again.totals, cli2.totals);
  const bad = await startJob({ kind: "simulate", input: join(work, "missing.onnx"), options: { preset: "ethos-u65-512" }, report, dynamicAsOne: true }).outcome;
  assert.equal(bad.type, "error");
  if (bad.type === "error") assert.equal(bad.kind, "input");
});

test("panel messages are validated: presets by name, export formats, nothing else", () => {
  assert.deepEqual(parseFromWebview({ type: "selectPreset", preset: "nvdla-large" }), { type: "selectPreset", preset: "nvdla-large" });
  assert.deepEqual(parseFromWebview({ type: "exportReport", format: "markdown" }), { type: "exportReport", format: "markdown" });
  assert.deepEqual(parseFromWebview({ type: "panelReady" }), { type: "panelReady" });
  for (const bad of [
    { type: "selectPreset", preset: "../../etc/passwd" },
    { type: "selectPreset", preset: 3 },
    { type: "exportReport", format: "html" },
    { type: "exportReport", format: "json", path: "/tmp/x" },
    { type: "copyCommand", command: "rm -rf /" },
  ])
    assert.equal(parseFromWebview(bad), undefined, JSON.stringify(bad));
});
