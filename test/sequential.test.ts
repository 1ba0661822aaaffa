/**
 * The sequential variant of fine-tuning: H_qq / H_fq / H_ff captured from a compressed-prefix model and
 * the original one, checked against captureActivations (identical models) and against straightforward
 * references computed here from activations fetched with onnxruntime (a perturbed prefix); the effective
 * target W' and the sequential output error against direct computations; fine-tuning against W' lowers
 * the sequential error; damping of singular statistics.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as ort from "onnxruntime-node";
import { isCancelledError, isInputError } from "../src/core/errors.js";
import type { Batch, Feed } from "../src/core/calib/source.js";
import {
  sequentialLoss,
  sequentialOutputError,
  sequentialTarget,
  splitStacked,
  stackedSampler,
  type SequentialStatistic,
} from "../src/core/calib/sequential.js";
import { compressModel } from "../src/core/compress.js";
import { decodeModel, encodeModel, type ModelProto } from "../src/core/onnx/proto.js";
import { tensorToFloat32 } from "../src/core/onnx/tensor-data.js";
import { findWeights, type WeightInfo } from "../src/core/onnx/weights.js";
import { relativeOutputError } from "../src/core/ssvq/objective.js";
import { finetuneLayer } from "../src/core/ssvq/finetune.js";
import { toRows } from "../src/core/ssvq/layout.js";
import { quantizeRows, reconstructRows, type VqQuantized } from "../src/core/ssvq/quantize.js";
import { Rng } from "../src/core/rng.js";
import { captureActivations, OrtGram, withOutputs, type CaptureData } from "../src/io/capture.js";
import { captureSequential, type SequentialLayerCapture } from "../src/io/capture-sequential.js";
import { floatTensor, graph, model, node, randomTensor, randomValues, smallCnn, valueInfo } from "./helpers/models.js";

// ---------------------------------------------------------------------------------------------------
// Helpers

function manualData(batches: Record<string, Feed>[]): CaptureData {
  let next = 0;
  const withIdx: Batch[] = batches.map((feeds) => {
    const n = Object.values(feeds)[0]!.dims[0] ?? 1;
    return { indices: Array.from({ length: n }, () => next++), feeds };
  });
  return {
    info: { indices: withIdx.flatMap((b) => b.indices) },
    async *batches() {
      yield* withIdx;
    },
  };
}

const f32 = (dims: number[], rng: Rng, offset = 0): Feed => {
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.normal() + offset;
  return { type: "float32", data, dims };
};

/** max |a - b| <= rel * max |b| (and no NaN). */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const e = Math.abs(actual[i]! - expected[i]!);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  assert.ok(worst <= rel * Math.max(scale, 1e-30), `${what}: max difference ${worst} at ${at} (scale ${scale})`);
}

const closeTo = (a: number, b: number, rel: number, what: string) =>
  assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(b), 1e-300), `${what}: ${a} vs ${b}`);

const weightRows = (w: WeightInfo): Float32Array => toRows(tensorToFloat32(w.tensor), w.layout);

const statOf = (l: SequentialLayerCapture): SequentialStatistic => ({ hqq: l.Hqq, hfq: l.Hfq, hff: l.Hff, groups: l.groups, cols: l.cols });

/** Sample vectors of a layer input, one Float64Array [n, cols] (sample-major) per group. */
interface Samples {
  groups: number;
  cols: number;
  n: number;
  x: Float64Array[];
}

/** im2col of a 2-D Conv input [N, C, H, W], straight from the ONNX definition (explicit pads). */
function convPatches(x: ArrayLike<number>, dims: number[], k: [number, number], pads: number[], strides: [number, number], group: number): Samples {
  const [N, C, H, W] = dims as [number, number, number, number];
  const OH = Math.floor((H + pads[0]! + pads[2]! - k[0]) / strides[0]) + 1;
  const OW = Math.floor((W + pads[1]! + pads[3]! - k[1]) / strides[1]) + 1;
  const cg = C / group;
  const cols = cg * k[0] * k[1];
  const n = N * OH * OW;
  const out = Array.from({ length: group }, () => new Float64Array(n * cols));
  let s = 0;
  for (let b = 0; b < N; b++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++, s++)
        for (let g = 0; g < group; g++)
          for (let c = 0; c < cg; c++)
            for (let kh = 0; kh < k[0]; kh++)
              for (let kw = 0; kw < k[1]; kw++) {
                const ih = oh * strides[0] - pads[0]! + kh;
                const iw = ow * strides[1] - pads[1]! + kw;
                const inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
                out[g]![s * cols + (c * k[0] + kh) * k[1] + kw] = inside ? x[((b * C + g * cg + c) * H + ih) * W + iw]! : 0;
              }
  return { groups: group, cols, n, x: out };
}

function rowSamples(x: ArrayLike<number>, M: number, K: number): Samples {
  return { groups: 1, cols: K, n: M, x: [Float64Array.from({ length: M * K }, (_, i) => x[i]!)] };
}

