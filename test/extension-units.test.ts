/**
 * The extension's parts that need no VS Code: a job's progress folded from real worker events, the
 * webview message validation, the inspect job the inspector starts, and the packaged vsix's contents.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateRawSync } from "node:zlib";
import { startJob } from "../src/job/client.js";
import { parseCompressArgs } from "../src/job/compress-args.js";
import type { WorkerEvent } from "../src/job/protocol.js";
import { inspectFile } from "../src/io/inspect-file.js";
import { formatDuration, JobProgress, plannedStages } from "../src/job/job-progress.js";
import { progressPrinter } from "../src/cli/progress.js";
import { parseFromWebview } from "../src/webview-protocol.js";
import { fixture, repoRoot } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-ext-units-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

test("planned stages follow the job: data, fine-tuning, evaluation, comparison, simulation", () => {
  const lenet = fixture("fashion_lenet5.onnx");
  const npy = fixture("fashion_test2000_x_u8.npy");
  assert.deepEqual(plannedStages(parseCompressArgs([lenet])), ["check", "read", "quantize", "write"]);
  assert.deepEqual(plannedStages(parseCompressArgs([lenet, "--calib", npy, "--eval", npy, "--compare", "vq", "--preset", "ethos-u55-256"])), [
    "check", "read", "capture", "quantize", "finetune", "write", "evaluate", "compare", "simulate",
  ]);
  assert.deepEqual(plannedStages(parseCompressArgs([lenet, "--calib", npy, "--sequential"])), ["check", "read", "quantize", "finetune", "write"]);
  assert.deepEqual(plannedStages(parseCompressArgs([lenet, "--dry-run"])), ["check", "read"]);
  assert.deepEqual(plannedStages(parseCompressArgs([lenet, "--ratio", "12", "--calib", npy])), ["check", "search", "read", "capture", "quantize", "finetune", "write"]);
  assert.deepEqual(plannedStages(parseCompressArgs([lenet, "--bits", "2"])), ["check", "search", "read", "capture", "quantize", "write"]);
});

test("a real job's events give a status text with stage, layer and percentage, and a run fraction that never goes back", async () => {
  const dir = mkdtempSync(join(work, "job-"));
  const args = [fixture("fashion_lenet5.onnx"), "--out", join(dir, "out.ssvq.onnx"), "--calib", fixture("fashion_test2000_x_u8.npy"), "--calib-range", "0:128", "--scale", "1/255", "--iters", "40"];
  const spec = parseCompressArgs(args);
  const progress = new JobProgress(spec);
  const texts: string[] = [];
  let last = 0;
  const job = startJob(spec, {
    onEvent: (e: WorkerEvent) => {
      progress.add(e);
      const f = progress.overallFraction();
      assert.ok(f >= last - 1e-12, `the run fraction went back from ${last} to ${f} at ${JSON.stringify(e)}`);
      last = f;
      texts.push(progress.text());
    },
  });
  const outcome = await job.outcome;
  assert.equal(outcome.type, "result");
  assert.ok(texts.some((t) => /^capture 0%( ·|$)/.test(t)), texts.join("\n"));
  assert.ok(texts.some((t) => /^quantize 1\/3 c2\.weight 0%( ·|$)/.test(t)), texts.join("\n"));
  assert.ok(texts.some((t) => /^finetune 3\/3 \S+ 100%( ·|$)/.test(t)), texts.join("\n"));
  assert.ok(last > 0.95, `the run ends near 1, not ${last}`);
  assert.ok(progress.events.some((e) => e.type === "freezeCheck"), "the history keeps the freeze checks for the panel");
  assert.ok(!progress.events.some((e) => e.type === "result"), "the outcome is not history");
});

test("a long run of a large model says the bytes quantized and the expected time, in the status text and the CLI's lines", () => {
  const spec = parseCompressArgs([fixture("fashion_lenet5.onnx"), "--no-finetune"]);
  let clock = 1_000_000;
  const progress = new JobProgress(spec, () => clock);
  const lines: string[] = [];
  const ctx = { errIsTTY: false, err: (t: string) => lines.push(t) } as unknown as Parameters<typeof progressPrinter>[0];
  const printer = progressPrinter(ctx, spec, () => clock);
  const GiB = 2 ** 30;
  const layer = (index: number) => ({ type: "progress", stage: "quantize", fraction: index / 40, layer: { index, count: 40, name: `l${index}`, rows: 4096, cols: 4096, bytes: { done: index * 0.075 * GiB, total: 3 * GiB } } }) as WorkerEvent;
  for (const e of [{ type: "stage", stage: "check" }, { type: "stage", stage: "read" }, { type: "stage", stage: "quantize" }, layer(0)] as WorkerEvent[]) {
    progress.add(e);
    printer.onEvent(e);
  }
  assert.equal(progress.text(), "quantize 1/40 l0 0% · 0 B of 3.00 GiB", "no time estimate in the first seconds");
  assert.equal(progress.remainingSeconds(), undefined);
  clock += 120_000;
  progress.add(layer(20));
  printer.onEvent(layer(20));
  const f = progress.overallFraction();
  const left = progress.remainingSeconds()!;
  assert.ok(Math.abs(left - (120 * (1 - f)) / f) < 1e-9, "elapsed x (1 - f) / f");
  assert.equal(progress.text(), `quantize 21/40 l20 50% · 1.50 GiB of 3.00 GiB · about ${formatDuration(left)} left`);
  assert.equal(lines.at(-1), `  [21/40] l20 (1.50 GiB of 3.00 GiB, about ${formatDuration(left)} left)`);
  assert.deepEqual([formatDuration(3), formatDuration(42), formatDuration(200), formatDuration(4000)], ["5 s", "40 s", "3 min", "1 h 7 min"]);
  // A small model shows no bytes.
  const small = new JobProgress(spec, () => clock);
  small.add({ type: "stage", stage: "quantize" });
  small.add({ ...layer(1), layer: { ...(layer(1) as { layer: object }).layer, bytes: { done: 1000, total: 250_000 } } } as WorkerEvent);
  assert.equal(small.text(), "quantize 2/40 l1 2%");
});

test("a real job with --ratio: the search stage is planned and shown, and the run fraction never goes back", async () => {
  const dir = mkdtempSync(join(work, "job-"));
  const args = [fixture("fashion_lenet5.onnx"), "--out", join(dir, "out.ssvq.onnx"), "--ratio", "12", "--calib", fixture("fashion_test2000_x_u8.npy"), "--calib-range", "0:128", "--scale", "1/255", "--iters", "20"];
  const spec = parseCompressArgs(args);
  const progress = new JobProgress(spec);
  assert.ok(progress.stages.includes("search"));
  const texts: string[] = [];
  let last = 0;
  const outcome = await startJob(spec, {
    onEvent: (e: WorkerEvent) => {
      progress.add(e);
      const f = progress.overallFraction();
      assert.ok(f >= last - 1e-12, `the run fraction went back from ${last} to ${f} at ${JSON.stringify(e)}`);
      last = f;
      texts.push(progress.text());
    },
  }).outcome;
  assert.equal(outcome.type, "result");
  assert.ok(texts.some((t) => /^search \d+%( ·|$)/.test(t)), texts.join("\n"));
  assert.ok(last > 0.95, `the run ends near 1, not ${last}`);
});

test("messages from a webview are validated: unknown types, extra fields and wrong types are dropped", () => {
  assert.deepEqual(parseFromWebview({ type: "ready" }), { type: "ready" });
  assert.deepEqual(parseFromWebview({ type: "compress", chooseSettings: true }), { type: "compress", chooseSettings: true });
  for (const bad of [null, 3, "ready", [], {}, { type: "compress" }, { type: "compress", chooseSettings: "yes" }, { type: "ready", extra: 1 }, { type: "runCommand", command: "rm" }])
    assert.equal(parseFromWebview(bad), undefined, JSON.stringify(bad));
});

test("the inspect job (what the inspector shows) is ssvq inspect --json, and a damaged file is an input error", async () => {
  const lenet = fixture("fashion_lenet5.onnx");
  const outcome = await startJob({ kind: "inspect", input: lenet }).outcome;
  assert.equal(outcome.type, "inspection");
  if (outcome.type !== "inspection") return;
  const cli = spawnSync(process.execPath, [join(repoRoot, "dist", "cli.js"), "inspect", lenet, "--json"], { encoding: "utf8" });
  assert.deepEqual(outcome.inspection, JSON.parse(cli.stdout));
  assert.deepEqual(outcome.inspection, inspectFile(lenet));
  const damaged = join(work, "damaged.onnx");
  writeFileSync(damaged, readFileSync(lenet).subarray(0, 700));
  const bad = await startJob({ kind: "inspect", input: damaged }).outcome;
  assert.equal(bad.type, "error");
  if (bad.type === "error") {
    assert.equal(bad.kind, "input");
    assert.match(bad.message, /damaged\.onnx is not a readable ONNX model/);
  }
});

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  localHeader: number;
}

/** The entries of a zip's central directory. */
function zipEntries(zip: Buffer): ZipEntry[] {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  const out: ZipEntry[] = [];
  for (let i = 0; i < count; i++) {
    const nameLen = zip.readUInt16LE(at + 28);
    const extra = zip.readUInt16LE(at + 30);
    const comment = zip.readUInt16LE(at + 32);
    out.push({
      name: zip.toString("utf8", at + 46, at + 46 + nameLen),
      method: zip.readUInt16LE(at + 10),
      compressedSize: zip.readUInt32LE(at + 20),
      localHeader: zip.readUInt32LE(at + 42),
    });
    at += 46 + nameLen + extra + comment;
  }
  return out;
}

