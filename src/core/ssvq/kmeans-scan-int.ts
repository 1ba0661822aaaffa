/**
 * The integer form of the k-means kernel's scan (kmeans-scan.ts has the float32 form): every centroid for
 * four points at once, on the points and centroids rounded to 16-bit integers, two coordinates per
 * product (i32x4.dot_i16x8_s), exactly, in 32-bit integers. Half the instructions of the float32 scan per
 * centroid (d 8, k 16: 5.7 against 12.4 ns a point on this project's machines), with bounds as sure as
 * its own, only looser.
 *
 * Rounding. One scale s per k-means run, a power of two with every coordinate of the points (and so of
 * every centroid, a mean of points, a point or clamped) within Q s, Q = `intScanQ(d)`. A point x becomes
 * the integers xq = round(x / s) (exact: s is a power of two), its rounding error ex = x - s xq is exact in
 * float32 too; a centroid c becomes cq = round(c / s), clamped to [-Q, Q], with error ec. Then
 *
 *     Dq_j = |xq - cq_j|^2 = |xq|^2 + |cq_j|^2 + sum_t xq_t (-2 cq_jt)
 *
 * is an integer below 4 d Q^2 < 2^31, computed exactly (32-bit wrapping arithmetic is exact modulo 2^32,
 * and the result is in range). By the triangle inequality the true distance differs from s sqrt(Dq_j) by
 * at most |ex - ec_j| <= e + ecmax, e = |ex| per point (kept with the point) and ecmax the largest |ec_j|.
 * So, with Dq1 <= Dq2 the two smallest,
 *
 *     u1 = (s sqrt(Dq1) + e + ecmax)^2,   l2 = max(0, s sqrt(Dq2) - e - ecmax)^2
 *
 * bound the squared distance to the best centroid from above and to every other one from below, as the
 * float32 scan's u1 and l2 do, and the caller's acceptance test (l2 > u1 (1 + 4 rho)) stays the same.
 * The float32 operations that make u1 and l2 round outwards (factors 1 +- 2^-20 cover a few roundings of
 * 2^-24 each). Ties in Dq keep the lower index, and are never accepted (l2 < u1).
 *
 * Memory. Per point, in groups of four (the group of chunk c of a range starts with its first point):
 * ceil(d / 2) vectors whose 32-bit lane q holds coordinates 2i, 2i + 1 of point q as two int16, then the
 * four |xq|^2 (int32), then the four e (float32): `intGroupBytes(d)` a group. The table
 * (`writeIntScanTable`): 16 bytes of constants (s, ecmax as float32), then per centroid |cq|^2 (int32) and
 * ceil(d / 2) words of two int16 -2 cq.
 */
import { loadColumns } from "./kmeans-scan.js";
import { F32, f32x4, I32, i32x4, op, simd, uleb, V128, v, vec } from "./wasm-asm.js";

const I32X4_DOT_I16X8_S = simd(0xba);
const I32X4_LT_S = simd(0x39);
const I32X4_MUL = simd(0xb5);
const I16X8_NARROW_I32X4_S = simd(0x85);
const I32X4_TRUNC_SAT_F32X4_S = simd(0xf8);
const F32X4_CONVERT_I32X4_S = simd(0xfa);
const F32X4_NEAREST = simd(0x6a);
const V128_LOAD32_LANE = (offset: number, lane: number): number[] => simd(0x56, 2, ...uleb(offset), lane);
/** Interleaves the 16-bit lanes of narrow(a, b) = [a0 a1 a2 a3 b0 b1 b2 b3] into [a0 b0 a1 b1 a2 b2 a3 b3]. */
const INTERLEAVE_16 = [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15];

/** Coordinate pairs of dimension d. */
const pairs = (d: number): number => Math.ceil(d / 2);

/**
 * The integer scan serves from this dimension up. Measured (k-means passes on one thread, standard normal
 * data, alternating in one process): d 8 k 16, 64, 256 take 26 to 30% less time than with the float32
 * scan; d 4 the same at k 16 and 64 and 3% more at k 256 (three instructions per coordinate and centroid
 * against the float32 scan's 2.5 saves little beside the rest of a pass).
 */