function concatSamples(parts: Samples[]): Samples {
  const { groups, cols } = parts[0]!;
  const n = parts.reduce((a, p) => a + p.n, 0);
  const x = Array.from({ length: groups }, (_, g) => {
    const out = new Float64Array(n * cols);
    let o = 0;
    for (const p of parts) {
      out.set(p.x[g]!, o);
      o += p.x[g]!.length;
    }
    return out;
  });
  return { groups, cols, n, x };
}

/** A B^T / n per group: the reference statistic of two sample sets. */
function refStat(a: Samples, b: Samples): Float64Array {
  const { groups, cols, n } = a;
  const out = new Float64Array(groups * cols * cols);
  for (let g = 0; g < groups; g++)
    for (let s = 0; s < n; s++)
      for (let i = 0; i < cols; i++) {
        const ai = a.x[g]![s * cols + i]!;
        for (let j = 0; j < cols; j++) out[g * cols * cols + i * cols + j]! += ai * b.x[g]![s * cols + j]!;
      }
  for (let i = 0; i < out.length; i++) out[i]! /= n;
  return out;
}

/** ||W_hat X_q - W X_fp|| / ||W X_fp|| computed output by output. */
function directError(wHat: ArrayLike<number>, w: ArrayLike<number>, rows: number, xq: Samples, xfp: Samples): number {
  const { groups, cols, n } = xq;
  const per = rows / groups;
  let num = 0;
  let den = 0;
  for (let r = 0; r < rows; r++) {
    const g = Math.floor(r / per);
    for (let s = 0; s < n; s++) {
      let yq = 0;
      let yf = 0;
      for (let i = 0; i < cols; i++) {
        yq += wHat[r * cols + i]! * xq.x[g]![s * cols + i]!;
        yf += w[r * cols + i]! * xfp.x[g]![s * cols + i]!;
      }
      num += (yq - yf) ** 2;
      den += yf * yf;
    }
  }
  return Math.sqrt(num / den);
}

/** tr((W_hat - T) R^T) with R = T H_qq - W H_fq, per group. */
function residualTerm(wHat: ArrayLike<number>, t: ArrayLike<number>, w: ArrayLike<number>, rows: number, s: SequentialStatistic): number {
  const { cols, groups } = s;
  const per = rows / groups;
  let sum = 0;
  for (let r = 0; r < rows; r++) {
    const off = Math.floor(r / per) * cols * cols;
    for (let i = 0; i < cols; i++) {
      let ri = 0;
      for (let j = 0; j < cols; j++) ri += t[r * cols + j]! * s.hqq[off + j * cols + i]! - w[r * cols + j]! * s.hfq[off + j * cols + i]!;
      sum += (wHat[r * cols + i]! - t[r * cols + i]!) * ri;
    }
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------------
// The two-layer (plus a classifier) model: Conv -> Relu -> grouped strided Conv -> Relu -> Flatten -> Gemm.

const W1 = randomValues(4 * 2 * 3 * 3, 21, 0.3);
const W2 = randomValues(6 * 2 * 3 * 3, 22, 0.3);
const W3 = randomValues(16 * 54, 23, 0.2);

function seqModel(w1: Float32Array, w2: Float32Array, w3: Float32Array): ModelProto {
  return model(
    graph({
      nodes: [
        node("Conv", ["x", "w1", "b1"], ["y1"], { pads: [1, 1, 1, 1] }, "conv1"),
        node("Relu", ["y1"], ["r1"]),
        node("Conv", ["r1", "w2"], ["y2"], { group: 2, strides: [2, 2], pads: [1, 1, 1, 1] }, "conv2"),
        node("Relu", ["y2"], ["r2"]),
        node("Flatten", ["r2"], ["f"], { axis: 1 }),
        node("Gemm", ["f", "w3"], ["z"], { transB: 1 }, "fc"),
      ],
      inputs: [valueInfo("x", ["n", 2, 6, 6])],
      outputs: [valueInfo("z", ["n", 16])],
      initializers: [
        floatTensor("w1", [4, 2, 3, 3], w1),
        randomTensor("b1", [4], 24),
        floatTensor("w2", [6, 2, 3, 3], w2),
        floatTensor("w3", [16, 54], w3),
      ],
    }),
  );
}

const perturb = (w: Float32Array, seed: number, scale: number): Float32Array => {
  const noise = randomValues(w.length, seed, scale);
  return w.map((v, i) => v + noise[i]!);
};

const original = seqModel(W1, W2, W3);
// The "compressed prefix": the first two layers' weights changed (as a quantization would), w3 kept.
const prefix = seqModel(perturb(W1, 31, 0.12), perturb(W2, 32, 0.12), W3);
const rngData = new Rng(7);
const feeds = [20, 15, 25].map((n) => ({ x: f32([n, 2, 6, 6], rngData, 0.2) }));

/** Each layer's input samples in a model, from activations fetched with onnxruntime. */
async function layerSamples(m: ModelProto): Promise<Record<string, Samples>> {
  const session = await ort.InferenceSession.create(encodeModel(withOutputs(m, ["r1", "f"])), { intraOpNumThreads: 1 });
  try {
    const parts: Record<string, Samples[]> = { w1: [], w2: [], w3: [] };
    for (const b of feeds) {
      const x = b.x;
      const out = await session.run({ x: new ort.Tensor("float32", x.data as Float32Array, x.dims) });
      const r1 = out["r1"]!;
      const f = out["f"]!;
      parts.w1!.push(convPatches(x.data as Float32Array, x.dims, [3, 3], [1, 1, 1, 1], [1, 1], 1));
      parts.w2!.push(convPatches(r1.data as Float32Array, r1.dims.map(Number), [3, 3], [1, 1, 1, 1], [2, 2], 2));
      parts.w3!.push(rowSamples(f.data as Float32Array, Number(f.dims[0]), Number(f.dims[1])));
    }
    return Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, concatSamples(v)]));
  } finally {
    await session.release();
  }
}

