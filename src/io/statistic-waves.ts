/**
 * A compression's calibration statistics in waves under a memory budget (src/core/calib/waves.ts): the
 * bytes left for statistics and fine-tuning are the budget less what the run holds anyway (the process
 * now, every layer's quantized state, the capture session's copy of the model and one batch of exposed
 * activations, the worker threads), and each wave is captured by the prepared `CaptureRunner` when
 * compressModel asks for it.
 */
import type { StatisticWaves } from "../core/compress.js";
import type { WeightInfo } from "../core/onnx/weights.js";
import { layerWorkBytes, planWaves, type WavePlan } from "../core/calib/waves.js";
import { POOLED_GRAM_BYTES_PER_THREAD } from "../core/calib/gram-pool.js";
import type { AnyLayerCapture, CaptureProgress, CaptureRunner, Uncalibrated } from "./capture.js";
import { residentBytes } from "./memory.js";

/**
 * Bytes per weight a layer holds while its wave is in work (its rows and its reconstruction in float32,
 * its sign bits and indices unpacked), counted in its wave like its statistic.
 */
export const IN_WORK_BYTES_PER_WEIGHT = 12;
/**
 * Bytes per weight a final layer keeps until the output is written, whatever the wave: what the output
 * stores (packed index and sign planes, INT values: at most about 1.1 bytes per weight).
 */
export const PACKED_BYTES_PER_WEIGHT = 1.5;
/** Bytes a pool thread holds (its V8 heap, onnxruntime's code and arenas). */
export const THREAD_BYTES = 96 * 2 ** 20;

export interface WaveSetup {
  waves: StatisticWaves;
  plan: WavePlan;
  budgetBytes: number;
  /** The budget less what the run holds anyway: the bytes the waves are planned in. */
  availableBytes: number;
  /** Estimated bytes of all the statistics at once (what one wave would hold without the budget). */
  statisticsBytes: number;
  /** Calibration samples and layers that could not be calibrated, as the waves come in. */
  samples(): number;
  uncalibrated: Uncalibrated[];
}

export interface WaveOptions {
  budgetBytes: number;
  threads: number;
  /**
   * Bytes a capture session holds for the model: its encoding (twice: ours and onnxruntime's) and its
   * external data (once: onnxruntime reads it from the files).
   */
  modelBytes: number;
  /** Keep the statistics of a plan of one wave for a second run (--compare vq). */
  reuse?: boolean;
  onProgress?: (fraction: number) => void;
}

/** Plans the waves of `selected` (in order) and captures each with `runner` when asked. */
export function statisticWaves(runner: CaptureRunner, selected: readonly WeightInfo[], o: WaveOptions): WaveSetup {
  const targets = new Set(runner.targets.map((t) => t.name));
  const layers = selected
    .filter((w) => targets.has(w.name))
    .map((w) => {
      const e = runner.estimates.get(w.name)!;
      const values = e.form === "factor" ? w.layout.groups * e.samples * w.layout.cols : w.layout.groups * w.layout.cols * w.layout.cols;
      const held = IN_WORK_BYTES_PER_WEIGHT * w.layout.rows * w.layout.cols;
      return { name: w.name, statBytes: e.bytes + held, workBytes: layerWorkBytes(w.layout.rows, w.layout.cols, values), captured: e.bytes };
    });
  const weights = selected.reduce((a, w) => a + w.layout.rows * w.layout.cols, 0);
  // With a pool, capture's Gram products run there (PooledGram) and hold their chunk copies.
  const pooled = o.threads > 1 ? o.threads * POOLED_GRAM_BYTES_PER_THREAD : 0;
  const fixed = residentBytes() + PACKED_BYTES_PER_WEIGHT * weights + o.modelBytes + 2 * runner.activationBytes + o.threads * THREAD_BYTES + pooled;
  const availableBytes = o.budgetBytes - fixed;
  const plan = planWaves(layers, availableBytes, o.threads);
  let samples = 0;
  const uncalibrated: Uncalibrated[] = [...runner.uncalibrated];
  let kept: Map<string, AnyLayerCapture> | undefined;
  const waves: StatisticWaves = {
    waves: plan.waves,
    threads: plan.threads,
    // The plan counts one kernel per thread in its work; the kernels a thread keeps cached beyond that
    // get what the budget leaves of each wave, shared by its threads.
    kernelCacheBytes: plan.bytes.map((b, w) => Math.max(0, Math.floor((availableBytes - b) / plan.threads[w]!))),
    async capture(names, wave) {
      if (kept) return kept;
      const progress = (p: CaptureProgress) => {
        if (p.fraction !== undefined) o.onProgress?.((wave + p.fraction) / plan.waves.length);
      };
      const cap = await runner.capture(new Set(names), progress);
      samples = cap.samples;
      for (const u of cap.uncalibrated) if (!uncalibrated.some((x) => x.name === u.name)) uncalibrated.push(u);
      if (o.reuse && plan.waves.length === 1) kept = cap.layers;
      return cap.layers;
    },
    release() {
      kept = undefined;
    },
  };
  return {
    waves,
    plan,
    budgetBytes: o.budgetBytes,
    availableBytes,
    statisticsBytes: layers.reduce((a, l) => a + l.captured, 0),
    samples: () => samples,
    uncalibrated,
  };
}
