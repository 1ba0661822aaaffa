/**
 * `ssvq bench finetune`, end to end: a whole compression with fine-tuning at the defaults, measured in a
 * fresh process (so its peak RSS is its own: Linux keeps a process's peak across fork and exec, and this
 * parent stays small): LeNet-5 on 512 calibration images, and a generated 3-million-parameter CNN on 512
 * random calibration samples. Seconds per stage come from the report's timings.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveFinetuneOptions } from "../core/ssvq/finetune.js";
import { compressFile } from "../io/compress-file.js";
import { createThreadPool } from "../io/pool.js";
import { generateCaptureCnn } from "./capture.js";
import { fixturesDir } from "../cli/demo.js";

export interface PipelineMeasure {
  model: string;
  parameters: number;
  calibrationSamples: number;
  seconds: number;
  stages: Record<string, number>;
  peakRssBytes: number;
  outputErrorBefore: number;
  outputErrorAfter: number;
}

/** Runs in the fresh process: one compression with fine-tuning at the defaults. */
export async function measurePipeline(which: "lenet" | "cnn3m", threads: number): Promise<PipelineMeasure> {
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-pipeline-"));
  const pool = createThreadPool(threads);
  try {
    let input: string;
    let calib;
    if (which === "lenet") {
      input = join(fixturesDir(), "fashion_lenet5.onnx");
      calib = { path: join(fixturesDir(), "fashion_test2000_x_u8.npy"), range: "0:512" };
    } else {
      input = join(dir, "cnn3m.onnx");
      writeFileSync(input, generateCaptureCnn(1));
      calib = { count: 512 };
    }
    const t0 = performance.now();
    const { report } = await compressFile({
      input,
      out: join(dir, "out.onnx"),
      config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: true, finetuning: resolveFinetuneOptions() },
      map: pool,
      data: { calib, preprocess: which === "lenet" ? { scale: "1/255" } : {} },
    });
    const mean = (f: (l: (typeof report.layers)[number]) => number) => report.layers.reduce((a, l) => a + f(l), 0) / report.layers.length;
    return {
      model: which,
      parameters: report.sizes.compressedWeights,
      calibrationSamples: report.calibration!.samples,
      seconds: (performance.now() - t0) / 1000,
      stages: report.timings,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      outputErrorBefore: mean((l) => l.finetune?.errorBefore ?? NaN),
      outputErrorAfter: mean((l) => l.outputError ?? NaN),
    };
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Starts the running `ssvq` script again for each model and collects its figures. */
export function runPipelineBench(models: ("lenet" | "cnn3m")[], threads: number): PipelineMeasure[] {
  return models.map((m) => {
    const r = spawnSync(process.execPath, [process.argv[1]!, "bench", "finetune", "--pipeline-child", m, "--threads", String(threads)], {
      encoding: "utf8",
      maxBuffer: 16 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`the measuring process for ${m} failed: ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
    return JSON.parse(r.stdout) as PipelineMeasure;
  });
}