let refsPromise: Promise<{ fp: Record<string, Samples>; q: Record<string, Samples> }> | undefined;
const refs = () => (refsPromise ??= Promise.all([layerSamples(original), layerSamples(prefix)]).then(([fp, q]) => ({ fp, q })));

const weightsOf = (m: ModelProto) => findWeights(m).weights;
const byName = (m: ModelProto, name: string) => weightsOf(m).find((w) => w.name === name)!;

// ---------------------------------------------------------------------------------------------------

describe("compressed prefix identical to the original", () => {
  const m = smallCnn({ seed: 5 });
  const rng = new Rng(9);
  const batches = [2, 3].map((n) => ({ x: f32([n, 3, 8, 8], rng) }));

  for (const gram of ["js", "ort"] as const)
    test(`H_qq = H_fq = H_ff = captureActivations' H and the target is W (${gram} engine)`, async () => {
      const weights = weightsOf(m);
      const plain = await captureActivations(m, weights, manualData(batches), { gram });
      // The prefix given as bytes in one run, as a decoded model in the other.
      const seq = await captureSequential(m, gram === "js" ? encodeModel(m) : m, weights, manualData(batches), { gram });
      assert.deepEqual(seq.uncalibrated, []);
      assert.deepEqual([...seq.layers.keys()], [...plain.layers.keys()]);
      assert.equal(seq.samples, 5);
      assert.equal(seq.batches, 2);
      assert.equal(seq.gram, gram);
      for (const w of weights) {
        const p = plain.layers.get(w.name)!;
        const s = seq.layers.get(w.name)!;
        assert.equal(s.H, s.Hqq, "H is H_qq");
        assert.equal(s.samples, p.samples);
        assert.deepEqual(s.consumers, p.consumers);
        assertClose(s.Hqq, p.H, 1e-9, `${w.name} H_qq`);
        assertClose(s.Hfq, p.H, 1e-9, `${w.name} H_fq`);
        assertClose(s.Hff, p.H, 1e-9, `${w.name} H_ff`);
        closeTo(s.trace, p.trace, 1e-9, `${w.name} trace`);
        closeTo(s.traceFf, p.trace, 1e-9, `${w.name} traceFf`);
        closeTo(s.meanSquare, p.meanSquare, 1e-12, `${w.name} meanSquare`);
        const W = weightRows(w);
        const rows = w.layout.rows;
        const t = sequentialTarget(W, rows, s.cols, s.groups, s.Hqq, s.Hfq, { hff: s.Hff });
        if (gram === "js") assert.deepEqual(t.target, W, `${w.name}: W' = W exactly (the statistics agree bit for bit)`);
        else assertClose(t.target, W, 1e-6, `${w.name} W'`);
        assert.equal(t.damping, 1e-6);
        assert.equal(t.retries, 0);
        assert.ok(Math.abs(t.constant!) <= 1e-6 * t.reference!, `${w.name}: constant ${t.constant} ~ 0`);
        // The sequential error is then the ordinary relative output error.
        const wHat = perturb(W, 40, 0.01);
        closeTo(sequentialOutputError(wHat, W, rows, statOf(s)), relativeOutputError(W, wHat, rows, { H: p.H, groups: p.groups, cols: p.cols }), 1e-6, w.name);
      }
    });
});

