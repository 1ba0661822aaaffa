/**
 * `ssvq bench io`: decode speed and memory on a generated model of about 100 MB. The model is written
 * to a temporary folder, then a fresh process reads and decodes it, so that its peak RSS measures the
 * decode alone. Decoding keeps tensor bytes as views into the file's buffer: the memory added by the
 * decode stays far below the file size.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  decodeModel,
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProtoSchema,
  TensorProto_DataType,
} from "../core/onnx/proto.js";
import { findWeights } from "../core/onnx/weights.js";

/** A chain of `layers` MatMul nodes with [width, width] float32 weights (deterministic values). */
export function generateMatMulChain(layers: number, width: number): Uint8Array {
  const inits = [];
  const nodes = [];
  for (let i = 0; i < layers; i++) {
    const values = new Float32Array(width * width);
    for (let j = 0; j < values.length; j++) values[j] = ((((j * 2654435761) ^ i) >>> 0) % 2001) / 1000 - 1;
    inits.push(
      create(TensorProtoSchema, {
        name: `w${i}`,
        dims: [BigInt(width), BigInt(width)],
        dataType: TensorProto_DataType.FLOAT,
        rawData: new Uint8Array(values.buffer),
      }),
    );
    nodes.push(create(NodeProtoSchema, { opType: "MatMul", input: [i === 0 ? "x" : `h${i}`, `w${i}`], output: [i === layers - 1 ? "y" : `h${i + 1}`] }));
  }
  const model = create(ModelProtoSchema, {
    irVersion: 8n,
    producerName: "ssvq-bench",
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
    graph: create(GraphProtoSchema, { name: "chain", node: nodes, initializer: inits }),
  });
  return encodeModel(model);
}

export interface IoMeasure {
  fileBytes: number;
  readSeconds: number;
  decodeSeconds: number;
  findWeightsSeconds: number;
  encodeSeconds: number;
  /** ArrayBuffer memory added by the decode (tensor bytes copied would show here). */
  decodeArrayBufferBytes: number;
  rssAfterDecodeBytes: number;
  /** Peak RSS of the process up to the end of the decode and weight scan (Node itself takes ~45 MB). */
  peakRssDecodeBytes: number;
  /** Peak RSS after also encoding the model again (the encoder builds the output in memory). */
  peakRssWithEncodeBytes: number;
  weights: number;
}

/** Runs in the fresh process: read, decode, scan, encode, with memory figures. */
export function measureDecode(path: string): IoMeasure {
  const t0 = performance.now();
  const bytes = readFileSync(path);
  const t1 = performance.now();
  const before = process.memoryUsage();
  const model = decodeModel(bytes, path);
  const t2 = performance.now();
  const after = process.memoryUsage();
  const scan = findWeights(model);
  const t3 = performance.now();
  const rssAfterDecodeBytes = after.rss;
  const peakRssDecodeBytes = process.resourceUsage().maxRSS * 1024;
  const encoded = encodeModel(model);
  const t4 = performance.now();
  if (encoded.length !== bytes.length) throw new Error("round trip changed the size");
  return {
    fileBytes: bytes.length,
    readSeconds: (t1 - t0) / 1000,
    decodeSeconds: (t2 - t1) / 1000,
    findWeightsSeconds: (t3 - t2) / 1000,
    encodeSeconds: (t4 - t3) / 1000,
    decodeArrayBufferBytes: after.arrayBuffers - before.arrayBuffers,
    rssAfterDecodeBytes,
    peakRssDecodeBytes,
    peakRssWithEncodeBytes: process.resourceUsage().maxRSS * 1024,
    weights: scan.weights.length,
  };
}

export function writeMatMulChain(path: string, layers: number): void {
  writeFileSync(path, generateMatMulChain(layers, 1024));
}

export async function runIoBench(o: { megabytes: number }): Promise<Record<string, unknown>> {
  const width = 1024;
  const layers = Math.max(1, Math.round((o.megabytes * 1e6) / (width * width * 4)));
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-io-"));
  try {
    const path = join(dir, "chain.onnx");
    // The running `ssvq` script, started again: once to write the model, once to measure. Linux keeps a
    // process's peak RSS across fork and exec, so this process must stay small for the figure to be true.
    const cli = process.argv[1]!;
    const run = (args: string[]) => {
      const child = spawnSync(process.execPath, [cli, "bench", "io", ...args], { encoding: "utf8" });
      if (child.status !== 0) throw new Error(`benchmark process failed: ${child.stderr}`);
      return child.stdout;
    };
    run(["--generate", path, "--layers", String(layers)]);
    const m = JSON.parse(run(["--measure", path])) as IoMeasure;
    return {
      bench: "io",
      layers,
      ...m,
      decodeMBPerSecond: m.fileBytes / 1e6 / m.decodeSeconds,
      /** Peak RSS of the decode over the file size: near 1 means no second copy of the tensors. */
      peakRssDecodeOverFile: m.peakRssDecodeBytes / m.fileBytes,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
