/**
 * The brute-force nearest-centroid scan of the k-means kernel (kmeans-kernel.ts), up to `scanMaxK(d)`: every
 * centroid for four points at once (one point per lane), in the dot-product form
 *
 *     a_j = |x|^2 + |c_j|^2 + sum_t x_t (-2 c_jt)      (float32)
 *
 * two operations per coordinate instead of three, and the running minimum and second minimum kept as
 * integers: a squared distance's float32 bits with the low b bits replaced by the centroid index
 * (b = bits of k - 1), so one i32x4.min_s gives both the smallest value and its centroid, and two more the
 * second smallest. Lower indices win ties among equal packed values.
 *
 * Error bound. The dot-product form cancels, so its error is absolute: |a_j - D_j| <= E with
 * E = gamma (|x| + cmax)^2 + tiny, gamma = 1.1 (2d + 4) 2^-24, cmax >= every |c_j|, tiny covering
 * underflow (standard bounds for a sum of 2d + 3 rounded terms: |x|^2 and the products each have their
 * own rounding). Clearing the low b bits moves a non-negative value down by less than a relative
 * delta = 2^(b - 23) (negative values, possible only within E of 0, sort below every non-negative one and
 * make the point fail the test below). So the scan reports, per point, an upper bound on the distance to
 * its best centroid and a lower bound on the distance to every other one:
 *
 *     u1 = (max(p1, 0) (1 + 2 delta) + E) (1 + 2^-20),   l2 = max(0, (p2 - E) (1 - 2^-20))
 *
 * (p1, p2: the two smallest packed values with the index bits cleared; NaN or overflow give u1 = +Inf or
 * l2 = 0). The caller (`pass` in kmeans-kernel.ts) takes the answer only when l2 > u1 (1 + 4 rho), where
 * it is provably the exact float64 answer; else it searches the point again in float64.
 *
 * Memory, at `recs` (written by `writeScanTable`): 16 bytes of constants (the packing mask, cmax, gamma,
 * 1 + 2 delta), then per centroid j a record of d + 2 words: |c_j|^2, -2 c_j0 .. -2 c_j(d-1), and j.
 */
import { f32x4, I32, i32x4, op, uleb, V128, v, vec } from "./wasm-asm.js";

/** Byte shuffles (of two vectors a, b) interleaving their low or high 32-bit pairs, and 64-bit halves. */
const bytesOf = (lanes32: number[]): number[] => lanes32.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]);
const INTERLEAVE_LOW_32 = bytesOf([0, 4, 1, 5]);
const INTERLEAVE_HIGH_32 = bytesOf([2, 6, 3, 7]);
const INTERLEAVE_LOW_64 = bytesOf([0, 1, 4, 5]);
const INTERLEAVE_HIGH_64 = bytesOf([2, 3, 6, 7]);

/** Bytes of the table for k centroids of dimension d. */
export const scanTableBytes = (k: number, d: number): number => 16 + k * (d + 2) * 4;

/**
 * Writes the scan's table for the centroids [k, d] (float32 values, widened) at byte `at` of `buffer`.
 * Returns false when the values are too large for the float32 bound (then the scan must not be used).
 */
export function writeScanTable(buffer: ArrayBufferLike, at: number, centroids: Float64Array, k: number, d: number): boolean {
  const words = (d + 2) * k + 4;
  const f = new Float32Array(buffer, at, words);
  const i = new Int32Array(buffer, at, words);
  let cmax = 0;
  for (let j = 0; j < k; j++) {
    let h = 0;
    const r = 4 + j * (d + 2);
    for (let t = 0; t < d; t++) {
      const c = centroids[j * d + t];
      h += c * c;
      f[r + 1 + t] = -2 * c;
    }
    f[r] = h;
    i[r + d + 1] = j;
    cmax = Math.max(cmax, Math.sqrt(h));
  }
  const b = k > 1 ? Math.ceil(Math.log2(k)) : 0;
  i[0] = ~((1 << b) - 1);
  f[1] = cmax * (1 + 2 ** -20);
  f[2] = 1.1 * (2 * d + 4) * 2 ** -24;
  f[3] = 1 + 2 * 2 ** (b - 23);
  return cmax < 1e15;
}

