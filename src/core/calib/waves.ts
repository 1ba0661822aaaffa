/**
 * Waves of layers under a memory budget (DESIGN.md section 6; issue 11 item 5). Calibration statistics
 * and fine-tuning are the memory of a compression that grows with the model: a 4608-column convolution
 * holds an H of 85 MB in float32, its fine-tuning a float64 copy of it per thread plus the Adam state of
 * its weights. A compression therefore captures a group of layers (a wave), quantizes and fine-tunes
 * them, frees their statistics, and goes on with the next group, each wave sized so that what it holds
 * at once fits the bytes available.
 *
 * What a wave holds at once: every layer's statistic (from capture to the end of its fine-tuning), and
 * the working memory of the layers being fine-tuned, at most one per thread (or one split over all
 * threads): Sum(stat) + threads * max(work). Layers keep their order (graph order), so that capture's
 * passes over the data expose neighbouring activations. A wave that cannot hold even its first layer on
 * every thread runs its products on one thread (`threads` 1: one working copy instead of one per
 * thread; the bytes are the same on any map). A layer that needs more than the bytes available even so
 * still gets a wave of its own (`oversized`): the compression goes on, more slowly, rather than refusing.
 *
 * Results never depend on the plan: every layer's statistic, quantization and fine-tuning depend on that
 * layer alone (src/io/capture.ts runs the same passes for every wave).
 */

/** What one layer needs, in bytes. */
export interface WaveLayer {
  name: string;
  /** Its statistic and its own weights in work, held from its capture to the end of its fine-tuning. */
  statBytes: number;
  /** Its working memory while it is fine-tuned (per thread it runs on). */
  workBytes: number;
}

export interface WavePlan {
  /** Layer names per wave, in the given order. */
  waves: string[][];
  /** Estimated peak bytes of each wave (`waveBytes`). */
  bytes: number[];
  /** Threads each wave's products may use: all of them, or 1 when the wave does not fit otherwise. */
  threads: number[];
  /** Layers that need more than the bytes available on their own (each alone in its wave). */
  oversized: Array<{ name: string; bytes: number }>;
}

/**
 * Bytes of fine-tuning state per weight: the weights in float32 and normalised in float64, the sign
 * bits, codeword indices, E and P in float64 (and in float32 for the fast products of a large layer), the
 * latent sign with its two Adam moments, and the freezing counters (src/core/ssvq/finetune.ts
 * `createState`), with the output-error products' buffers.
 */
export const FINETUNE_BYTES_PER_WEIGHT = 88;

/**
 * A layer's working memory while fine-tuned: its state, and the engine's float64 copy of the statistic
 * (an onnxruntime session's initializer or the WebAssembly kernel's memory) with the transient second
 * copy made while it is built, and for a large layer onnxruntime's float32 copy for the fast products
 * (counted for every layer: an upper bound). `values`: the numbers the statistic holds (groups * cols^2
 * for H, groups * samples * cols for X).
 */
export function layerWorkBytes(rows: number, cols: number, values: number): number {
  return FINETUNE_BYTES_PER_WEIGHT * rows * cols + 24 * values;
}

/** What a wave of these layers holds at once on `threads` threads. */
export function waveBytes(layers: readonly WaveLayer[], threads: number): number {
  let stats = 0;
  let work = 0;
  for (const l of layers) {
    stats += l.statBytes;
    work = Math.max(work, l.workBytes);
  }
  return stats + Math.max(1, threads) * work;
}

/**
 * Groups the layers, in order, into waves whose `waveBytes` stays within `available` bytes: each wave
 * takes layers while the next one still fits.
 */
export function planWaves(layers: readonly WaveLayer[], available: number, threads: number): WavePlan {
  const all = Math.max(1, threads);
  const waves: string[][] = [];
  const bytes: number[] = [];
  const used: number[] = [];
  const oversized: WavePlan["oversized"] = [];
  let current: string[] = [];
  let t = all;
  let stats = 0;
  let work = 0;
  const close = () => {
    if (current.length === 0) return;
    waves.push(current);
    bytes.push(stats + t * work);
    used.push(t);
    current = [];
    stats = 0;
    work = 0;
  };
  for (const l of layers) {
    if (current.length > 0 && stats + l.statBytes + t * Math.max(work, l.workBytes) > available) close();
    if (current.length === 0) {
      // A new wave: on every thread when its first layer fits so, else on one.
      t = l.statBytes + all * l.workBytes <= available ? all : 1;
      if (l.statBytes + l.workBytes > available) oversized.push({ name: l.name, bytes: l.statBytes + l.workBytes });
    }
    current.push(l.name);
    stats += l.statBytes;
    work = Math.max(work, l.workBytes);
  }
  close();
  return { waves, bytes, threads: used, oversized };
}
