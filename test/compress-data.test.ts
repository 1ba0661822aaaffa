import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseNpy } from "../src/core/calib/npy.js";
import type { Report } from "../src/core/report.js";
import { generateCaptureCnn } from "../src/bench/capture.js";
import { compressFile } from "../src/io/compress-file.js";
import { startJob } from "../src/job/client.js";
import type { WorkerEvent } from "../src/job/protocol.js";
import { ssvq } from "./helpers/cli.js";
import { argmaxRows } from "./helpers/ort.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-data-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

test("compress --calib --eval: per-layer output errors on the calibration images, accuracy on the evaluation ones", () => {
  const x = fixture("fashion_test2000_x_u8.npy");
  const out = join(work, "lenet.ssvq.onnx");
  const r = ssvq([
    "compress", fixture("fashion_lenet5.onnx"), "--out", out, "--json",
    "--calib", x, "--calib-range", "0:512", "--scale", "1/255",
    "--eval", x, "--eval-range", "512:2000", "--labels", fixture("fashion_test2000_y_u8.npy"),
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /stage: capture[\s\S]*stage: quantize[\s\S]*stage: evaluate/);
  const report = JSON.parse(r.stdout) as Report;
  const cal = report.calibration!;
  assert.equal(cal.samples, 512);
  assert.deepEqual(cal.data.indices, Array.from({ length: 512 }, (_, i) => i));
  assert.deepEqual(cal.uncalibrated, []);
  for (const l of report.layers) assert.ok(l.outputError! > 0 && l.outputError! < 1, `${l.name}: ${l.outputError}`);
  // The original's accuracy equals the reference logits' accuracy on the same images.
  const logits = parseNpy(readFileSync(fixture("fashion_lenet5.test2000_logits_f32.npy")), "logits").data as Float32Array;
  const labels = parseNpy(readFileSync(fixture("fashion_test2000_y_u8.npy")), "labels").data as Uint8Array;
  const top = argmaxRows(logits, 10);
  let correct = 0;
  for (let i = 512; i < 2000; i++) if (top[i] === labels[i]) correct++;
  const ev = report.evaluation!;
  assert.equal(ev.samples, 1488);
  assert.equal(ev.accuracy!.original.correct, correct);
  assert.ok(ev.accuracy!.compressed!.accuracy > 0.85, `compressed accuracy ${ev.accuracy!.compressed!.accuracy}`);
  assert.ok(ev.outputs[0]!.cosine > 0.98);
  const onDisk = JSON.parse(readFileSync(join(work, "lenet.ssvq.json"), "utf8")) as Report;
  assert.equal(onDisk.evaluation!.accuracy!.compressed!.correct, ev.accuracy!.compressed!.correct);
  const text = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", out, "--force", "--calib", x, "--calib-range", "0:64", "--scale", "1/255"]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /output error/);
  assert.match(text.stdout, /calibration .*64 samples/);
});

test("calibration without a data path uses random inputs shaped from the model, with a warning", async () => {
  const r = await compressFile({
    input: fixture("fashion_lenet5.onnx"),
    out: join(work, "random.ssvq.onnx"),
    config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 10, minWeights: 1024, format: "ssvq", finetune: false },
    data: { calib: { count: 16 } },
  });
  assert.equal(r.report.calibration!.data.source, "random");
  assert.equal(r.report.calibration!.samples, 16);
  assert.ok(r.report.warnings.some((w) => /random/i.test(w)), r.report.warnings.join("; "));
});

test("bad data options: exit 2 with the flag named, nothing written", () => {
  const dir = mkdtempSync(join(work, "bad-"));
  const cases: [string[], RegExp][] = [
    [["--calib-range", "0:10"], /--calib-range needs --calib/],
    [["--calib", join(dir, "missing.npy")], /missing\.npy/],
    [["--calib", fixture("fashion_test2000_x_u8.npy"), "--calib-range", "0:99999"], /range|0:99999/],
    [["--eval", fixture("fashion_test2000_x_u8.npy"), "--labels", fixture("fashion_lenet5.test2000_logits_f32.npy")], /label/i],
  ];
  for (const [args, message] of cases) {
    const r = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", join(dir, "o.onnx"), ...args]);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  assert.deepEqual(readdirSync(dir), []);
});

test("cancel during capture: the worker exits promptly and no output remains", async () => {
  const dir = mkdtempSync(join(work, "cancel-"));
  const input = join(dir, "cnn.onnx");
  writeFileSync(input, generateCaptureCnn(3));
  const events: WorkerEvent[] = [];
  const job = startJob(
    {
      kind: "compress",
      input,
      config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 10, minWeights: 1024, format: "ssvq", finetune: false },
      threads: 1,
      data: { calib: { count: 512 } },
    },
    { onEvent: (e) => events.push(e) },
  );
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (events.some((e) => e.type === "progress" && e.stage === "capture")) {
        clearInterval(t);
        resolve();
      }
    }, 10);
  });
  const t0 = Date.now();
  job.cancel();
  const outcome = await job.outcome;
  assert.equal(outcome.type === "error" && outcome.kind, "cancelled");
  assert.equal(outcome.type === "error" && outcome.lastStage, "capture");
  assert.ok(Date.now() - t0 < 10_000);
  assert.deepEqual(readdirSync(dir), ["cnn.onnx"]);
});
