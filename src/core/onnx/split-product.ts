/**
 * The split product (DESIGN.md section 2): an SSVQ/VQ weight read only by MatMul or Gemm as its B is
 * stored as one code per sub-vector (the codeword index, plus k times the sign pattern for SSVQ) and is
 * never rebuilt as one tensor. With s = d * per reduction positions per stored code element (per codes
 * packed in one byte), the product x W is the sum over t < s of x[..., t::s] W_t, where W_t, [K / s, N],
 * is one Gather of a [2^b] table (column j of the codebook, for the field f, t = f * d + j) by the
 * codes. onnxruntime folds each W_t straight from the codes to its final 2-D shape, which its MatMul
 * packs as it packs the original's: loading holds the codes, their int32 copy and the weights (about 5
 * bytes per weight at d = 4, against 9 for a codebook Gather reshaped to the weight), and inference
 * runs s smaller products of the same total size.
 *
 * This module holds what the writer, the readback and the lowering share: the code layout and how to
 * recognise a part's weight in a graph.
 */
import type { NodeProto } from "./proto.js";
import { isDefaultDomain } from "./scopes.js";

/** Bits per stored code: the codeword index, plus d sign bits when the signs join it. */
export function splitCodeBits(k: number, d: number, signsJoined: boolean): number {
  return Math.max(1, Math.ceil(Math.log2(k))) + (signsJoined ? d : 0);
}

/** Code widths the split product stores: whole uint16, or fields packed without waste in a uint8. */
export const SPLIT_CODE_WIDTHS: ReadonlySet<number> = new Set([1, 2, 4, 8, 16]);

/** Codes per stored element: fields of b bits in a byte (b <= 8), or one uint16. */
export const codesPerElement = (bits: number): number => (bits >= 8 ? 1 : 8 / bits);

/**
 * How the codes are laid out: "kn" for a weight [K, N] (MatMul, Gemm with transB = 0): codes [K / s, N];
 * "nk" for a weight [N, K] (Gemm with transB = 1): codes [N, K / s]. Element (r, n) (or (n, r)) holds the
 * codes of sub-vectors r * per + f of output channel n in bits [f * b, (f + 1) * b).
 */
export type SplitOrientation = "kn" | "nk";

export interface SplitCodes {
  orientation: SplitOrientation;
  /** Bits per code. */
  bits: number;
  /** Codes per stored element. */
  per: number;
  /** Stored dims: [K / s, N] or [N, K / s]. */
  dims: [number, number];
  values: Uint8Array | Uint16Array;
}

/**
 * The stored codes of a weight with `rows` output channels of `cols` reduction positions (the row
 * matrix), from one codeword index per sub-vector (row-major [rows, cols / d]) and, for SSVQ with the
 * signs joined, one sign bit per element (1 = negative; bit t of a sub-vector's pattern is element t).
 */
export function buildSplitCodes(
  o: { rows: number; cols: number; k: number; d: number; bits: number; orientation: SplitOrientation },
  assignments: ArrayLike<number>,
  signs: ArrayLike<number> | undefined,
): SplitCodes {
  const { rows, cols, k, d, bits, orientation } = o;
  const per = codesPerElement(bits);
  const perRow = cols / d;
  const r = perRow / per;
  if (!Number.isInteger(perRow) || !Number.isInteger(r)) throw new Error(`split codes: ${cols} columns do not split into codes of ${d * per}`);
  const values = bits === 16 ? new Uint16Array(rows * r) : new Uint8Array(rows * r);
  for (let n = 0; n < rows; n++)
    for (let g = 0; g < perRow; g++) {
      const i = n * perRow + g;
      let code = assignments[i]!;
      if (signs) {
        let pattern = 0;
        for (let t = 0; t < d; t++) pattern |= (signs[i * d + t]! & 1) << t;
        code += k * pattern;
      }
      const e = Math.floor(g / per);
      const at = orientation === "kn" ? e * rows + n : n * r + e;
      values[at] = values[at]! | (code << ((g % per) * bits));
    }
  return { orientation, bits, per, dims: orientation === "kn" ? [r, rows] : [rows, r], values };
}

/** The code of sub-vector g of output channel n, read back from stored codes. */
export function splitCodeAt(c: Pick<SplitCodes, "orientation" | "bits" | "per" | "dims">, values: ArrayLike<number>, n: number, g: number): number {
  const e = Math.floor(g / c.per);
  const at = c.orientation === "kn" ? e * c.dims[1] + n : n * c.dims[1] + e;
  return c.bits >= 8 ? values[at]! : (values[at]! >>> ((g % c.per) * c.bits)) & ((1 << c.bits) - 1);
}

/**
 * When `b` (a MatMul's or Gemm's B) is a part of a split product: the name of the int32 codes it is
 * gathered by (the writer gives them the weight's name). `producer` finds the node that writes a value.
 */
export function splitCodesName(b: string, producer: (value: string) => NodeProto | undefined): string | undefined {
  const g = producer(b);
  if (!g || !isDefaultDomain(g) || g.opType !== "Gather" || Number(g.attribute.find((a) => a.name === "axis")?.i ?? 0) !== 0) return undefined;
  const table = producer(g.input[0] ?? "");
  const codes = producer(g.input[1] ?? "");
  if (!table || !codes || !isDefaultDomain(codes) || codes.opType !== "Cast") return undefined;
  // The table is a Gather (a codebook column, or a field's table) or a Cast of one.
  const t = table.opType === "Cast" ? producer(table.input[0] ?? "") : table;
  return t && isDefaultDomain(t) && t.opType === "Gather" ? g.input[1] : undefined;
}