export const INT_SCAN_MIN_D = 6;

/** The largest rounded coordinate: |xq - cq|^2 <= d (2Q)^2 < 2^31, and -2 cq fits an int16. */
export const intScanQ = (d: number): number => Math.min(16383, Math.floor(Math.sqrt(2 ** 29 / d)) - 1);

/**
 * The run's scale for points whose largest |coordinate| is `maxAbs`: the smallest power of two s with
 * maxAbs <= intScanQ(d) s; 0 (no integer scan) when maxAbs is 0, not finite, or so small or large that s
 * or the bounds would leave float32's normal range.
 */
export function intScanScale(maxAbs: number, d: number): number {
  if (!intScanOn || d < INT_SCAN_MIN_D || !(maxAbs > 2 ** -90 && maxAbs < 2 ** 90)) return 0;
  return 2 ** Math.ceil(Math.log2(maxAbs / intScanQ(d)));
}

/**
 * `setIntScan(false)` turns the integer scan off for the k-means runs this thread starts (their tasks run
 * the float32 scan wherever they run), for tests and measurements: the results are the same bytes.
 */
let intScanOn = true;
export function setIntScan(on: boolean): void {
  intScanOn = on;
}

/** Bytes of one group of four points. */
export const intGroupBytes = (d: number): number => (pairs(d) + 2) * 16;

/** Bytes of the table for k centroids. */
export const intTableBytes = (k: number, d: number): number => 16 + k * (1 + pairs(d)) * 4;

/** Writes the integer scan's table for the centroids [k, d] (float32 values, widened) with scale s. */
export function writeIntScanTable(buffer: ArrayBufferLike, at: number, centroids: Float64Array, k: number, d: number, s: number): void {
  const p = pairs(d);
  const q = intScanQ(d);
  const words = 4 + k * (1 + p);
  const f = new Float32Array(buffer, at, words);
  const i = new Int32Array(buffer, at, words);
  const h = new Int16Array(buffer, at, 2 * words);
  let ecmax = 0;
  for (let j = 0; j < k; j++) {
    const r = 4 + j * (1 + p);
    let c2 = 0;
    let ec = 0;
    for (let t = 0; t < 2 * p; t++) {
      const c = t < d ? centroids[j * d + t]! : 0;
      const cq = Math.max(-q, Math.min(q, Math.round(c / s)));
      const e = c - cq * s; // exact: s is a power of two and |cq| < 2^15
      ec += e * e;
      c2 += cq * cq;
      h[2 * (r + 1 + (t >> 1)) + (t & 1)] = -2 * cq;
    }
    i[r] = c2;
    ecmax = Math.max(ecmax, Math.sqrt(ec));
  }
  f[0] = s;
  // float64 rounding of ec (relative 1e-15) and the rounding to float32 (2^-24), outwards.
  f[1] = Math.fround(ecmax * (1 + 2 ** -20));
  f[2] = 0;
  f[3] = 0;
}

/**
 * The function `quantize(groups, src, dst, inv, s)`: groups of four rows of d float32 at `src` (rows past
 * the points are read, and must be readable) into the integer groups at `dst` (see the file comment), with
 * inv = 1 / s.
 */
