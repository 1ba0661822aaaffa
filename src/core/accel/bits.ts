/**
 * Bits of a layer's weights in each format: dense formats at their width (plus per-channel scales for
 * the integer ones), VQ and SSVQ either from (k, d) with DESIGN.md's bit accounting or from the per-layer
 * figures of an actual compression.
 */
import { InputError } from "../errors.js";
import type { GemmLayer } from "./gemm.js";
import { isVqFormat, type AccelParams, type DenseFormat, type Format, type VqFormat } from "./params.js";

/** Per-layer figures of an actual compression. `bitsPerWeight` counts indices, signs and the codebook. */
export interface LayerBits {
  bitsPerWeight: number;
  k: number;
  d: number;
}
/** Keyed by layer (node) name or by weight tensor name. */
export type PerLayerBits = Readonly<Record<string, LayerBits>>;

export interface WeightEncoding {
  /** The format the weights are stored in (a layer a compression left out falls back to a dense one). */
  format: Format;
  /** Bits per weight, everything included (codebook, signs, scales), over K x N x groups weights. */
  bitsPerWeight: number;
  /** Bits of all the layer's weights. */
  totalBits: number;
  /** VQ/SSVQ only: codebook size, sub-vector length and the codebook's bits (loaded before the layer starts). */
  k?: number;
  d?: number;
  codebookBits?: number;
  /** Where the figure comes from. */
  source: "format" | "k,d" | "compression" | "activation" | "fallback";
}

export function checkKD(k: number, d: number, where = ""): void {
  if (!Number.isSafeInteger(k) || k < 2) throw new InputError(`${where}k must be an integer >= 2 (codebook entries), not ${k}`);
  if (!Number.isSafeInteger(d) || d < 1) throw new InputError(`${where}d must be a positive integer (weights per sub-vector), not ${d}`);
}

/**
 * Bits of a VQ or SSVQ weight of `rows` rows by `cols` columns (cols = the reduction): one index of
 * log2(k) bits per sub-vector of d consecutive weights of a row (the last one zero-padded, the padding
 * counted), for SSVQ one sign bit per (padded) weight, and one codebook of k x d entries.
 */
export function vqWeightBits(format: VqFormat, rows: number, cols: number, k: number, d: number, codebookBits: number): number {
  const subvectors = rows * Math.ceil(cols / d);
  const indexBits = subvectors * Math.log2(k);
  const signBits = format === "ssvq" ? subvectors * d : 0;
  return indexBits + signBits + k * d * codebookBits;
}

export interface EncodingOptions {
  k: number;
  d: number;
  perLayer?: Partial<Record<VqFormat, PerLayerBits>>;
  /** For layers a per-layer map leaves out (the compression skipped them). */
  fallbackFormat: DenseFormat;
}

function checkLayerBits(b: LayerBits, key: string, format: VqFormat): LayerBits {
  const where = `${format} figures of layer ${JSON.stringify(key)}: `;
  if (typeof b !== "object" || b === null) throw new InputError(`${where}expected {bitsPerWeight, k, d}`);
  if (!(typeof b.bitsPerWeight === "number" && Number.isFinite(b.bitsPerWeight) && b.bitsPerWeight > 0))
    throw new InputError(`${where}bitsPerWeight must be a positive number, not ${String(b.bitsPerWeight)}`);
  checkKD(b.k, b.d, where);
  return b;
}

/** How the weights of `layer` are stored in `format`. */
export function weightEncoding(layer: GemmLayer, format: Format, p: AccelParams, o: EncodingOptions): WeightEncoding {
  const count = layer.K * layer.N * layer.groups;
  if (!layer.constantWeights) {
    const bits = p.bytesPerActivation * 8;
    return { format, bitsPerWeight: bits, totalBits: bits * count, source: "activation" };
  }
  const dense = (f: DenseFormat, source: WeightEncoding["source"]): WeightEncoding => {
    const scales = f === "int8" || f === "int4" ? layer.N * layer.groups * p.scaleBitsPerChannel : 0;
    const totalBits = count * p.bitsPerWeight[f] + scales;
    return { format: f, bitsPerWeight: totalBits / count, totalBits, source };
  };
  if (!isVqFormat(format)) return dense(format, "format");
  const map = o.perLayer?.[format];
  if (map) {
    const key = Object.hasOwn(map, layer.name)
      ? layer.name
      : layer.weightName !== undefined && Object.hasOwn(map, layer.weightName)
        ? layer.weightName
        : undefined;
    if (key === undefined) return dense(o.fallbackFormat, "fallback");
    const b = checkLayerBits(map[key]!, key, format);
    return {
      format,
      bitsPerWeight: b.bitsPerWeight,
      totalBits: b.bitsPerWeight * count,
      k: b.k,
      d: b.d,
      codebookBits: b.k * b.d * p.codebookBits,
      source: "compression",
    };
  }
  // DESIGN.md layout: rows = outputs (N per group), cols = the reduction (K).
  const totalBits = vqWeightBits(format, layer.N * layer.groups, layer.K, o.k, o.d, p.codebookBits);
  return {
    format,
    bitsPerWeight: totalBits / count,
    totalBits,
    k: o.k,
    d: o.d,
    codebookBits: o.k * o.d * p.codebookBits,
    source: "k,d",
  };
}
