/**
 * The assignment pass of k-means as a WebAssembly module (SIMD for the distances): the nearest-centroid
 * search in float32, fast and approximate, with an error bound under which its answer is accepted only
 * when it is provably the exact one; every other point is searched again exactly, in float64.
 *
 * Three functions, assembled below for each d:
 *  - `pass()`: a whole chunk of points (kmeans-assign.ts gives the steps): Hamerly's test on each point,
 *    one of the two searches below for those it does not settle, the acceptance test or else the exact
 *    float64 search over all centroids (the brute-force loop's own arithmetic), the new bounds, and the
 *    chunk's float64 sums in point order. With the scan (k <= scanMaxK(d)) it takes shorter roads:
 *    when every point is searched (the first pass, a rescan) FAST scans them in place four at a time
 *    and takes the four answers in the same loop (the acceptance test, the assignments, the bounds when
 *    kept, as vectors; the sums point by point); after that BOUNDS tests the bounds four points at a time
 *    in float32 and scans only the points left, from their rows. The points themselves stay in the
 *    kernel's memory for the whole run (`cachePoints`);
 *  - `search()` (k above `scanMaxK(d)` in kmeans-assign.ts): per point x, over the centroid groups of `CentroidGroups` (kmeans-bounds.ts),
 *    the squared distance from x to each group's bounding box, then the squared distances to the
 *    centroids of its previous centroid's group (or of the group with the nearest box), then to those of
 *    every other group whose box is not farther than the best distance so far (times 1 + 5 rho). It
 *    returns the best centroid (as a lane index), its approximate squared distance a1, and a2: the
 *    smallest of the approximate squared distances to every other centroid examined and of the boxes of
 *    the groups skipped, so a2 bounds from below (up to rho) the distance to every centroid but the best;
 *  - `scan()` (smaller k, kmeans-scan.ts): every centroid for four points at once (one point per lane), in
 *    the dot-product form, returning the best centroid itself, an upper bound a1 on its distance and a
 *    lower bound a2 on every other one (so the same acceptance test holds). Inside `pass()`, from d = 6
 *    up, the integer form of the scan (kmeans-scan-int.ts) goes first, on the points rounded to 16-bit
 *    integers once per run (`quantize`, function 3, when `cachePoints` keeps them), and the float32 scan
 *    follows only for the fours it leaves unproven.
 *
 * Error bound (of `search`). Every quantity is a sum of squares of float32 differences, so float32
 * rounding makes a relative error only (no cancellation): |approx - exact| <= rho * exact with
 * rho = (d + 3) 2^-24, as long as the values stay between 2^-100 and 1e37 (no underflow, no overflow),
 * which `pass()` checks.
 *
 * Layout (four centroids side by side, so one f32x4 holds a coordinate of four centroids): block b of
 * the centroids is d vectors, coordinate t of lanes 0..3 at blocks + (b d + t) 16; group g owns blocks
 * groupStart[g] .. groupStart[g + 1] - 1 (padding lanes are +Infinity, never the nearest); the boxes of
 * groups 4r .. 4r + 3 are 2d vectors at boxes + r 2d 16: lo of coordinate t, then hi (padding groups are
 * +Infinity). WebAssembly arithmetic is IEEE without fused multiply-add: the same bits on every machine,
 * and the float64 parts compute exactly what the TypeScript code computes.
 *
 * The module (a few KB) is assembled below byte by byte, so no build step or binary file is needed;
 * `nearestKernel(d)` returns null when this runtime lacks WebAssembly SIMD (kmeans-assign.ts then runs
 * the exact float64 search alone, with the same results).
 */

import { loadColumns, scanBody, scanFour, scanIndex, scanLower, scanTableBytes, scanUpper, writeScanTable, type ScanLocals } from "./kmeans-scan.js";
import { intGroupBytes, intPointAddress, intScanFour, intTableBytes, QUANTIZE_PARAMS, quantizeBody, writeIntScanTable, type IntScanLocals } from "./kmeans-scan-int.js";
import { compileModule, f32x4, I32, F32, i32x4, name, op, section, simd, uleb, V128, vec, v, wasmApi, type WasmMemory } from "./wasm-asm.js";
/** SIMD instructions wasm-asm.ts does not name. */
const I32X4_ALL_TRUE = simd(0xa3);
const I32X4_NE = simd(0x38);
const I32X4_BITMASK = simd(0xa4);
const I32_POPCNT = [0x69];
const I32X4_EQ = simd(0x37);
const I32X4_GT_S = simd(0x3b);
const F32X4_LE = simd(0x45);
const F32X4_GE = simd(0x46);
const V128_ANDNOT = simd(0x4f);
const V128_LOAD32_LANE = (lane: number): number[] => simd(0x56, 2, 0, lane);
/** Byte shuffles that swap the halves of a vector, and neighbouring lanes. */
const SWAP_HALVES = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];
const SWAP_PAIRS = [4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11];

/** Relative slack on every pruning test and bound: float64 rounding errors are below 1e-13 for d < 1e3. */
export const SLACK = 1e-9;
/** Bounds are stored as float32, rounded outwards by this relative amount (float32 rounds by <= 2^-24). */
export const F32_OUTWARD = 2 ** -20;
/** The squared distances the kernel reports are trusted down to this (float32 stays normal above) ... */
export const KERNEL_MIN = 2 ** -100;
/** ... and up to this (no float32 overflow below). */
export const KERNEL_MAX = 1e37;
const PASS_CONSTANTS: PassConstants = { slack: SLACK, f32Outward: F32_OUTWARD, kernelMin: KERNEL_MIN, kernelMax: KERNEL_MAX };

/** Relative error bound of the kernel's squared distances for dimension d (see the file comment). */
export const kernelRho = (d: number): number => (d + 3) * 2 ** -24;

// Parameters of `search(m, pts, hints, outIdx, outA1, outA2, blocks, groupStart, boxes, groups, boxBlocks,
// scratch)`: byte addresses and counts (see `NearestKernel` for the layout), then the locals.
const [M, PTS, HINTS, OUT_IDX, OUT_A1, OUT_A2, BLOCKS, GSTART, BOXES, G, GB, SCRATCH] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const [P, PX, R, BP, SP, F, GI, B, BEND, CP, IDX, IQ] = [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23];
const I32_LOCALS = 12;
const [THR, SKIPPED, BV, A1, A2, S] = [24, 25, 26, 27, 28, 29];
const F32_LOCALS = 6;
const [BEST, SEC, IDXV, LI, ACC, DV] = [30, 31, 32, 33, 34, 35];
const X = 36; // d locals: the point's coordinates, splat

