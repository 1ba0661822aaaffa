/**
 * `ssvq bench capture`: activation capture on a generated CNN of about 3 million parameters (CIFAR-sized
 * input 3x32x32; plain, strided, grouped and 1x1 convolutions, a Gemm and a MatMul) with 512 random
 * samples in batches of 32, with the Gram products in this thread and then on a pool of 2 threads (as
 * compress runs them; the same bytes). Prints seconds, samples per second and peak RSS as JSON.
 *
 * Linux carries a process's peak RSS across fork and exec, so the figures come from a fresh child
 * started by this small parent: the parent writes the model to a temporary folder and runs the same
 * command again with SSVQ_BENCH_CAPTURE_CHILD set; the child measures and prints JSON, the parent adds
 * its own fields and returns the whole. The child also measures how long capture takes to stop once its
 * AbortSignal fires mid-run (`cancelSeconds`).
 */
import { valueInfo } from "../core/onnx/build.js";
import { startJob, type Job } from "../job/client.js";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isCancelledError } from "../core/errors.js";
import { randomData } from "../core/calib/source.js";
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  create,
  decodeModel,
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType as DT,
  TensorProtoSchema,
  type NodeProto,
  type TensorProto,
} from "../core/onnx/proto.js";
import { findWeights, weightCount } from "../core/onnx/weights.js";
import { Rng } from "../core/rng.js";
import { captureActivations } from "../io/capture.js";
import { modelInputs } from "../io/ort.js";
import { createThreadPool } from "../io/pool.js";

const CHILD_ENV = "SSVQ_BENCH_CAPTURE_CHILD";
export const BENCH_SAMPLES = 512;
export const BENCH_BATCH = 32;
/** Threads of the pool the second, pooled capture runs its products on. */
const POOL_THREADS = 2;

/** The benchmark CNN (deterministic weights, He-scaled so activations keep their size). */
export function generateCaptureCnn(seed = 1): Uint8Array {
  const rng = new Rng(seed);
  const inits: TensorProto[] = [];
  const nodes: NodeProto[] = [];
  const tensor = (name: string, dims: number[], fanIn: number) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    const s = Math.sqrt(2 / fanIn);
    for (let i = 0; i < n; i++) v[i] = rng.normal() * s;
    inits.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.FLOAT, rawData: new Uint8Array(v.buffer) }));
  };
  const attr = (name: string, v: number | number[]) =>
    typeof v === "number"
      ? create(AttributeProtoSchema, { name, type: AT.INT, i: BigInt(v) })
      : create(AttributeProtoSchema, { name, type: AT.INTS, ints: v.map(BigInt) });
  const op = (opType: string, input: string[], output: string, attrs: Record<string, number | number[]> = {}, name = "") =>
    nodes.push(create(NodeProtoSchema, { opType, input, output: [output], name, attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) }));
  let x = "input";
  const conv = (i: number, cin: number, cout: number, k: number, stride: number, group = 1) => {
    tensor(`conv${i}.weight`, [cout, cin / group, k, k], (cin / group) * k * k);
    tensor(`conv${i}.bias`, [cout], cout);
    const p = (k - 1) >> 1;
    op("Conv", [x, `conv${i}.weight`, `conv${i}.bias`], `c${i}`, { strides: [stride, stride], pads: [p, p, p, p], group }, `conv${i}`);
    op("Relu", [`c${i}`], `r${i}`);
    x = `r${i}`;
  };
  conv(1, 3, 64, 3, 1);
  conv(2, 64, 128, 3, 2);
  conv(3, 128, 256, 3, 2);
  conv(4, 256, 256, 3, 1, 4);
  conv(5, 256, 512, 3, 2);
  conv(6, 512, 256, 1, 1);
  op("GlobalAveragePool", [x], "pool");
  op("Flatten", ["pool"], "flat", { axis: 1 });
  tensor("fc1.weight", [1000, 256], 256);
  op("Gemm", ["flat", "fc1.weight"], "fc1", { transB: 1 }, "fc1");
  op("Relu", ["fc1"], "fr1");
  tensor("fc2.weight", [1000, 1000], 1000);
  op("MatMul", ["fr1", "fc2.weight"], "logits", {}, "fc2");
  const vi = (name: string, dims: (number | string)[]) => valueInfo(name, dims);
  return encodeModel(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: "ssvq-bench",
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
      graph: create(GraphProtoSchema, {
        name: "capture-cnn",
        node: nodes,
        initializer: inits,
        input: [vi("input", ["batch", 3, 32, 32])],
        output: [vi("logits", ["batch", 1000])],
      }),
    }),
  );
}

export interface CaptureMeasure {
  parameters: number;
  layers: number;
  /** Sum over layers of groups * cols^2 * 8 bytes: the H matrices held for the run. */
  statisticsBytes: number;
  samples: number;
  batchSize: number;
  passes: number;
  gram: string;
  /** Capture in this thread (products included). */
  seconds: number;
  samplesPerSecond: number;
  /** The same capture with the products on a pool of `pooledThreads` (as compress runs it), after an untimed warm-up. */
  pooledThreads: number;
  pooledSeconds: number;
  /** Whether the pooled capture gave every H byte for byte. */
  pooledSameBytes: boolean;
  /** Peak RSS after the capture in this thread (before the pooled one). */
  peakRssBytes: number;
  /** Time from the AbortSignal firing (1 s into a second run) to capture rejecting with CancelledError. */
  cancelSeconds: number | null;
  freshProcess: boolean;
}

