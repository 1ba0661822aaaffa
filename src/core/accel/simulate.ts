/**
 * The per-layer latency model and whole-model totals.
 *
 * Per layer (G groups of an M x K x N GEMM):
 *   compute  = G x the SCALE-Sim closed form of the dataflow (gemm.ts): exact against SCALE-Sim.
 *   DRAM     = bytes by operand (dramTraffic below), turned into cycles by the bus model: modelled.
 *   decode   = VQ/SSVQ only: indices the decoders must expand / (decoders x codebook ports): modelled.
 *   prologue = the first weight and input tiles (and a VQ codebook) must arrive before the array starts.
 *   latency  = prologue + max(compute, DRAM after the prologue, decode).
 * The bound is whichever term of the max is largest; for DRAM, whether weights or activations move most
 * bytes (shared bus) or occupy the slowest port (per-buffer).
 *
 * Only the GEMM layers are modelled: element-wise operators, normalisation, softmax and pooling are not
 * (they move activations only, the same in every format, so the whole-model speedup over them is 1).
 */
import { weightEncoding, type PerLayerBits, type WeightEncoding } from "./bits.js";
import { layerComputeCycles, weightPassesIntoArray, type GemmLayer } from "./gemm.js";
import {
  bytesPerCycle,
  isVqFormat,
  validateParams,
  type AccelParams,
  type DenseFormat,
  type Format,
  type VqFormat,
} from "./params.js";

export type Bound = "compute" | "weights" | "activations" | "decode";

/** DRAM bytes by operand. `ifmap` includes an activation used as the K x N operand (attention). */
export interface DramBytes {
  weights: number;
  ifmap: number;
  ofmap: number;
}

/** Bytes through each buffer's DRAM port (what `per-buffer` turns into cycles). */
export interface PortBytes {
  ifmap: number;
  filter: number;
  ofmap: number;
}

export interface Traffic {
  dramBytes: DramBytes;
  ports: PortBytes;
  /** How often the weights are re-read from DRAM (1 when they fit or the inputs fit). */
  weightReads: number;
  /** How often the inputs are re-read from DRAM. */
  ifmapReads: number;
  /** Output traffic in multiples of the output (1, or 2 x splits - 1 when partial sums spill). */
  ofmapPasses: number;
}

export interface LayerResult {
  name: string;
  M: number;
  K: number;
  N: number;
  format: Format;
  computeCycles: number;
  dramBytes: DramBytes;
  decodeCycles: number;
  latencyCycles: number;
  bound: Bound;
  opType: string;
  groups: number;
  bitsPerWeight: number;
  prologueCycles: number;
  /** Bus cycles after the prologue (the term inside the max). */
  dramCycles: number;
  /** Set when the weights are not in `format` (a layer the compression left out). */
  note?: string;
}

export interface FormatTotals {
  latencyCycles: number;
  seconds: number;
  computeCycles: number;
  decodeCycles: number;
  dramBytes: DramBytes;
  /** Layers by bound. */
  bounds: Record<Bound, number>;
}

export interface SimulationResult {
  preset: string;
  config: AccelParams;
  layers: LayerResult[];
  /** Per format; always includes the int8 and fp16 baselines of the speedups. */
  totals: Record<string, FormatTotals>;
  speedup: { vsInt8: Record<string, number>; vsFp16: Record<string, number> };
}

export interface SimulateOptions {
  formats: readonly Format[];
  /** VQ/SSVQ codebook size and sub-vector length when no per-layer figures are given (default 16, 8). */
  k?: number;
  d?: number;
  /** Per-layer figures of an actual compression, keyed by node name or weight name. */
  perLayer?: Partial<Record<VqFormat, PerLayerBits>>;
  /** Weights of layers a per-layer map leaves out are in this format (default int8). */
  fallbackFormat?: DenseFormat;
  /** The name shown as "preset" (a preset name or where the configuration came from). */
  preset: string;
}

/**
 * DRAM bytes of one layer (modelled; SCALE-Sim's own counts differ where they are artifacts, see
 * scalesim.ts). Per group, with the inputs I, weights W (at their format's bits) and outputs O, and
 * half of each SRAM usable (double-buffered):
 * - W fits the weight buffer, or I fits the input buffer: every operand crosses the bus once.
 * - Neither fits: the better of (a) keep a block of Nt output columns' weights on chip and re-read the
 *   inputs once per block, ceil(N/Nt) times; (b) keep a block of Mt input rows on chip and re-read the
 *   weights once per block, ceil(M/Mt) times. Fewer weight bits make more columns fit, so compression
 *   also cuts re-fetches.
 * - Not even one output column's weights nor one input row fits: the reduction is split and partial sums
 *   go out to DRAM and back, unless the outputs fit the output buffer.
 * Inputs are counted as the tensor read (im2col expansion happens on chip), outputs once when written.
 */
