/**
 * `ssvq bench pipeline`: whole compressions with fine-tuning (SSVQ k16 d4, 500 iterations unless a case
 * says otherwise), each measured in a fresh process (so its peak RSS is its own: Linux keeps a process's
 * peak across fork and exec, and this parent stays small). Seconds per stage come from the report's
 * timings.
 *
 * The cases (`PIPELINE_CASES`, issue 11 item 6; add one there to measure another model):
 *  - cnn1m (a): issue 11's 1.2M-parameter Fashion-MNIST CNN (`generateFashionCnn`, random weights) on 512
 *    Fashion-MNIST images: its 128 x 9216 Gemm keeps X (9216 x 512) instead of H and is split over the
 *    threads;
 *  - cnn3m (b): the generated 3M-parameter CNN of `bench capture` on 512 random samples;
 *  - lenet, tinyvit (c): the Fashion-MNIST fixtures on 512 images;
 *  - segment (d): the 100 MB ISNet-like network (`generateSegmentationCnn`, input 512 x 512) on 4 random
 *    images, 50 iterations, under a 2 GiB memory budget; measured a second time without calibration (no
 *    fine-tuning), for the quantize stage's cost of the output errors.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveFinetuneOptions } from "../core/ssvq/finetune.js";
import { compressFile, type DataOptions } from "../io/compress-file.js";
import { createThreadPool } from "../io/pool.js";
import { generateCaptureCnn } from "./capture.js";
import { generateFashionCnn, generateSegmentationCnn } from "./models.js";
import { fixturesDir } from "../cli/demo.js";

/** One model to compress: where it comes from, its calibration data and how it is run. */
export interface PipelineCase {
  summary: string;
  /** Writes or finds the model (in `dir`, a temporary folder) and names its data. */
  prepare(dir: string): { input: string; data: DataOptions };
  /** Fine-tuning iterations (default 500). */
  iters?: number;
  /** --memory-budget in bytes (default: the CLI's). */
  memoryBudget?: number;
  /** Also measure the compression without calibration (k-means only). */
  alsoWithout?: boolean;
}

const fashionImages = (): DataOptions => ({
  calib: { path: join(fixturesDir(), "fashion_test2000_x_u8.npy"), range: "0:512" },
  preprocess: { scale: "1/255" },
});

const written = (name: string, bytes: () => Uint8Array, data: DataOptions) => (dir: string) => {
  const input = join(dir, `${name}.onnx`);
  writeFileSync(input, bytes());
  return { input, data };
};

export const PIPELINE_CASES = {
  cnn1m: {
    summary: "(a) issue 11's 1.2M-parameter Fashion-MNIST CNN (Gemm 128 x 9216) on 512 images",
    prepare: written("cnn1m", () => generateFashionCnn(1), fashionImages()),
  },
  cnn3m: {
    summary: "(b) the generated 3M-parameter CNN on 512 random samples",
    prepare: written("cnn3m", () => generateCaptureCnn(1), { calib: { count: 512 } }),
  },
  lenet: {
    summary: "(c) LeNet-5 on 512 Fashion-MNIST images",
    prepare: () => ({ input: join(fixturesDir(), "fashion_lenet5.onnx"), data: fashionImages() }),
  },
  tinyvit: {
    summary: "(c) the tiny ViT on 512 Fashion-MNIST images",
    prepare: () => ({ input: join(fixturesDir(), "fashion_tinyvit.onnx"), data: fashionImages() }),
  },
  segment: {
    summary: "(d) a 100 MB ISNet-like conv network at 512 x 512 on 4 random images, 50 iterations, --memory-budget 2G",
    prepare: written("segment", () => generateSegmentationCnn(1), { calib: { count: 4 } }),
    iters: 50,
    memoryBudget: 2 * 2 ** 30,
    alsoWithout: true,
  },
} satisfies Record<string, PipelineCase>;

export type PipelineModel = keyof typeof PIPELINE_CASES;
export const PIPELINE_MODELS = Object.keys(PIPELINE_CASES) as PipelineModel[];
export const isPipelineModel = (s: unknown): s is PipelineModel => typeof s === "string" && Object.hasOwn(PIPELINE_CASES, s);

export interface PipelineMeasure {
  model: string;
  /** With calibration and fine-tuning, or k-means alone ("without"). */
  run: "calibrated" | "without";
  parameters: number;
  calibrationSamples: number;
  seconds: number;
  stages: Record<string, number>;
  /** Fine-tuning seconds and product engine per layer. */
  layers: Array<{ name: string; rows: number; cols: number; seconds: number; product: string }>;
  peakRssBytes: number;
  /** The budget the run planned its waves in, and the layers per wave. */
  memoryBudgetBytes: number | null;
  waves: number[];
  /** Estimated bytes of every layer's statistic at once. */
  statisticsBytes: number | null;
  /** CPU seconds of the whole process (user + system), all threads. */
  cpuSeconds: number;
  outputErrorBefore: number;
  outputErrorAfter: number;
}

