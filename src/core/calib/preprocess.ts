/**
 * Preprocessing: turns one sample value (an array from a .npy/.pb file, or a decoded image) into the
 * per-sample tensor a model input takes, applying the user's options the same way to arrays and images:
 *
 *   y = (x * scale - mean[c]) / std[c]     (mean and std per channel, in scaled units, as torchvision's
 *                                           Normalize after ToTensor: scale 1/255, mean 0.485,...)
 *
 * Image-like inputs (per-sample rank 3, [C,H,W] for layout nchw or [H,W,C] for nhwc) get the full
 * treatment: a sample is read as an image (a decoded PNG/JPEG is HWC; a 2-D array is H x W with one
 * channel; a 3-D array is read channels-first or channels-last, whichever matches the input, else by where
 * its small (1/3/4) axis is), resized bilinearly to `size` (half-pixel centres, as OpenCV's INTER_LINEAR
 * and ONNX Resize), converted 3 -> 1 channel (luma 0.299/0.587/0.114) or 1 -> 3 (copies) when the input
 * wants it, normalised and written in the input's layout. `layout` says which layout the model input
 * uses; without it, it is inferred from the input's shape ([N,3,H,W] -> nchw, [N,H,W,3] -> nhwc; nchw when
 * unclear). Any other sample whose element count equals the input's per-sample count is reshaped to it
 * (uint8 [28,28] feeds [1,28,28]); with dynamic dims, the sample's own dims fill them.
 * Scale, mean and std apply to float inputs only; integer inputs receive the values as they are (they
 * must be integers; resized or channel-converted images are rounded).
 */
import { InputError } from "../errors.js";
import type { DecodedImage } from "./image.js";
import { allocTyped, numElements, type ElemType, type NdArray, type TypedArray } from "./npy.js";

export type Layout = "nchw" | "nhwc";

/** Preprocessing options (CLI: --scale --mean --std --size --layout). All optional. */
export interface Preprocess {
  /** Multiplier; a number or a fraction string like "1/255" (applied as an exact division). Default 1. */
  scale?: number | string;
  /** Per-channel mean (one value applies to every channel), subtracted after scaling. */
  mean?: number[];
  /** Per-channel standard deviation (one value applies to every channel), divides after the mean. */
  std?: number[];
  /** Resize images to [height, width] (bilinear). */
  size?: [number, number];
  /** The model input's layout for image-like inputs; inferred from the input shape when absent. */
  layout?: Layout;
}

/** One input's value in one sample, as read from a file. */
export type SampleValue =
  | { kind: "tensor"; name?: string; array: NdArray }
  | { kind: "image"; image: DecodedImage };

/** What a sample is shaped into: the model input's per-sample dims (no batch) and element type. */
export interface SampleTarget {
  /** The input's name, for messages. */
  name: string;
  /** Per-sample dims (the input shape without its batch dim); null = dynamic. */
  dims: (number | null)[];
  elemType: ElemType;
}

/** A sample shaped for one input: per-sample dims and data of the input's element type. */
export interface ShapedSample {
  dims: number[];
  data: TypedArray;
}

// ---------------------------------------------------------------------------------------------------
// Option parsing (strings from the command line or settings)

/** Raw option values as a front end has them. */
export interface RawPreprocess {
  scale?: string | number;
  mean?: string | number[];
  std?: string | number[];
  size?: string | [number, number];
  layout?: string;
}

/** Validates and parses raw options; throws InputError naming the flag. */
export function parsePreprocess(raw: RawPreprocess): Preprocess {
  const out: Preprocess = {};
  if (raw.scale !== undefined && raw.scale !== "") {
    scaleRatio(raw.scale);
    out.scale = typeof raw.scale === "string" ? raw.scale.trim() : raw.scale;
  }
  if (raw.mean !== undefined && raw.mean !== "") out.mean = parseNumberList(raw.mean, "--mean");
  if (raw.std !== undefined && raw.std !== "") {
    out.std = parseNumberList(raw.std, "--std");
    if (out.std.some((s) => s === 0)) throw new InputError(`--std must not contain 0 (got ${out.std.join(",")}).`);
  }
  if (raw.size !== undefined && raw.size !== "") out.size = typeof raw.size === "string" ? parseSize(raw.size) : checkSize(raw.size);
  if (raw.layout !== undefined && raw.layout !== "") out.layout = parseLayout(raw.layout);
  return out;
}

