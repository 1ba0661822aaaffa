/**
 * `ssvq bench finetune`, end to end: a whole compression with fine-tuning at the defaults (SSVQ k16 d4, 500
 * iterations), measured in a fresh process (so its peak RSS is its own: Linux keeps a process's peak across
 * fork and exec, and this parent stays small). Seconds per stage come from the report's timings.
 *
 * The cases (`PIPELINE_CASES`; add one there to measure another model):
 *  - lenet: LeNet-5 (the fixture) on 512 Fashion-MNIST calibration images;
 *  - cnn3m: the generated 3-million-parameter CNN of `bench capture` on 512 random samples;
 *  - cnn1m: issue 11's 1.2M-parameter Fashion-MNIST CNN (`generateFashionCnn`, random weights) on 512
 *    Fashion-MNIST images: its 128 x 9216 Gemm keeps X (9216 x 512) instead of H and is split over the
 *    threads.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveFinetuneOptions } from "../core/ssvq/finetune.js";
import { compressFile, type DataOptions } from "../io/compress-file.js";
import { createThreadPool } from "../io/pool.js";
import { generateCaptureCnn } from "./capture.js";
import { generateFashionCnn } from "./models.js";
import { fixturesDir } from "../cli/demo.js";

/** One model to compress: where it comes from and its calibration data. */
export interface PipelineCase {
  summary: string;
  /** Writes or finds the model (in `dir`, a temporary folder) and names its data. */
  prepare(dir: string): { input: string; data: DataOptions };
}

const fashionImages = (): DataOptions => ({
  calib: { path: join(fixturesDir(), "fashion_test2000_x_u8.npy"), range: "0:512" },
  preprocess: { scale: "1/255" },
});

export const PIPELINE_CASES = {
  lenet: {
    summary: "LeNet-5 on 512 Fashion-MNIST images",
    prepare: () => ({ input: join(fixturesDir(), "fashion_lenet5.onnx"), data: fashionImages() }),
  },
  cnn3m: {
    summary: "the generated 3M-parameter CNN on 512 random samples",
    prepare: (dir: string) => {
      const input = join(dir, "cnn3m.onnx");
      writeFileSync(input, generateCaptureCnn(1));
      return { input, data: { calib: { count: 512 } } };
    },
  },
  cnn1m: {
    summary: "issue 11's 1.2M-parameter Fashion-MNIST CNN (Gemm 128 x 9216) on 512 images",
    prepare: (dir: string) => {
      const input = join(dir, "cnn1m.onnx");
      writeFileSync(input, generateFashionCnn(1));
      return { input, data: fashionImages() };
    },
  },
} satisfies Record<string, PipelineCase>;

export type PipelineModel = keyof typeof PIPELINE_CASES;
export const PIPELINE_MODELS = Object.keys(PIPELINE_CASES) as PipelineModel[];
export const isPipelineModel = (s: unknown): s is PipelineModel => typeof s === "string" && Object.hasOwn(PIPELINE_CASES, s);

export interface PipelineMeasure {
  model: string;
  parameters: number;
  calibrationSamples: number;
  seconds: number;
  stages: Record<string, number>;
  /** Fine-tuning seconds and product engine per layer. */
  layers: Array<{ name: string; rows: number; cols: number; seconds: number; product: string }>;
  peakRssBytes: number;
  /** CPU seconds of the whole process (user + system), all threads. */
  cpuSeconds: number;
  outputErrorBefore: number;
  outputErrorAfter: number;
}

/** Runs in the fresh process: one compression with fine-tuning at the defaults. */
export async function measurePipeline(which: PipelineModel, threads: number): Promise<PipelineMeasure> {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-pipeline-"));
  const pool = createThreadPool(threads);
  try {
    const { input, data } = PIPELINE_CASES[which].prepare(dir);
    const t0 = performance.now();
    const { report } = await compressFile({
      input,
      out: join(dir, "out.onnx"),
      config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: true, finetuning: resolveFinetuneOptions() },
      map: pool,
      data,
    });
    const mean = (f: (l: (typeof report.layers)[number]) => number) => report.layers.reduce((a, l) => a + f(l), 0) / report.layers.length;
    const usage = process.resourceUsage();
    return {
      model: which,
      parameters: report.sizes.compressedWeights,
      calibrationSamples: report.calibration!.samples,
      seconds: (performance.now() - t0) / 1000,
      stages: report.timings,
      layers: report.layers.map((l) => ({ name: l.name, rows: l.rows, cols: l.cols, seconds: l.finetune?.seconds ?? 0, product: l.finetune?.product ?? "" })),
      peakRssBytes: usage.maxRSS * 1024,
      cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
      outputErrorBefore: mean((l) => l.finetune?.errorBefore ?? NaN),
      outputErrorAfter: mean((l) => l.outputError ?? NaN),
    };
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Starts the running `ssvq` script again for each model and collects its figures. */
export function runPipelineBench(models: PipelineModel[], threads: number): PipelineMeasure[] {
  return models.map((m) => {
    const r = spawnSync(process.execPath, [process.argv[1]!, "bench", "finetune", "--pipeline-child", m, "--threads", String(threads)], {
      encoding: "utf8",
      maxBuffer: 16 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`the measuring process for ${m} failed: ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
    return JSON.parse(r.stdout) as PipelineMeasure;
  });
}

/** One line per measure, for stderr. */
export function pipelineLine(p: PipelineMeasure): string {
  const stages = Object.entries(p.stages)
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(", ");
  return (
    `${p.model}: ${p.seconds.toFixed(1)} s (${stages}), peak RSS ${(p.peakRssBytes / 2 ** 20).toFixed(0)} MiB, CPU ${p.cpuSeconds.toFixed(1)} s, ` +
    `output error ${(100 * p.outputErrorBefore).toFixed(1)}% -> ${(100 * p.outputErrorAfter).toFixed(1)}%`
  );
}