/** Runs in the measuring process: capture on the model at `path`, then a cancelled run. */
export async function measureCapture(path: string, freshProcess: boolean): Promise<CaptureMeasure> {
  const model = decodeModel(readFileSync(path), path);
  const { weights } = findWeights(model);
  const data = randomData(modelInputs(model), { count: BENCH_SAMPLES, seed: 1, batchSize: BENCH_BATCH });
  const t0 = performance.now();
  const r = await captureActivations(model, weights, data);
  const seconds = (performance.now() - t0) / 1000;
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  let statisticsBytes = 0;
  for (const l of r.layers.values()) statisticsBytes += l.H.byteLength;

  // As compress captures: the Gram products on a pool of POOL_THREADS (PooledGram), the same bytes.
  const pool = createThreadPool(POOL_THREADS);
  let pooledSeconds: number;
  let pooledSameBytes = true;
  try {
    const warm = randomData(modelInputs(model), { count: BENCH_BATCH, seed: 2, batchSize: BENCH_BATCH });
    await captureActivations(model, weights, warm, { pool }); // untimed: starts the threads and their sessions
    const p0 = performance.now();
    const pooled = await captureActivations(model, weights, data, { pool });
    pooledSeconds = (performance.now() - p0) / 1000;
    for (const [name, l] of r.layers) {
      const h = pooled.layers.get(name)?.H;
      if (!h || !Buffer.from(h.buffer, h.byteOffset, h.byteLength).equals(Buffer.from(l.H.buffer, l.H.byteOffset, l.H.byteLength))) pooledSameBytes = false;
    }
  } finally {
    await pool.close();
  }

  // Cancel latency: abort a second run after one second.
  let cancelSeconds: number | null = null;
  const ac = new AbortController();
  let firedAt = 0;
  const timer = setTimeout(() => {
    firedAt = performance.now();
    ac.abort();
  }, 1000);
  try {
    await captureActivations(model, weights, data, { signal: ac.signal });
  } catch (e) {
    if (!isCancelledError(e)) throw e;
    cancelSeconds = (performance.now() - firedAt) / 1000;
  } finally {
    clearTimeout(timer);
  }
  return {
    parameters: weights.reduce((a, w) => a + weightCount(w), 0),
    layers: r.layers.size,
    statisticsBytes,
    samples: r.samples,
    batchSize: BENCH_BATCH,
    passes: r.passes,
    gram: r.gram,
    seconds,
    samplesPerSecond: r.samples / seconds,
    pooledThreads: POOL_THREADS,
    pooledSeconds,
    pooledSameBytes,
    peakRssBytes,
    cancelSeconds,
    freshProcess,
  };
}

/**
 * The benchmark. Called by `ssvq bench capture`, it generates the model and re-runs the same command in
 * a fresh child (which, seeing SSVQ_BENCH_CAPTURE_CHILD, measures and returns the figures, printed as
 * JSON by the command); called otherwise (no `capture` argument to re-run), it measures in this process
 * (`freshProcess: false`, and the peak RSS then includes whatever the caller used before).
 */
/**
 * A background compression job calibrating on this model: seconds from `cancel()` during the capture
 * stage until the worker process has ended (what a user waits for after pressing Cancel).
 */
async function jobCancelToExit(path: string): Promise<number> {
  let cancelledAt = 0;
  let job: Job | undefined;
  job = startJob(
    {
      kind: "compress",
      input: path,
      config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 10, minWeights: 1024, format: "ssvq", finetune: false },
      threads: 1,
      data: { calib: { count: BENCH_SAMPLES } },
    },
    {
      onEvent: (e) => {
        if (e.type === "progress" && e.stage === "capture" && e.fraction > 0.1 && !cancelledAt) {
          cancelledAt = performance.now();
          job?.cancel();
        }
      },
    },
  );
  const outcome = await job.outcome;
  if (outcome.type !== "error" || outcome.kind !== "cancelled") throw new Error(`the job was not cancelled: ${JSON.stringify(outcome).slice(0, 300)}`);
  return (performance.now() - cancelledAt) / 1000;
}

export async function runCaptureBench(): Promise<object> {
  const child = process.env[CHILD_ENV];
  if (child) return measureCapture(child, true);
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-capture-"));
  try {
    const path = join(dir, "capture-cnn.onnx");
    const bytes = generateCaptureCnn();
    writeFileSync(path, bytes);
    const script = process.argv[1];
    // Re-run only a command line that asked for this benchmark (not, say, a test file calling it).
    if (!script || !/\.(c?js|mjs)$/.test(script) || !process.argv.slice(2).includes("capture")) return { modelBytes: bytes.length, ...(await measureCapture(path, false)) };
    const r = spawnSync(process.execPath, [...process.execArgv, script, ...process.argv.slice(2)], {
      env: { ...process.env, [CHILD_ENV]: path },
      encoding: "utf8",
      maxBuffer: 16 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`the measuring process failed (status ${r.status}): ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
    const out = r.stdout.trim();
    const figures = JSON.parse(out.slice(out.indexOf("{"))) as CaptureMeasure;
    return { modelBytes: bytes.length, ...figures, jobCancelToExitSeconds: await jobCancelToExit(path) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
