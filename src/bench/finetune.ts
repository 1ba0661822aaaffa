/**
 * `ssvq bench finetune`: the heavy product of fine-tuning, P = E H (E [m, k] float64, H
 * [k, k] symmetric), measured in one run: the plain triple loop and the blocked kernel of
 * `src/core/ssvq/gemm-kernels.ts`, the WebAssembly SIMD kernel of `gemm-wasm.ts` (what fine-tuning
 * uses), and onnxruntime-node's MatMul (a one-node model, E and H fed as inputs, intraOpNumThreads 1) in
 * float64 and float32; then a whole `finetuneLayer` at LeNet-5 f1 size (120 x 400, SSVQ k16 d4, 500
 * iterations, defaults) with each engine, on a synthetic layer with correlated post-ReLU activations.
 *
 * Data: seeded standard normal E; H = X X^T / n + 0.01 I from seeded normal X (k x 2k), so H is a real
 * symmetric positive-definite statistic. Sizes: 120 x 400 x 400 (LeNet-5 f1), 512 x 1152 x 1152 (a
 * 3x3x128 conv) and 512 x 2304 x 2304 (a 3x3x256 conv). Each kernel is run once to warm up, then
 * repeated until at least `minSeconds` have passed; GFLOP/s = 2 m k^2 / seconds per product. onnxruntime
 * is timed on `session.run` with tensors created beforehand (float32: the float64 -> float32 conversion
 * of E that fine-tuning would need is timed separately). Every result is checked against the blocked
 * kernel (relative 1e-9 in float64, 1e-4 in float32), or the benchmark throws. The whole-layer runs use
 * `finetuneLayer` (WebAssembly), the TypeScript engine, and `ortProductEngine` (below: H an initializer,
 * E converted and fed on every product) through `finetuneLayerWith`.
 *
 * The factor form (issue 11: the statistic kept as X [K, r] when r < K / 2, the product (E X) X^T / n, 4 m K
 * r flops): blocks of m rows as fine-tuning runs them, with the WebAssembly kernel, onnxruntime in float64
 * (`ortStatEngine`, what compression uses) and in float32 (the same graph: Gemm with transB, then MatMul,
 * X an initializer; checked to 1e-4).
 *
 * Figures, not pass/fail: the machines are shared. `npm run bench -- finetune` runs it.
 */
import * as ort from "onnxruntime-node";
import { matMulModel, ortProductEngine, ortStatEngine } from "../io/ort-product.js";
import { wasmStatEngine, type FactorStatistic } from "../core/ssvq/stat-product.js";
import { create } from "@bufbuild/protobuf";
import { valueInfo } from "../core/onnx/build.js";
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProtoSchema,
} from "../core/onnx/proto.js";
import { TensorProto_DataType } from "../core/onnx/proto.js";
import { Rng } from "../core/rng.js";
import { finetuneLayer, finetuneLayerWith, jsProduct } from "../core/ssvq/finetune.js";
import { DEFAULT_KC, symmMulBlocked, symmMulPlain } from "../core/ssvq/gemm-kernels.js";
import { wasmAvailable, WasmSymmMul } from "../core/ssvq/gemm-wasm.js";
import { quantizeRows, type VqQuantized } from "../core/ssvq/quantize.js";

export interface KernelFigure {
  kernel: string;
  m: number;
  k: number;
  /** Seconds per product (best of the repetitions' mean). */
  seconds: number;
  gflops: number;
  repetitions: number;
}

