/**
 * Turning a layer's input activation into the sample matrix X of its weight's row layout, chunk by chunk.
 *
 * The statistic of a weight laid out as rows x cols (DESIGN.md section 1) is H = X X^T / n, X being
 * [cols, n]: one column per "sample" the weight's rows are multiplied with. A sampler yields X in chunks
 * of columns, written feature-major (`Xt[col * r + k]` for the k-th sample of the chunk), so the memory of
 * a layer's statistics stays one chunk however large the activation:
 *
 * - Conv (1-D, 2-D, 3-D), weight [Cout, Cin/g, k...]: im2col. Per group, a sample is one output position
 *   (batch x output spatial), its column the input patch that position reads, in the weight's row order
 *   (channel of the group, then kernel dims row-major). Strides, dilations, explicit pads and auto_pad
 *   (SAME_UPPER, SAME_LOWER, VALID) are honoured; padding reads as zeros.
 * - ConvTranspose, weight [Cin, Cout/g, k...]: per group, a sample is one input position, its column the
 *   group's Cin/g channel values there.
 * - Gemm: A [M, K] (or [K, M] with transA): the M rows are the samples.
 * - MatMul: A [..., K]: leading dimensions flattened into samples; a 1-D A is one sample.
 */
import { InputError } from "../errors.js";

export type Activation = Float32Array | Float64Array;

/** Yields the sample matrix of one activation tensor for one weight, per group, in chunks of samples. */
export interface ActivationSampler {
  groups: number;
  /** Rows of X (the weight's reduction dimension, per group). */
  cols: number;
  /** Samples (columns of X) per group. */
  samples: number;
  /**
   * Writes samples [p0, p1) of `group` into `Xt`, feature-major: Xt[col * (p1 - p0) + (p - p0)].
   * `Xt` must hold at least cols * (p1 - p0) values.
   */
  fill(group: number, p0: number, p1: number, Xt: Float64Array): void;
}

export type AutoPad = "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID";

/** Conv attributes as ONNX defines them; absent lists take their defaults. */
export interface ConvAttrs {
  autoPad?: AutoPad;
  /** [begin..., end...] per spatial dim. */
  pads?: number[];
  strides?: number[];
  dilations?: number[];
  group?: number;
}

/** The geometry of a convolution over a concrete input, spatial dims normalised to 3 (leading 1s). */
export interface ConvGeometry {
  batch: number;
  channels: number;
  groups: number;
  /** Input spatial dims, normalised to [D, H, W]. */
  input: [number, number, number];
  kernel: [number, number, number];
  strides: [number, number, number];
  dilations: [number, number, number];
  padsBegin: [number, number, number];
  output: [number, number, number];
}

const to3 = (v: number[], fill: number): [number, number, number] => {
  const out: number[] = [fill, fill, fill];
  for (let i = 0; i < v.length; i++) out[3 - v.length + i] = v[i]!;
  return out as [number, number, number];
};

/**
 * The geometry of a Conv with input dims [N, C, spatial...] and kernel spatial dims `kernel`, as the ONNX
 * operator computes it. Throws an InputError when the dims do not fit (wrong rank, too small an input).
 */
