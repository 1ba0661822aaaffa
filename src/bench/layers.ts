/**
 * `ssvq bench layers`: models of many small layers (a chain of N MatMul layers of 32 x 32) compressed
 * with `--no-finetune`, each in a fresh process (its own peak RSS): reading, the onnxruntime load check,
 * k-means and the decode-graph writer must all stay proportional to the model's size, so the seconds per
 * layer at 10,000 layers should be about those at 1,000.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
} from "../core/onnx/proto.js";
import { valueInfo } from "../core/onnx/build.js";
import type { CompressConfig } from "../core/report.js";
import { compressFile } from "../io/compress-file.js";
import { createThreadPool } from "../io/pool.js";

export const LAYERS_WIDTH = 32;

/** A runnable chain x -> MatMul(w0) -> ... -> MatMul(w{n-1}) -> y of `width` x `width` float32 weights. */
export function generateLayerChain(layers: number, width = LAYERS_WIDTH): Uint8Array {
  const inits = [];
  const nodes = [];
  for (let i = 0; i < layers; i++) {
    const values = new Float32Array(width * width);
    // Scaled so that activations neither vanish nor explode along the chain.
    for (let j = 0; j < values.length; j++) values[j] = (((((j + 1) * 2654435761) ^ (i * 40503)) >>> 0) % 2001 - 1000) / (1000 * Math.sqrt(width / 3));
    inits.push(create(TensorProtoSchema, { name: `w${i}`, dims: [BigInt(width), BigInt(width)], dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(values.buffer) }));
    nodes.push(create(NodeProtoSchema, { name: `mm${i}`, opType: "MatMul", input: [i === 0 ? "x" : `h${i}`, `w${i}`], output: [i === layers - 1 ? "y" : `h${i + 1}`] }));
  }
  return encodeModel(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: "ssvq-bench",
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
      graph: create(GraphProtoSchema, {
        name: "chain",
        node: nodes,
        initializer: inits,
        input: [valueInfo("x", [1, width])],
        output: [valueInfo("y", [1, width])],
      }),
    }),
  );
}

export interface LayersMeasure {
  layers: number;
  mode: string;
  fileBytes: number;
  outputBytes: number;
  seconds: number;
  secondsPerThousandLayers: number;
  stages: Record<string, number>;
  peakRssBytes: number;
}

const CONFIGS: Record<string, CompressConfig> = {
  ssvq: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: false },
  int8: { mode: "int8", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: false },
};
export const LAYERS_MODES = Object.keys(CONFIGS);

/** Runs in the fresh process: one compression of a generated chain. */
export async function measureLayers(layers: number, mode: string, threads: number): Promise<LayersMeasure> {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-layers-"));
  const pool = createThreadPool(threads);
  try {
    const input = join(dir, "chain.onnx");
    writeFileSync(input, generateLayerChain(layers));
    const out = join(dir, "out.onnx");
    const t0 = performance.now();
    const { report } = await compressFile({ input, out, config: CONFIGS[mode]!, map: pool });
    const seconds = (performance.now() - t0) / 1000;
    if (report.layers.length !== layers) throw new Error(`${report.layers.length} of ${layers} layers were compressed`);
    return {
      layers,
      mode,
      fileBytes: statSync(input).size,
      outputBytes: statSync(out).size,
      seconds,
      secondsPerThousandLayers: (1000 * seconds) / layers,
      stages: report.timings,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Each size and mode in a fresh process (the running `ssvq` script, started again). */
export function runLayersBench(o: { sizes: number[]; modes: string[]; threads: number; log?: (line: string) => void }): Record<string, unknown> {
  const runs: LayersMeasure[] = [];
  for (const mode of o.modes)
    for (const n of o.sizes) {
      const r = spawnSync(process.execPath, [process.argv[1]!, "bench", "layers", "--layers-child", `${n}:${mode}`, "--threads", String(o.threads)], {
        encoding: "utf8",
        maxBuffer: 16 * 1024 * 1024,
      });
      if (r.status !== 0) throw new Error(`the measuring process for ${n} layers (${mode}) failed: ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
      const m = JSON.parse(r.stdout) as LayersMeasure;
      o.log?.(`${mode} ${n} layers: ${m.seconds.toFixed(1)} s (${m.secondsPerThousandLayers.toFixed(2)} s per 1,000 layers), peak RSS ${(m.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
      runs.push(m);
    }
  // Time per layer of the largest model over that of the smallest, per mode: about 1 when linear.
  const linearity: Record<string, number> = {};
  for (const mode of o.modes) {
    const mine = runs.filter((r) => r.mode === mode).sort((a, b) => a.layers - b.layers);
    if (mine.length >= 2) linearity[mode] = mine.at(-1)!.secondsPerThousandLayers / mine[0]!.secondsPerThousandLayers;
  }
  return { bench: "layers", width: LAYERS_WIDTH, threads: o.threads, runs, perLayerTimeLargestOverSmallest: linearity };
}