export function quantizeBody(d: number): { locals: number[]; code: number[] } {
  const { get, set, tee, i32 } = op;
  const [G, SRC, DST, INV, S] = [0, 1, 2, 3, 4];
  const IDX = 5;
  const [XX, EXX, T1, T2, QV, EV] = [6, 7, 8, 9, 10, 11];
  const COL = 12; // 4 locals: the columns of one block of four coordinates
  const QI = 16; // 2 locals: the rounded coordinates of the pair in the making
  const p = pairs(d);
  const c: number[] = [];
  const e = (...parts: number[][]): void => {
    for (const part of parts) c.push(...part);
  };
  e(i32(0), set(IDX));
  e(op.block, op.loop, get(IDX), get(G), op.geS, op.brIf(1));
  e(i32x4(0, 0, 0, 0), tee(XX), set(EXX));
  for (let t0 = 0; t0 < 2 * p; t0 += 4) {
    if (t0 < d) e(loadColumns(d, t0, (q) => [get(SRC), 4 * d * q], [COL, COL + 1, COL + 2, COL + 3], T1, T2));
    for (let t = t0; t < Math.min(2 * p, t0 + 4); t++) {
      if (t < d) {
        // q = round(x / s) (exact); ex = x - q s (exact); e^2 += ex^2; xx += q^2
        e(get(COL + t - t0), get(INV), v.f32Splat, v.f32Mul, F32X4_NEAREST, set(QV));
        e(get(COL + t - t0), get(QV), get(S), v.f32Splat, v.f32Mul, v.f32Sub, tee(EV), get(EV), v.f32Mul, get(EXX), v.f32Add, set(EXX));
        e(get(QV), I32X4_TRUNC_SAT_F32X4_S, tee(QI + (t & 1)), get(QI + (t & 1)), I32X4_MUL, get(XX), v.i32Add, set(XX));
      } else {
        e(i32x4(0, 0, 0, 0), set(QI + (t & 1)));
      }
      if (t & 1) {
        e(get(DST), get(QI), get(QI + 1), I16X8_NARROW_I32X4_S, tee(T1), get(T1), v.shuffle(INTERLEAVE_16), v.store(16 * (t >> 1)));
      }
    }
  }
  e(get(DST), get(XX), v.store(16 * p));
  // e = sqrt(sum ex^2) rounded up: the d squares and additions round by at most d 2^-24 (halved by the
  // root), the root and the product by 2^-24 each; squares below 2^-126 may vanish, which 2^-56 covers.
  e(get(DST), get(EXX), v.f32Sqrt, f32x4(1 + (d + 4) * 2 ** -24), v.f32Mul, f32x4(2 ** -56), v.f32Add, v.store(16 * (p + 1)));
  e(get(SRC), i32(16 * d), op.add, set(SRC), get(DST), i32(intGroupBytes(d)), op.add, set(DST));
  e(get(IDX), i32(1), op.add, set(IDX), op.br(0));
  e(op.end, op.end);
  return { locals: vec([[...uleb(1), I32], [...uleb(12), V128]]), code: c };
}

/** The parameter types of `quantize`. */
export const QUANTIZE_PARAMS = [I32, I32, I32, F32, F32];

/** The locals `intScanFour` uses (indices into the function's locals; `p` is the first of ceil(d / 2)). */
export interface IntScanLocals {
  /** i32: the group's address, the table's, the centroid count; scratch. */
  qa: number;
  recs: number;
  k: number;
  cp: number;
  j: number;
  /** v128 scratch, then the results: the best centroid per lane, u1 and l2 (see the file comment). */
  best: number;
  sec: number;
  acc: number;
  jv: number;
  xx: number;
  idx: number;
  u1: number;
  l2: number;
  p: number;
}

/**
 * Code pushing the address of point i's first word in the integer form of its chunk: base + its group
 * (i >> 2) times `intGroupBytes(d)` + 4 times its place in the group (i & 3); i counted from the chunk's
 * start, in the i32 local `i`, the chunk's integer form at the i32 local `base`.
 */
export function intPointAddress(d: number, i: number, base: number): number[] {
  const { get, i32 } = op;
  return [
    ...get(i), ...i32(2), ...op.shrU, ...i32(intGroupBytes(d)), ...op.mul,
    ...get(i), ...i32(3), ...op.and, ...i32(2), ...op.shl, ...op.add, ...get(base), ...op.add,
  ];
}

/**
 * Code: four points against every centroid of the table at `recs`, leaving idx, u1, l2: the group at `qa`,
 * or with `lanes` (four i32 locals) point q's words gathered from the address in lanes[q] (its group's
 * address plus 4 times its place in the group: `intPointAddress`).
 */