export interface FinetuneKernelBenchOptions {
  sizes?: Array<[m: number, k: number]>;
  /** Time per kernel and size, at least (default 1 s). */
  minSeconds?: number;
  /** Skip the plain loop above this many flops per product (default 6e9: it always runs on these sizes). */
  plainMaxFlops?: number;
  /** Iterations of the whole-layer run (default 500). */
  layerIters?: number;
  /** Factor-form sizes [m, K, r] (default: blocks of 64 and 128 rows of 9216 x 512, 64 of 4608 x 1024). */
  factorSizes?: Array<[m: number, k: number, r: number]>;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

export interface FactorFigure {
  kernel: string;
  /** Rows per block, reduction K, columns r of X. */
  m: number;
  k: number;
  r: number;
  seconds: number;
  gflops: number;
  repetitions: number;
}

export interface FinetuneKernelBenchResult {
  kernels: KernelFigure[];
  /** The factor form's product (E X) X^T / n per block of m rows. */
  factor: FactorFigure[];
  /** onnxruntime / the fastest pure kernel (TypeScript or WebAssembly), per size (GFLOP/s ratio). */
  ortSpeedup: Array<{ m: number; k: number; float32: number; float64: number }>;
  /** Seconds to convert E to float32 and P back, per product (what a float32 onnxruntime path adds). */
  conversionSeconds: Array<{ m: number; k: number; seconds: number }>;
  layer: {
    rows: number;
    cols: number;
    k: number;
    d: number;
    iters: number;
    /** The engine `finetuneLayer` used by default. */
    product: string;
    seconds: number;
    /** Seconds of it spent in the product (iters + 3 products at the fastest pure kernel's measured speed). */
    productSecondsEstimate: number;
    errorBefore: number;
    errorAfter: number;
    fixedSignsErrorAfter: number;
    /** The same run with the TypeScript kernel and with onnxruntime product engines (`ortProductEngine`). */
    withOrt: Array<{ engine: string; seconds: number; errorAfter: number }>;
  };
  defaultKc: number;
  node: string;
  ort: string;
}

const flops = (m: number, k: number): number => 2 * m * k * k;

function randomProblem(m: number, k: number, seed: number): { e: Float64Array; h: Float64Array } {
  const rng = new Rng(seed);
  const e = new Float64Array(m * k);
  for (let i = 0; i < e.length; i++) e[i] = rng.normal();
  const n = 2 * k;
  const x = new Float64Array(k * n);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  const h = new Float64Array(k * k);
  for (let i = 0; i < k; i++)
    for (let j = i; j < k; j++) {
      let s = 0;
      for (let t = 0; t < n; t++) s += x[i * n + t]! * x[j * n + t]!;
      h[i * k + j] = h[j * k + i] = s / n + (i === j ? 0.01 : 0);
    }
  return { e, h };
}

/**
 * A realistic synthetic layer: W normal (0.05, row-dependent scale) and H = X X^T / n + 1e-3 I from
 * correlated post-ReLU activations (n = 3 cols samples), as in test/finetune.test.ts.
 */
function syntheticLayer(rows: number, cols: number, seed: number): { w: Float32Array; h: Float64Array } {
  const rng = new Rng(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * 0.05 * (1 + (Math.floor(i / cols) % 5) / 5);
  const h = new Float64Array(cols * cols);
  const n = 3 * cols;
  const f = new Float64Array(6);
  const x = new Float64Array(cols);
  for (let s = 0; s < n; s++) {
    for (let j = 0; j < f.length; j++) f[j] = rng.normal();
    for (let c = 0; c < cols; c++) {
      const v = 0.7 * rng.normal() + 0.7 * f[c % 6]! + 0.3 * f[(3 * c + 1) % 6]! + 0.2;
      x[c] = v > 0 ? v : 0;
    }
    for (let p = 0; p < cols; p++) {
      if (x[p] === 0) continue;
      for (let q = 0; q < cols; q++) h[p * cols + q] += x[p]! * x[q]!;
    }
  }
  for (let i = 0; i < cols * cols; i++) h[i] /= n;
  for (let c = 0; c < cols; c++) h[c * cols + c] += 1e-3;
  return { w, h };
}

async function timeIt(minSeconds: number, f: () => void | Promise<void>): Promise<{ seconds: number; repetitions: number }> {
  await f(); // warm-up
  let reps = 0;
  const t0 = performance.now();
  let elapsed = 0;
  do {
    await f();
    reps++;
    elapsed = (performance.now() - t0) / 1000;
  } while (elapsed < minSeconds);
  return { seconds: elapsed / reps, repetitions: reps };
}


function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den > 0 ? num / den : num;
}


export async function runFinetuneKernelBench(o: FinetuneKernelBenchOptions = {}): Promise<FinetuneKernelBenchResult> {
  const sizes = o.sizes ?? [[120, 400], [512, 1152], [512, 2304]];
  const minSeconds = o.minSeconds ?? 1;
  const plainMax = o.plainMaxFlops ?? 6e9;
  const log = o.log ?? ((line: string) => void process.stderr.write(line + "\n"));
  const kernels: KernelFigure[] = [];
  const ortSpeedup: FinetuneKernelBenchResult["ortSpeedup"] = [];
  const conversionSeconds: FinetuneKernelBenchResult["conversionSeconds"] = [];
  const record = (kernel: string, m: number, k: number, t: { seconds: number; repetitions: number }): KernelFigure => {
    const fig = { kernel, m, k, seconds: t.seconds, gflops: flops(m, k) / t.seconds / 1e9, repetitions: t.repetitions };
    kernels.push(fig);
    log(`${kernel.padEnd(22)} ${m} x ${k} x ${k}: ${fig.gflops.toFixed(2)} GFLOP/s (${(t.seconds * 1000).toFixed(1)} ms per product, ${t.repetitions} runs)`);
    return fig;
  };

  let pureF1 = 0;
  for (const [m, k] of sizes) {
    const { e, h } = randomProblem(m, k, m * 7919 + k);
    const ref = new Float64Array(m * k);
    symmMulBlocked(e, m, k, h, ref);
    const out = new Float64Array(m * k);

    const pureFigures: KernelFigure[] = [];
    if (flops(m, k) <= plainMax) {
      pureFigures.push(record("ts-plain", m, k, await timeIt(minSeconds, () => symmMulPlain(e, m, k, h, out))));
      const diff = maxRelDiff(out, ref);
      if (!(diff < 1e-9)) throw new Error(`plain loop differs from the blocked kernel by ${diff}`);
    }
    for (const kc of [256, 1024, k]) {
      if (kc > k || (kc === 1024 && k === 1024)) continue;
      pureFigures.push(record(`ts-blocked kc=${kc === k ? "k" : kc}`, m, k, await timeIt(minSeconds, () => symmMulBlocked(e, m, k, h, out, kc))));
      const diff = maxRelDiff(out, ref);
      if (!(diff < 1e-9)) throw new Error(`blocked kernel (kc ${kc}) differs by ${diff}`);
    }
    if (wasmAvailable()) {
      // As fine-tuning runs it: H copied in once, E in and P out on every product (timed).
      const kernel = new WasmSymmMul(h, 1, m, k);
      pureFigures.push(record("wasm-simd", m, k, await timeIt(minSeconds, () => kernel.multiply(e, out))));
      const diff = maxRelDiff(out, ref);
      if (!(diff < 1e-9)) throw new Error(`WebAssembly kernel differs by ${diff}`);
    }
    const bestPure = Math.max(...pureFigures.map((f) => f.gflops));
    if (m === 120 && k === 400) pureF1 = bestPure;

    const ortFig: Record<string, number> = {};
    for (const [name, type, Arr] of [
      ["float64", TensorProto_DataType.DOUBLE, Float64Array],
      ["float32", TensorProto_DataType.FLOAT, Float32Array],
    ] as const) {
      const session = await ort.InferenceSession.create(matMulModel(m, k, type), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: "sequential",
        logSeverityLevel: 3,
      });
      try {
        const feeds = {
          E: new ort.Tensor(name, Arr.from(e), [m, k]),
          H: new ort.Tensor(name, Arr.from(h), [k, k]),
        };
        let result: ArrayLike<number> = new Float64Array(0);
        const t = await timeIt(minSeconds, async () => {
          const r = await session.run(feeds);
          result = r["P"]!.data as Float64Array | Float32Array;
        });
        ortFig[name] = record(`ort-matmul-${name}`, m, k, t).gflops;
        const diff = maxRelDiff(result, ref);
        if (!(diff < (name === "float64" ? 1e-9 : 1e-4))) throw new Error(`onnxruntime ${name} MatMul differs by ${diff}`);
      } finally {
        await session.release();
      }
    }
    const e32 = new Float32Array(m * k);
    const back = new Float64Array(m * k);
    const conv = await timeIt(minSeconds / 4, () => {
      e32.set(e);
      back.set(e32);
    });
    conversionSeconds.push({ m, k, seconds: conv.seconds });
    ortSpeedup.push({ m, k, float32: ortFig["float32"]! / bestPure, float64: ortFig["float64"]! / bestPure });
  }