describe("perturbed prefix on a two-layer model", () => {
  for (const gram of ["js", "ort"] as const)
    test(`H_qq, H_fq and H_ff equal the reference from onnxruntime's activations (${gram} engine)`, async () => {
      const r = await captureSequential(original, prefix, weightsOf(original), manualData(feeds), {
        gram: gram === "ort" ? new OrtGram(16, 1) : "js",
      });
      assert.deepEqual(r.uncalibrated, []);
      const { fp, q } = await refs();
      for (const name of ["w1", "w2", "w3"]) {
        const l = r.layers.get(name)!;
        assert.equal(l.groups, fp[name]!.groups, `${name} groups`);
        assert.equal(l.cols, fp[name]!.cols, `${name} cols`);
        assert.equal(l.samples, fp[name]!.n, `${name} samples`);
        assertClose(l.Hqq, refStat(q[name]!, q[name]!), 1e-9, `${name} H_qq`);
        assertClose(l.Hfq, refStat(fp[name]!, q[name]!), 1e-9, `${name} H_fq`);
        assertClose(l.Hff, refStat(fp[name]!, fp[name]!), 1e-9, `${name} H_ff`);
      }
      // The first layer reads the graph input: the same in both models.
      const l1 = r.layers.get("w1")!;
      if (gram === "js") {
        assert.deepEqual(l1.Hfq, l1.Hqq);
        assert.deepEqual(sequentialTarget(weightRows(byName(original, "w1")), 4, 18, 1, l1.Hqq, l1.Hfq).target, weightRows(byName(original, "w1")));
      }
      // Later layers do see different inputs.
      const l2 = r.layers.get("w2")!;
      let diff = 0;
      for (let i = 0; i < l2.Hqq.length; i++) diff = Math.max(diff, Math.abs(l2.Hqq[i]! - l2.Hff[i]!));
      assert.ok(diff > 1e-3, "the perturbation reaches layer 2's input");
    });

  test("the sequential output error equals ||W_hat X_q - W X_fp|| / ||W X_fp|| from the activations", async () => {
    const r = await captureSequential(original, prefix, weightsOf(original), manualData(feeds), { gram: "js" });
    const { fp, q } = await refs();
    for (const name of ["w2", "w3"]) {
      const w = byName(original, name);
      const l = r.layers.get(name)!;
      const W = weightRows(w);
      const rows = w.layout.rows;
      const stat = statOf(l);
      const t = sequentialTarget(W, rows, l.cols, l.groups, l.Hqq, l.Hfq, { hff: l.Hff });
      const quant = reconstructRows(await quantizeRows(W, rows, l.cols, { mode: "ssvq", k: 8, d: 2, seed: 1, kmeansIters: 20 }));
      for (const [what, wHat] of [["W", W], ["quantized", quant], ["target", t.target], ["noise", perturb(W, 50, 0.05)]] as const) {
        // Compared as losses relative to the reference, down to float64 rounding of the statistics.
        const direct = directError(wHat, W, rows, q[name]!, fp[name]!);
        const e = sequentialOutputError(wHat, W, rows, stat);
        assert.ok(Math.abs(e * e - direct * direct) <= 1e-7 * direct * direct + 1e-13, `${name} ${what}: ${e} vs ${direct}`);
      }
      const loss = sequentialLoss(t.target, W, rows, stat);
      closeTo(loss.reference, t.reference!, 1e-12, `${name} reference`);
      closeTo(loss.loss, t.constant!, 1e-4, `${name}: the target's loss is the constant`);
      // W' is the best any weights can do on X_q: better than W, better than the quantization.
      const errW = sequentialOutputError(W, W, rows, stat);
      assert.ok(errW > 0.02, `${name}: keeping W costs ${errW}`);
      assert.ok(loss.relativeError < errW, `${name}: W' ${loss.relativeError} < W ${errW}`);
      assert.ok(loss.relativeError < sequentialOutputError(quant, W, rows, stat));
    }
  });

  test("fine-tuning against W' with h = H_qq lowers the sequential error", async () => {
    const r = await captureSequential(original, prefix, weightsOf(original), manualData(feeds), { gram: "js" });
    for (const name of ["w2", "w3"]) {
      const w = byName(original, name);
      const l = r.layers.get(name)!;
      const W = weightRows(w);
      const rows = w.layout.rows;
      const stat = statOf(l);
      const q = (await quantizeRows(W, rows, l.cols, { mode: "ssvq", k: 8, d: 2, seed: 3, kmeansIters: 20 })) as VqQuantized;
      const before = sequentialOutputError(reconstructRows(q), W, rows, stat);
      const t = sequentialTarget(W, rows, l.cols, l.groups, l.Hqq, l.Hfq, { hff: l.Hff });
      const seq = finetuneLayer({ w: t.target, h: l.Hqq, groups: l.groups, quantized: q }, { iters: 300 });
      const after = sequentialOutputError(seq.reconstructed, W, rows, stat);
      assert.ok(after < 0.9 * before, `${name}: sequential error ${before} -> ${after}`);
      // The fine-tuning loss plus the constant is the sequential loss, up to 2 tr((W_hat - W') R^T) with
      // R = W' H_qq - W H_fq (the damping's and the float32 rounding's residual).
      const loss = sequentialLoss(seq.reconstructed, W, rows, stat);
      const linear = 2 * residualTerm(seq.reconstructed, t.target, W, rows, stat);
      const gap = seq.stats.lossAfter + t.constant! + linear - loss.loss;
      assert.ok(Math.abs(gap) <= 1e-7 * loss.reference, `${name}: loss decomposition off by ${gap} (linear term ${linear})`);
      // And it beats fine-tuning each layer against its own output on the original inputs.
      const plain = finetuneLayer({ w: W, h: l.Hff, groups: l.groups, quantized: q }, { iters: 300 });
      const plainErr = sequentialOutputError(plain.reconstructed, W, rows, stat);
      assert.ok(after < plainErr, `${name}: sequential ${after} < per-layer ${plainErr}`);
    }
  });

  test("splitting into passes gives the same statistics; progress reaches 1", async () => {
    const one = await captureSequential(original, prefix, weightsOf(original), manualData(feeds), { gram: "js" });
    const fractions: number[] = [];
    const many = await captureSequential(original, prefix, weightsOf(original), manualData(feeds), {
      gram: "js",
      maxActivationBytes: 1,
      onProgress: (p) => fractions.push(p.fraction!),
    });
    assert.equal(one.passes, 1);
    assert.equal(many.passes, 2, "r1 and f are exposed (x is fed)");
    assert.equal(many.samples, 60);
    for (const [name, l] of one.layers) {
      const m = many.layers.get(name)!;
      assertClose(m.Hqq, l.Hqq, 1e-14, `${name} H_qq`);
      assertClose(m.Hfq, l.Hfq, 1e-14, `${name} H_fq`);
      assertClose(m.Hff, l.Hff, 1e-14, `${name} H_ff`);
    }
    assert.equal(fractions.at(-1), 1);
    assert.deepEqual([...fractions].sort((a, b) => a - b), fractions);
  });

  test("an aborted signal cancels before and during capture; the models are not modified", async () => {
    const before = [encodeModel(original), encodeModel(prefix)];
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(captureSequential(original, prefix, weightsOf(original), manualData(feeds), { signal: ac.signal }), isCancelledError);
    const ac2 = new AbortController();
    await assert.rejects(
      captureSequential(original, prefix, weightsOf(original), manualData(feeds), { signal: ac2.signal, onProgress: () => ac2.abort() }),
      isCancelledError,
    );
    assert.deepEqual([encodeModel(original), encodeModel(prefix)], before);
  });

  test("a layer whose input the compressed model lacks, or has another shape there, is uncalibrated", async () => {
    // The prefix computes r1 under another name: w2 (reads r1) cannot be matched; w3 still can.
    const renamed = seqModel(W1, W2, W3);
    const g = renamed.graph!;
    g.node[1]!.output[0] = "relu1";
    g.node[2]!.input[0] = "relu1";
    const r = await captureSequential(original, renamed, weightsOf(original), manualData(feeds), { gram: "js" });
    assert.deepEqual([...r.layers.keys()], ["w1", "w3"]);
    assert.equal(r.uncalibrated.length, 1);
    assert.equal(r.uncalibrated[0]!.name, "w2");
    assert.match(r.uncalibrated[0]!.reason, /the compressed model has no value "r1".*conv2/);

    // A prefix whose first conv has no padding: r1 is 4x4, not 6x6.
    // (Its second conv pads by 2, so the rest of the model still fits.)
    const narrow = seqModel(W1, W2, W3);
    narrow.graph!.node[0]!.attribute = [];
    narrow.graph!.node[2]!.attribute = narrow.graph!.node[2]!.attribute.map((a) => (a.name === "pads" ? { ...a, ints: [2n, 2n, 2n, 2n] } : a));
    const r2 = await captureSequential(original, narrow, weightsOf(original), manualData(feeds), { gram: "js" });
    assert.deepEqual([...r2.layers.keys()], ["w1", "w3"], "w3's input has the same shape in both");
    assert.match(r2.uncalibrated.find((u) => u.name === "w2")!.reason, /shape \[20, 4, 6, 6\].*but \[20, 4, 4, 4\]/);
  });
});