function body(d: number): number[] {
  const { get, set, tee, i32, f32 } = op;
  const c: number[] = [];
  const blockBytes = d * 16;
  const factor = 1 + 5 * kernelRho(d);
  /** The horizontal minimum of v128 local `l` (no NaN here, so pmin is the minimum), as an f32. */
  const hmin = (l: number): number[] => [
    ...get(l), ...get(l), ...get(l), ...v.shuffle(SWAP_HALVES), ...v.f32Pmin,
    ...tee(DV), ...get(DV), ...get(DV), ...v.shuffle(SWAP_PAIRS), ...v.f32Pmin, ...v.f32Extract(0),
  ];
  /** Scans the blocks of group `GI`, updating BEST, SEC and IDXV per lane. */
  const scan = (): number[] => {
    const s: number[] = [];
    s.push(...get(GSTART), ...get(GI), ...i32(2), ...op.shl, ...op.add, ...tee(CP), ...op.i32Load(0), ...set(B));
    s.push(...get(CP), ...op.i32Load(4), ...set(BEND));
    s.push(...get(BLOCKS), ...get(B), ...i32(blockBytes), ...op.mul, ...op.add, ...set(CP));
    s.push(...get(B), ...i32(2), ...op.shl, ...v.i32Splat, ...i32x4(0, 1, 2, 3), ...v.i32Add, ...set(LI));
    s.push(...op.block, ...op.loop);
    s.push(...get(B), ...get(BEND), ...op.geS, ...op.brIf(1));
    for (let t = 0; t < d; t++) {
      s.push(...get(X + t), ...get(CP), ...v.load(16 * t), ...v.f32Sub, ...tee(DV), ...get(DV), ...v.f32Mul);
      if (t > 0) s.push(...get(ACC), ...v.f32Add);
      s.push(...set(ACC));
    }
    // second = min(second, max(best, acc)); best = min(best, acc); index where acc < best.
    s.push(...get(SEC), ...get(BEST), ...get(ACC), ...v.f32Pmax, ...v.f32Pmin, ...set(SEC));
    s.push(...get(LI), ...get(IDXV), ...get(ACC), ...get(BEST), ...v.f32Lt, ...v.bitselect, ...set(IDXV));
    s.push(...get(BEST), ...get(ACC), ...v.f32Pmin, ...set(BEST));
    s.push(...get(LI), ...i32x4(4, 4, 4, 4), ...v.i32Add, ...set(LI));
    s.push(...get(CP), ...i32(blockBytes), ...op.add, ...set(CP));
    s.push(...get(B), ...i32(1), ...op.add, ...set(B), ...op.br(0));
    s.push(...op.end, ...op.end);
    return s;
  };

  c.push(...i32(0), ...set(P));
  c.push(...op.block, ...op.loop);
  c.push(...get(P), ...get(M), ...op.geS, ...op.brIf(1));
  // The point, each coordinate splat to four lanes.
  c.push(...get(PTS), ...get(P), ...i32(4 * d), ...op.mul, ...op.add, ...set(PX));
  for (let t = 0; t < d; t++) c.push(...get(PX), ...v.load32Splat(4 * t), ...set(X + t));
  // Squared distances to the boxes, four groups at a time, into scratch.
  c.push(...get(BOXES), ...set(BP), ...get(SCRATCH), ...set(SP), ...i32(0), ...set(R));
  c.push(...op.block, ...op.loop);
  c.push(...get(R), ...get(GB), ...op.geS, ...op.brIf(1));
  c.push(...get(SP));
  for (let t = 0; t < d; t++) {
    // e = max(lo - x, x - hi, 0); acc += e^2
    c.push(...get(BP), ...v.load(16 * t), ...get(X + t), ...v.f32Sub);
    c.push(...get(X + t), ...get(BP), ...v.load(16 * (d + t)), ...v.f32Sub, ...v.f32Pmax);
    c.push(...f32x4(0), ...v.f32Pmax, ...tee(DV), ...get(DV), ...v.f32Mul);
    if (t > 0) c.push(...v.f32Add);
  }
  c.push(...v.store(0));
  c.push(...get(BP), ...i32(2 * blockBytes), ...op.add, ...set(BP));
  c.push(...get(SP), ...i32(16), ...op.add, ...set(SP));
  c.push(...get(R), ...i32(1), ...op.add, ...set(R), ...op.br(0));
  c.push(...op.end, ...op.end);
  // The first group: the hint, or the group with the nearest box.
  c.push(...get(HINTS), ...get(P), ...i32(2), ...op.shl, ...op.add, ...op.i32Load(0), ...set(F));
  c.push(...get(F), ...i32(0), ...op.ltS, ...op.if);
  c.push(...i32(0), ...set(F), ...get(SCRATCH), ...op.f32Load(0), ...set(BV), ...i32(1), ...set(GI));
  c.push(...op.block, ...op.loop);
  c.push(...get(GI), ...get(G), ...op.geS, ...op.brIf(1));
  c.push(...get(SCRATCH), ...get(GI), ...i32(2), ...op.shl, ...op.add, ...op.f32Load(0), ...tee(A1), ...get(BV), ...op.f32Lt, ...op.if);
  c.push(...get(A1), ...set(BV), ...get(GI), ...set(F));
  c.push(...op.end);
  c.push(...get(GI), ...i32(1), ...op.add, ...set(GI), ...op.br(0));
  c.push(...op.end, ...op.end);
  c.push(...op.end);
  c.push(...f32x4(Infinity), ...set(BEST), ...f32x4(Infinity), ...set(SEC), ...i32x4(0, 0, 0, 0), ...set(IDXV));
  c.push(...get(F), ...set(GI), ...scan());
  c.push(...hmin(BEST), ...f32(factor), ...op.f32Mul, ...set(THR));
  c.push(...f32(Infinity), ...set(SKIPPED));
  // Every other group whose box is within reach.
  c.push(...i32(0), ...set(GI));
  c.push(...op.block, ...op.loop);
  c.push(...get(GI), ...get(G), ...op.geS, ...op.brIf(1));
  c.push(...get(GI), ...get(F), ...op.ne, ...op.if);
  c.push(...get(SCRATCH), ...get(GI), ...i32(2), ...op.shl, ...op.add, ...op.f32Load(0), ...tee(BV), ...get(THR), ...op.f32Le, ...op.if);
  c.push(...scan(), ...hmin(BEST), ...f32(factor), ...op.f32Mul, ...set(THR));
  c.push(...op.else);
  // skipped = min(skipped, box)
  c.push(...get(BV), ...get(SKIPPED), ...get(BV), ...get(SKIPPED), ...op.f32Lt, ...op.select, ...set(SKIPPED));
  c.push(...op.end);
  c.push(...op.end);
  c.push(...get(GI), ...i32(1), ...op.add, ...set(GI), ...op.br(0));
  c.push(...op.end, ...op.end);
  // The best lane (the lowest of equal ones), the second smallest lane, and a2.
  c.push(...get(BEST), ...v.f32Extract(0), ...set(A1), ...get(IDXV), ...v.i32Extract(0), ...set(IDX), ...f32(Infinity), ...set(S));
  for (let q = 1; q < 4; q++) {
    c.push(...get(BEST), ...v.f32Extract(q), ...tee(BV), ...get(A1), ...op.f32Lt, ...op.if);
    c.push(...get(A1), ...set(S), ...get(BV), ...set(A1), ...get(IDXV), ...v.i32Extract(q), ...set(IDX));
    c.push(...op.else);
    c.push(...get(BV), ...get(S), ...get(BV), ...get(S), ...op.f32Lt, ...op.select, ...set(S));
    c.push(...op.end);
  }
  c.push(...hmin(SEC), ...tee(A2), ...get(S), ...get(A2), ...get(S), ...op.f32Lt, ...op.select, ...set(A2));
  c.push(...get(SKIPPED), ...get(A2), ...get(SKIPPED), ...get(A2), ...op.f32Lt, ...op.select, ...set(A2));
  c.push(...get(P), ...i32(2), ...op.shl, ...set(IQ));
  c.push(...get(OUT_IDX), ...get(IQ), ...op.add, ...get(IDX), ...op.i32Store(0));
  c.push(...get(OUT_A1), ...get(IQ), ...op.add, ...get(A1), ...op.f32Store(0));
  c.push(...get(OUT_A2), ...get(IQ), ...op.add, ...get(A2), ...op.f32Store(0));
  c.push(...get(P), ...i32(1), ...op.add, ...set(P), ...op.br(0));
  c.push(...op.end, ...op.end);
  return c;
}

/**
 * The header the caller writes before `pass()`: i32 fields at 4 * index, then the two float64 shifts.
 * Addresses are byte offsets into the instance's memory.
 */
export const HDR = {
  count: 0, fresh: 1, points: 2, assignments: 3, upper: 4, lower: 5, centroids: 6, shift: 7, half: 8, groupOf: 9,
  laneCentroid: 10, sums: 11, counts: 12, queued: 13, maxShiftAt: 14, k: 15,
  qpts: 16, hints: 17, outIdx: 18, outA1: 19, outA2: 20, blocks: 21, groupStart: 22, boxes: 23, groups: 24, boxBlocks: 25, scratch: 26,
  changed: 27, searched: 28, exact: 29, direct: 30, cents32: 31, noBounds: 36, withSse: 37, rows32: 38, shift32: 39, half32: 40,
  icents: 41, ipts: 42, intProven: 43,
} as const;
/** Byte offsets of the float64 header fields, and the header's size. */
export const HDR_MAX_SHIFT = 128;
export const HDR_SECOND_SHIFT = 136;
/** Output: with `withSse`, the chunk's sum of the points' dist2 to their new centroids, in point order. */
export const HDR_SSE = 144;
export const HDR_BYTES = 256;

/**
 * How `pass()` treats a point: "bounds" searches only those Hamerly's test does not settle; "rescan"
 * searches every one (cheaper when most would be: small k, early passes) and "fresh" too, the first
 * pass, where every point counts as changed.
 */