  // A whole layer at LeNet-5 f1 size: SSVQ k16 d4, defaults, 500 iterations (and fixed signs for scale).
  const rows = 120;
  const cols = 400;
  const iters = o.layerIters ?? 500;
  const { w, h } = syntheticLayer(rows, cols, 5);
  const quantized = (await quantizeRows(w, rows, cols, { mode: "ssvq", k: 16, d: 4, seed: 1, kmeansIters: 30 })) as VqQuantized;
  const input = { w, h, groups: 1, quantized };
  const t0 = performance.now();
  const r = finetuneLayer(input, { iters });
  const seconds = (performance.now() - t0) / 1000;
  const fixed = finetuneLayer(input, { iters, fixedSigns: true });
  const t2 = performance.now();
  const rj = finetuneLayer(input, { iters }, {}, jsProduct);
  const withOrt: FinetuneKernelBenchResult["layer"]["withOrt"] = [{ engine: rj.stats.product, seconds: (performance.now() - t2) / 1000, errorAfter: rj.stats.errorAfter }];
  for (const precision of ["float64", "float32"] as const) {
    const t1 = performance.now();
    const ro = await finetuneLayerWith(ortProductEngine(precision), input, { iters });
    withOrt.push({ engine: `ort-matmul-${precision}`, seconds: (performance.now() - t1) / 1000, errorAfter: ro.stats.errorAfter });
  }
  const layer = {
    rows,
    cols,
    k: 16,
    d: 4,
    iters,
    product: r.stats.product,
    seconds,
    productSecondsEstimate: pureF1 > 0 ? ((iters + 3) * flops(rows, cols)) / (pureF1 * 1e9) : Number.NaN,
    errorBefore: r.stats.errorBefore,
    errorAfter: r.stats.errorAfter,
    fixedSignsErrorAfter: fixed.stats.errorAfter,
    withOrt,
  };
  log(`finetuneLayer (${r.stats.product}) ${rows} x ${cols} k16 d4, ${iters} iterations: ${seconds.toFixed(2)} s (error ${layer.errorBefore.toFixed(4)} -> ${layer.errorAfter.toFixed(4)}; fixed signs ${layer.fixedSignsErrorAfter.toFixed(4)})`);
  for (const x of withOrt) log(`  with ${x.engine}: ${x.seconds.toFixed(2)} s (error after ${x.errorAfter.toFixed(4)})`);
  const factor = await factorFigures(o.factorSizes ?? [[64, 9216, 512], [128, 9216, 512], [64, 4608, 1024]], minSeconds, log);
  return { kernels, factor, ortSpeedup, conversionSeconds, layer, defaultKc: DEFAULT_KC, node: process.version, ort: ort.env.versions?.common ?? "unknown" };
}

