import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../src/core/report.js";
import { startJob } from "../src/job/client.js";
import type { WorkerEvent } from "../src/job/protocol.js";
import { ssvq } from "./helpers/cli.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-ft-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const x = fixture("fashion_test2000_x_u8.npy");
const data = ["--scale", "1/255", "--eval", x, "--eval-range", "512:2000", "--labels", fixture("fashion_test2000_y_u8.npy")];
const calib = ["--calib", x, "--calib-range", "0:512"];

function run(model: string, name: string, args: string[]): Report {
  const r = ssvq(["compress", fixture(`${model}.onnx`), "--out", join(work, `${name}.onnx`), "--force", "--json", ...data, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Report;
}

const accuracy = (r: Report) => r.evaluation!.accuracy!.compressed!.accuracy;
const fp32 = (r: Report) => r.evaluation!.accuracy!.original.accuracy;
const outErr = (r: Report) => r.evaluation!.outputs[0]!.relError;

for (const [model, points] of [
  ["fashion_lenet5", 1.5],
  ["fashion_tinyvit", 2.5],
] as const) {
  test(`${model}: fine-tuning SSVQ k16 d4 lowers the output error, keeps accuracy, ends within ${points} points of FP32`, (t) => {
    const plain = run(model, `${model}-plain`, ["--k", "16", "--d", "4"]);
    const tuned = run(model, `${model}-tuned`, ["--k", "16", "--d", "4", ...calib]);
    t.diagnostic(`FP32 ${(100 * fp32(tuned)).toFixed(2)}%, k-means ${(100 * accuracy(plain)).toFixed(2)}%, fine-tuned ${(100 * accuracy(tuned)).toFixed(2)}%`);
    t.diagnostic(`output error: k-means ${(100 * outErr(plain)).toFixed(1)}%, fine-tuned ${(100 * outErr(tuned)).toFixed(1)}%`);
    assert.equal(tuned.config.finetune, true, "fine-tuning is on by default with --calib");
    assert.equal(plain.config.finetune, false);
    assert.ok(outErr(tuned) < outErr(plain), "fine-tuning must lower the output error");
    assert.ok(accuracy(tuned) >= accuracy(plain), "fine-tuning must not lower the accuracy");
    assert.ok(100 * (fp32(tuned) - accuracy(tuned)) <= points, `${(100 * (fp32(tuned) - accuracy(tuned))).toFixed(2)} points below FP32`);
    for (const l of tuned.layers) {
      const f = l.finetune!;
      assert.ok(f.errorAfter < f.errorBefore, `${l.name}: ${f.errorBefore} -> ${f.errorAfter}`);
      assert.ok(Math.abs(l.outputError! - f.errorAfter) < 1e-3, `${l.name}: reported ${l.outputError}, fine-tuning ${f.errorAfter}`);
      assert.ok(l.codebook!.every((c) => c.every((v) => v >= 0)), "SSVQ codebook stays non-negative");
      const frozen = f.checks.map((c) => c.frozenFraction);
      assert.ok(frozen.every((v, i) => i === 0 || v >= frozen[i - 1]!), "the frozen fraction never falls");
      assert.ok(frozen.at(-1)! > 0, `${l.name}: nothing froze`);
      assert.ok(f.checks.some((c) => c.flips > 0), `${l.name}: no sign flipped`);
      assert.ok(f.signsChanged > 0);
    }
  });
}

test("learnable signs with freezing reach a lower output error than --fixed-signs (tiny ViT, 1.5 bits/weight)", (t) => {
  const learn = run("fashion_tinyvit", "vit-learn", ["--k", "16", "--d", "8", ...calib]);
  const fixed = run("fashion_tinyvit", "vit-fixed", ["--k", "16", "--d", "8", "--fixed-signs", ...calib]);
  t.diagnostic(`accuracy: learnable signs ${(100 * accuracy(learn)).toFixed(2)}%, fixed signs ${(100 * accuracy(fixed)).toFixed(2)}%`);
  assert.ok(outErr(learn) < outErr(fixed), `${outErr(learn)} vs ${outErr(fixed)}`);
  for (const l of fixed.layers) assert.equal(l.finetune!.signsChanged, 0, "--fixed-signs changed a sign");
});

test("fine-tuning through the job streams freezeCheck events; same seed and any --threads give the same bytes", async () => {
  const events: WorkerEvent[] = [];
  const out = join(work, "job.onnx");
  const job = startJob(
    {
      kind: "compress",
      input: fixture("fashion_lenet5.onnx"),
      out,
      force: true,
      config: { mode: "ssvq", k: 16, d: 4, seed: 3, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: true },
      threads: 2,
      data: { calib: { path: x, range: "0:128" }, preprocess: { scale: "1/255" } },
    },
    { onEvent: (e) => events.push(e) },
  );
  const outcome = await job.outcome;
  assert.equal(outcome.type, "result", JSON.stringify(outcome).slice(0, 500));
  const checks = events.filter((e) => e.type === "freezeCheck");
  assert.deepEqual([...new Set(checks.map((c) => (c as { layer: string }).layer))].sort(), ["c2.weight", "f1.weight", "f2.weight"]);
  assert.ok(checks.every((c) => c.type === "freezeCheck" && c.relativeError >= 0 && c.frozenFraction >= 0));
  const bytes = [1, 2].map((threads) => {
    const path = join(work, `det${threads}.onnx`);
    const r = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", path, "--seed", "3", "--threads", String(threads), "--calib", x, "--calib-range", "0:128", "--scale", "1/255"]);
    assert.equal(r.status, 0, r.stderr);
    return readFileSync(path);
  });
  assert.ok(bytes[0]!.equals(bytes[1]!), "thread count changed the fine-tuned model");
  assert.ok(bytes[0]!.equals(readFileSync(out)), "the job and the command line differ for the same settings");
});

test("fine-tuning options: bad values exit 2 naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--finetune", "--no-finetune"], /not both/],
    [["--mode", "int4", "--finetune"], /--finetune applies to --mode ssvq and vq/],
    [["--no-finetune", "--iters", "10"], /--iters applies to fine-tuning/],
    [["--iters", "10"], /--iters applies to fine-tuning, which needs --calib/],
    [["--finetune", "--freeze-threshold", "0.3"], /FROM,TO/],
    [["--finetune", "--freeze-momentum", "1.5"], /\[0, 1\)/],
    [["--finetune", "--lr-sign=-1"], /--lr-sign must be a number > 0/],
    [["--mode", "vq", "--fixed-signs"], /--fixed-signs applies to --mode ssvq/],
    [["--finetune", "--no-freeze", "--freeze-every", "5"], /--no-freeze/],
  ];
  for (const [args, message] of cases) {
    const r = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", join(work, "bad.onnx"), ...args]);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});

test("--compare vq: VQ at the nearest size not larger, fine-tuned on the same data, reported beside SSVQ", () => {
  const r = run("fashion_lenet5", "compare", ["--k", "16", "--d", "8", "--compare", "vq", "--calib", x, "--calib-range", "0:256"]);
  const v = r.comparison!.vq;
  assert.equal(v.config.mode, "vq");
  assert.ok(v.sizes.compressedTensorBytes <= r.sizes.compressedTensorBytes, `${v.sizes.compressedTensorBytes} > ${r.sizes.compressedTensorBytes}`);
  // Nearest: the next larger VQ operating point would not fit (k doubled adds a bit per sub-vector).
  assert.ok(v.sizes.compressedTensorBytes > 0.8 * r.sizes.compressedTensorBytes);
  assert.deepEqual(v.layers.map((l) => l.name), r.layers.map((l) => l.name));
  assert.ok(v.layers.every((l) => l.finetune && l.outputError !== undefined));
  assert.ok(v.evaluation!.accuracy!.compressed!.accuracy > 0.5);
  const bad = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", join(work, "x.onnx"), "--mode", "vq", "--compare", "vq"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--compare vq compares an SSVQ compression/);
});

test("--sequential: fine-tuning on the compressed prefix's inputs lowers the tiny ViT's output error further", (t) => {
  const perLayer = run("fashion_tinyvit", "vit-perlayer", ["--k", "16", "--d", "4", ...calib]);
  const sequential = run("fashion_tinyvit", "vit-sequential", ["--k", "16", "--d", "4", "--sequential", ...calib]);
  t.diagnostic(`accuracy: per layer ${(100 * accuracy(perLayer)).toFixed(2)}%, sequential ${(100 * accuracy(sequential)).toFixed(2)}%`);
  t.diagnostic(`output error: per layer ${(100 * outErr(perLayer)).toFixed(1)}%, sequential ${(100 * outErr(sequential)).toFixed(1)}%`);
  assert.equal(sequential.config.sequential, true);
  assert.ok(outErr(sequential) < outErr(perLayer), `${outErr(sequential)} vs ${outErr(perLayer)}`);
  assert.equal(sequential.calibration!.samples, 512);
  for (const l of sequential.layers) assert.ok(l.finetune!.errorAfter < l.finetune!.errorBefore, `${l.name}: ${l.finetune!.errorBefore} -> ${l.finetune!.errorAfter}`);
  const bad = ssvq(["compress", fixture("fashion_tinyvit.onnx"), "--out", join(work, "x.onnx"), "--sequential"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--sequential applies to fine-tuning, which needs --calib/);
});