/** A scale as an exact ratio num/den: accepts a number, "0.5", "2e-3" or "1/255". */
export function scaleRatio(scale: number | string | undefined): { num: number; den: number } {
  if (scale === undefined) return { num: 1, den: 1 };
  if (typeof scale === "number") {
    if (!Number.isFinite(scale)) throw new InputError(`--scale must be a finite number (got ${scale}).`);
    return { num: scale, den: 1 };
  }
  const parts = scale.trim().split("/");
  const nums = parts.map((p) => (p.trim() === "" ? NaN : Number(p.trim())));
  if (parts.length > 2 || nums.some((n) => !Number.isFinite(n)) || (parts.length === 2 && nums[1] === 0))
    throw new InputError(`--scale "${scale}" is not a number or a fraction like 1/255.`);
  return { num: nums[0]!, den: nums[1] ?? 1 };
}

/** "0.485,0.456,0.406" (commas and/or spaces, optional brackets) -> numbers. */
export function parseNumberList(text: string | number[], flag: string): number[] {
  const list = typeof text === "string" ? text.replace(/[[\]()]/g, " ").split(/[\s,]+/).filter((s) => s !== "").map(Number) : text;
  if (list.length === 0 || list.some((n) => !Number.isFinite(n)))
    throw new InputError(`${flag} "${String(text)}" is not a list of numbers like 0.485,0.456,0.406.`);
  return list;
}

/** "224x224" (or "224,224", or "224" for a square) -> [height, width]. */
export function parseSize(text: string): [number, number] {
  const parts = text.trim().toLowerCase().split(/\s*[x×,]\s*/);
  const nums = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  if (nums.length === 1 && Number.isFinite(nums[0])) return checkSize([nums[0]!, nums[0]!]);
  if (nums.length !== 2 || nums.some((n) => !Number.isFinite(n)))
    throw new InputError(`--size "${text}" is not a size like 224x224 (height x width).`);
  return checkSize([nums[0]!, nums[1]!]);
}

function checkSize(s: [number, number]): [number, number] {
  if (!s.every((n) => Number.isInteger(n) && n > 0)) throw new InputError(`--size must be two positive integers (got ${s.join("x")}).`);
  return s;
}

/** "nchw" | "nhwc" (any case). */
export function parseLayout(text: string): Layout {
  const l = text.trim().toLowerCase();
  if (l !== "nchw" && l !== "nhwc") throw new InputError(`--layout "${text}" must be nchw or nhwc.`);
  return l;
}

/** The layout of a per-sample [d0,d1,d2] input: nhwc when only d2 looks like channels (1, 3 or 4). */
export function inferLayout(dims: readonly (number | null)[]): Layout {
  const ch = (d: number | null | undefined): boolean => d === 1 || d === 3 || d === 4;
  if (dims.length === 3 && ch(dims[2]) && !ch(dims[0])) return "nhwc";
  return "nchw";
}

// ---------------------------------------------------------------------------------------------------
// Shaping one sample

/**
 * Shapes one sample value for one model input. `where` names the sample in messages (for example
 * "sample 3 of data/x.npy" or the file path). Throws InputError when the value cannot fit the input.
 */