test("a prefix written by compressModel, with decode subgraphs or dense weights: H_qq is the compressed model's own H", async () => {
  const m = smallCnn({ seed: 8 });
  const bytes = encodeModel(m);
  const weights = weightsOf(m);
  const rng = new Rng(10);
  const batches = [3, 2].map((n) => ({ x: f32([n, 3, 8, 8], rng) }));
  const config = { mode: "ssvq", k: 8, d: 4, seed: 0, kmeansIters: 10, minWeights: 1, finetune: false } as const;
  const dense = (await compressModel({ bytes, path: "small" }, { config: { ...config, format: "dense" } })).model;
  const ssvq = (await compressModel({ bytes, path: "small" }, { config: { ...config, format: "ssvq" } })).model;
  const a = await captureSequential(m, dense, weights, manualData(batches), { gram: "js" });
  const b = await captureSequential(m, ssvq, weights, manualData(batches), { gram: "js" });
  const denseModel = decodeModel(dense);
  const own = await captureActivations(denseModel, findWeights(denseModel).weights, manualData(batches), { gram: "js" });
  const plain = await captureActivations(m, weights, manualData(batches), { gram: "js" });
  assert.deepEqual(a.uncalibrated, []);
  assert.deepEqual(b.uncalibrated, []);
  for (const w of weights) {
    const la = a.layers.get(w.name)!;
    const lb = b.layers.get(w.name)!;
    assertClose(lb.Hqq, la.Hqq, 1e-6, `${w.name}: decode subgraphs vs dense`);
    assertClose(lb.Hfq, la.Hfq, 1e-6, `${w.name}: decode subgraphs vs dense (H_fq)`);
    assertClose(la.Hqq, own.layers.get(w.name)!.H, 1e-9, `${w.name}: H_qq`);
    assertClose(la.Hff, plain.layers.get(w.name)!.H, 1e-9, `${w.name}: H_ff`);
  }
  // The first layer reads the graph input; later layers see the compressed prefix.
  assert.deepEqual(a.layers.get("w1")!.Hqq, a.layers.get("w1")!.Hff);
  assert.notDeepEqual(a.layers.get("w2")!.Hqq, a.layers.get("w2")!.Hff);
});