export type PassMode = "bounds" | "rescan" | "fresh";

/** The numbers `pass()` shares with kmeans-assign.ts (the same bounds, the same acceptance test). */
export interface PassConstants {
  slack: number;
  f32Outward: number;
  kernelMin: number;
  kernelMax: number;
}

/**
 * `pass()`: one chunk of an assignment pass, all of it (kmeans-assign.ts describes the steps, and
 * `assignJs` there is the same outline in TypeScript, with the exact search for every point it queues): Hamerly's test per point, the search of
 * the points it does not settle (`search`, function 0), the acceptance test or the exact float64
 * search over all centroids, the new bounds, and the chunk's sums in point order (float64 additions of
 * the float32 coordinates, as TypeScript makes them).
 */
function passBody(d: number, c: PassConstants): { locals: number[]; code: number[] } {
  const { get, set, tee, i32, f64 } = op;
  const rho = kernelRho(d);
  let next = 0;
  const types: number[] = [];
  const local = (type: number): number => {
    types.push(type);
    return next++;
  };
  const h = (f: number): number[] => [...i32(0), ...op.i32Load(4 * f)];
  const [CNT, FRESH, PTSC, ASG, UP, LO, CEN, SHIFT, HALF, GOF, LANE, SUMS, CNTS, QUE, MAXAT, K] = Array.from({ length: 16 }, () => local(I32));
  const [I, M, FROM, XA, HINT, Q, A, LN, J, CHANGED, EXACT, DONE, ADDR, FAST] = Array.from({ length: 14 }, () => local(I32));
  const [MAXS, SECS, U, L, HH, DD, BEST, SEC, A1, A2, BSQ, V, SSE] = Array.from({ length: 13 }, () => local(0x7c));
  const [VX] = Array.from({ length: 1 }, () => local(V128));
  // The FAST loop's running addresses and hoisted header fields, and the scan's locals (kmeans-scan.ts).
  const [PA, PP, WSSE, FRESH1, RECS, SCP, SJ] = Array.from({ length: 7 }, () => local(I32));
  const [VBEST, VSEC, VE, VMASK, VACC, VXX, VT, IDXV, OKV] = Array.from({ length: 9 }, () => local(V128));
  const VXS = local(V128);
  for (let t = 1; t < d; t++) local(V128);
  const SL: ScanLocals = { pa: PP, recs: RECS, k: K, cp: SCP, j: SJ, best: VBEST, sec: VSEC, e: VE, mask: VMASK, acc: VACC, xx: VXX, t: VT, x: VXS };
  // The scan's answers (either form): the best centroid's upper bound u1 and the others' lower bound l2
  // per lane, and the integer scan's (kmeans-scan-int.ts) table, group address and switch.
  const [U1V, L2V] = [local(V128), local(V128)];
  const [IRECS, IQA, INT, INTN] = [local(I32), local(I32), local(I32), local(I32)];
  /** The queued points' places in the integer form (BOUNDS). */
  const IR = [local(I32), local(I32), local(I32), local(I32)];
  const IL: IntScanLocals = { qa: IQA, recs: IRECS, k: K, cp: SCP, j: SJ, best: VBEST, sec: VSEC, acc: VACC, jv: VT, xx: VXX, idx: IDXV, u1: U1V, l2: L2V, p: VXS };
  /** The float32 scan's answers into IDXV, U1V, L2V. */
  const floatAnswers = [...scanIndex(SL), ...set(IDXV), ...scanUpper(SL), ...set(U1V), ...scanLower(SL), ...set(L2V)];
  /** The acceptance test of the answers, per lane, into OKV (the float32 product rounds by far less than 4 rho). */
  const okTest = [...get(U1V), ...f32x4(1 + 4 * rho), ...v.f32Mul, ...get(L2V), ...v.f32Lt, ...set(OKV)];
  /**
   * Scans four points: with the integer form (INT) the integer scan, and where it leaves a lane unproven
   * (its bounds are looser: about 1 to 3% of the points have a lane that fails) the float32 scan of the
   * four again, whose bounds are tight; without it the float32 scan. Leaves IDXV, U1V, L2V and OKV.
   */
  const scanAnswers = (intLanes: readonly number[] | undefined, rows: readonly number[] | undefined): number[] => [
    ...get(INT), ...op.if, ...intScanFour(d, IL, intLanes), ...okTest,
    ...get(OKV), ...I32X4_ALL_TRUE, ...op.eqz, ...op.if, ...scanFour(d, SL, rows), ...floatAnswers, ...okTest,
    ...op.else, ...get(INTN), ...i32(4), ...op.add, ...set(INTN), ...op.end,
    ...op.else, ...scanFour(d, SL, rows), ...floatAnswers, ...okTest, ...op.end,
  ];
  // The bounds' loop (BOUNDS below): per four points their centroids, bounds, shifts, halves, the settled
  // lanes; the rows of the queued points; the centroids' rows for the tightening.
  const [AV, UV, LV, HV, STV] = Array.from({ length: 5 }, () => local(V128));
  const TX = [local(V128), local(V128), local(V128), local(V128)];
  const TC = [local(V128), local(V128), local(V128), local(V128)];
  const [R0, R1, R2, R3, ROWS, LAST, SH32, HA32] = Array.from({ length: 8 }, () => local(I32));
  const GV = local(V128);
  const [MAX32, SEC32] = Array.from({ length: 2 }, () => local(F32));
  const code: number[] = [];
  const e = (...parts: number[][]): void => {
    for (const p of parts) code.push(...p);
  };
  for (const [l, f] of [[CNT, HDR.count], [FRESH, HDR.fresh], [PTSC, HDR.points], [ASG, HDR.assignments], [UP, HDR.upper], [LO, HDR.lower],
    [CEN, HDR.centroids], [SHIFT, HDR.shift], [HALF, HDR.half], [GOF, HDR.groupOf], [LANE, HDR.laneCentroid], [SUMS, HDR.sums],
    [CNTS, HDR.counts], [QUE, HDR.queued], [MAXAT, HDR.maxShiftAt], [K, HDR.k]] as const) e(h(f), set(l));
  e(i32(0), op.f64Load(HDR_MAX_SHIFT), set(MAXS), i32(0), op.f64Load(HDR_SECOND_SHIFT), set(SECS));
  /** Pushes dist2(point at byte address XA, centroid in local `j`) as float64, summed like `dist2`. */
  const dist2 = (j: number): number[] => {
    const out: number[] = [...get(j), ...i32(8 * d), ...op.mul, ...get(CEN), ...op.add, ...set(ADDR)];
    for (let t = 0; t < d; t++) {
      out.push(...get(XA), ...op.f32Load(4 * t), ...op.promote, ...get(ADDR), ...op.f64Load(8 * t), ...op.f64Sub, ...tee(V), ...get(V), ...op.f64Mul);
      if (t > 0) out.push(...op.f64Add);
    }
    return out;
  };
  /** Stores the bounds of point I: upper from local `u` (times `upScale`), lower from local L. */
  const storeBounds = (u: number[], upScale: number[]): number[] => [
    ...get(UP), ...get(I), ...i32(2), ...op.shl, ...op.add, ...u, ...upScale, ...f64(1 + c.f32Outward), ...op.f64Mul, ...op.demote, ...op.f32Store(0),
    ...get(LO), ...get(I), ...i32(2), ...op.shl, ...op.add,
    ...get(L), ...f64(1 - c.f32Outward), ...op.f64Mul, ...op.demote, ...op.f32(0), ...get(L), ...f64(0), ...op.f64Gt, ...op.select, ...op.f32Store(0),
  ];
  const xa = [...get(PTSC), ...get(I), ...i32(4 * d), ...op.mul, ...op.add, ...set(XA)];

  /** The exact search of point XA over all centroids: A, BEST (its squared distance) and SEC. */
  const exactSearch = (): number[] => {
    const out: number[] = [];
    const o = (...parts: number[][]): void => {
      for (const p of parts) out.push(...p);
    };
    o(get(EXACT), i32(1), op.add, set(EXACT));
    o(f64(Infinity), set(BEST), f64(Infinity), set(SEC), i32(0), set(A), i32(0), set(J));
    o(op.block, op.loop, get(J), get(K), op.geS, op.brIf(1));
    o(dist2(J), set(DD));
    o(get(DD), get(BEST), op.f64Lt, op.if);
    o(get(BEST), set(SEC), get(DD), set(BEST), get(J), set(A));
    o(op.else);
    o(get(DD), get(SEC), get(DD), get(SEC), op.f64Lt, op.select, set(SEC));
    o(op.end);
    o(get(J), i32(1), op.add, set(J), op.br(0));
    o(op.end, op.end);
    return out;
  };
  /**
   * Adds point XA to the sums and count of centroid A (with `withSse`, its dist2 to A to SSE first). Four
   * coordinates at a time as two f64x2 additions of the promoted float32 values: per lane the same
   * float64 addition as the scalar one, so the same bits.
   */
  const addPoint = (withSse: number[] = h(HDR.withSse)): number[] => {
    const out: number[] = [...withSse, ...op.if, ...get(SSE), ...dist2(A), ...op.f64Add, ...set(SSE), ...op.end];
    out.push(...get(CNTS), ...get(A), ...i32(2), ...op.shl, ...op.add, ...tee(ADDR), ...get(ADDR), ...op.i32Load(0), ...i32(1), ...op.add, ...op.i32Store(0));
    out.push(...get(SUMS), ...get(A), ...i32(8 * d), ...op.mul, ...op.add, ...set(ADDR));
    let t = 0;
    for (; t + 4 <= d; t += 4) {
      out.push(...get(ADDR), ...get(ADDR), ...v.load(8 * t), ...get(XA), ...v.load(4 * t), ...tee(VX), ...v.f64x2PromoteLow, ...v.f64x2Add, ...v.store(8 * t));
      out.push(...get(ADDR), ...get(ADDR), ...v.load(8 * t + 16), ...get(VX), ...get(VX), ...v.shuffle(SWAP_HALVES), ...v.f64x2PromoteLow, ...v.f64x2Add, ...v.store(8 * t + 16));
    }
    for (; t < d; t++) out.push(...get(ADDR), ...get(ADDR), ...op.f64Load(8 * t), ...get(XA), ...op.f32Load(4 * t), ...op.promote, ...op.f64Add, ...op.f64Store(8 * t));
    return out;
  };
  /** Counts point I as changed when fresh or moved to A, and stores A. */
  const storeAssignment = [
    ...get(FRESH), ...i32(1), ...op.eq, ...get(A), ...get(ASG), ...get(I), ...i32(2), ...op.shl, ...op.add, ...op.i32Load(0), ...op.ne, ...op.or,
    ...op.if, ...get(CHANGED), ...i32(1), ...op.add, ...set(CHANGED), ...op.end,
    ...get(ASG), ...get(I), ...i32(2), ...op.shl, ...op.add, ...get(A), ...op.i32Store(0),
  ];

  /**
   * Float32 bounds on distances from the scan's bounds on squared distances (vectors): sqrt rounds by at
   * most 2^-24, so the factors 1 +- 2^-20 round outwards.
   */
  const upperDistance = [...v.f32Sqrt, ...f32x4(1 + c.f32Outward), ...v.f32Mul];
  const lowerDistance = [...v.f32Sqrt, ...f32x4(1 - c.f32Outward), ...v.f32Mul];
  /**
   * Stores the bounds of point `pi` (lane q of the scan's answers, or, when the lane was not proven,
   * the exact search's BEST and SEC).
   */
  const commitBounds = (pi: number, q: number): number[] => [
    ...get(OKV), ...v.i32Extract(q), ...op.if,
    ...get(UP), ...get(pi), ...i32(2), ...op.shl, ...op.add, ...get(U1V), ...upperDistance, ...v.f32Extract(q), ...op.f32Store(0),
    ...get(LO), ...get(pi), ...i32(2), ...op.shl, ...op.add, ...get(L2V), ...lowerDistance, ...v.f32Extract(q), ...op.f32Store(0),
    ...op.else,
    ...get(SEC), ...op.f64Sqrt, ...f64(1 - c.slack), ...op.f64Mul, ...set(L),
    ...get(UP), ...get(pi), ...i32(2), ...op.shl, ...op.add, ...get(BEST), ...op.f64Sqrt, ...f64(1 + c.slack), ...op.f64Mul,
    ...f64(1 + c.f32Outward), ...op.f64Mul, ...op.demote, ...op.f32Store(0),
    ...get(LO), ...get(pi), ...i32(2), ...op.shl, ...op.add,
    ...get(L), ...f64(1 - c.f32Outward), ...op.f64Mul, ...op.demote, ...op.f32(0), ...get(L), ...f64(0), ...op.f64Gt, ...op.select, ...op.f32Store(0),
    ...op.end,
  ];
  /** Pushes a vector of the float32 table at local `base`, indexed by the lanes of AV. */
  const gather32 = (base: number): number[] => {
    const out = [...f32x4(0), ...set(GV)];
    for (let q = 0; q < 4; q++) out.push(...get(base), ...get(AV), ...v.i32Extract(q), ...i32(2), ...op.shl, ...op.add, ...get(GV), ...V128_LOAD32_LANE(q), ...set(GV));
    out.push(...get(GV));
    return out;
  };
  /**
   * BOUNDS (the scan with bounds kept, after the first pass): Hamerly's test four points at a time in
   * float32 (below), the points it does not settle queued and scanned four at a time from their rows,
   * each answer taken or searched exactly as in FAST, the new bounds stored. The sums follow (step 4).
   *
   * The test, per lane, with every quantity rounded outwards (a float32 addition, subtraction, product
   * or square root rounds by at most 2^-24 relative to its exact result; each factor 1 +- 2^-20 covers
   * the roundings before it): u = (upper + shift[a]) (1 + 2^-20), l = (lower - m) (1 - 2^-20) with m the
   * largest shift of the other centroids (rounded up), h = half[a] (1 - 2^-20); settled when u < l or
   * u < h. Otherwise u is tightened to the float32 distance to its centroid, sum_t (x_t - c_t)^2, which
   * is within rho of the exact one when it lies between KERNEL_MIN and KERNEL_MAX (as in `search`), so
   * sqrt(that (1 + 4 rho)) (1 + 2^-20) bounds it; then tested again. A settled point keeps its centroid
   * (u < l: every other one is provably farther, by at least one float32 step, far above float64's
   * rounding; u < h: Hamerly's second test) and its bounds u and l.
   */
  const boundsPass = (): number[] => {
    const out: number[] = [];
    const o = (...parts: number[][]): void => {
      for (const p of parts) out.push(...p);
    };
    const factor = 1 + c.f32Outward;
    o(h(HDR.cents32), tee(RECS), v.load32Splat(0), set(VMASK), h(HDR.rows32), set(ROWS));
    o(h(HDR.icents), tee(IRECS), i32(0), op.ne, set(INT), h(HDR.ipts), set(IQA));
    o(get(MAXS), op.demote, op.f32(factor), op.f32Mul, set(MAX32), get(SECS), op.demote, op.f32(factor), op.f32Mul, set(SEC32));
    // The shifts rounded up and the halves rounded down, as float32 tables.
    o(h(HDR.shift32), set(SH32), h(HDR.half32), set(HA32), i32(0), set(J));
    o(op.block, op.loop, get(J), get(K), op.geS, op.brIf(1));
    o(get(SH32), get(J), i32(2), op.shl, op.add, get(SHIFT), get(J), i32(3), op.shl, op.add, op.f64Load(0), op.demote, op.f32(factor), op.f32Mul, op.f32Store(0));
    o(get(HA32), get(J), i32(2), op.shl, op.add, get(HALF), get(J), i32(3), op.shl, op.add, op.f64Load(0), op.demote, op.f32(1 - c.f32Outward), op.f32Mul, op.f32Store(0));
    o(get(J), i32(1), op.add, set(J), op.br(0));
    o(op.end, op.end);
    // Phase 1: the test, and the queue of the points it does not settle.
    o(op.block, op.loop, get(I), get(CNT), op.geS, op.brIf(1));
    o(get(ASG), get(I), i32(2), op.shl, op.add, v.load(0), set(AV));
    o(get(UP), get(I), i32(2), op.shl, op.add, v.load(0), gather32(SH32), v.f32Add, f32x4(factor), v.f32Mul, set(UV));
    o(get(LO), get(I), i32(2), op.shl, op.add, v.load(0));
    o(get(SEC32), v.f32Splat, get(MAX32), v.f32Splat, get(AV), get(MAXAT), v.i32Splat, I32X4_EQ, v.bitselect, v.f32Sub, f32x4(1 - c.f32Outward), v.f32Mul, set(LV));
    o(gather32(HA32), set(HV));
    const settled = [...get(UV), ...get(LV), ...v.f32Lt, ...get(UV), ...get(HV), ...v.f32Lt, ...v.or];
    o(settled, set(STV));
    o(get(STV), I32X4_ALL_TRUE, op.eqz, op.if);
    // The tightening: the four points and their centroids' rows, transposed coordinate by coordinate.
    o(get(PTSC), get(I), i32(4 * d), op.mul, op.add, set(PP));
    for (let q = 0; q < 4; q++) o(get(ROWS), get(AV), v.i32Extract(q), i32(4 * d), op.mul, op.add, set([R0, R1, R2, R3][q]!));
    const R4 = [R0, R1, R2, R3];
    for (let t0 = 0; t0 < d; t0 += 4) {
      o(loadColumns(d, t0, (q) => [get(PP), 4 * d * q], TX, VT, VBEST));
      o(loadColumns(d, t0, (q) => [get(R4[q]!), 0], TC, VT, VBEST));
      for (let t = t0; t < Math.min(d, t0 + 4); t++) {
        o(get(TX[t - t0]!), get(TC[t - t0]!), v.f32Sub, tee(VT), get(VT), v.f32Mul);
        if (t > 0) o(get(VACC), v.f32Add);
        o(set(VACC));
      }
    }
    // ut = sqrt(acc (1 + 4 rho)) (1 + 2^-20) where acc is in range, else +Infinity; u = min(u, ut)
    o(get(VACC), f32x4(1 + 4 * rho), v.f32Mul, upperDistance, f32x4(Infinity));
    o(get(VACC), f32x4(c.kernelMin), F32X4_GE, get(VACC), f32x4(c.kernelMax), F32X4_LE, v.and, v.bitselect);
    o(get(UV), v.f32Pmin, set(UV));
    o(settled, set(STV));
    o(op.end);
    o(get(UP), get(I), i32(2), op.shl, op.add, get(UV), v.store(0), get(LO), get(I), i32(2), op.shl, op.add, get(LV), v.store(0));
    // Queue the lanes below CNT that are not settled: always written, counted only when queued.
    o(get(CNT), get(I), op.sub, v.i32Splat, i32x4(0, 1, 2, 3), I32X4_GT_S, get(STV), V128_ANDNOT, set(STV));
    for (let q = 0; q < 4; q++) {
      o(get(QUE), get(M), i32(2), op.shl, op.add, get(I), i32(q), op.add, op.i32Store(0));
      o(get(M), get(STV), v.i32Extract(q), op.sub, set(M));
    }
    o(get(I), i32(4), op.add, set(I), op.br(0));
    o(op.end, op.end);
    // Phase 2: the queued points, four at a time (the last row repeated to fill the last four).
    const R = [R0, R1, R2, R3];
    o(get(M), i32(1), op.sub, set(LAST), i32(0), set(Q));
    o(op.block, op.loop, get(Q), get(M), op.geS, op.brIf(1));
    for (let q = 0; q < 4; q++) {
      o(get(QUE), get(Q), i32(q), op.add, tee(J), get(LAST), get(J), get(LAST), op.ltS, op.select, i32(2), op.shl, op.add, op.i32Load(0));
      o(tee(J), i32(4 * d), op.mul, get(PTSC), op.add, set(R[q]!));
      o(intPointAddress(d, J, IQA), set(IR[q]!));
    }
    o(scanAnswers(IR, R));
    for (let q = 0; q < 4; q++) {
      o(get(Q), i32(q), op.add, get(M), op.ltS, op.if);
      o(get(QUE), get(Q), i32(q), op.add, i32(2), op.shl, op.add, op.i32Load(0), set(I), get(R[q]!), set(XA));
      o(get(IDXV), v.i32Extract(q), set(A));
      o(get(OKV), v.i32Extract(q), op.eqz, op.if, exactSearch(), op.end);
      o(commitBounds(I, q));
      o(storeAssignment);
      o(op.end);
    }
    o(get(Q), i32(4), op.add, set(Q), op.br(0));
    o(op.end, op.end);
    return out;
  };

  e(i32(0), set(M), i32(0), set(I), i32(0), set(CHANGED), i32(0), set(EXACT), i32(0), set(INTN), f64(0), set(SSE));
  // 0. No bounds to keep and the direct scan (FAST): four points at a time, scanned in place (`scanFour`),
  // their answers taken when the scan's bounds prove them (l2 > u1 (1 + 4 rho), in float32: the product
  // rounds by far less than 4 rho) or else searched exactly, then stored and added to the sums in point
  // order. When all four are proven (nearly always), the test, the assignments and the change count are
  // one vector each; only the sums go point by point.
  e(h(HDR.direct), h(HDR.noBounds), get(FRESH), i32(0), op.ne, op.or, op.and, tee(FAST), op.if);
  e(h(HDR.cents32), tee(RECS), v.load32Splat(0), set(VMASK));
  e(h(HDR.icents), tee(IRECS), i32(0), op.ne, set(INT), h(HDR.ipts), set(IQA));
  e(get(ASG), set(PA), get(PTSC), set(PP), h(HDR.withSse), set(WSSE), get(FRESH), i32(1), op.eq, set(FRESH1));
  e(op.block, op.loop, get(I), get(CNT), op.geS, op.brIf(1));
  // The integer scan where the kernel has this chunk's integer points (`cachePoints`), else the float32 one.
  e(scanAnswers(undefined, undefined));
  e(get(CNT), get(I), i32(4), op.add, op.geS, get(OKV), I32X4_ALL_TRUE, op.and, op.if);
  // changed += the lanes where old != new (a scalar count: no vector lives across the scan's loop)
  e(get(CHANGED), get(PA), v.load(0), get(IDXV), I32X4_NE, I32X4_BITMASK, I32_POPCNT, op.add, set(CHANGED));
  e(get(PA), get(IDXV), v.store(0));
  e(h(HDR.noBounds), op.eqz, op.if, get(UP), get(I), i32(2), op.shl, op.add, get(U1V), upperDistance, v.store(0));
  e(get(LO), get(I), i32(2), op.shl, op.add, get(L2V), lowerDistance, v.store(0), op.end);
  for (let q = 0; q < 4; q++) e(get(IDXV), v.i32Extract(q), set(A), get(PP), i32(4 * d * q), op.add, set(XA), addPoint(get(WSSE)));
  e(op.else);
  for (let q = 0; q < 4; q++) {
    e(get(I), i32(q), op.add, get(CNT), op.ltS, op.if);
    e(get(IDXV), v.i32Extract(q), set(A), get(PP), i32(4 * d * q), op.add, set(XA));
    e(get(OKV), v.i32Extract(q), op.eqz, op.if, exactSearch(), op.end);
    e(h(HDR.noBounds), op.eqz, op.if, get(I), i32(q), op.add, set(J), commitBounds(J, q), op.end);
    e(get(CHANGED), get(PA), op.i32Load(4 * q), get(A), op.ne, get(FRESH1), op.or, op.add, set(CHANGED));
    e(get(PA), get(A), op.i32Store(4 * q));
    e(addPoint(get(WSSE)));
    e(op.end);
  }
  e(op.end);
  e(get(PP), i32(16 * d), op.add, set(PP), get(PA), i32(16), op.add, set(PA), get(IQA), i32(intGroupBytes(d)), op.add, set(IQA));
  e(get(I), i32(4), op.add, set(I), op.br(0));
  e(op.end, op.end);
  e(get(FRESH1), op.if, get(CNT), set(CHANGED), op.end);
  e(get(CNT), set(M));
  e(op.else);
  e(h(HDR.direct), op.if);
  e(boundsPass());
  e(op.else);

  // 1. Hamerly's test; the points it does not settle are queued for the search.
  e(op.block, op.loop, get(I), get(CNT), op.geS, op.brIf(1));
  e(xa, i32(-1), set(HINT));
  e(op.block); // skip: br 0 out of this block goes to "queue"; settled points branch past the queueing
  e(get(FRESH), op.brIf(0)); // fresh (1) or rescan (2): every point is searched
  e(get(ASG), get(I), i32(2), op.shl, op.add, op.i32Load(0), set(FROM));
  e(get(UP), get(I), i32(2), op.shl, op.add, op.f32Load(0), op.promote, get(SHIFT), get(FROM), i32(3), op.shl, op.add, op.f64Load(0), op.f64Add, f64(1 + c.slack), op.f64Mul, set(U));
  e(get(LO), get(I), i32(2), op.shl, op.add, op.f32Load(0), op.promote, f64(1 - c.slack), op.f64Mul);
  e(get(SECS), get(MAXS), get(FROM), get(MAXAT), op.eq, op.select, op.f64Sub, set(L));
  e(get(HALF), get(FROM), i32(3), op.shl, op.add, op.f64Load(0), set(HH));
  const settledTest = [...get(U), ...get(L), ...op.f64Lt, ...get(U), ...get(HH), ...op.f64Lt, ...op.or];
  e(settledTest, op.eqz, op.if, dist2(FROM), op.f64Sqrt, f64(1 + c.slack), op.f64Mul, set(U), op.end);
  e(settledTest, op.if);
  e(storeBounds(get(U), []));
  e(get(I), i32(1), op.add, set(I), op.br(2)); // continue the point loop
  e(op.end);
  e(get(GOF), get(FROM), i32(2), op.shl, op.add, op.i32Load(0), set(HINT));
  e(op.end);
  // queue point I
  e(h(HDR.qpts), get(M), i32(4 * d), op.mul, op.add, set(ADDR));
  for (let t = 0; t < d; t++) e(get(ADDR), get(XA), op.f32Load(4 * t), op.f32Store(4 * t));
  e(h(HDR.hints), get(M), i32(2), op.shl, op.add, get(HINT), op.i32Store(0));
  e(get(QUE), get(M), i32(2), op.shl, op.add, get(I), op.i32Store(0));
  e(get(M), i32(1), op.add, set(M));
  e(get(I), i32(1), op.add, set(I), op.br(0));
  e(op.end, op.end);

  // 2. The search.
  e(get(M), op.if);
  e(h(HDR.direct), op.if);
  e(get(M), h(HDR.qpts), h(HDR.outIdx), h(HDR.outA1), h(HDR.outA2), h(HDR.cents32), get(K), op.call(2));
  e(op.else);
  for (const f of [HDR.qpts, HDR.hints, HDR.outIdx, HDR.outA1, HDR.outA2, HDR.blocks, HDR.groupStart, HDR.boxes, HDR.groups, HDR.boxBlocks, HDR.scratch]) {
    if (f === HDR.qpts) e(get(M));
    e(h(f));
  }
  e(op.call(0), op.end, op.end);

  // 3. Accept its answer, or search exactly; then the new bounds.
  e(i32(0), set(Q));
  e(op.block, op.loop, get(Q), get(M), op.geS, op.brIf(1));
  e(get(QUE), get(Q), i32(2), op.shl, op.add, op.i32Load(0), set(I), xa);
  e(h(HDR.outA1), get(Q), i32(2), op.shl, op.add, op.f32Load(0), op.promote, set(A1));
  // a2 = +Infinity means float32 overflow (or k = 1): the distances are above KERNEL_MAX, no more is known.
  e(h(HDR.outA2), get(Q), i32(2), op.shl, op.add, op.f32Load(0), op.promote, tee(A2), f64(c.kernelMax), get(A2), f64(c.kernelMax), op.f64Lt, op.select, set(A2));
  e(h(HDR.outIdx), get(Q), i32(2), op.shl, op.add, op.i32Load(0), set(LN));
  e(h(HDR.direct), op.eqz, op.if, get(LANE), get(LN), i32(2), op.shl, op.add, op.i32Load(0), set(LN), op.end);
  e(i32(0), set(DONE));
  e(get(A1), f64(c.kernelMin), op.f64Ge, get(A1), f64(c.kernelMax), op.f64Le, op.and, get(A2), get(A1), f64(1 + 4 * rho), op.f64Mul, op.f64Gt, op.and, op.if);
  e(get(LN), set(A), get(A1), f64(1 + 2 * rho), op.f64Mul, set(BSQ), get(A2), f64(1 - 2 * rho), op.f64Mul, op.f64Sqrt, f64(1 - c.slack), op.f64Mul, set(L), i32(1), set(DONE));
  e(op.else);
  e(get(A1), f64(c.kernelMin), op.f64Lt, get(A2), f64(c.kernelMin), op.f64Ge, op.and, get(LN), i32(0), op.geS, op.and, op.if);
  e(dist2(LN), f64(0), op.f64Eq, op.if);
  e(get(LN), set(A), f64(0), set(BSQ), get(A2), f64(1 - 2 * rho), op.f64Mul, op.f64Sqrt, f64(1 - c.slack), op.f64Mul, set(L), i32(1), set(DONE));
  e(op.end, op.end, op.end);
  e(get(DONE), op.eqz, op.if);
  e(exactSearch());
  e(get(BEST), set(BSQ), get(SEC), op.f64Sqrt, f64(1 - c.slack), op.f64Mul, set(L));
  e(op.end);
  e(storeAssignment);
  e(h(HDR.noBounds), op.eqz, op.if, storeBounds([...get(BSQ), ...op.f64Sqrt, ...f64(1 + c.slack), ...op.f64Mul], []), op.end);
  e(get(Q), i32(1), op.add, set(Q), op.br(0));
  e(op.end, op.end);
  e(op.end);

  // 4. The chunk's sums and counts, in point order.
  e(i32(0), set(I));
  e(op.block, op.loop, get(I), get(CNT), op.geS, op.brIf(1));
  e(xa, get(ASG), get(I), i32(2), op.shl, op.add, op.i32Load(0), set(A), addPoint());
  e(get(I), i32(1), op.add, set(I), op.br(0));
  e(op.end, op.end);
  e(op.end);
  e(i32(0), get(CHANGED), op.i32Store(4 * HDR.changed), i32(0), get(M), op.i32Store(4 * HDR.searched), i32(0), get(EXACT), op.i32Store(4 * HDR.exact));
  e(i32(0), get(INTN), op.i32Store(4 * HDR.intProven));
  e(i32(0), get(SSE), op.f64Store(HDR_SSE));
  // local declarations: runs of equal types
  const runs: number[][] = [];
  for (let at = 0; at < types.length; ) {
    let end = at;
    while (end < types.length && types[end] === types[at]) end++;
    runs.push([...uleb(end - at), types[at]!]);
    at = end;
  }
  return { locals: vec(runs), code };
}

