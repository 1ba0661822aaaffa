/**
 * The layer objective of DESIGN.md section 1: with H = X X^T / n (one block per group, rows split evenly
 * over the groups), loss = tr((W_hat - W) H (W_hat - W)^T), and the relative output error
 * sqrt(loss / tr(W H W^T)) = ||W_hat X - W X|| / ||W X||.
 */

export interface LayerStatistic {
  /** groups blocks of [cols, cols], float64. */
  H: Float64Array;
  groups: number;
  cols: number;
}

/** tr(A H A^T) for a row matrix A [rows, cols]. */
export function quadraticForm(a: Float32Array | Float64Array, rows: number, stat: LayerStatistic): number {
  const { H, groups, cols } = stat;
  const perGroup = rows / groups;
  let total = 0;
  const ah = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const block = Math.floor(r / perGroup) * cols * cols;
    ah.fill(0);
    for (let i = 0; i < cols; i++) {
      const v = a[r * cols + i]!;
      if (v === 0) continue;
      const hrow = block + i * cols;
      for (let j = 0; j < cols; j++) ah[j]! += v * H[hrow + j]!;
    }
    for (let j = 0; j < cols; j++) total += ah[j]! * a[r * cols + j]!;
  }
  return total;
}

/** ||W_hat X - W X|| / ||W X|| from the layer statistic. */
export function relativeOutputError(w: Float32Array, wHat: Float32Array, rows: number, stat: LayerStatistic): number {
  const e = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) e[i] = wHat[i]! - w[i]!;
  const den = quadraticForm(w, rows, stat);
  const num = quadraticForm(e, rows, stat);
  return den > 0 ? Math.sqrt(Math.max(0, num) / den) : Math.sqrt(Math.max(0, num));
}
