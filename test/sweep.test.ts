/**
 * `ssvq sweep` (issue 12) on LeNet-5 through the command line: the frontier's points meet their targets
 * as the report counts them, unreachable targets say so, the JSON says what was fine-tuned on what, the
 * SVG draws every reached point, and a point equals `ssvq compress --ratio` at the same settings
 * in size (the same search over the same measurements).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SweepResult } from "../src/io/sweep.js";
import { sweepSvg } from "../src/core/sweep-chart.js";
import { ssvq } from "./helpers/cli.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-sweep-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const x = fixture("fashion_test2000_x_u8.npy");
const lenet = fixture("fashion_lenet5.onnx");
const data = ["--scale", "1/255", "--calib", x, "--calib-range", "0:128", "--iters", "40", "--eval", x, "--eval-range", "512:1000"];

test("sweep LeNet-5: SSVQ and VQ at 8x, 16x and 40x, INT4; JSON, table and SVG", () => {
  const json = join(work, "s.json");
  const svg = join(work, "s.svg");
  const r = ssvq(["sweep", lenet, ...data, "--labels", fixture("fashion_test2000_y_u8.npy"), "--targets", "8,16,40", "--methods", "ssvq,vq,int4", "--out", json, "--svg", svg]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(readFileSync(json, "utf8")) as SweepResult;
  assert.equal(s.metric, "accuracy");
  assert.deepEqual(s.targets, [8, 16, 40]);
  assert.equal(s.points.length, 7);
  for (const p of s.points) {
    if (p.method === "int4") {
      assert.ok(p.reached && !p.finetuned && p.target === undefined);
      continue;
    }
    if (p.target === 40) {
      assert.equal(p.reached, false, `${p.method} cannot reach 40x on LeNet-5`);
      assert.match(p.reason!, /cannot be reached/);
      continue;
    }
    assert.ok(p.reached && p.finetuned);
    assert.ok(p.tensorRatio! >= p.target!, `${p.method} ${p.target}: ${p.tensorRatio}`);
    assert.ok(p.accuracy! > 0.8, `${p.method} ${p.target}: ${p.accuracy}`);
    assert.ok(p.layers!.every((l) => l.mode === "fp" || l.mode === p.method || l.mode === "int8" || l.mode === "int4"));
  }
  assert.ok(s.notes.some((n) => /fine-tuned 40 iterations per layer on calibration samples 0:128/.test(n)));
  assert.ok(s.calibration.samples === 128 && s.evaluation.samples === 488);
  assert.match(r.stdout, /SSVQ +8x/);
  assert.match(r.stdout, /not reached/);
  const drawn = readFileSync(svg, "utf8");
  assert.ok(drawn.startsWith("<svg") && drawn.trimEnd().endsWith("</svg>"));
  assert.equal((drawn.match(/<circle /g) ?? []).length, s.points.filter((p) => p.reached).length);
  assert.equal(drawn, sweepSvg(s), "the SVG is drawn from the JSON alone");
  // The same search as ssvq compress --ratio 16 with the loosest target of this sweep: same size.
  const one = ssvq(["sweep", lenet, ...data, "--targets", "16", "--methods", "ssvq", "--json"]);
  assert.equal(one.status, 0, one.stderr);
  const only = JSON.parse(one.stdout) as SweepResult;
  assert.equal(only.metric, "top1Agreement", "without labels: fidelity to the original");
  const c = ssvq(["compress", lenet, ...data, "--ratio", "16", "--out", join(work, "c16.onnx"), "--json"]);
  assert.equal(c.status, 0, c.stderr);
  const report = JSON.parse(c.stdout) as { sizes: { compressedTensorBytes: number } };
  assert.equal(only.points[0]!.compressedTensorBytes, report.sizes.compressedTensorBytes);
});

test("sweep refuses missing data and bad targets in one line", () => {
  for (const [args, message] of [
    [["sweep", lenet, "--eval", x], /--calib PATH is required/],
    [["sweep", lenet, "--calib", x], /--eval PATH is required/],
    [["sweep", lenet, "--calib", x, "--eval", x, "--targets", "8,1"], /--targets takes ratios above 1/],
    [["sweep", lenet, "--calib", x, "--eval", x, "--methods", "ssvq,pq"], /--methods takes/],
  ] as const) {
    const r = ssvq([...args]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
  }
});