function moduleBytes(d: number, c: PassConstants): Uint8Array {
  const params = new Array<number[]>(12).fill([I32]);
  const type = section(1, vec([
    [0x60, ...vec(params), ...vec([])],
    [0x60, ...vec([]), ...vec([])],
    [0x60, ...vec(params.slice(0, 7)), ...vec([])],
    [0x60, ...vec(QUANTIZE_PARAMS.map((t) => [t])), ...vec([])],
  ]));
  const imports = section(2, vec([[...name("env"), ...name("memory"), 0x02, 0x00, ...uleb(1)]]));
  const funcs = section(3, vec([uleb(0), uleb(1), uleb(2), uleb(3)]));
  const exports = section(7, vec([
    [...name("search"), 0x00, ...uleb(0)], [...name("pass"), 0x00, ...uleb(1)], [...name("scan"), 0x00, ...uleb(2)], [...name("quantize"), 0x00, ...uleb(3)],
  ]));
  const locals = vec([[...uleb(I32_LOCALS), I32], [...uleb(F32_LOCALS), F32], [...uleb(X + d - BEST), V128]]);
  const code = [...locals, ...body(d), ...op.end];
  const pass = passBody(d, c);
  const passCode = [...pass.locals, ...pass.code, ...op.end];
  const scan = scanBody(d);
  const scan4Code = [...scan.locals, ...scan.code, ...op.end];
  const quantize = quantizeBody(d);
  const quantizeCode = [...quantize.locals, ...quantize.code, ...op.end];
  const codeSection = section(10, vec([
    [...uleb(code.length), ...code], [...uleb(passCode.length), ...passCode], [...uleb(scan4Code.length), ...scan4Code], [...uleb(quantizeCode.length), ...quantizeCode],
  ]));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...type, ...imports, ...funcs, ...exports, ...codeSection]);
}

