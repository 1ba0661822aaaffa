/**
 * `ssvq bench sweep`: the time of a 6-target `ssvq sweep` (SSVQ and VQ searched at 4x..24x, INT8, INT4;
 * calibration images 0-511, evaluation 512-1999) on LeNet-5 and the tiny ViT, against one plain
 * compression of the same model (SSVQ k16 d4 fine-tuned on the same images and evaluated the same way),
 * in the same process and thread pool. Figures, not pass/fail.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CompressConfig } from "../core/report.js";
import { resolveFinetuneOptions } from "../core/ssvq/finetune.js";
import { compressFile } from "../io/compress-file.js";
import { createThreadPool } from "../io/pool.js";
import { DEFAULT_TARGETS, runSweep } from "../io/sweep.js";
import { fixturesDir } from "../cli/demo.js";

export interface SweepBenchRow {
  model: string;
  plainSeconds: number;
  sweepSeconds: number;
  /** sweepSeconds / plainSeconds. */
  times: number;
  targets: number[];
  /** SSVQ and VQ points compressed and fine-tuned (targets reached), plus INT8 and INT4. */
  points: number;
  /** The sweep's seconds by stage (capture once; search per family; compress and evaluate summed over points). */
  stages: Record<string, number>;
  plainStages: Record<string, number>;
}

export async function runSweepBench(o: { threads: number; iters?: number }): Promise<SweepBenchRow[]> {
  const fixtures = fixturesDir();
  const images = join(fixtures, "fashion_test2000_x_u8.npy");
  const labels = join(fixtures, "fashion_test2000_y_u8.npy");
  const pool = createThreadPool(o.threads);
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-sweep-"));
  const finetuning = resolveFinetuneOptions(o.iters ? { iters: o.iters } : {});
  const config: CompressConfig = { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: true, finetuning };
  const rows: SweepBenchRow[] = [];
  try {
    for (const name of ["fashion_lenet5", "fashion_tinyvit"]) {
      const model = join(fixtures, `${name}.onnx`);
      const t0 = performance.now();
      const plain = await compressFile({
        input: model,
        out: join(dir, `${name}.onnx`),
        force: true,
        config,
        map: pool,
        data: { calib: { path: images, range: "0:512" }, eval: { path: images, range: "512:2000", labels }, preprocess: { scale: "1/255" }, batchSize: 256 },
      });
      const plainSeconds = (performance.now() - t0) / 1000;
      const t1 = performance.now();
      const sweep = await runSweep({
        input: model,
        config,
        calib: { path: images, range: "0:512" },
        eval: { path: images, range: "512:2000", labels },
        preprocess: { scale: "1/255" },
        batchSize: 256,
        targets: DEFAULT_TARGETS,
        methods: ["ssvq", "vq", "int8", "int4"],
        map: pool,
      });
      const sweepSeconds = (performance.now() - t1) / 1000;
      rows.push({
        model: name,
        plainSeconds,
        sweepSeconds,
        times: sweepSeconds / plainSeconds,
        targets: [...DEFAULT_TARGETS],
        points: sweep.points.filter((p) => p.reached).length,
        stages: sweep.timings,
        plainStages: plain.report.timings,
      });
    }
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