/** One file's bytes from the zip (stored or deflated). */
function zipFile(zip: Buffer, name: string): Buffer {
  const e = zipEntries(zip).find((x) => x.name === name);
  if (!e) throw new Error(`${name} is not in the zip`);
  const start = e.localHeader + 30 + zip.readUInt16LE(e.localHeader + 26) + zip.readUInt16LE(e.localHeader + 28);
  const data = zip.subarray(start, start + e.compressedSize);
  return e.method === 8 ? inflateRawSync(data) : Buffer.from(data);
}

test("npm run package: a linux-x64 vsix under 25 MB with the bundles and the runtime, no tests, sources or dev dependencies", () => {
  const vsix = join(work, "ssvq.vsix");
  const r = spawnSync("npm", ["run", "package", "--silent", "--", "--out", vsix], { cwd: repoRoot, encoding: "utf8", timeout: 300_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const bytes = statSync(vsix).size;
  assert.ok(bytes < 25 * 2 ** 20, `${bytes} bytes`);
  const zip = readFileSync(vsix);
  const names = zipEntries(zip).map((e) => e.name);
  for (const f of ["extension/package.json", "extension/dist/extension.cjs", "extension/dist/job-worker.js", "extension/dist/pool-worker.js", "extension/dist/cli.js", "extension/dist/webview/inspector.js", "extension/dist/webview/inspector.css", "extension/dist/webview/codicon.ttf", "extension/LICENSE.txt"])
    assert.ok(names.includes(f), `${f} is packaged`);
  assert.ok(names.some((n) => n.startsWith("extension/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/")), "onnxruntime's linux-x64 binaries");
  const unwanted = names.filter((n) =>
    /^extension\/(src|test|webview|out|\.ci)\//.test(n) ||
    /\.(ts|map)$/.test(n) && !n.endsWith(".d.ts") ||
    /node_modules\/(typescript|esbuild|@esbuild|@types|@vscode\/vsce|playwright-core|@vscode-elements|lit|@ricky0123)\//.test(n) ||
    /onnxruntime-node\/bin\/napi-v\d+\/(darwin|win32|linux\/arm64)\//.test(n),
  );
  assert.deepEqual(unwanted, []);
  const manifest = JSON.parse(zipFile(zip, "extension/package.json").toString("utf8")) as { main: string; contributes: { commands: unknown[] } };
  assert.equal(manifest.main, "./dist/extension.cjs");
  assert.ok(manifest.contributes.commands.length >= 5);
});