// ---- the instance ------------------------------------------------------------------------------------

/** Compiled modules by d (null: not available). */
const modules = new Map<number, object | null>();

function wasmModule(d: number): object | null {
  let mod = modules.get(d);
  if (mod === undefined) {
    mod = compileModule(() => moduleBytes(d, PASS_CONSTANTS));
    modules.set(d, mod);
  }
  return mod;
}

type SearchFn = (...args: number[]) => void;

/** The centroid data the kernel reads (see the file comment for the layout). */
export interface KernelGeometry {
  /** [blocks, d, 4] */
  blocks: Float32Array;
  blockCount: number;
  /** [groups + 1] */
  groupStart: Int32Array;
  groups: number;
  /** [ceil(groups / 4), 2, d, 4] */
  boxes: Float32Array;
}

/** What `pass()` reads besides the geometry (kmeans-assign.ts's `AssignInput`). */
export interface PassGeometry extends KernelGeometry {
  k: number;
  centroids: Float64Array;
  shift: Float64Array;
  half: Float64Array;
  groupOf: Int32Array;
  laneCentroid: Int32Array;
}

/**
 * One thread's instance of the kernel for dimension d, with its own memory. `load` copies a pass's
 * centroid data in and makes room for `capacity` points. Then either `run(m)` searches the first m
 * points written into `pts` (first groups in `hints`; answers in `outIdx`, `outA1`, `outA2`), or
 * `pass(...)` does a whole chunk whose points and per-point state the caller copied into `points`,
 * `assignments`, `upper` and `lower` (copied back out after), leaving its sums in `sums` and `counts`.
 */
