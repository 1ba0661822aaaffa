/**
 * --ratio and --bits (issue 12): each layer's own operating point, searched on calibration data, on
 * LeNet-5 through the command line: the budget is met as the report counts it, the report explains each
 * layer's choice and agrees with the written model, the same settings give the same bytes, and
 * --compare vq runs the same search for VQ at the same budget.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../src/core/report.js";
import { readBackCompression } from "../src/core/onnx/readback.js";
import { decodeModel } from "../src/core/onnx/proto.js";
import { ssvq } from "./helpers/cli.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-search-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const x = fixture("fashion_test2000_x_u8.npy");
const lenet = fixture("fashion_lenet5.onnx");
const data = ["--scale", "1/255", "--calib", x, "--calib-range", "0:256", "--iters", "60"];
const evalArgs = ["--eval", x, "--eval-range", "512:2000", "--labels", fixture("fashion_test2000_y_u8.npy")];

function run(name: string, args: string[]): Report {
  const r = ssvq(["compress", lenet, "--out", join(work, `${name}.onnx`), "--force", "--json", ...data, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Report;
}

/** The report's layers agree with the search's picks; the search's cost is what the report counts. */
function checkExplained(r: Report, family: "ssvq" | "vq"): void {
  const s = r.search!;
  assert.equal(s.family, family);
  assert.ok(s.costBits <= s.budgetBits, `${s.costBits} > ${s.budgetBits}`);
  let cost = 0;
  for (const l of s.layers) {
    const pick = l.candidates[l.pick]!;
    assert.ok(l.candidates.length >= 3, `${l.name}: ${l.candidates.length} candidates`);
    assert.ok(l.candidates.some((c) => c.hull) && l.sensitivity > 0);
    cost += pick.bits;
    if (pick.mode === "fp") {
      assert.ok(r.kept.some((k) => k.name === l.name && /full precision/.test(k.reason)));
      continue;
    }
    const layer = r.layers.find((x) => x.name === l.name)!;
    assert.deepEqual([layer.mode, layer.k ?? 0, layer.d ?? 0], [pick.mode, pick.k, pick.d], l.name);
    assert.equal(layer.bits.totalBits, pick.bits, `${l.name}: the search counted ${pick.bits} bits, the report ${layer.bits.totalBits}`);
  }
  assert.equal(cost, s.costBits);
}

test("--ratio 12 on LeNet-5: at least 12x as the report counts it, per-layer points explained and read back, VQ searched at the same budget", () => {
  const r = run("ratio12", ["--ratio", "12", "--compare", "vq", ...evalArgs]);
  assert.equal(r.config.ratio, 12);
  assert.ok(r.sizes.tensorRatio >= 12, `ratio ${r.sizes.tensorRatio}`);
  assert.ok(r.sizes.compressedTensorBytes <= r.sizes.originalTensorBytes / 12);
  checkExplained(r, "ssvq");
  assert.ok(r.search!.sensitivitySamples > 0 && r.search!.sensitivitySamples <= 256);
  const acc = r.evaluation!.accuracy!;
  assert.ok(acc.compressed!.accuracy > acc.original.accuracy - 0.02, `accuracy ${acc.compressed!.accuracy} vs ${acc.original.accuracy}`);
  // The written model carries each layer's own (k, d).
  const back = readBackCompression(decodeModel(readFileSync(join(work, "ratio12.onnx"))))!;
  for (const l of r.layers) {
    const b = back.layers.find((x) => x.name === l.name)!;
    assert.deepEqual([b.mode, b.k, b.d], [l.mode, l.k, l.d], l.name);
  }
  const v = r.comparison!.vq;
  assert.equal(v.config.mode, "vq");
  assert.ok(v.sizes.tensorRatio >= 12, `VQ ratio ${v.sizes.tensorRatio}`);
  checkExplained({ ...r, ...v, kept: r.kept.concat(v.search!.layers.filter((l) => l.candidates[l.pick]!.mode === "fp").map((l) => ({ name: l.name, opType: "", dims: [], reason: "full precision" }))) } as Report, "vq");
  // The VQ search reuses the SSVQ search's sensitivities.
  assert.deepEqual(
    v.search!.layers.map((l) => l.sensitivity),
    r.search!.layers.map((l) => l.sensitivity),
  );
  assert.ok(v.evaluation?.accuracy?.compressed);
  // The explanation in the printed report and the Markdown one: each layer's hull, the pick marked.
  const text = ssvq(["report", join(work, "ratio12.json")]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /search +SSVQ per layer, target 12x/);
  assert.match(text.stdout, /search +VQ per layer, target 12x/);
  assert.match(text.stdout, /\* SSVQ k\d+ d\d+|\* INT[48]|\* full precision/);
  const md = ssvq(["report", join(work, "ratio12.json"), "--markdown"]);
  assert.equal(md.status, 0, md.stderr);
  assert.match(md.stdout, /## Operating-point search/);
  assert.equal((md.stdout.match(/\| \*\*/g) ?? []).length, r.search!.layers.length + v.search!.layers.length, "one chosen point per layer and family");
});

test("--bits 2.5 on LeNet-5: average bits per weight at most 2.5 with codebooks; same settings, same bytes, any thread count", () => {
  const a = run("bits-a", ["--bits", "2.5", "--threads", "1"]);
  const b = run("bits-b", ["--bits", "2.5", "--threads", "2"]);
  assert.ok(a.sizes.bitsPerWeight <= 2.5, `${a.sizes.bitsPerWeight}`);
  assert.ok(a.sizes.bitsPerWeight > 2.3, `the budget is used: ${a.sizes.bitsPerWeight}`);
  checkExplained(a, "ssvq");
  assert.ok(!a.search!.layers.some((l) => l.candidates.some((c) => c.mode === "fp")), "--bits keeps every layer compressed");
  assert.ok(readFileSync(join(work, "bits-a.onnx")).equals(readFileSync(join(work, "bits-b.onnx"))));
  assert.deepEqual(a.search!.layers.map((l) => l.pick), b.search!.layers.map((l) => l.pick));
});

test("--ratio beyond what the cheapest points reach: exit 2 with the minimum, nothing written", () => {
  const out = join(work, "toosmall.onnx");
  const r = ssvq(["compress", lenet, "--out", out, ...data, "--ratio", "60"]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /target is too small|cannot be reached/);
  assert.throws(() => readFileSync(out));
});