export function shapeSample(value: SampleValue, target: SampleTarget, pre: Preprocess, where: string): ShapedSample {
  const isFloat = target.elemType === "float32" || target.elemType === "float16" || target.elemType === "float64";
  const ratio = scaleRatio(pre.scale);
  const identity = !isFloat || (ratio.num === ratio.den && !pre.mean && !pre.std);

  // Fast path: a tensor that already has the input's dims and type, with nothing to apply.
  if (value.kind === "tensor" && identity && !pre.size && value.array.elemType === target.elemType) {
    const dims = stripLeadingOnes(value.array.shape, target.dims.length);
    if (dimsMatch(dims, target.dims)) return { dims, data: value.array.data };
  }

  if (target.dims.length === 3) {
    const layout = pre.layout ?? inferLayout(target.dims);
    const img = toHwc(value, target, layout);
    if (img) return shapeImage(img, target, layout, pre, ratio, isFloat, where);
  }

  // Plain tensors (and images fed to inputs that are not [C,H,W]): reshape by element count.
  if (pre.size) throw new InputError(`--size applies to image inputs ([N,C,H,W] or [N,H,W,C]); input "${target.name}" has shape [N,${fmtDims(target.dims)}].`);
  const arr: NdArray =
    value.kind === "tensor"
      ? value.array
      : { elemType: "float32", shape: [value.image.height, value.image.width, value.image.channels], data: value.image.data };
  const dims = resolveDims(arr.shape, target, where);
  if (isFloat && ((pre.mean?.length ?? 1) > 1 || (pre.std?.length ?? 1) > 1))
    throw new InputError(
      `--mean/--std with several values need an image input ([N,C,H,W] or [N,H,W,C]); input "${target.name}" has shape [N,${fmtDims(target.dims)}].`,
    );
  if (identity && arr.elemType === target.elemType) return { dims, data: arr.data };
  const vals = toNumbers(arr);
  if (isFloat) normalise(vals, 1, ratio, pre.mean, pre.std, target.name);
  return { dims, data: fromNumbers(vals, target.elemType, target.name, where) };
}

interface Hwc {
  h: number;
  w: number;
  c: number;
  data: Float64Array;
}

/** Reads a value as an HWC image, or returns undefined when it is not image-shaped. */
function toHwc(value: SampleValue, target: SampleTarget, layout: Layout): Hwc | undefined {
  if (value.kind === "image") {
    const { height: h, width: w, channels: c, data } = value.image;
    return { h, w, c, data: Float64Array.from(data) };
  }
  const arr = value.array;
  let dims = stripLeadingOnes(arr.shape, 3);
  const t = target.dims;
  if (dims.length !== 2 && dims.length !== 3) {
    // A flat (or otherwise shaped) sample with the input's element count is taken in the input's layout.
    if (t.some((d) => d === null) || numElements(dims) !== numElements(t as number[])) return undefined;
    dims = t as number[];
  }
  const vals = toNumbers(arr);
  if (dims.length === 2) return { h: dims[0]!, w: dims[1]!, c: 1, data: vals };
  const other: (number | null)[] = layout === "nchw" ? [t[1]!, t[2]!, t[0]!] : [t[2]!, t[0]!, t[1]!];
  let order: Layout;
  if (dimsMatch(dims, t)) order = layout;
  else if (dimsMatch(dims, other)) order = layout === "nchw" ? "nhwc" : "nchw";
  else {
    const ch = (d: number): boolean => d === 1 || d === 3 || d === 4;
    if (ch(dims[0]!) && !ch(dims[2]!)) order = "nchw";
    else if (ch(dims[2]!) && !ch(dims[0]!)) order = "nhwc";
    else order = layout;
  }
  if (order === "nhwc") return { h: dims[0]!, w: dims[1]!, c: dims[2]!, data: vals };
  const [c, h, w] = dims as [number, number, number];
  const out = new Float64Array(vals.length);
  for (let ci = 0; ci < c; ci++)
    for (let i = 0; i < h * w; i++) out[i * c + ci] = vals[ci * h * w + i]!;
  return { h, w, c, data: out };
}

