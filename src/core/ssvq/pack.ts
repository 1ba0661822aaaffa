/**
 * Packing integer fields into bytes so that the decode subgraph can unpack them at any opset with one
 * Gather on a small lookup table per field width. A b-bit field is split into planes of 8, 4, 2 and 1
 * bits (b = 6 -> a 4-bit plane for the low bits and a 2-bit plane above it), each plane packed densely:
 * element i of a w-bit plane sits in byte floor(i*w/8) at bit (i mod 8/w)*w. No bits are wasted but the
 * tail of each plane's last byte.
 */

export interface Plane {
  /** Bits per element in this plane: 8, 4, 2 or 1. */
  width: number;
  /** The plane holds bits [shift, shift + width) of each value. */
  shift: number;
  bytes: Uint8Array;
}

/** Plane widths for a b-bit field, low bits first. */
export function planeWidths(bits: number): { width: number; shift: number }[] {
  const out: { width: number; shift: number }[] = [];
  let shift = 0;
  for (const w of [8, 4, 2, 1])
    while (bits - shift >= w) {
      out.push({ width: w, shift });
      shift += w;
    }
  return out;
}

/** Bits needed for indices in [0, k). */
export const indexBits = (k: number): number => Math.max(1, Math.ceil(Math.log2(k)));

export function packPlane(values: ArrayLike<number>, width: number, shift: number): Uint8Array {
  const per = 8 / width;
  const mask = (1 << width) - 1;
  const out = new Uint8Array(Math.ceil(values.length / per));
  for (let i = 0; i < values.length; i++) out[(i / per) | 0]! |= ((values[i]! >>> shift) & mask) << ((i % per) * width);
  return out;
}

export function unpackPlane(bytes: Uint8Array, count: number, width: number): Uint32Array {
  const per = 8 / width;
  const mask = (1 << width) - 1;
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = (bytes[(i / per) | 0]! >>> ((i % per) * width)) & mask;
  return out;
}

/** Packs values of `bits` bits into planes. */
export function packFields(values: ArrayLike<number>, bits: number): Plane[] {
  return planeWidths(bits).map(({ width, shift }) => ({ width, shift, bytes: packPlane(values, width, shift) }));
}

export function unpackFields(planes: readonly Plane[], count: number): Uint32Array {
  const out = new Uint32Array(count);
  for (const p of planes) {
    const v = unpackPlane(p.bytes, count, p.width);
    for (let i = 0; i < count; i++) out[i]! += v[i]! << p.shift;
  }
  return out;
}

/** The lookup table of a w-bit plane: [256, 8/w] uint8, entry [b][j] = field j of byte b. */
export function planeLookupTable(width: number): Uint8Array {
  const per = 8 / width;
  const mask = (1 << width) - 1;
  const out = new Uint8Array(256 * per);
  for (let b = 0; b < 256; b++) for (let j = 0; j < per; j++) out[b * per + j] = (b >>> (j * width)) & mask;
  return out;
}