/**
 * Code: coordinates t0 .. t0 + 3 (those below d) of four rows of d float32, one vector per coordinate
 * (lane q: row q) into the locals `dst`; `row(q)` gives the code pushing row q's address and a constant
 * byte offset to add to it. With d a multiple of 4 the rows are loaded whole and transposed (4 x 4, by interleaving
 * 32-bit then 64-bit halves: 12 instructions where lane-by-lane loads take 32); `s1`, `s2` are v128
 * scratch locals.
 */
export function loadColumns(d: number, t0: number, row: (q: number) => [address: number[], offset: number], dst: readonly number[], s1: number, s2: number): number[] {
  const { get, set } = op;
  const c: number[] = [];
  const e = (...parts: number[][]): void => {
    for (const p of parts) c.push(...p);
  };
  if (d % 4 === 0) {
    const r = (q: number): number[] => [...row(q)[0], ...v.load(row(q)[1] + 4 * t0)];
    const [a, b, cc, f] = dst as [number, number, number, number];
    e(r(0), r(1), v.shuffle(INTERLEAVE_LOW_32), set(a)); // x0 y0 x1 y1 (x, y: rows 0, 1)
    e(r(0), r(1), v.shuffle(INTERLEAVE_HIGH_32), set(cc)); // x2 y2 x3 y3
    e(r(2), r(3), v.shuffle(INTERLEAVE_LOW_32), set(b)); // z0 w0 z1 w1
    e(r(2), r(3), v.shuffle(INTERLEAVE_HIGH_32), set(f)); // z2 w2 z3 w3
    e(get(a), get(b), v.shuffle(INTERLEAVE_HIGH_64), set(s1)); // coordinate t0 + 1
    e(get(a), get(b), v.shuffle(INTERLEAVE_LOW_64), set(a)); // coordinate t0
    e(get(cc), get(f), v.shuffle(INTERLEAVE_HIGH_64), set(s2)); // coordinate t0 + 3
    e(get(cc), get(f), v.shuffle(INTERLEAVE_LOW_64), set(cc)); // coordinate t0 + 2
    e(get(s1), set(b), get(s2), set(f));
  } else {
    for (let t = t0; t < Math.min(d, t0 + 4); t++) {
      const at = (q: number): number[] => [...row(q)[0], ...op.f32Load(row(q)[1] + 4 * t)];
      e(at(0), v.f32Splat);
      for (let q = 1; q < 4; q++) e(at(q), v.f32Replace(q));
      e(set(dst[t - t0]!));
    }
  }
  return c;
}

/** The locals the scan's code uses (indices into the function's locals; `x` is the first of d). */
export interface ScanLocals {
  /** i32: byte address of the four points (rows of d float32), and of the table; the centroid count. */
  pa: number;
  recs: number;
  k: number;
  /** i32 scratch. */
  cp: number;
  j: number;
  /** v128: the results, then scratch. */
  best: number;
  sec: number;
  e: number;
  mask: number;
  acc: number;
  xx: number;
  t: number;
  x: number;
}

/**
 * Code: the four points at `pa` against every centroid of the table at `recs` (whose packing mask must be
 * in `mask` already): leaves in `best` and `sec` the two smallest packed values per lane and in `e` the
 * error bound E per lane (see the file comment). With `rows` (four i32 locals), point q's row is at
 * the address in rows[q] instead of pa + 4 d q.
 */