export function convGeometry(inputDims: readonly number[], kernel: readonly number[], attrs: ConvAttrs, where = "Conv"): ConvGeometry {
  const nd = kernel.length;
  if (nd < 1 || nd > 3) throw new InputError(`${where}: ${nd}-D convolutions are not supported for calibration (1-D to 3-D are)`);
  if (inputDims.length !== nd + 2)
    throw new InputError(`${where}: its input has shape [${inputDims.join(", ")}], expected rank ${nd + 2} for a ${nd}-D kernel`);
  const spatial = inputDims.slice(2);
  const strides = attrs.strides && attrs.strides.length ? attrs.strides : kernel.map(() => 1);
  const dilations = attrs.dilations && attrs.dilations.length ? attrs.dilations : kernel.map(() => 1);
  const group = attrs.group ?? 1;
  if (strides.length !== nd || dilations.length !== nd)
    throw new InputError(`${where}: strides/dilations have ${strides.length}/${dilations.length} values for a ${nd}-D kernel`);
  const autoPad = attrs.autoPad ?? "NOTSET";
  const begin: number[] = [];
  const out: number[] = [];
  for (let i = 0; i < nd; i++) {
    const inSize = spatial[i]!;
    const s = strides[i]!;
    const eff = (kernel[i]! - 1) * dilations[i]! + 1;
    if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") {
      const o = Math.ceil(inSize / s);
      const total = Math.max(0, (o - 1) * s + eff - inSize);
      begin.push(autoPad === "SAME_UPPER" ? Math.floor(total / 2) : Math.ceil(total / 2));
      out.push(o);
    } else if (autoPad === "VALID") {
      begin.push(0);
      out.push(Math.floor((inSize - eff) / s) + 1);
    } else {
      const pads = attrs.pads && attrs.pads.length ? attrs.pads : new Array<number>(2 * nd).fill(0);
      if (pads.length !== 2 * nd) throw new InputError(`${where}: pads has ${pads.length} values for a ${nd}-D kernel`);
      begin.push(pads[i]!);
      out.push(Math.floor((inSize + pads[i]! + pads[i + nd]! - eff) / s) + 1);
    }
  }
  if (out.some((o) => !(o >= 1)))
    throw new InputError(`${where}: input spatial size [${spatial.join(", ")}] is smaller than the kernel's reach`);
  const channels = inputDims[1]!;
  if (!(group >= 1) || channels % group !== 0)
    throw new InputError(`${where}: ${channels} input channels do not split into ${group} groups`);
  return {
    batch: inputDims[0]!,
    channels,
    groups: group,
    input: to3(spatial, 1),
    kernel: to3([...kernel], 1),
    strides: to3(strides, 1),
    dilations: to3(dilations, 1),
    padsBegin: to3(begin, 0),
    output: to3(out, 1),
  };
}

/** im2col for a Conv; `x` is the input activation [N, C, spatial...] in C order. */
export function convSampler(x: Activation, g: ConvGeometry): ActivationSampler {
  const [ID, IH, IW] = g.input;
  const [KD, KH, KW] = g.kernel;
  const [SD, SH, SW] = g.strides;
  const [DD, DH, DW] = g.dilations;
  const [PD, PH, PW] = g.padsBegin;
  const [OD, OH, OW] = g.output;
  const cg = g.channels / g.groups;
  const kernelSize = KD * KH * KW;
  const cols = cg * kernelSize;
  const outPlane = OD * OH * OW;
  const inPlane = ID * IH * IW;
  if (x.length < g.batch * g.channels * inPlane) throw new Error("convSampler: activation shorter than its dims");
  return {
    groups: g.groups,
    cols,
    samples: g.batch * outPlane,
    fill(group, p0, p1, Xt) {
      const r = p1 - p0;
      // Decompose p0 once; the position counters then advance incrementally.
      const n0 = Math.floor(p0 / outPlane);
      let rem = p0 - n0 * outPlane;
      const od0 = Math.floor(rem / (OH * OW));
      rem -= od0 * OH * OW;
      const oh0 = Math.floor(rem / OW);
      const ow0 = rem - oh0 * OW;
      for (let col = 0; col < cols; col++) {
        const c = Math.floor(col / kernelSize);
        let kr = col - c * kernelSize;
        const kd = Math.floor(kr / (KH * KW));
        kr -= kd * KH * KW;
        const kh = Math.floor(kr / KW);
        const kw = kr - kh * KW;
        const channel = group * cg + c;
        const dOff = kd * DD - PD;
        const hOff = kh * DH - PH;
        const wOff = kw * DW - PW;
        const base = col * r;
        let n = n0;
        let od = od0;
        let oh = oh0;
        let ow = ow0;
        let k = 0;
        while (k < r) {
          // One run along the output width (or the rest of the chunk, whichever ends first).
          const run = Math.min(OW - ow, r - k);
          const id = od * SD + dOff;
          const ih = oh * SH + hOff;
          if (id < 0 || id >= ID || ih < 0 || ih >= IH) {
            Xt.fill(0, base + k, base + k + run);
          } else {
            const rowBase = ((n * g.channels + channel) * ID + id) * IH * IW + ih * IW;
            let iw = ow * SW + wOff;
            for (let t = 0; t < run; t++, iw += SW) Xt[base + k + t] = iw >= 0 && iw < IW ? x[rowBase + iw]! : 0;
          }
          k += run;
          ow += run;
          if (ow === OW) {
            ow = 0;
            if (++oh === OH) {
              oh = 0;
              if (++od === OD) {
                od = 0;
                n++;
              }
            }
          }
        }
      }
    },
  };
}