export class NearestKernel {
  pts!: Float32Array;
  hints!: Int32Array;
  outIdx!: Int32Array;
  outA1!: Float32Array;
  outA2!: Float32Array;
  points!: Float32Array;
  assignments!: Uint32Array;
  upper!: Float32Array;
  lower!: Float32Array;
  sums!: Float64Array;
  counts!: Uint32Array;
  capacity = 0;
  private search!: SearchFn;
  private passFn!: () => void;
  private quantizeFn!: (groups: number, src: number, dst: number, inv: number, s: number) => void;
  /** Where `load` wrote the integer scan's table (0: none this pass). */
  private intTableAt = 0;
  private memory!: WasmMemory;
  private header!: Int32Array;
  private headerF64!: Float64Array;
  private layout: Record<string, number> = {};
  private groups = 0;
  private boxBlocks = 0;
  /**
   * Points kept in this instance's memory between the passes of one k-means run (`cachePoints`): the run's
   * key, the byte address of each cached range (by its first point), and where the cache ends (the
   * layout of `load` starts there).
   */
  private cacheKey: number | undefined;
  private readonly cached = new Map<number, CachedRange>();
  private cacheEnd = HDR_BYTES;

  constructor(
    private readonly mod: object,
    readonly d: number,
  ) {
    this.instantiate();
  }