test("weights read inside an If body are uncalibrated, as in captureActivations", async () => {
  const thenBranch = graph({
    name: "then",
    nodes: [node("Conv", ["y1", "w2"], ["t"], {}, "conv_in_then")],
    inputs: [],
    outputs: [valueInfo("t", ["n", 4, 4, 4])],
  });
  const elseBranch = graph({ name: "else", nodes: [node("Relu", ["y1"], ["e"])], inputs: [], outputs: [valueInfo("e", ["n", 4, 4, 4])] });
  const build = (seed: number) =>
    model(
      graph({
        nodes: [
          node("Conv", ["x", "w1"], ["y1"], {}, "conv_main"),
          node("If", ["cond"], ["y"], { then_branch: thenBranch, else_branch: elseBranch }, "if"),
          node("Flatten", ["y"], ["f"]),
          node("Gemm", ["f", "w3"], ["z"], { transB: 1 }, "fc"),
        ],
        inputs: [valueInfo("x", ["n", 3, 6, 6]), valueInfo("cond", [], 9 /* BOOL */)],
        outputs: [valueInfo("z", ["n", 5])],
        initializers: [randomTensor("w1", [4, 3, 3, 3], seed), randomTensor("w2", [4, 4, 1, 1], 2), randomTensor("w3", [5, 64], 3)],
      }),
    );
  const m = build(1);
  const rng = new Rng(2);
  const data = manualData([1, 2].map((n) => ({ x: f32([n, 3, 6, 6], rng), cond: { type: "bool", data: new Uint8Array([1]), dims: [] } as Feed })));
  const r = await captureSequential(m, build(5), weightsOf(m), data);
  assert.deepEqual([...r.layers.keys()].sort(), ["w1", "w3"]);
  assert.equal(r.uncalibrated.length, 1);
  assert.equal(r.uncalibrated[0]!.name, "w2");
  assert.match(r.uncalibrated[0]!.reason, /inside if\.then_branch.*If\/Loop\/Scan/);
  assert.equal(r.layers.get("w3")!.samples, 3);
});

// ---------------------------------------------------------------------------------------------------
// The pure part

/** Statistics of sample sets given feature-major as [cols][n] arrays. */
function statsFrom(xq: number[][], xfp: number[][]): { hqq: Float64Array; hfq: Float64Array; hff: Float64Array } {
  const c = xq.length;
  const n = xq[0]!.length;
  const mk = (a: number[][], b: number[][]) => {
    const h = new Float64Array(c * c);
    for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) for (let s = 0; s < n; s++) h[i * c + j]! += (a[i]![s]! * b[j]![s]!) / n;
    return h;
  };
  return { hqq: mk(xq, xq), hfq: mk(xfp, xq), hff: mk(xfp, xfp) };
}

