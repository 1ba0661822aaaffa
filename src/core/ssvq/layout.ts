/**
 * The row-matrix view of a weight (DESIGN.md section 1): [rows, cols] with cols the reduction
 * dimension, and its cut into sub-vectors of d consecutive elements of a row (the last one of each row
 * zero-padded when cols % d != 0).
 */
import type { RowLayout } from "../onnx/weights.js";

/** The weight as stored (dims in ONNX order) -> row matrix [rows, cols]. */
export function toRows(values: Float32Array, layout: RowLayout): Float32Array {
  const { rows, cols } = layout;
  if (!layout.transposed) return values.slice(0, rows * cols);
  const out = new Float32Array(rows * cols);
  if (layout.kind === "convtranspose") {
    // stored [g, cols = Cin/g, rpg = Cout/g * kernel]; rows are (g, rpg).
    const g = layout.groups;
    const rpg = rows / g;
    for (let gi = 0; gi < g; gi++)
      for (let c = 0; c < cols; c++) {
        const src = (gi * cols + c) * rpg;
        for (let r = 0; r < rpg; r++) out[(gi * rpg + r) * cols + c] = values[src + r]!;
      }
    return out;
  }
  // Gemm transB=0 and MatMul store [K = cols, N = rows].
  for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++) out[r * cols + c] = values[c * rows + r]!;
  return out;
}

/** Row matrix [rows, cols] -> the weight as stored. Inverse of toRows. */
export function fromRows(rowsMatrix: Float32Array, layout: RowLayout): Float32Array {
  const { rows, cols } = layout;
  if (!layout.transposed) return rowsMatrix.slice();
  const out = new Float32Array(rows * cols);
  if (layout.kind === "convtranspose") {
    const g = layout.groups;
    const rpg = rows / g;
    for (let gi = 0; gi < g; gi++)
      for (let c = 0; c < cols; c++) {
        const dst = (gi * cols + c) * rpg;
        for (let r = 0; r < rpg; r++) out[dst + r] = rowsMatrix[(gi * rpg + r) * cols + c]!;
      }
    return out;
  }
  for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++) out[c * rows + r] = rowsMatrix[r * cols + c]!;
  return out;
}

export interface SubvectorShape {
  rows: number;
  cols: number;
  d: number;
  /** Sub-vectors per row: ceil(cols / d). */
  perRow: number;
  /** rows * perRow. */
  count: number;
  /** perRow * d: the padded row length. */
  paddedCols: number;
}

export function subvectorShape(rows: number, cols: number, d: number): SubvectorShape {
  const perRow = Math.ceil(cols / d);
  return { rows, cols, d, perRow, count: rows * perRow, paddedCols: perRow * d };
}

/** Row matrix -> sub-vectors [count, d], zero-padded at the end of each row. */
export function toSubvectors(rowsMatrix: Float32Array, s: SubvectorShape): Float32Array {
  if (s.paddedCols === s.cols) return rowsMatrix.slice(0, s.count * s.d);
  const out = new Float32Array(s.count * s.d);
  for (let r = 0; r < s.rows; r++) out.set(rowsMatrix.subarray(r * s.cols, (r + 1) * s.cols), r * s.paddedCols);
  return out;
}

/** Sub-vectors [count, d] -> row matrix, dropping the padding. */
export function fromSubvectors(sub: Float32Array, s: SubvectorShape): Float32Array {
  if (s.paddedCols === s.cols) return sub.slice(0, s.rows * s.cols);
  const out = new Float32Array(s.rows * s.cols);
  for (let r = 0; r < s.rows; r++) out.set(sub.subarray(r * s.paddedCols, r * s.paddedCols + s.cols), r * s.cols);
  return out;
}