  /** A new memory (the old one, however large it grew, is left to the garbage collector) and instance. */
  private instantiate(): void {
    this.memory = new wasmApi!.Memory({ initial: 1 });
    const instance = new wasmApi!.Instance(this.mod, { env: { memory: this.memory } });
    this.search = instance.exports["search"] as SearchFn;
    this.passFn = instance.exports["pass"] as () => void;
    this.quantizeFn = instance.exports["quantize"] as NearestKernel["quantizeFn"];
  }

  /**
   * Before `load`: keeps points start .. end - 1 of the run `key` in this instance's memory, copied in the
   * first time this thread meets them in the run, so that later passes read them in place (`usePoints`)
   * instead of copying each chunk in again. With a scale (`intScale` > 0, the same for the whole run), also
   * their integer form for the integer scan (kmeans-scan-int.ts), in groups of four points starting anew
   * at each chunk of `chunk` points. Returns where they are, or null when the cache would pass
   * CACHE_MAX_BYTES (then the caller copies chunk by chunk as before, and the float32 scan runs; the
   * integer form alone is left out when only it does not fit). A new key drops the old run's ranges, and
   * the memory too when it had grown past CACHE_KEEP_BYTES. The caller must not change the points of a run
   * between its passes.
   */
  cachePoints(key: number, points: Float32Array, start: number, end: number, intScale = 0, chunk = end - start): CachedRange | null {
    const { d } = this;
    if (key !== this.cacheKey) {
      this.cached.clear();
      this.cacheKey = key;
      this.cacheEnd = HDR_BYTES;
      if (this.memory.buffer.byteLength > CACHE_KEEP_BYTES) this.instantiate();
    }
    const hit = this.cached.get(start);
    if (hit && hit.end === end) return hit;
    // Four rows of padding after the range: the scans read points four at a time.
    const bytes = Math.ceil(((end - start + 4) * d * 4) / 16) * 16;
    const groupsPerChunk = Math.ceil(chunk / 4);
    const chunks = Math.ceil((end - start) / chunk);
    const intBytes = intScale > 0 ? chunks * groupsPerChunk * intGroupBytes(d) : 0;
    if (this.cacheEnd + bytes - HDR_BYTES > CACHE_MAX_BYTES) return null;
    const withInt = intBytes > 0 && this.cacheEnd + bytes + intBytes - HDR_BYTES <= CACHE_MAX_BYTES;
    const at = this.cacheEnd;
    this.cacheEnd += bytes + (withInt ? intBytes : 0);
    const need = Math.ceil(this.cacheEnd / 65536) - this.memory.buffer.byteLength / 65536;
    if (need > 0) this.memory.grow(need);
    new Float32Array(this.memory.buffer, at, (end - start) * d).set(points.subarray(start * d, end * d));
    new Float32Array(this.memory.buffer, at + (end - start) * d * 4, 4 * d).fill(0);
    const range: CachedRange = { end, at, intAt: -1, chunkIntBytes: groupsPerChunk * intGroupBytes(d) };
    if (withInt) {
      range.intAt = at + bytes;
      for (let c = 0; c < chunks; c++) {
        const s = c * chunk;
        const groups = Math.ceil((Math.min(end - start, s + chunk) - s) / 4);
        this.quantizeFn(groups, at + s * d * 4, range.intAt + c * range.chunkIntBytes, 1 / intScale, intScale);
      }
    }
    this.cached.set(start, range);
    return range;
  }

  /**
   * After `load`: the next `pass` reads its points at byte address `at` (in a range from `cachePoints`)
   * instead of `points`, and, when given (>= 0) and `load` had a scale, their integer form at `intAt`.
   */
  usePoints(at: number, intAt = -1): void {
    this.header[HDR.points] = at;
    this.header[HDR.ipts] = intAt;
    this.header[HDR.icents] = intAt >= 0 ? this.intTableAt : 0;
  }