describe("sequentialTarget", () => {
  test("a rank-deficient H_qq (dead, constant and duplicated input channels) is damped: no NaN, W' the best on X_q", () => {
    const rng = new Rng(12);
    const n = 40;
    const c = 6;
    const rows = 5;
    const xq: number[][] = [];
    xq.push(new Array(n).fill(0)); // dead channel
    xq.push(new Array(n).fill(1)); // constant channel
    const dup = Array.from({ length: n }, () => rng.normal());
    xq.push(dup, [...dup]); // duplicated channel
    for (let i = 4; i < c; i++) xq.push(Array.from({ length: n }, () => rng.normal()));
    // The original input: the same plus noise, and a live channel 0.
    const xfp = xq.map((row, i) => row.map((v) => v + (i === 0 ? 0.5 : 0.2) * rng.normal()));
    const { hqq, hfq, hff } = statsFrom(xq, xfp);
    const W = Float32Array.from({ length: rows * c }, () => rng.normal());
    const t = sequentialTarget(W, rows, c, 1, hqq, hfq, { hff });
    assert.ok(t.target.every(Number.isFinite), "finite");
    assert.ok(t.damping >= 1e-6);
    assert.ok(t.lambdas[0]! > 0);
    for (let r = 0; r < rows; r++) assert.equal(t.target[r * c], W[r * c], "a dead input keeps its weights");
    // Duplicated channels get the same change (the ridge splits it evenly).
    for (let r = 0; r < rows; r++) closeTo(t.target[r * c + 2]! - W[r * c + 2]!, t.target[r * c + 3]! - W[r * c + 3]!, 1e-4, `row ${r}`);
    const stat = { hqq, hfq, hff, groups: 1, cols: c };
    const lossT = sequentialLoss(t.target, W, rows, stat).loss;
    const lossW = sequentialLoss(W, W, rows, stat).loss;
    assert.ok(lossT < lossW, `W' ${lossT} < W ${lossW}`);
    closeTo(lossT, t.constant!, 1e-4, "the loss of W' is the constant");
    // Direct output check.
    let direct = 0;
    for (let r = 0; r < rows; r++)
      for (let s = 0; s < n; s++) {
        let y = 0;
        for (let i = 0; i < c; i++) y += t.target[r * c + i]! * xq[i]![s]! - W[r * c + i]! * xfp[i]![s]!;
        direct += (y * y) / n;
      }
    closeTo(lossT, direct, 1e-9, "loss from statistics vs outputs");
    // Fine-tuning on it stays finite.
    const q = quantizeRows(W, rows, c, { mode: "ssvq", k: 4, d: 2, seed: 1, kmeansIters: 10 });
    return q.then((qz) => {
      const f = finetuneLayer({ w: t.target, h: hqq, groups: 1, quantized: qz as VqQuantized }, { iters: 50 });
      assert.ok(f.reconstructed.every(Number.isFinite));
      assert.ok(Number.isFinite(sequentialOutputError(f.reconstructed, W, rows, stat)));
    });
  });

  test("W' solves W' (H_qq + lambda I) = W (H_fq + lambda I) per group, for any block size", () => {
    const rng = new Rng(15);
    for (const [rows, c, groups] of [[1, 1, 1], [3, 5, 1], [4, 9, 2], [7, 4, 1], [17, 33, 1], [18, 6, 3]] as const) {
      const n = c + 3;
      const hqq = new Float64Array(groups * c * c);
      const hfq = new Float64Array(groups * c * c);
      for (let g = 0; g < groups; g++) {
        const xq = Array.from({ length: c }, () => Array.from({ length: n }, () => rng.normal()));
        const xfp = xq.map((row) => row.map((v) => v + 0.3 * rng.normal()));
        const st = statsFrom(xq, xfp);
        hqq.set(st.hqq, g * c * c);
        hfq.set(st.hfq, g * c * c);
      }
      const W = Float32Array.from({ length: rows * c }, () => rng.normal());
      const t = sequentialTarget(W, rows, c, groups, hqq, hfq);
      const per = rows / groups;
      let worst = 0;
      let scale = 0;
      for (let r = 0; r < rows; r++) {
        const g = Math.floor(r / per);
        const lambda = t.lambdas[g]!;
        for (let i = 0; i < c; i++) {
          let lhs = lambda * t.target[r * c + i]!;
          let rhs = lambda * W[r * c + i]!;
          for (let j = 0; j < c; j++) {
            lhs += t.target[r * c + j]! * hqq[g * c * c + j * c + i]!;
            rhs += W[r * c + j]! * hfq[g * c * c + j * c + i]!;
          }
          worst = Math.max(worst, Math.abs(lhs - rhs));
          scale = Math.max(scale, Math.abs(rhs));
        }
      }
      assert.ok(worst <= 1e-5 * scale, `rows ${rows} cols ${c} groups ${groups}: residual ${worst} (scale ${scale})`);
    }
  });

  test("a group whose input is always zero keeps W; groups are solved apart", () => {
    const rng = new Rng(13);
    const c = 3;
    const n = 20;
    const xq = [0, 1, 2].map(() => Array.from({ length: n }, () => rng.normal()));
    const xfp = xq.map((row) => row.map((v) => 1.1 * v + 0.1 * rng.normal()));
    const s = statsFrom(xq, xfp);
    // Group 0 from the samples, group 1 all zero.
    const two = (h: Float64Array) => {
      const out = new Float64Array(2 * c * c);
      out.set(h, 0);
      return out;
    };
    const W = Float32Array.from({ length: 4 * c }, () => rng.normal());
    const t = sequentialTarget(W, 4, c, 2, two(s.hqq), two(s.hfq), { hff: two(s.hff) });
    assert.deepEqual(Array.from(t.target.subarray(2 * c)), Array.from(W.subarray(2 * c)), "the zero group keeps W");
    assert.equal(t.lambdas[1], 0);
    const alone = sequentialTarget(W.subarray(0, 2 * c), 2, c, 1, s.hqq, s.hfq);
    assert.deepEqual(Array.from(t.target.subarray(0, 2 * c)), Array.from(alone.target), "group 0 as if alone");
    // With X_fp = 1.1 X_q (up to noise) W' is about 1.1 W.
    let d2 = 0;
    let w2 = 0;
    for (let i = 0; i < 2 * c; i++) {
      d2 += (t.target[i]! - 1.1 * W[i]!) ** 2;
      w2 += W[i]! ** 2;
    }
    assert.ok(Math.sqrt(d2 / w2) < 0.1, `||W' - 1.1 W|| / ||W|| = ${Math.sqrt(d2 / w2)}`);
  });

  test("the damping grows tenfold until the factorisation succeeds, and gives up with an InputError", () => {
    // diag(1, 1, 1, -2e-5): indefinite, but within reach of the damping (mean diagonal 0.75).
    const c = 4;
    const h = new Float64Array(c * c);
    [1, 1, 1, -2e-5].forEach((v, i) => (h[i * c + i] = v));
    const W = Float32Array.from([0.5, -0.25, 1, 2]);
    const t = sequentialTarget(W, 1, c, 1, h, h);
    assert.ok(Math.abs(t.damping - 1e-4) < 1e-12, `damping ${t.damping}`);
    assert.equal(t.retries, 2);
    assert.deepEqual(t.target, W, "H_fq = H_qq: W' = W");
    const hfq = h.map((v) => v * 0.9);
    assert.ok(sequentialTarget(W, 1, c, 1, h, hfq).target.every(Number.isFinite));
    assert.throws(() => sequentialTarget(W, 1, c, 1, h, hfq, { maxRetries: 1 }), (e) => isInputError(e) && /not positive definite/.test((e as Error).message));
    const bad = new Float64Array(c * c);
    bad[0] = -1;
    assert.throws(() => sequentialTarget(W, 1, c, 1, bad, hfq), isInputError);
  });

  test("mismatched sizes and non-finite statistics are InputErrors", () => {
    const h = new Float64Array(9).fill(0);
    h[0] = h[4] = h[8] = 1;
    const W = new Float32Array(6);
    assert.throws(() => sequentialTarget(W, 2, 3, 1, h, h.subarray(0, 8)), isInputError);
    assert.throws(() => sequentialTarget(W, 3, 2, 2, h, h), isInputError);
    assert.throws(() => sequentialTarget(W.subarray(0, 5), 2, 3, 1, h, h), isInputError);
    const nan = h.slice();
    nan[1] = NaN;
    assert.throws(() => sequentialTarget(W, 2, 3, 1, h, nan), isInputError);
    assert.throws(() => sequentialLoss(W, W, 2, { hqq: h, hfq: h, hff: h.subarray(1), groups: 1, cols: 3 }), isInputError);
  });

  test("stacked samplers and splitStacked give the blocks of [x_fp; x_q]", () => {
    const rng = new Rng(14);
    const c = 3;
    const n = 5;
    const a = Float64Array.from({ length: n * c }, () => rng.normal()); // [n, c] sample-major
    const b = Float64Array.from({ length: n * c }, () => rng.normal());
    const sampler = (x: Float64Array) => ({
      groups: 1,
      cols: c,
      samples: n,
      fill(_g: number, p0: number, p1: number, Xt: Float64Array) {
        for (let i = 0; i < c; i++) for (let p = p0; p < p1; p++) Xt[i * (p1 - p0) + p - p0] = x[p * c + i]!;
      },
    });
    const st = stackedSampler(sampler(a), sampler(b));
    assert.equal(st.cols, 2 * c);
    const Xt = new Float64Array(2 * c * n);
    st.fill(0, 0, n, Xt);
    const H = new Float64Array(4 * c * c);
    for (let i = 0; i < 2 * c; i++) for (let j = 0; j < 2 * c; j++) for (let s = 0; s < n; s++) H[i * 2 * c + j]! += Xt[i * n + s]! * Xt[j * n + s]!;
    const { hff, hfq, hqq } = splitStacked(H, 1, c);
    const ref = (x: Float64Array, y: Float64Array) => {
      const h = new Float64Array(c * c);
      for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) for (let s = 0; s < n; s++) h[i * c + j]! += x[s * c + i]! * y[s * c + j]!;
      return h;
    };
    assertClose(hff, ref(a, a), 1e-14, "ff");
    assertClose(hfq, ref(a, b), 1e-14, "fq");
    assertClose(hqq, ref(b, b), 1e-14, "qq");
    assert.throws(() => stackedSampler(sampler(a), { ...sampler(b), samples: n - 1 }), isInputError);
  });
});