export function dramTraffic(l: GemmLayer, p: AccelParams, weightBits: number): Traffic {
  const g = l.groups;
  const a = p.bytesPerActivation;
  const I = (l.ifmapElements * a) / g;
  const W = weightBits / 8 / g;
  const O = (l.ofmapElements * a) / g;
  const ibuf = p.ifmapSramBytes / 2;
  const wbuf = p.filterSramBytes / 2;
  const obuf = p.ofmapSramBytes / 2;
  let weightReads = 1;
  let ifmapReads = 1;
  let ofmapPasses = 1;
  if (!(W <= wbuf || I <= ibuf)) {
    const perColumn = W / l.N;
    const perRow = I / l.M;
    const nt = Math.floor(wbuf / perColumn);
    const mt = Math.floor(ibuf / perRow);
    const options: [number, number, number][] = [];
    if (nt >= 1) options.push([1, Math.ceil(l.N / nt), 1]);
    if (mt >= 1) options.push([Math.ceil(l.M / mt), 1, 1]);
    if (options.length === 0) {
      const cols = Math.min(l.N, p.arrayCols);
      const kt = Math.max(1, Math.floor(wbuf / (perColumn / l.K) / cols));
      const splits = Math.ceil(l.K / kt);
      options.push([1, Math.ceil(l.N / cols), O <= obuf ? 1 : 2 * splits - 1]);
    }
    const cost = ([w, i, o]: [number, number, number]) => w * W + i * I + o * O;
    const best = options.reduce((x, y) => (cost(y) < cost(x) ? y : x));
    [weightReads, ifmapReads, ofmapPasses] = best;
  }
  const wBytes = Math.ceil(g * W * weightReads);
  const iBytes = Math.ceil(g * I * ifmapReads);
  const oBytes = Math.ceil(g * O * ofmapPasses);
  return {
    dramBytes: l.constantWeights
      ? { weights: wBytes, ifmap: iBytes, ofmap: oBytes }
      : { weights: 0, ifmap: iBytes + wBytes, ofmap: oBytes },
    ports: { ifmap: iBytes, filter: wBytes, ofmap: oBytes },
    weightReads,
    ifmapReads,
    ofmapPasses,
  };
}

export interface Roofline {
  prologueCycles: number;
  dramCycles: number;
  latencyCycles: number;
}

/**
 * latency = prologue + max(compute, DRAM after the prologue, decode), with the bus model turning bytes
 * into cycles: `shared` sums the ports, `per-buffer` takes the slowest port, `calc` never stalls.
 * `prologue` holds the bytes each port must deliver before the array starts.
 */
export function roofline(
  p: AccelParams,
  computeCycles: number,
  ports: PortBytes,
  prologue: PortBytes = { ifmap: 0, filter: 0, ofmap: 0 },
  decodeCycles = 0,
): Roofline {
  let prologueCycles = 0;
  let dramCycles = 0;
  const bpc = bytesPerCycle(p);
  if (p.bus === "shared") {
    const pro = prologue.ifmap + prologue.filter + prologue.ofmap;
    const all = ports.ifmap + ports.filter + ports.ofmap;
    prologueCycles = Math.ceil(pro / bpc);
    dramCycles = Math.ceil(Math.max(0, all - pro) / bpc);
  } else if (p.bus === "per-buffer") {
    prologueCycles = Math.ceil(Math.max(prologue.ifmap, prologue.filter, prologue.ofmap) / bpc);
    const rest = Math.max(ports.ifmap - prologue.ifmap, ports.filter - prologue.filter, ports.ofmap - prologue.ofmap, 0);
    dramCycles = Math.ceil(rest / bpc);
  }
  return { prologueCycles, dramCycles, latencyCycles: prologueCycles + Math.max(computeCycles, dramCycles, decodeCycles) };
}

/** Bytes of the first weight tile (plus a VQ codebook) and the first input tile. */
function prologueBytes(l: GemmLayer, p: AccelParams, enc: WeightEncoding, traffic: Traffic): PortBytes {
  const R = p.arrayRows;
  const C = p.arrayCols;
  const bytesPerWeight = enc.bitsPerWeight / 8;
  const codebook = enc.codebookBits !== undefined ? enc.codebookBits / 8 : 0;
  const filter = Math.min(traffic.ports.filter, Math.ceil(Math.min(l.K, R) * Math.min(l.N, C) * bytesPerWeight + codebook));
  const ifmap = Math.min(traffic.ports.ifmap, Math.min(l.M, Math.max(R, C)) * Math.min(l.K, R) * p.bytesPerActivation);
  return { ifmap, filter, ofmap: 0 };
}

