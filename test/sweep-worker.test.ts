/**
 * `ssvq sweep` runs onnxruntime in the background worker, never in the CLI's own process (issue 13):
 * a worker killed from outside, a Ctrl-C and a model that crashes onnxruntime each end the command with
 * one line on stderr after its stage lines, and leave neither the JSON, the SVG nor a temporary file.
 * `ssvq compress` reports a killed worker the same way.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeNpy } from "../src/core/calib/npy.js";
import { encodeModel } from "../src/core/onnx/proto.js";
import { writeAll } from "../src/io/write-atomic.js";
import { childPids, listing, ssvq, startSsvq, type CliResult } from "./helpers/cli.js";
import { graph, maxWithEmptyInput, model, node, randomTensor, valueInfo } from "./helpers/models.js";
import { fixture, scratchFolders } from "./helpers/paths.js";

const { folder } = scratchFolders("ssvq-sweep-worker-");

const x = fixture("fashion_test2000_x_u8.npy");
const lenet = fixture("fashion_lenet5.onnx");
const data = ["--scale", "1/255", "--calib", x, "--calib-range", "0:128", "--iters", "40", "--eval", x, "--eval-range", "512:1000"];
const outputs = (dir: string) => ["--out", join(dir, "sweep.json"), "--svg", join(dir, "sweep.svg")];

/** Exit `status`; stderr is stage lines (progress) and then exactly one line, matching `pattern`, without C++ names. */
function endsInOneLine(r: CliResult, status: number, pattern: RegExp): void {
  assert.equal(r.status, status, `exit ${r.status}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  const last = lines.pop()!;
  for (const l of lines) assert.match(l, /^(stage: |  \[\d+\/\d+\] )/, `only progress before the message, not:\n${r.stderr}`);
  assert.ok(last.length < 300, `a short line, not ${last.length} characters`);
  assert.doesNotMatch(last, /::|\.cc:\d+|\x1b\[|internal error/);
  assert.match(last, pattern);
}

/** The background worker of a running `ssvq`: its only child process. */
function workerOf(pid: number): number {
  const children = childPids(pid);
  assert.equal(children.length, 1, `one worker, not ${children.join(", ")}`);
  return children[0]!;
}

test("a sweep whose worker is killed: exit 2, one line, no JSON, SVG or temporary file", async () => {
  const dir = folder();
  const run = startSsvq(["sweep", lenet, ...data, ...outputs(dir)]);
  await run.stderrMatches(/stage: search ssvq/);
  process.kill(workerOf(run.child.pid!), "SIGKILL");
  endsInOneLine(await run.done, 2, /^ssvq sweep: the worker was killed \(SIGKILL\) during search ssvq$/);
  assert.deepEqual(listing(dir), []);
});

test("ssvq compress reports a killed worker the same way: exit 2, one line, nothing written", async () => {
  const dir = folder();
  const inits = Array.from({ length: 8 }, (_, i) => randomTensor(`w${i}`, [768, 768], 50 + i));
  const nodes = inits.map((t, i) => node("MatMul", [i ? `h${i}` : "x", t.name], [i === 7 ? "y" : `h${i + 1}`]));
  const input = join(dir, "slow.onnx");
  writeFileSync(input, encodeModel(model(graph({ nodes, inputs: [valueInfo("x", [1, 768])], outputs: [valueInfo("y", [1, 768])], initializers: inits }))));
  const run = startSsvq(["compress", input, "--mode", "vq", "--k", "256", "--d", "4", "--kmeans-iters", "50", "--threads", "1"]);
  await run.stderrMatches(/\[1\/8\]/);
  process.kill(workerOf(run.child.pid!), "SIGKILL");
  endsInOneLine(await run.done, 2, /^ssvq compress: the worker was killed \(SIGKILL\) during quantize$/);
  assert.deepEqual(listing(dir), ["slow.onnx"]);
});

test("Ctrl-C on a sweep (SIGINT to the CLI and its worker, as a terminal sends it): exit 130, nothing written", async () => {
  const dir = folder();
  const run = startSsvq(["sweep", lenet, ...data, ...outputs(dir)], { detached: true });
  await run.stderrMatches(/stage: search ssvq/);
  process.kill(-run.child.pid!, "SIGINT");
  endsInOneLine(await run.done, 130, /^ssvq sweep: cancelled$/);
  assert.deepEqual(listing(dir), []);
});

test("a model that crashes onnxruntime in a sweep is one clean line, exit 2, and the CLI survives it", () => {
  const dir = folder();
  // A Max with an empty second input: onnxruntime crashes on it (it killed `ssvq sweep` itself, exit 139).
  const m = maxWithEmptyInput();
  const path = join(dir, "max.onnx");
  writeFileSync(path, encodeModel(m));
  const samples = join(dir, "x.npy");
  writeFileSync(samples, writeNpy({ elemType: "float32", shape: [16, 64], data: Float32Array.from({ length: 16 * 64 }, (_, i) => Math.sin(i)) }));
  const before = listing(dir);
  const r = ssvq(["sweep", path, "--calib", samples, "--eval", samples, "--targets", "4", ...outputs(dir)], { timeout: 120_000 });
  endsInOneLine(r, 2, /^ssvq sweep: onnxruntime (could not run this model|cannot (load|run))/);
  assert.deepEqual(listing(dir), before);
});

test("writeAll writes every file or none: a second file that cannot be written takes the first with it", () => {
  const dir = folder();
  assert.throws(
    () =>
      writeAll([
        { path: join(dir, "a.json"), data: "{}\n" },
        { path: join(dir, "missing", "b.svg"), data: "<svg/>" },
      ]),
    /cannot write .*b\.svg/,
  );
  assert.deepEqual(listing(dir), []);
  assert.throws(() => writeAll([{ path: join(dir, "a.json"), data: "{}\n" }], () => {
    throw new Error("cancelled before the rename");
  }), /cancelled before the rename/);
  assert.deepEqual(listing(dir), []);
  writeAll([{ path: join(dir, "a.json"), data: "{}\n" }, { path: join(dir, "b.svg"), data: "<svg/>" }]);
  assert.deepEqual(listing(dir), ["a.json", "b.svg"]);
});

test("sweep refuses an output folder that does not exist before any work starts", () => {
  const dir = folder();
  const r = ssvq(["sweep", lenet, ...data, "--out", join(dir, "no", "sweep.json")]);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trimEnd(), `ssvq sweep: the output folder ${join(dir, "no")} does not exist`);
});