function shapeImage(
  img: Hwc,
  target: SampleTarget,
  layout: Layout,
  pre: Preprocess,
  ratio: { num: number; den: number },
  isFloat: boolean,
  where: string,
): ShapedSample {
  const t = target.dims;
  const [cm, hm, wm] = layout === "nchw" ? [t[0]!, t[1]!, t[2]!] : [t[2]!, t[0]!, t[1]!];
  let { h, w, c, data } = img;
  let outH = h;
  let outW = w;
  if (pre.size) {
    [outH, outW] = pre.size;
    if ((hm !== null && hm !== outH) || (wm !== null && wm !== outW))
      throw new InputError(`--size ${outH}x${outW} does not match input "${target.name}", which takes ${hm ?? "?"}x${wm ?? "?"} images.`);
  } else if ((hm !== null && hm !== h) || (wm !== null && wm !== w)) {
    throw new InputError(
      `${where} is ${h}x${w} (HxW) but input "${target.name}" takes ${hm ?? h}x${wm ?? w}; pass --size ${hm ?? h}x${wm ?? w} to resize.`,
    );
  }
  if (outH !== h || outW !== w) {
    data = resizeBilinear(data, h, w, c, outH, outW);
    h = outH;
    w = outW;
  }
  const ct = cm ?? c;
  if (ct !== c) {
    if (c === 3 && ct === 1) data = toGray(data, h * w);
    else if (c === 1 && ct === 3) data = toRgb(data, h * w);
    else throw new InputError(`${where} has ${c} channel(s) but input "${target.name}" takes ${ct}.`);
    c = ct;
  }
  if (isFloat) normalise(data, c, ratio, pre.mean, pre.std, target.name);
  else if (outH !== img.h || outW !== img.w || ct !== img.c) for (let i = 0; i < data.length; i++) data[i] = Math.round(data[i]!);
  let out = data;
  if (layout === "nchw" && c > 1) {
    out = new Float64Array(data.length);
    for (let i = 0; i < h * w; i++) for (let ci = 0; ci < c; ci++) out[ci * h * w + i] = data[i * c + ci]!;
  }
  const dims = layout === "nchw" ? [c, h, w] : [h, w, c];
  return { dims, data: fromNumbers(out, target.elemType, target.name, where) };
}

/** Bilinear resize of an HWC image with half-pixel centres (edges clamped). */
export function resizeBilinear(src: Float64Array | Float32Array, h: number, w: number, c: number, outH: number, outW: number): Float64Array {
  const out = new Float64Array(outH * outW * c);
  const sy = h / outH;
  const sx = w / outW;
  for (let y = 0; y < outH; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), h - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, h - 1);
    const dy = fy - y0;
    for (let x = 0; x < outW; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), w - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, w - 1);
      const dx = fx - x0;
      const o = (y * outW + x) * c;
      const a = (y0 * w + x0) * c;
      const b = (y0 * w + x1) * c;
      const d = (y1 * w + x0) * c;
      const e = (y1 * w + x1) * c;
      for (let ci = 0; ci < c; ci++) {
        const top = src[a + ci]! + (src[b + ci]! - src[a + ci]!) * dx;
        const bot = src[d + ci]! + (src[e + ci]! - src[d + ci]!) * dx;
        out[o + ci] = top + (bot - top) * dy;
      }
    }
  }
  return out;
}

function toGray(rgb: Float64Array, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = 0.299 * rgb[3 * i]! + 0.587 * rgb[3 * i + 1]! + 0.114 * rgb[3 * i + 2]!;
  return out;
}

function toRgb(gray: Float64Array, n: number): Float64Array {
  const out = new Float64Array(n * 3);
  for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = gray[i]!;
  return out;
}