  /** Copies the centroid data in (all of it with `PassGeometry`, else what `run` needs). */
  load(g: KernelGeometry | PassGeometry, capacity: number, direct = false, intScale = 0): void {
    const { d } = this;
    capacity = Math.ceil(capacity / 4) * 4;
    const full = "centroids" in g;
    const k = full ? g.k : 0;
    const boxBlocks = Math.ceil(g.groups / 4);
    let at = this.cacheEnd;
    const l: Record<string, number> = {};
    const take = (key: string, bytes: number): void => {
      l[key] = at;
      at = Math.ceil((at + bytes) / 16) * 16;
    };
    take("blocks", g.blockCount * d * 16);
    take("groupStart", (g.groups + 1) * 4);
    take("boxes", boxBlocks * 2 * d * 16);
    take("scratch", boxBlocks * 16);
    take("qpts", capacity * d * 4);
    take("hints", capacity * 4);
    take("outIdx", capacity * 4);
    take("outA1", capacity * 4);
    take("outA2", capacity * 4);
    take("centroids", k * d * 8);
    take("shift", k * 8);
    take("half", k * 8);
    take("groupOf", k * 4);
    take("laneCentroid", full ? g.blockCount * 16 : 0);
    take("points", full ? capacity * d * 4 : 0);
    take("assignments", full ? capacity * 4 : 0);
    take("upper", full ? capacity * 4 : 0);
    take("lower", full ? capacity * 4 : 0);
    take("queued", full ? capacity * 4 : 0);
    take("cents32", direct ? scanTableBytes(k, d) : 0);
    take("icents", direct && intScale > 0 ? intTableBytes(k, d) : 0);
    take("rows32", direct ? k * d * 4 : 0);
    take("shift32", direct ? k * 4 : 0);
    take("half32", direct ? k * 4 : 0);
    take("sums", k * d * 8);
    take("counts", k * 4);
    const need = Math.ceil(at / 65536) - this.memory.buffer.byteLength / 65536;
    if (need > 0) this.memory.grow(need);
    const buf = this.memory.buffer;
    new Float32Array(buf, l["blocks"], g.blockCount * d * 4).set(g.blocks.subarray(0, g.blockCount * d * 4));
    new Int32Array(buf, l["groupStart"], g.groups + 1).set(g.groupStart.subarray(0, g.groups + 1));
    new Float32Array(buf, l["boxes"], boxBlocks * 2 * d * 4).set(g.boxes.subarray(0, boxBlocks * 2 * d * 4));
    this.pts = new Float32Array(buf, l["qpts"], capacity * d);
    this.hints = new Int32Array(buf, l["hints"], capacity);
    this.outIdx = new Int32Array(buf, l["outIdx"], capacity);
    this.outA1 = new Float32Array(buf, l["outA1"], capacity);
    this.outA2 = new Float32Array(buf, l["outA2"], capacity);
    this.header = new Int32Array(buf, 0, HDR_BYTES / 4);
    this.headerF64 = new Float64Array(buf, 0, HDR_BYTES / 8);
    if (full) {
      new Float64Array(buf, l["centroids"], k * d).set(g.centroids.subarray(0, k * d));
      new Float64Array(buf, l["shift"], k).set(g.shift.subarray(0, k));
      new Float64Array(buf, l["half"], k).set(g.half.subarray(0, k));
      new Int32Array(buf, l["groupOf"], k).set(g.groupOf.subarray(0, k));
      new Int32Array(buf, l["laneCentroid"], g.blockCount * 4).set(g.laneCentroid.subarray(0, g.blockCount * 4));
      this.points = new Float32Array(buf, l["points"], capacity * d);
      this.assignments = new Uint32Array(buf, l["assignments"], capacity);
      this.upper = new Float32Array(buf, l["upper"], capacity);
      this.lower = new Float32Array(buf, l["lower"], capacity);
      this.sums = new Float64Array(buf, l["sums"], k * d);
      this.counts = new Uint32Array(buf, l["counts"], k);
      const hd = this.header;
      hd[HDR.centroids] = l["centroids"]!;
      hd[HDR.shift] = l["shift"]!;
      hd[HDR.half] = l["half"]!;
      hd[HDR.groupOf] = l["groupOf"]!;
      hd[HDR.laneCentroid] = l["laneCentroid"]!;
      hd[HDR.points] = l["points"]!;
      hd[HDR.assignments] = l["assignments"]!;
      hd[HDR.upper] = l["upper"]!;
      hd[HDR.lower] = l["lower"]!;
      hd[HDR.queued] = l["queued"]!;
      hd[HDR.sums] = l["sums"]!;
      hd[HDR.counts] = l["counts"]!;
      hd[HDR.k] = k;
      hd[HDR.qpts] = l["qpts"]!;
      hd[HDR.hints] = l["hints"]!;
      hd[HDR.outIdx] = l["outIdx"]!;
      hd[HDR.outA1] = l["outA1"]!;
      hd[HDR.outA2] = l["outA2"]!;
      hd[HDR.blocks] = l["blocks"]!;
      hd[HDR.groupStart] = l["groupStart"]!;
      hd[HDR.boxes] = l["boxes"]!;
      hd[HDR.groups] = g.groups;
      hd[HDR.boxBlocks] = boxBlocks;
      hd[HDR.scratch] = l["scratch"]!;
      hd[HDR.cents32] = l["cents32"]!;
      hd[HDR.rows32] = l["rows32"]!;
      hd[HDR.shift32] = l["shift32"]!;
      hd[HDR.half32] = l["half32"]!;
      if (direct) {
        // The centroids' float32 rows (exact: `centroids` holds float32 values widened).
        new Float32Array(buf, l["rows32"], k * d).set(g.centroids.subarray(0, k * d));
        direct = writeScanTable(buf, l["cents32"]!, g.centroids, k, d);
      }
      hd[HDR.direct] = direct ? 1 : 0;
      // The integer scan's table; `usePoints` turns it on for chunks whose integer form is cached.
      this.intTableAt = direct && intScale > 0 ? l["icents"]! : 0;
      if (this.intTableAt) writeIntScanTable(buf, this.intTableAt, g.centroids, k, d, intScale);
      hd[HDR.icents] = 0;
      hd[HDR.ipts] = -1;
    }
    this.capacity = capacity;
    this.layout = l;
    this.groups = g.groups;
    this.boxBlocks = boxBlocks;
  }

  /** Searches the first m points of `pts`. */
  run(m: number): void {
    const l = this.layout;
    this.search(m, l["qpts"]!, l["hints"]!, l["outIdx"]!, l["outA1"]!, l["outA2"]!, l["blocks"]!, l["groupStart"]!, l["boxes"]!, this.groups, this.boxBlocks, l["scratch"]!);
  }

  /**
   * One chunk of `count` points (already in `points`; their previous `assignments` too unless fresh, and
   * with "bounds" their `upper` and `lower`); returns [changed, searched, exact, int], int counting the
   * points (in fours, the last four whole) whose answers the integer scan proved alone. `sums` and `counts`
   * are zeroed first.
   */
  pass(count: number, mode: PassMode, maxShift: number, maxShiftAt: number, secondShift: number, keepBounds = true, withSse = false): [number, number, number, number] {
    const hd = this.header;
    hd[HDR.count] = count;
    hd[HDR.withSse] = withSse ? 1 : 0;
    hd[HDR.noBounds] = keepBounds ? 0 : 1;
    hd[HDR.fresh] = mode === "fresh" ? 1 : mode === "rescan" ? 2 : 0;
    hd[HDR.maxShiftAt] = maxShiftAt;
    this.headerF64[HDR_MAX_SHIFT / 8] = maxShift;
    this.headerF64[HDR_SECOND_SHIFT / 8] = secondShift;
    this.sums.fill(0);
    this.counts.fill(0);
    this.passFn();
    return [hd[HDR.changed]!, hd[HDR.searched]!, hd[HDR.exact]!, hd[HDR.intProven]!];
  }

  /** After `pass(..., withSse = true)`: the chunk's sum of squared distances (as `kmeansSseTask` sums them). */
  passSse(): number {
    return this.headerF64[HDR_SSE / 8]!;
  }
}

/** A run's points kept by `cachePoints`: byte addresses of the float32 rows and of the integer form (-1: none). */
export interface CachedRange {
  end: number;
  at: number;
  intAt: number;
  /** Bytes of the integer form of one chunk (its groups start anew at each chunk). */
  chunkIntBytes: number;
}

/** At most this many bytes of points are kept per thread and dimension (`cachePoints`) ... */
const CACHE_MAX_BYTES = 48 * 2 ** 20;
/** ... and a memory grown past this is released when the next run starts. */
const CACHE_KEEP_BYTES = 16 * 2 ** 20;

/** This thread's kernel for dimension d, or null without WebAssembly SIMD (or when disabled). */
const kernels = new Map<number, NearestKernel | null>();

export function nearestKernel(d: number): NearestKernel | null {
  if (kernelDisabled) return null;
  let k = kernels.get(d);
  if (k === undefined) {
    const mod = wasmModule(d);
    k = mod ? new NearestKernel(mod, d) : null;
    kernels.set(d, k);
  }
  return k;
}

/** Whether this runtime has the kernel for dimension d. */
export function kernelAvailable(d: number): boolean {
  return wasmModule(d) !== null;
}

/**
 * SSVQ_KMEANS_NO_WASM=1 (read when a thread loads this module) or `disableKernel(true)` (this thread only)
 * turns the kernel off: the exact float64 search alone, for tests of that path and its identical results.
 */
let kernelDisabled = typeof process !== "undefined" && process.env["SSVQ_KMEANS_NO_WASM"] === "1";

export function disableKernel(disabled: boolean): void {
  kernelDisabled = disabled;
}