/** VQ/SSVQ: cycles the decoders need to expand every index the array consumes. */
export function decodeCycles(l: GemmLayer, p: AccelParams, enc: WeightEncoding, traffic: Traffic): number {
  if (!isVqFormat(enc.format) || enc.d === undefined || !l.constantWeights) return 0;
  const passes = Math.max(traffic.weightReads, weightPassesIntoArray(p.dataflow, p.arrayRows, p.arrayCols, l.M));
  const indices = l.groups * passes * l.N * Math.ceil(l.K / enc.d);
  return Math.ceil(indices / (p.decoders * p.codebookPorts));
}

function boundOf(l: GemmLayer, p: AccelParams, compute: number, dram: number, decode: number, t: Traffic): Bound {
  if (compute >= dram && compute >= decode) return "compute";
  if (decode >= dram) return "decode";
  if (p.bus === "per-buffer") {
    const { ifmap, filter, ofmap } = t.ports;
    return filter >= ifmap && filter >= ofmap && l.constantWeights ? "weights" : "activations";
  }
  const w = t.dramBytes.weights;
  return w >= t.dramBytes.ifmap + t.dramBytes.ofmap ? "weights" : "activations";
}

/** One layer in one weight encoding. */
export function simulateLayer(l: GemmLayer, p: AccelParams, enc: WeightEncoding, requested: Format = enc.format): LayerResult {
  const compute = layerComputeCycles(p.dataflow, p.arrayRows, p.arrayCols, l);
  const traffic = dramTraffic(l, p, enc.totalBits);
  const decode = decodeCycles(l, p, enc, traffic);
  const r = roofline(p, compute, traffic.ports, prologueBytes(l, p, enc, traffic), decode);
  const result: LayerResult = {
    name: l.name,
    M: l.M,
    K: l.K,
    N: l.N,
    format: requested,
    computeCycles: compute,
    dramBytes: traffic.dramBytes,
    decodeCycles: decode,
    latencyCycles: r.latencyCycles,
    bound: boundOf(l, p, compute, r.dramCycles, decode, traffic),
    opType: l.opType,
    groups: l.groups,
    bitsPerWeight: enc.bitsPerWeight,
    prologueCycles: r.prologueCycles,
    dramCycles: r.dramCycles,
  };
  if (enc.source === "fallback") result.note = `not in the compression: weights in ${enc.format}`;
  return result;
}

const emptyTotals = (): FormatTotals => ({
  latencyCycles: 0,
  seconds: 0,
  computeCycles: 0,
  decodeCycles: 0,
  dramBytes: { weights: 0, ifmap: 0, ofmap: 0 },
  bounds: { compute: 0, weights: 0, activations: 0, decode: 0 },
});

/**
 * Simulates every layer in every requested format, plus the int8 and fp16 baselines of the speedups
 * (their layers are listed only when requested). Layers are listed layer by layer, formats in the
 * order given.
 */
export function simulate(layers: readonly GemmLayer[], params: AccelParams, o: SimulateOptions): SimulationResult {
  const p = validateParams(params);
  const enc = { k: o.k ?? 16, d: o.d ?? 8, perLayer: o.perLayer, fallbackFormat: o.fallbackFormat ?? "int8" };
  const all: Format[] = [...new Set<Format>([...o.formats, "int8", "fp16"])];
  const totals: Record<string, FormatTotals> = {};
  for (const f of all) totals[f] = emptyTotals();
  const out: LayerResult[] = [];
  for (const l of layers) {
    for (const f of all) {
      const r = simulateLayer(l, p, weightEncoding(l, f, p, enc), f);
      const t = totals[f]!;
      t.latencyCycles += r.latencyCycles;
      t.computeCycles += r.computeCycles;
      t.decodeCycles += r.decodeCycles;
      t.dramBytes.weights += r.dramBytes.weights;
      t.dramBytes.ifmap += r.dramBytes.ifmap;
      t.dramBytes.ofmap += r.dramBytes.ofmap;
      t.bounds[r.bound]++;
      if (o.formats.includes(f)) out.push(r);
    }
  }
  for (const f of all) totals[f]!.seconds = totals[f]!.latencyCycles / p.clockHz;
  const ratio = (base: number, x: number) => (x > 0 ? base / x : 0);
  const speedup = { vsInt8: {} as Record<string, number>, vsFp16: {} as Record<string, number> };
  for (const f of all) {
    speedup.vsInt8[f] = ratio(totals["int8"]!.latencyCycles, totals[f]!.latencyCycles);
    speedup.vsFp16[f] = ratio(totals["fp16"]!.latencyCycles, totals[f]!.latencyCycles);
  }
  return { preset: o.preset, config: p, layers: out, totals, speedup };
}
