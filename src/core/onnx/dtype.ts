/** ONNX tensor element types: names, widths, and conversion of floating types to float32. */
import { TensorProto_DataType as DT } from "onnx-buf";

const NAMES: Record<number, string> = {
  [DT.FLOAT]: "float32",
  [DT.UINT8]: "uint8",
  [DT.INT8]: "int8",
  [DT.UINT16]: "uint16",
  [DT.INT16]: "int16",
  [DT.INT32]: "int32",
  [DT.INT64]: "int64",
  [DT.STRING]: "string",
  [DT.BOOL]: "bool",
  [DT.FLOAT16]: "float16",
  [DT.DOUBLE]: "float64",
  [DT.UINT32]: "uint32",
  [DT.UINT64]: "uint64",
  [DT.COMPLEX64]: "complex64",
  [DT.COMPLEX128]: "complex128",
  [DT.BFLOAT16]: "bfloat16",
  [DT.FLOAT8E4M3FN]: "float8e4m3fn",
  [DT.FLOAT8E4M3FNUZ]: "float8e4m3fnuz",
  [DT.FLOAT8E5M2]: "float8e5m2",
  [DT.FLOAT8E5M2FNUZ]: "float8e5m2fnuz",
  [DT.UINT4]: "uint4",
  [DT.INT4]: "int4",
  [DT.FLOAT4E2M1]: "float4e2m1",
  [DT.FLOAT8E8M0]: "float8e8m0",
  [DT.UINT2]: "uint2",
  [DT.INT2]: "int2",
};

/** Bits per element, for types with a fixed width. */
const BITS: Record<number, number> = {
  [DT.FLOAT]: 32,
  [DT.UINT8]: 8,
  [DT.INT8]: 8,
  [DT.UINT16]: 16,
  [DT.INT16]: 16,
  [DT.INT32]: 32,
  [DT.INT64]: 64,
  [DT.BOOL]: 8,
  [DT.FLOAT16]: 16,
  [DT.DOUBLE]: 64,
  [DT.UINT32]: 32,
  [DT.UINT64]: 64,
  [DT.COMPLEX64]: 64,
  [DT.COMPLEX128]: 128,
  [DT.BFLOAT16]: 16,
  [DT.FLOAT8E4M3FN]: 8,
  [DT.FLOAT8E4M3FNUZ]: 8,
  [DT.FLOAT8E5M2]: 8,
  [DT.FLOAT8E5M2FNUZ]: 8,
  [DT.UINT4]: 4,
  [DT.INT4]: 4,
  [DT.FLOAT4E2M1]: 4,
  [DT.FLOAT8E8M0]: 8,
  [DT.UINT2]: 2,
  [DT.INT2]: 2,
};

export const dtypeName = (t: number): string => NAMES[t] ?? `type ${t}`;
export const dtypeBits = (t: number): number | undefined => BITS[t];

/** The floating types whose weights we compress. */
export const COMPRESSIBLE_TYPES: ReadonlySet<number> = new Set([DT.FLOAT, DT.FLOAT16, DT.BFLOAT16]);

/** Bytes that `count` elements take in raw_data (sub-byte types packed, rounded up). */
export function rawByteLength(t: number, count: number): number | undefined {
  const bits = BITS[t];
  return bits === undefined ? undefined : Math.ceil((count * bits) / 8);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** float32 -> IEEE half, round to nearest even. */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

export function bfloat16ToFloat(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** float32 -> bfloat16, round to nearest even (NaN kept quiet). */
export function floatToBfloat16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}