export function scanFour(d: number, L: ScanLocals, rows?: readonly number[]): number[] {
  const { get, set, tee, i32 } = op;
  const c: number[] = [];
  const e = (...parts: number[][]): void => {
    for (const p of parts) c.push(...p);
  };
  const stride = 4 * (d + 2);
  const X = L.x;
  const row = (q: number): [number[], number] => (rows ? [get(rows[q]!), 0] : [get(L.pa), 4 * q * d]);
  for (let t0 = 0; t0 < d; t0 += 4) e(loadColumns(d, t0, row, [X + t0, X + t0 + 1, X + t0 + 2, X + t0 + 3], L.acc, L.t));
  for (let t = 0; t < d; t++) {
    e(get(X + t), get(X + t), v.f32Mul);
    if (t > 0) e(get(L.xx), v.f32Add);
    e(set(L.xx));
  }
  e(i32x4(0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff), tee(L.best), set(L.sec));
  e(get(L.recs), i32(16), op.add, set(L.cp), i32(0), set(L.j));
  e(op.block, op.loop, get(L.j), get(L.k), op.geS, op.brIf(1));
  e(get(L.xx), get(L.cp), v.load32Splat(0), v.f32Add);
  for (let t = 0; t < d; t++) e(get(X + t), get(L.cp), v.load32Splat(4 * (1 + t)), v.f32Mul, v.f32Add);
  e(get(L.mask), v.and, get(L.cp), v.load32Splat(4 * (d + 1)), v.or, set(L.acc));
  // second = min(second, max(best, acc)); best = min(best, acc), on the packed bits
  e(get(L.sec), get(L.best), get(L.acc), v.i32MaxS, v.i32MinS, set(L.sec));
  e(get(L.best), get(L.acc), v.i32MinS, set(L.best));
  e(get(L.cp), i32(stride), op.add, set(L.cp));
  e(get(L.j), i32(1), op.add, set(L.j), op.br(0));
  e(op.end, op.end);
  // E = gamma (|x| + cmax)^2 + tiny
  e(get(L.xx), v.f32Sqrt, get(L.recs), v.load32Splat(4), v.f32Add, tee(L.t), get(L.t), v.f32Mul, get(L.recs), v.load32Splat(8), v.f32Mul);
  e(f32x4(2 ** -120), v.f32Add, set(L.e));
  return c;
}

/** Code pushing the four points' centroids (after `scanFour`): the packed values' index bits. */
export const scanIndex = (L: ScanLocals): number[] => [...op.get(L.best), ...op.get(L.mask), ...i32x4(-1, -1, -1, -1), ...v.xor, ...v.and];
/** Code pushing u1 per lane (after `scanFour`). */
export const scanUpper = (L: ScanLocals): number[] => [
  ...op.get(L.best), ...op.get(L.mask), ...v.and, ...f32x4(0), ...v.f32Pmax, ...op.get(L.recs), ...v.load32Splat(12), ...v.f32Mul,
  ...op.get(L.e), ...v.f32Add, ...f32x4(1 + 2 ** -20), ...v.f32Mul,
];
/** Code pushing l2 per lane (after `scanFour`). */
export const scanLower = (L: ScanLocals): number[] => [
  ...f32x4(0), ...op.get(L.sec), ...op.get(L.mask), ...v.and, ...op.get(L.e), ...v.f32Sub, ...f32x4(1 - 2 ** -20), ...v.f32Mul, ...v.f32Pmax,
];

/**
 * The function `scan(m, pts, outIdx, outA1, outA2, recs, k)`: points [m rounded up to 4, d] at `pts`;
 * writes per point the best centroid, u1 and l2 (see the file comment).
 */
export function scanBody(d: number): { locals: number[]; code: number[] } {
  const { get, set, i32 } = op;
  const [M, PTS, IDX, A1, A2, RECS, K] = [0, 1, 2, 3, 4, 5, 6];
  const [P, J, CP, PA] = [7, 8, 9, 10];
  const [BEST, SEC, ACC, XX, MASK, E, T] = [11, 12, 13, 14, 15, 16, 17];
  const X = 18;
  const L: ScanLocals = { pa: PA, recs: RECS, k: K, cp: CP, j: J, best: BEST, sec: SEC, e: E, mask: MASK, acc: ACC, xx: XX, t: T, x: X };
  const c: number[] = [];
  const e = (...parts: number[][]): void => {
    for (const p of parts) c.push(...p);
  };
  e(get(RECS), v.load32Splat(0), set(MASK));
  e(i32(0), set(P));
  e(op.block, op.loop, get(P), get(M), op.geS, op.brIf(1));
  e(get(PTS), get(P), i32(4 * d), op.mul, op.add, set(PA));
  e(scanFour(d, L));
  e(get(IDX), get(P), i32(2), op.shl, op.add, scanIndex(L), v.store(0));
  e(get(A1), get(P), i32(2), op.shl, op.add, scanUpper(L), v.store(0));
  e(get(A2), get(P), i32(2), op.shl, op.add, scanLower(L), v.store(0));
  e(get(P), i32(4), op.add, set(P), op.br(0));
  e(op.end, op.end);
  return { locals: vec([[...uleb(4), I32], [...uleb(X + d - BEST), V128]]), code: c };
}
