/**
 * `ssvq bench load`: what loading a compressed model costs in onnxruntime at its default settings, against
 * the original. A stack of MatMul layers (default 8 of 4096 x 4096 float32, weights in external data) is
 * generated, compressed with --no-finetune as SSVQ k16 d4 and INT8, and so are the bundled Fashion-MNIST
 * fixtures; then each model is loaded in a fresh process (its peak RSS is the load's) and run several
 * times on a fixed input (median time). onnxruntime folds a decode subgraph node by node and keeps every
 * folded intermediate until its constant-folding pass ends, so the load peak grows with the sum of the
 * decode subgraphs' intermediates over all layers.
 */
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import * as ort from "onnxruntime-node";
import {
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  TensorProto_DataType,
  TensorProtoSchema,
} from "../core/onnx/proto.js";
import { fixturesDir } from "../cli/demo.js";
import { valueInfo } from "../core/onnx/build.js";

/**
 * A runnable stack x [1, width] -> MatMul(w0) -> ... -> y of `layers` float32 [width, width] weights,
 * written as `path` with the weights in `path.data` (one layer in memory at a time).
 */
export function writeMatMulStack(path: string, layers: number, width: number): void {
  const dataName = `${basename(path)}.data`;
  const fd = openSync(`${path}.data`, "w");
  const inits = [];
  const nodes = [];
  const values = new Float32Array(width * width);
  try {
    for (let i = 0; i < layers; i++) {
      // Scaled so that activations neither vanish nor explode along the stack.
      for (let j = 0; j < values.length; j++) values[j] = ((((((j + 1) * 2654435761) ^ (i * 40503)) >>> 0) % 2001) - 1000) / (1000 * Math.sqrt(width / 3));
      writeSync(fd, new Uint8Array(values.buffer));
      const external = { location: dataName, offset: String(i * values.byteLength), length: String(values.byteLength) };
      inits.push(
        create(TensorProtoSchema, {
          name: `w${i}`,
          dims: [BigInt(width), BigInt(width)],
          dataType: TensorProto_DataType.FLOAT,
          dataLocation: TensorProto_DataLocation.EXTERNAL,
          externalData: Object.entries(external).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
        }),
      );
      nodes.push(create(NodeProtoSchema, { name: `mm${i}`, opType: "MatMul", input: [i === 0 ? "x" : `h${i}`, `w${i}`], output: [i === layers - 1 ? "y" : `h${i + 1}`] }));
    }
  } finally {
    closeSync(fd);
  }
  const model = create(ModelProtoSchema, {
    irVersion: 8n,
    producerName: "ssvq-bench",
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
    graph: create(GraphProtoSchema, { name: "stack", node: nodes, initializer: inits, input: [valueInfo("x", [1, width])], output: [valueInfo("y", [1, width])] }),
  });
  writeFileSync(path, encodeModel(model));
}

export interface LoadMeasure {
  /** Peak RSS of the fresh process once the session exists (Node itself takes ~45 MB). */
  loadPeakBytes: number;
  loadSeconds: number;
  /** Median of `runs` inference runs after one warm-up. */
  runMs: number;
  runs: number;
  /** The first output's values, summed (to see that the models compute alike). */
  outputSum: number;
}

/**
 * Runs in the fresh process: create a session at onnxruntime's default settings (one intra-op thread
 * apart, which does not change what is folded, so that inference times on a shared machine compare),
 * then time `runs` inferences.
 */
export async function measureLoad(path: string, runs: number): Promise<LoadMeasure> {
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(path, { logSeverityLevel: 3, intraOpNumThreads: 1 });
  const loadSeconds = (performance.now() - t0) / 1000;
  const loadPeakBytes = process.resourceUsage().maxRSS * 1024;
  const feeds: Record<string, ort.Tensor> = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
    const dims = meta.shape.map((d) => (typeof d === "number" && d > 0 ? d : 1));
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).map((_, i) => ((i * 37) % 255) / 255);
    feeds[meta.name] = new ort.Tensor("float32", data, dims);
  }
  let out = await session.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    out = await session.run(feeds);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  const first = Object.values(out)[0]!.data as Float32Array;
  await session.release();
  return { loadPeakBytes, loadSeconds, runMs: times[times.length >> 1]!, runs, outputSum: first.reduce((a, v) => a + v, 0) };
}

export interface LoadRow extends LoadMeasure {
  model: string;
  /** "original", or the compression mode. */
  format: string;
  /** The model file plus its external data. */
  fileBytes: number;
  /** loadPeakBytes over the original's (the target: at most 1.5). */
  loadPeakRatio: number;
  /** runMs over the original's (about 1: inference at the original's speed). */
  runTimeRatio: number;
}

const COMPRESSIONS: Record<string, string[]> = {
  ssvq: ["--mode", "ssvq", "--k", "16", "--d", "4"],
  int8: ["--mode", "int8"],
};

/** Generates, compresses and measures; each step in its own process (the running `ssvq` script). */
export function runLoadBench(o: { layers: number; width: number; runs: number; fixtures: boolean; log?: (line: string) => void }): Record<string, unknown> {
  const cli = process.argv[1]!;
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-load-"));
  const run = (args: string[], what: string): string => {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`${what} failed: ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
    return r.stdout;
  };
  const size = (p: string) => statSync(p).size + (existsData(p) ? statSync(`${p}.data`).size : 0);
  try {
    const models: [string, string][] = [];
    const stack = join(dir, "stack.onnx");
    run(["bench", "load", "--load-child", JSON.stringify({ generate: stack, layers: o.layers, width: o.width })], "generating the stack");
    models.push([`matmul-stack ${o.layers} x ${o.width}x${o.width}`, stack]);
    if (o.fixtures) for (const f of ["fashion_lenet5", "fashion_tinyvit"]) models.push([f, join(fixturesDir(), `${f}.onnx`)]);
    const rows: LoadRow[] = [];
    for (const [model, path] of models) {
      const measure = (p: string): LoadMeasure => JSON.parse(run(["bench", "load", "--load-child", JSON.stringify({ measure: p, runs: o.runs })], `loading ${p}`)) as LoadMeasure;
      const original = measure(path);
      const push = (format: string, p: string, m: LoadMeasure) => {
        const row = { model, format, fileBytes: size(p), ...m, loadPeakRatio: m.loadPeakBytes / original.loadPeakBytes, runTimeRatio: m.runMs / original.runMs };
        rows.push(row);
        o.log?.(`${model} ${format}: load peak ${(m.loadPeakBytes / 2 ** 20).toFixed(0)} MiB (${row.loadPeakRatio.toFixed(2)}x), ${m.loadSeconds.toFixed(1)} s; run ${m.runMs.toFixed(2)} ms (${row.runTimeRatio.toFixed(2)}x)`);
      };
      push("original", path, original);
      for (const [mode, args] of Object.entries(COMPRESSIONS)) {
        const out = join(dir, `${basename(path, ".onnx")}.${mode}.onnx`);
        run(["compress", path, "--out", out, "--force", "--no-finetune", ...args], `compressing ${model} (${mode})`);
        push(mode, out, measure(out));
        rmSync(out, { force: true });
      }
    }
    return { bench: "load", layers: o.layers, width: o.width, runs: o.runs, rows };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const existsData = (p: string): boolean => {
  try {
    return statSync(`${p}.data`).isFile();
  } catch {
    return false;
  }
};