/** Runs in the fresh process: one compression, with calibration and fine-tuning or ("without") k-means alone. */
export async function measurePipeline(which: PipelineModel, threads: number, run: "calibrated" | "without" = "calibrated"): Promise<PipelineMeasure> {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-pipeline-"));
  const pool = createThreadPool(threads);
  const c: PipelineCase = PIPELINE_CASES[which];
  try {
    const { input, data } = c.prepare(dir);
    const calibrated = run === "calibrated";
    const t0 = performance.now();
    const { report } = await compressFile({
      input,
      out: join(dir, "out.onnx"),
      config: {
        mode: "ssvq",
        k: 16,
        d: 4,
        seed: 0,
        kmeansIters: 25,
        minWeights: 1024,
        format: "ssvq",
        finetune: calibrated,
        ...(calibrated ? { finetuning: resolveFinetuneOptions(c.iters !== undefined ? { iters: c.iters } : {}) } : {}),
      },
      map: pool,
      ...(calibrated ? { data } : {}),
      ...(c.memoryBudget !== undefined ? { memoryBudget: c.memoryBudget } : {}),
    });
    const mean = (f: (l: (typeof report.layers)[number]) => number) => report.layers.reduce((a, l) => a + f(l), 0) / report.layers.length;
    const usage = process.resourceUsage();
    const memory = report.calibration?.memory;
    return {
      model: which,
      run,
      parameters: report.sizes.compressedWeights,
      calibrationSamples: report.calibration?.samples ?? 0,
      seconds: (performance.now() - t0) / 1000,
      stages: report.timings,
      layers: report.layers.map((l) => ({ name: l.name, rows: l.rows, cols: l.cols, seconds: l.finetune?.seconds ?? 0, product: l.finetune?.product ?? "" })),
      peakRssBytes: usage.maxRSS * 1024,
      memoryBudgetBytes: memory?.budgetBytes ?? null,
      waves: memory?.waves ?? [],
      statisticsBytes: memory?.statisticsBytes ?? null,
      cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
      outputErrorBefore: mean((l) => l.finetune?.errorBefore ?? NaN),
      outputErrorAfter: mean((l) => l.outputError ?? NaN),
    };
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The child argument of one measure: the model, and ":without" for the run without calibration. */
export function parsePipelineChild(arg: unknown): { model: PipelineModel; run: "calibrated" | "without" } | undefined {
  if (typeof arg !== "string") return undefined;
  const [model, run] = arg.split(":");
  if (!isPipelineModel(model) || (run !== undefined && run !== "without")) return undefined;
  return { model, run: run ?? "calibrated" };
}

/** Starts the running `ssvq` script again for each measure (a case, and without calibration when it asks) and collects its figures. */
export function runPipelineBench(models: PipelineModel[], threads: number, log?: (line: string) => void): PipelineMeasure[] {
  const children = models.flatMap((m) => [m, ...((PIPELINE_CASES[m] as PipelineCase).alsoWithout ? [`${m}:without`] : [])]);
  return children.map((child) => {
    const r = spawnSync(process.execPath, [process.argv[1]!, "bench", "pipeline", "--pipeline-child", child, "--threads", String(threads)], {
      encoding: "utf8",
      maxBuffer: 16 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`the measuring process for ${child} failed: ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
    const measure = JSON.parse(r.stdout) as PipelineMeasure;
    log?.(pipelineLine(measure));
    return measure;
  });
}

/** One line per measure, for stderr. */
export function pipelineLine(p: PipelineMeasure): string {
  const stages = Object.entries(p.stages)
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(", ");
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const memory = p.memoryBudgetBytes !== null ? `, budget ${mib(p.memoryBudgetBytes)}, waves [${p.waves.join(", ")}], statistics ${mib(p.statisticsBytes ?? 0)}` : "";
  const errors = p.run === "calibrated" ? `, output error ${(100 * p.outputErrorBefore).toFixed(1)}% -> ${(100 * p.outputErrorAfter).toFixed(1)}%` : "";
  return `${p.model}${p.run === "without" ? " without calibration" : ""}: ${p.seconds.toFixed(1)} s (${stages}), peak RSS ${mib(p.peakRssBytes)}${memory}, CPU ${p.cpuSeconds.toFixed(1)} s${errors}`;
}
