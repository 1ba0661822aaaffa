/**
 * Bit accounting (DESIGN.md section 1 "Bits"): what a compressed layer costs, counted the way the
 * output file stores it: indices at ceil(log2 k) bits, one sign bit per (padded) element for SSVQ, the
 * codebook at its stored width, INT scales as float32 per row. Padding of the last sub-vector of each
 * row counts.
 */
import { indexBits } from "./pack.js";
import { isIntQuantized, type Mode, type Quantized } from "./quantize.js";

export interface LayerBits {
  /** Weights in the layer (rows * cols, no padding). */
  weights: number;
  indexBits: number;
  signBits: number;
  codebookBits: number;
  /** INT modes: the quantized values; VQ modes: 0. */
  valueBits: number;
  scaleBits: number;
  totalBits: number;
  bitsPerWeight: number;
}

/** The bits of a compressed layer; `storedBits` is the width of the stored codebook (the weight's own float width). */
export function layerBits(q: Quantized, storedBits: number): LayerBits {
  if (isIntQuantized(q)) return estimateBits(q.mode, 0, 0, q.rows, q.cols, storedBits);
  return estimateBits(q.mode, q.k, q.d, q.shape.rows, q.shape.cols, storedBits);
}

/** The same accounting from the shape alone (for --dry-run). */
export function estimateBits(mode: Mode, k: number, d: number, rows: number, cols: number, storedBits: number): LayerBits {
  const weights = rows * cols;
  if (mode === "int4" || mode === "int8") {
    const valueBits = weights * (mode === "int4" ? 4 : 8);
    const scaleBits = rows * 32;
    const totalBits = valueBits + scaleBits;
    return { weights, indexBits: 0, signBits: 0, codebookBits: 0, valueBits, scaleBits, totalBits, bitsPerWeight: totalBits / weights };
  }
  const count = rows * Math.ceil(cols / d);
  const idx = count * indexBits(k);
  const signBits = mode === "ssvq" ? count * d : 0;
  const codebookBits = k * d * storedBits;
  const totalBits = idx + signBits + codebookBits;
  return { weights, indexBits: idx, signBits, codebookBits, valueBits: 0, scaleBits: 0, totalBits, bitsPerWeight: totalBits / weights };
}

/** The (k, d) that `--bits B` picks, per mode (README's table). */
export const BITS_TABLE: Record<"ssvq" | "vq", Record<string, { k: number; d: number }>> = {
  ssvq: {
    "1.25": { k: 4, d: 8 },
    "1.5": { k: 16, d: 8 },
    "2": { k: 16, d: 4 },
    "2.5": { k: 64, d: 4 },
    "3": { k: 256, d: 4 },
  },
  vq: {
    "1": { k: 256, d: 8 },
    "1.5": { k: 64, d: 4 },
    "2": { k: 256, d: 4 },
    "3": { k: 4096, d: 4 },
    "4": { k: 256, d: 2 },
  },
};