/** ConvTranspose: per group, each input position's Cin/g channel values; `x` is [N, C, spatial...]. */
export function convTransposeSampler(x: Activation, dims: readonly number[], groups: number, where = "ConvTranspose"): ActivationSampler {
  if (dims.length < 3) throw new InputError(`${where}: its input has shape [${dims.join(", ")}], expected [N, C, spatial...]`);
  const [N, C] = [dims[0]!, dims[1]!];
  if (C % groups !== 0) throw new InputError(`${where}: ${C} input channels do not split into ${groups} groups`);
  const plane = dims.slice(2).reduce((a, b) => a * b, 1);
  const cg = C / groups;
  return {
    groups,
    cols: cg,
    samples: N * plane,
    fill(group, p0, p1, Xt) {
      const r = p1 - p0;
      for (let c = 0; c < cg; c++) {
        const base = c * r;
        let n = Math.floor(p0 / plane);
        let s = p0 - n * plane;
        for (let k = 0; k < r; ) {
          const run = Math.min(plane - s, r - k);
          const src = (n * C + group * cg + c) * plane + s;
          for (let t = 0; t < run; t++) Xt[base + k + t] = x[src + t]!;
          k += run;
          n++;
          s = 0;
        }
      }
    },
  };
}

/** Row-major samples [M, K]: every row is a sample (Gemm A with transA=0, MatMul A flattened). */
function rowSampler(x: Activation, M: number, K: number): ActivationSampler {
  return {
    groups: 1,
    cols: K,
    samples: M,
    fill(_group, p0, p1, Xt) {
      const r = p1 - p0;
      // Transpose in tiles for locality.
      const T = 32;
      for (let m0 = p0; m0 < p1; m0 += T) {
        const m1 = Math.min(p1, m0 + T);
        for (let k0 = 0; k0 < K; k0 += T) {
          const k1 = Math.min(K, k0 + T);
          for (let m = m0; m < m1; m++) {
            const src = m * K;
            const dst = m - p0;
            for (let k = k0; k < k1; k++) Xt[k * r + dst] = x[src + k]!;
          }
        }
      }
    },
  };
}

/** Gemm's A: [M, K], or [K, M] when transA. */
export function gemmSampler(x: Activation, dims: readonly number[], transA: boolean, where = "Gemm"): ActivationSampler {
  if (dims.length !== 2) throw new InputError(`${where}: its input A has shape [${dims.join(", ")}], expected 2-D`);
  if (!transA) return rowSampler(x, dims[0]!, dims[1]!);
  const [K, M] = [dims[0]!, dims[1]!];
  return {
    groups: 1,
    cols: K,
    samples: M,
    fill(_group, p0, p1, Xt) {
      const r = p1 - p0;
      for (let k = 0; k < K; k++) {
        const src = k * M;
        for (let m = p0; m < p1; m++) Xt[k * r + m - p0] = x[src + m]!;
      }
    },
  };
}

/** MatMul's A: [..., K] with the leading dims flattened into samples. */
export function matmulSampler(x: Activation, dims: readonly number[], where = "MatMul"): ActivationSampler {
  if (dims.length === 0) throw new InputError(`${where}: its input A is a scalar`);
  const K = dims[dims.length - 1]!;
  const M = dims.slice(0, -1).reduce((a, b) => a * b, 1);
  return rowSampler(x, M, K);
}
