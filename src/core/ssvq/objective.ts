/**
 * The layer objective of DESIGN.md section 1: with H = X X^T / n (one block per group, rows split evenly
 * over the groups), loss = tr((W_hat - W) H (W_hat - W)^T), and the relative output error
 * sqrt(loss / tr(W H W^T)) = ||W_hat X - W X|| / ||W X||.
 *
 * The statistic is either form of `stat-product.ts` (H, or X itself when that is cheaper); the products go
 * through its kernels over row blocks: `relativeOutputError` in this thread, `relativeOutputErrorOn` on
 * a ParallelMap (the same bytes for any map with the same engine).
 */
import type { ParallelMap } from "../parallel.js";
import { quadraticForms, quadraticFormsSync, type LayerStatistic, type StatHandle } from "./stat-product.js";

export type { FactorStatistic, GramStatistic, LayerStatistic, StatHandle } from "./stat-product.js";

/** tr(A H A^T) for a row matrix A [rows, cols]. */
export function quadraticForm(a: Float32Array | Float64Array, rows: number, stat: LayerStatistic): number {
  return quadraticFormsSync(a, undefined, rows, stat).a;
}

const relative = (num: number, den: number): number => (den > 0 ? Math.sqrt(Math.max(0, num) / den) : Math.sqrt(Math.max(0, num)));

/** ||W_hat X - W X|| / ||W X|| from the layer statistic. */
export function relativeOutputError(w: Float32Array, wHat: Float32Array, rows: number, stat: LayerStatistic): number {
  const q = quadraticFormsSync(w, wHat, rows, stat);
  return relative(q.diff, q.a);
}

/** `relativeOutputError` with its products split over `map` (engine: one registered in its threads). */
export async function relativeOutputErrorOn(
  map: ParallelMap,
  w: Float32Array,
  wHat: Float32Array,
  rows: number,
  stat: LayerStatistic | StatHandle,
  engine?: string,
): Promise<number> {
  const q = await quadraticForms(map, w, wHat, rows, stat, engine);
  return relative(q.diff, q.a);
}