export function intScanFour(d: number, L: IntScanLocals, lanes?: readonly number[]): number[] {
  const { get, set, tee, i32 } = op;
  const p = pairs(d);
  const c: number[] = [];
  const e = (...parts: number[][]): void => {
    for (const part of parts) c.push(...part);
  };
  /** Pushes the group's vector at byte offset `at` (gathered lane by lane with `lanes`; scratch: acc). */
  const vectorAt = (at: number): number[] => {
    if (!lanes) return [...get(L.qa), ...v.load(at)];
    const out = [...i32x4(0, 0, 0, 0), ...set(L.acc)];
    for (let q = 0; q < 4; q++) out.push(...get(lanes[q]!), ...get(L.acc), ...V128_LOAD32_LANE(at, q), ...set(L.acc));
    out.push(...get(L.acc));
    return out;
  };
  for (let i = 0; i < p; i++) e(vectorAt(16 * i), set(L.p + i));
  e(vectorAt(16 * p), set(L.xx));
  e(i32x4(0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff), tee(L.best), set(L.sec), i32x4(0, 0, 0, 0), tee(L.idx), set(L.jv));
  e(get(L.recs), i32(16), op.add, set(L.cp), i32(0), set(L.j));
  e(op.block, op.loop, get(L.j), get(L.k), op.geS, op.brIf(1));
  e(get(L.xx), get(L.cp), v.load32Splat(0), v.i32Add);
  for (let i = 0; i < p; i++) e(get(L.p + i), get(L.cp), v.load32Splat(4 * (1 + i)), I32X4_DOT_I16X8_S, v.i32Add);
  e(set(L.acc));
  // idx = j where acc < best; second = min(second, max(best, acc)); best = min(best, acc)
  e(get(L.jv), get(L.idx), get(L.acc), get(L.best), I32X4_LT_S, v.bitselect, set(L.idx));
  e(get(L.sec), get(L.best), get(L.acc), v.i32MaxS, v.i32MinS, set(L.sec));
  e(get(L.best), get(L.acc), v.i32MinS, set(L.best));
  e(get(L.jv), i32x4(1, 1, 1, 1), v.i32Add, set(L.jv));
  e(get(L.cp), i32(4 * (1 + p)), op.add, set(L.cp), get(L.j), i32(1), op.add, set(L.j), op.br(0));
  e(op.end, op.end);
  // E = (e + ecmax) (1 + 2^-20) (kept in acc); s in jv
  e(vectorAt(16 * (p + 1)), get(L.recs), v.load32Splat(4), v.f32Add, f32x4(1 + 2 ** -20), v.f32Mul, set(L.acc));
  e(get(L.recs), v.load32Splat(0), set(L.jv));
  // u1 = ((sqrt(Dq1) s + E) (1 + 2^-20))^2 (1 + 2^-20)
  e(get(L.best), F32X4_CONVERT_I32X4_S, v.f32Sqrt, get(L.jv), v.f32Mul, get(L.acc), v.f32Add, f32x4(1 + 2 ** -20), v.f32Mul);
  e(tee(L.u1), get(L.u1), v.f32Mul, f32x4(1 + 2 ** -20), v.f32Mul, set(L.u1));
  // l2 = (max(0, sqrt(Dq2) s (1 - 2^-20) - E) (1 - 2^-20))^2 (1 - 2^-20)
  e(f32x4(0), get(L.sec), F32X4_CONVERT_I32X4_S, v.f32Sqrt, get(L.jv), v.f32Mul, f32x4(1 - 2 ** -20), v.f32Mul, get(L.acc), v.f32Sub, v.f32Pmax);
  e(f32x4(1 - 2 ** -20), v.f32Mul, tee(L.l2), get(L.l2), v.f32Mul, f32x4(1 - 2 ** -20), v.f32Mul, set(L.l2));
  return c;
}