/** A float32 model of the factor product: T = Gemm(E, X, transB), P = MatMul(T, X), X [r, K] an initializer. */
function factorModel32(x: Float32Array, r: number, k: number): Uint8Array {
  const vi = (name: string, dims: (number | string)[]) => valueInfo(name, dims);
  const transB = create(AttributeProtoSchema, { name: "transB", type: AttributeProto_AttributeType.INT, i: 1n });
  return encodeModel(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: "ssvq-bench",
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
      graph: create(GraphProtoSchema, {
        name: "factor",
        node: [
          create(NodeProtoSchema, { opType: "Gemm", input: ["E", "X"], output: ["T"], attribute: [transB] }),
          create(NodeProtoSchema, { opType: "MatMul", input: ["T", "X"], output: ["P"] }),
        ],
        input: [vi("E", ["m", k])],
        output: [vi("T", ["m", r]), vi("P", ["m", k])],
        initializer: [create(TensorProtoSchema, { name: "X", dims: [BigInt(r), BigInt(k)], dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(x.slice().buffer) })],
      }),
    }),
  );
}

/** The factor form's product per block of m rows, GFLOP/s = 4 m K r / seconds. */
async function factorFigures(sizes: Array<[m: number, k: number, r: number]>, minSeconds: number, log: (line: string) => void): Promise<FactorFigure[]> {
  const out: FactorFigure[] = [];
  for (const [m, k, r] of sizes) {
    const rng = new Rng(m * 31 + k + r);
    const x = new Float32Array(r * k);
    for (let i = 0; i < x.length; i++) x[i] = Math.max(0, rng.normal());
    const stat: FactorStatistic = { kind: "factor", X: x, r, n: r, groups: 1, cols: k };
    const e = new Float64Array(m * k);
    for (let i = 0; i < e.length; i++) e[i] = rng.normal();
    const ref = new Float64Array(m * k);
    const p = new Float64Array(m * k);
    const record = (kernel: string, t: { seconds: number; repetitions: number }) => {
      const fig = { kernel, m, k, r, seconds: t.seconds, gflops: (4 * m * k * r) / t.seconds / 1e9, repetitions: t.repetitions };
      out.push(fig);
      log(`${kernel.padEnd(22)} X ${k} x ${r}, blocks of ${m} rows: ${fig.gflops.toFixed(2)} GFLOP/s (${(t.seconds * 1000).toFixed(1)} ms per product)`);
    };
    const ortKernel = await ortStatEngine.kernel(stat, m);
    try {
      record("ort-factor-float64", await timeIt(minSeconds, async () => void (await ortKernel.multiply(0, m, e, ref))));
    } finally {
      await ortKernel.dispose?.();
    }
    if (wasmAvailable()) {
      const kernel = wasmStatEngine.kernel(stat, m);
      record("wasm-simd-factor", await timeIt(minSeconds, () => void kernel.multiply(0, m, e, p)));
      const diff = maxRelDiff(p, ref);
      if (!(diff < 1e-9)) throw new Error(`the WebAssembly factor kernel differs from onnxruntime's by ${diff}`);
    }
    const session = await ort.InferenceSession.create(factorModel32(x, r, k), { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: "sequential", logSeverityLevel: 3 });
    try {
      const e32 = Float32Array.from(e);
      let result: Float32Array = new Float32Array(0);
      record(
        "ort-factor-float32",
        await timeIt(minSeconds, async () => {
          const o = await session.run({ E: new ort.Tensor("float32", e32, [m, k]) });
          result = o["P"]!.data as Float32Array;
        }),
      );
      const scaled = Float64Array.from(result, (v) => v / r);
      const diff = maxRelDiff(scaled, ref);
      if (!(diff < 1e-4)) throw new Error(`onnxruntime float32 factor product differs by ${diff}`);
    } finally {
      await session.release();
    }
  }
  return out;
}