/** In place: v = (v * num / den - mean[c]) / std[c], channels interleaved (channel = index % c). */
function normalise(
  v: Float64Array,
  c: number,
  ratio: { num: number; den: number },
  mean: number[] | undefined,
  std: number[] | undefined,
  name: string,
): void {
  for (const [flag, list] of [["--mean", mean], ["--std", std]] as const)
    if (list && list.length !== 1 && list.length !== c)
      throw new InputError(`${flag} has ${list.length} values but input "${name}" has ${c} channel(s); give 1 or ${c}.`);
  const { num, den } = ratio;
  const m = Array.from({ length: c }, (_, i) => (mean ? mean[mean.length === 1 ? 0 : i]! : 0));
  const s = Array.from({ length: c }, (_, i) => (std ? std[std.length === 1 ? 0 : i]! : 1));
  const plain = num === den && !mean && !std;
  if (plain) return;
  for (let i = 0; i < v.length; i++) {
    const ci = c === 1 ? 0 : i % c;
    v[i] = ((v[i]! * num) / den - m[ci]!) / s[ci]!;
  }
}

/** The sample's dims for the input: its own dims when they fit, else the input's dims by element count. */
function resolveDims(shape: number[], target: SampleTarget, where: string): number[] {
  const t = target.dims;
  const n = numElements(shape);
  const stripped = stripLeadingOnes(shape, t.length);
  if (dimsMatch(stripped, t)) return stripped;
  const nulls = t.filter((d) => d === null).length;
  const fixed = numElements(t.filter((d): d is number => d !== null));
  if (nulls === 0 && n === fixed) return t as number[];
  if (nulls === 1 && fixed > 0 && n % fixed === 0) return t.map((d) => d ?? n / fixed);
  throw new InputError(
    `${where} has shape [${shape.join(",")}] (${n} elements), which cannot feed input "${target.name}" ` +
      `of shape [N,${fmtDims(t)}]` +
      (nulls === 0 ? ` (${fixed} elements per sample).` : "."),
  );
}

function stripLeadingOnes(dims: number[], rank: number): number[] {
  let i = 0;
  while (dims.length - i > rank && dims[i] === 1) i++;
  return dims.slice(i);
}

function dimsMatch(dims: readonly number[], t: readonly (number | null)[]): boolean {
  return dims.length === t.length && dims.every((d, i) => t[i] === null || t[i] === d);
}

function fmtDims(t: readonly (number | null)[]): string {
  return t.map((d) => d ?? "?").join(",");
}

// ---------------------------------------------------------------------------------------------------
// Element conversions

/** IEEE half bits -> number. */
export function f16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** number -> IEEE half bits, rounding to nearest even (via float32, as onnxruntime does). */
export function numberToF16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** An array's values as doubles (float16 decoded, 64-bit integers converted). */
export function toNumbers(arr: NdArray): Float64Array {
  const n = arr.data.length;
  const out = new Float64Array(n);
  const d = arr.data;
  if (arr.elemType === "float16") for (let i = 0; i < n; i++) out[i] = f16ToNumber((d as Uint16Array)[i]!);
  else if (d instanceof BigInt64Array || d instanceof BigUint64Array) for (let i = 0; i < n; i++) out[i] = Number(d[i]!);
  else out.set(d as ArrayLike<number>);
  return out;
}

/** Doubles -> a typed array of `elemType`; integer types require integer values. */
export function fromNumbers(vals: Float64Array, elemType: ElemType, name: string, where: string): TypedArray {
  const n = vals.length;
  const out = allocTyped(elemType, n);
  switch (elemType) {
    case "float32":
    case "float64":
      (out as Float32Array | Float64Array).set(vals);
      return out;
    case "float16":
      for (let i = 0; i < n; i++) (out as Uint16Array)[i] = numberToF16(vals[i]!);
      return out;
    case "bool":
      for (let i = 0; i < n; i++) (out as Uint8Array)[i] = vals[i] ? 1 : 0;
      return out;
    default:
      for (let i = 0; i < n; i++) {
        if (!Number.isInteger(vals[i]))
          throw new InputError(`${where} holds non-integer values (${vals[i]}) but input "${name}" takes ${elemType}.`);
      }
      if (out instanceof BigInt64Array || out instanceof BigUint64Array) for (let i = 0; i < n; i++) out[i] = BigInt(vals[i]!);
      else (out as Int32Array).set(vals);
      return out;
  }
}
