/**
 * A layer's calibration statistic and the one product interface everything that multiplies by it uses
 * (DESIGN.md sections 1 and 6; issue 11): fine-tuning's products and loss, the output error after k-means
 * and after fine-tuning, `--reassign`, and the sequential variant's target and error.
 *
 * Two exact forms of H = X X^T / n (per group of rows; rows split evenly over `groups`):
 *  - "gram": H itself, `groups` symmetric blocks [cols, cols], float64;
 *  - "factor": the r sample columns of X, stored sample-major (X[g][s * cols + c], i.e. X^T [r, cols] per
 *    group), float32 when the activations were float32 (exact) or float64, with the normaliser n.
 * With K = cols, a product A H (A [m, K]) costs 2 m K^2 flops from H and 4 m K r from X ((A X) X^T / n),
 * and the statistic holds K^2 or K r numbers: the factor wins when r < K / 2 (a Gemm fed by a few hundred
 * samples, a deep convolution fed by one image). `chooseStatisticForm` decides per layer from both costs,
 * before capture, so memory is never spent on the form not used.
 *
 * Products run on a `StatKernel` (one layer's statistic prepared for an engine: the WebAssembly SIMD kernel
 * or the TypeScript one here, onnxruntime's MatMul from src/io/ort-product.ts) over blocks of rows. The
 * blocks (`rowBlocks`) depend on the problem size only, never on the thread count, and every kernel
 * computes a row from that row alone, so results are the same bytes whichever map runs the blocks and
 * however many threads it has. On a pool, statistics are shared (`shareStatistic`: SharedArrayBuffers
 * plus a key) and each thread keeps the kernels it built in a small cache (`withCachedKernel`).
 */
import { InputError } from "../errors.js";
import { sharedArray, type ParallelMap } from "../parallel.js";
import { gemmNT, symmMulBlocked } from "./gemm-kernels.js";
import { wasmAvailable, WasmGemm } from "./gemm-wasm.js";

/**
 * H itself: `groups` symmetric blocks [cols, cols], row-major. (`kind` may be omitted.) Kept in float32
 * (half the memory) or float64; the kernels compute in float64 either way.
 */
export interface GramStatistic {
  kind?: "gram";
  H: Float32Array | Float64Array;
  groups: number;
  cols: number;
}

/** H = X X^T / n from X's r columns per group, stored sample-major: X[(g * r + s) * cols + c]. */
export interface FactorStatistic {
  kind: "factor";
  X: Float32Array | Float64Array;
  /** Sample columns per group. */
  r: number;
  /** The normaliser (the number of samples the statistic averages over). */
  n: number;
  groups: number;
  cols: number;
}

export type LayerStatistic = GramStatistic | FactorStatistic;

export const isFactor = (s: LayerStatistic): s is FactorStatistic => s.kind === "factor";

/** Checks a statistic's sizes (and that its rows split over its groups). */
export function validateStatistic(stat: LayerStatistic, rows: number, what = "statistic"): void {
  const { groups, cols } = stat;
  if (!Number.isInteger(groups) || groups < 1 || !Number.isInteger(cols) || cols < 1)
    throw new InputError(`${what}: groups ${groups} and cols ${cols} must be positive integers`);
  if (!Number.isInteger(rows) || rows < 1 || rows % groups !== 0) throw new InputError(`${what}: ${rows} rows cannot be split into ${groups} groups`);
  if (isFactor(stat)) {
    if (!Number.isInteger(stat.r) || stat.r < 0 || !(stat.n > 0)) throw new InputError(`${what}: r ${stat.r} and n ${stat.n} must be an integer >= 0 and a number > 0`);
    if (stat.X.length !== groups * stat.r * cols) throw new InputError(`${what}: X has ${stat.X.length} values, expected ${groups} x ${stat.r} x ${cols}`);
  } else if (stat.H.length !== groups * cols * cols) {
    throw new InputError(`${what}: H has ${stat.H.length} values, expected ${groups} x ${cols} x ${cols}`);
  }
}

/** Sum over groups and columns of diag(H) (the mean squared norm of a sample column, times groups). */
export function statisticTrace(stat: LayerStatistic): number {
  const { groups, cols } = stat;
  let diag = 0;
  if (isFactor(stat)) {
    const { X, r, n } = stat;
    for (let g = 0; g < groups; g++)
      for (let c = 0; c < cols; c++) {
        let s = 0;
        for (let j = 0; j < r; j++) {
          const v = X[(g * r + j) * cols + c]!;
          s += v * v;
        }
        diag += s / n;
      }
  } else {
    const { H } = stat;
    for (let g = 0; g < groups; g++) for (let c = 0; c < cols; c++) diag += H[g * cols * cols + c * cols + c]!;
  }
  return diag;
}

/** The H block [cols, cols] of group g (built from X for the factor form). */
export function gramBlock(stat: LayerStatistic, g: number): Float64Array {
  const { cols } = stat;
  if (!isFactor(stat)) {
    const block = stat.H.subarray(g * cols * cols, (g + 1) * cols * cols);
    return block instanceof Float64Array ? block : Float64Array.from(block);
  }
  const { X, r, n } = stat;
  const out = new Float64Array(cols * cols);
  const xs = Float64Array.from(X.subarray(g * r * cols, (g + 1) * r * cols));
  const xf = transpose(xs, r, cols);
  gemmNT(xf, cols, xf, cols, r, out, cols);
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / n;
  return out;
}

/** The whole statistic as H (a copy for the factor form). */
export function toGram(stat: LayerStatistic): GramStatistic {
  if (!isFactor(stat)) return stat;
  const { groups, cols } = stat;
  const H = new Float64Array(groups * cols * cols);
  for (let g = 0; g < groups; g++) H.set(gramBlock(stat, g), g * cols * cols);
  return { kind: "gram", H, groups, cols };
}

function transpose(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

// ---- costs, the form, the blocks ---------------------------------------------------------------------

/** Flops of one product A H per row of A. */
export function productRowFlops(stat: Pick<LayerStatistic, "cols"> & ({ kind?: "gram" } | { kind: "factor"; r: number })): number {
  return stat.kind === "factor" ? 4 * stat.cols * stat.r : 2 * stat.cols * stat.cols;
}

export interface FormCosts {
  /** Flops of capture plus `products` products, per form. */
  gram: number;
  factor: number;
  /** Numbers held per form. */
  gramValues: number;
  factorValues: number;
}

/**
 * The costs of both forms for a layer of `rows` x `cols` in `groups` groups whose statistic averages
 * `samples` columns per group, used for `products` products (fine-tuning: its iterations plus four; the
 * output errors: two each). Capture builds H at cols^2 samples flops per group (the symmetric half of
 * X X^T) and keeps X for free.
 */
export function statisticCosts(rows: number, cols: number, groups: number, samples: number, products: number): FormCosts {
  return {
    gram: groups * cols * cols * samples + products * rows * 2 * cols * cols,
    factor: products * rows * 4 * cols * samples,
    gramValues: groups * cols * cols,
    factorValues: groups * cols * samples,
  };
}

/** "factor" when keeping X is cheaper than keeping H for this layer (`statisticCosts`), else "gram". */
export function chooseStatisticForm(rows: number, cols: number, groups: number, samples: number, products: number): "gram" | "factor" {
  if (!(samples > 0)) return "gram";
  const c = statisticCosts(rows, cols, groups, samples, products);
  return c.factor < c.gram && c.factorValues < c.gramValues ? "factor" : "gram";
}

/** Products below this many flops (whole layer) run as one block: splitting them would cost more than it saves. */
export const SPLIT_MIN_FLOPS = 2e8;
/**
 * Rows per block at least: onnxruntime's GEMM repacks the statistic on every call, so a block of 64 rows
 * runs at about 70% of the speed of 512 (`npm run bench -- finetune`), 32 rows at about 50%.
 */
export const MIN_BLOCK_ROWS = 64;
/**
 * Blocks per layer at most (while they have more than MIN_BLOCK_ROWS rows): 4 keeps blocks of a 512-row
 * layer at 128 rows (about 20% faster than 64 per product), and with several layers fine-tuned at once
 * there is other work for more threads.
 */
export const MAX_BLOCKS = 4;

/**
 * The blocks of rows [start, end) a layer's products run in: one block below SPLIT_MIN_FLOPS, else blocks
 * of about max(MIN_BLOCK_ROWS, rows / MAX_BLOCKS) rows (a multiple of 8), aligned to the groups (a block
 * holds rows of one group, or whole groups when groups are smaller than a block). Depends on the problem
 * size only.
 */
export function rowBlocks(rows: number, groups: number, rowFlops: number): Array<[start: number, end: number]> {
  if (rows * rowFlops < SPLIT_MIN_FLOPS || rows <= MIN_BLOCK_ROWS) return [[0, rows]];
  const target = Math.max(MIN_BLOCK_ROWS, 8 * Math.ceil(rows / MAX_BLOCKS / 8));
  const rpg = rows / groups;
  const out: Array<[number, number]> = [];
  if (rpg >= target) {
    for (let g = 0; g < groups; g++) {
      const base = g * rpg;
      const count = Math.ceil(rpg / target);
      const size = 8 * Math.ceil(rpg / count / 8);
      for (let s = 0; s < rpg; s += size) out.push([base + s, base + Math.min(rpg, s + size)]);
    }
  } else {
    const per = Math.ceil(target / rpg);
    for (let g = 0; g < groups; g += per) out.push([g * rpg, Math.min(groups, g + per) * rpg]);
  }
  return out;
}

// ---- kernels and engines -----------------------------------------------------------------------------

/**
 * One layer's statistic prepared for products with blocks of rows (rows are those of the layer's row
 * matrix, so the kernel knows each row's group).
 */
export interface StatKernel {
  readonly engine: string;
  /** Bytes the kernel holds besides the statistic. */
  readonly bytes: number;
  /**
   * P = A H for rows [r0, r1) (a and p hold those rows only, [r1 - r0, cols]). Returns the block's
   * tr(A H A^T): sum(A .* P) in row-major order (gram form) or ||A X||^2 / n (factor form, exact and
   * >= 0). Factor form: also writes T = A X ([r1 - r0, r]) into `t` when given.
   */
  multiply(r0: number, r1: number, a: Float64Array, p: Float64Array, t?: Float64Array): number | Promise<number>;
  /**
   * Optional: the same product in float32 (A, the statistic, the accumulation and P in float32),
   * about twice as fast, with half the memory traffic. Returns sum(A .* P) accumulated in float64 (the
   * factor form: ||A X||^2 / n). Fine-tuning uses it for the iterations between its checks only
   * (`finetune.ts`); everything it reports comes from `multiply`. Also computes a row from that row alone.
   * With `loss` false the sum is skipped (NaN is returned): the caller needs P only.
   */
  multiplyFast?(r0: number, r1: number, a: Float32Array, p: Float32Array, loss?: boolean): number | Promise<number>;
  dispose?(): void | Promise<void>;
}

export interface SyncStatKernel extends StatKernel {
  multiply(r0: number, r1: number, a: Float64Array, p: Float64Array, t?: Float64Array): number;
  multiplyFast?(r0: number, r1: number, a: Float32Array, p: Float32Array, loss?: boolean): number;
  /** Factor form: out = T X^T (rows [r0, r1): t [r1 - r0, r], out [r1 - r0, cols]), without the 1 / n. */
  expand?(r0: number, r1: number, t: Float64Array, out: Float64Array): void;
}

export interface StatEngine {
  readonly name: string;
  /** Prepares the statistic of a layer of `rows` rows. */
  kernel(stat: LayerStatistic, rows: number): StatKernel | Promise<StatKernel>;
}

export interface SyncStatEngine extends StatEngine {
  kernel(stat: LayerStatistic, rows: number): SyncStatKernel;
}

/** sum over the rows [0, m) of a .* p, row-major. */
function dot(a: Float64Array, p: Float64Array, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i++) s += a[i]! * p[i]!;
  return s;
}

/** The group segments [start, end, group] of rows [r0, r1). */
function segments(r0: number, r1: number, rpg: number): Array<[number, number, number]> {
  const out: Array<[number, number, number]> = [];
  for (let s = r0; s < r1; ) {
    const g = Math.floor(s / rpg);
    const e = Math.min(r1, (g + 1) * rpg);
    out.push([s, e, g]);
    s = e;
  }
  return out;
}

/** The TypeScript engine: `symmMulBlocked` for H, `gemmNT` for X; bit-for-bit reproducible on every machine. */
export const tsStatEngine: SyncStatEngine = {
  name: "ts-blocked",
  kernel(stat: LayerStatistic, rows: number): SyncStatKernel {
    validateStatistic(stat, rows);
    const { groups, cols } = stat;
    const rpg = rows / groups;
    if (!isFactor(stat)) {
      const H = stat.H instanceof Float64Array ? stat.H : Float64Array.from(stat.H);
      return {
        engine: "ts-blocked",
        bytes: H === stat.H ? 0 : H.byteLength,
        multiply(r0, r1, a, p) {
          for (const [s, e, g] of segments(r0, r1, rpg)) {
            const off = (s - r0) * cols;
            symmMulBlocked(a.subarray(off, off + (e - s) * cols), e - s, cols, H.subarray(g * cols * cols, (g + 1) * cols * cols), p.subarray(off, off + (e - s) * cols));
          }
          return dot(a, p, (r1 - r0) * cols);
        },
      };
    }
    const { r, n } = stat;
    const xs: Float64Array[] = [];
    const xf: Float64Array[] = [];
    for (let g = 0; g < groups; g++) {
      xs.push(Float64Array.from(stat.X.subarray(g * r * cols, (g + 1) * r * cols)));
      xf.push(transpose(xs[g]!, r, cols));
    }
    let scratch = new Float64Array(0);
    return {
      engine: "ts-blocked",
      bytes: 16 * groups * r * cols,
      multiply(r0, r1, a, p, t) {
        const m = r1 - r0;
        if (scratch.length < m * r) scratch = new Float64Array(m * r);
        let sq = 0;
        for (const [s, e, g] of segments(r0, r1, rpg)) {
          const off = (s - r0) * cols;
          const rowsHere = e - s;
          const tt = scratch.subarray((s - r0) * r, (e - r0) * r);
          gemmNT(a.subarray(off, off + rowsHere * cols), rowsHere, xs[g]!, r, cols, tt, r);
          const pp = p.subarray(off, off + rowsHere * cols);
          gemmNT(tt, rowsHere, xf[g]!, cols, r, pp, cols);
          for (let i = 0; i < pp.length; i++) pp[i] = pp[i]! / n;
        }
        for (let i = 0; i < m * r; i++) sq += scratch[i]! * scratch[i]!;
        if (t) t.set(scratch.subarray(0, m * r));
        return sq / n;
      },
      expand(r0, r1, t, out) {
        for (const [s, e, g] of segments(r0, r1, rpg)) {
          const i0 = s - r0;
          gemmNT(t.subarray(i0 * r, (e - r0) * r), e - s, xf[g]!, cols, r, out.subarray(i0 * cols, (e - r0) * cols), cols);
        }
      },
    };
  },
};

/**
 * The WebAssembly SIMD engine (`gemm-wasm.ts`): the statistic is copied once into the kernel's memory
 * (H at an even stride; for the factor form X both sample-major and feature-major), blocks are copied in
 * and out. Falls back to the TypeScript engine where WebAssembly SIMD is missing or the layer does not
 * fit its 4 GB memory.
 */
export const wasmStatEngine: SyncStatEngine = {
  name: wasmAvailable() ? "wasm-simd" : "ts-blocked",
  kernel(stat: LayerStatistic, rows: number): SyncStatKernel {
    validateStatistic(stat, rows);
    if (!wasmAvailable()) return tsStatEngine.kernel(stat, rows);
    try {
      return isFactor(stat) ? wasmFactorKernel(stat, rows) : wasmGramKernel(stat, rows);
    } catch {
      return tsStatEngine.kernel(stat, rows);
    }
  },
};

const even = (v: number): number => v + (v % 2);

function wasmGramKernel(stat: GramStatistic, rows: number): SyncStatKernel {
  const { groups, cols, H } = stat;
  const rpg = rows / groups;
  const kp = even(cols);
  const hOff = 0;
  const aOff = groups * cols * kp;
  const oOff = aOff + rows * kp;
  const w = new WasmGemm(oOff + rows * kp);
  const mem = w.mem;
  for (let g = 0; g < groups; g++)
    for (let j = 0; j < cols; j++) mem.set(H.subarray((g * cols + j) * cols, (g * cols + j + 1) * cols), hOff + (g * cols + j) * kp);
  return {
    engine: "wasm-simd",
    bytes: mem.byteLength,
    multiply(r0, r1, a, p) {
      const m = r1 - r0;
      for (let i = 0; i < m; i++) mem.set(a.subarray(i * cols, (i + 1) * cols), aOff + i * kp);
      for (const [s, e, g] of segments(r0, r1, rpg)) w.nt(aOff + (s - r0) * kp, hOff + g * cols * kp, oOff + (s - r0) * kp, e - s, cols, kp, kp);
      for (let i = 0; i < m; i++) p.set(mem.subarray(oOff + i * kp, oOff + i * kp + cols), i * cols);
      return dot(a, p, m * cols);
    },
  };
}

function wasmFactorKernel(stat: FactorStatistic, rows: number): SyncStatKernel {
  const { groups, cols, X, r, n } = stat;
  const rpg = rows / groups;
  const kp = even(cols);
  const rp = Math.max(2, even(r));
  const xsOff = 0; // [groups][r][kp]
  const xfOff = xsOff + groups * r * kp; // [groups][cols][rp]
  const aOff = xfOff + groups * cols * rp; // [rows][kp]
  const tOff = aOff + rows * kp; // [rows][rp]
  const oOff = tOff + rows * rp; // [rows][kp]
  const w = new WasmGemm(oOff + rows * kp);
  const mem = w.mem;
  for (let g = 0; g < groups; g++)
    for (let s = 0; s < r; s++)
      for (let c = 0; c < cols; c++) {
        const v = X[(g * r + s) * cols + c]!;
        mem[xsOff + (g * r + s) * kp + c] = v;
        mem[xfOff + (g * cols + c) * rp + s] = v;
      }
  return {
    engine: "wasm-simd",
    bytes: mem.byteLength,
    multiply(r0, r1, a, p, t) {
      const m = r1 - r0;
      for (let i = 0; i < m; i++) mem.set(a.subarray(i * cols, (i + 1) * cols), aOff + i * kp);
      for (const [s, e, g] of segments(r0, r1, rpg)) {
        const i0 = s - r0;
        w.nt(aOff + i0 * kp, xsOff + g * r * kp, tOff + i0 * rp, e - s, r, kp, rp);
        w.nt(tOff + i0 * rp, xfOff + g * cols * rp, oOff + i0 * kp, e - s, cols, rp, kp);
      }
      let sq = 0;
      for (let i = 0; i < m; i++) {
        const o = oOff + i * kp;
        for (let c = 0; c < cols; c++) p[i * cols + c] = mem[o + c]! / n;
        const to = tOff + i * rp;
        for (let s = 0; s < r; s++) {
          const v = mem[to + s]!;
          sq += v * v;
          if (t) t[i * r + s] = v;
        }
      }
      return sq / n;
    },
    expand(r0, r1, t, out) {
      const m = r1 - r0;
      for (let i = 0; i < m; i++) mem.set(t.subarray(i * r, (i + 1) * r), tOff + i * rp);
      for (const [s, e, g] of segments(r0, r1, rpg)) {
        const i0 = s - r0;
        w.nt(tOff + i0 * rp, xfOff + g * cols * rp, oOff + i0 * kp, e - s, cols, rp, kp);
      }
      for (let i = 0; i < m; i++) out.set(mem.subarray(oOff + i * kp, oOff + i * kp + cols), i * cols);
    },
  };
}

const engines = new Map<string, StatEngine>([
  [tsStatEngine.name, tsStatEngine],
  ["wasm-simd", wasmStatEngine],
]);

/** The engine used when none is named (or the named one is not registered in this thread). */
export const defaultStatEngine: SyncStatEngine = wasmStatEngine;

/**
 * Makes an engine (for example onnxruntime's MatMul, which core cannot import) available to the tasks
 * run in this thread, by name. Register it in every thread that runs them (the pool's worker does).
 */
export function registerStatEngine(engine: StatEngine): void {
  engines.set(engine.name, engine);
}

/** Whether an engine of that name is registered in this thread. */
export function hasStatEngine(name: string): boolean {
  return engines.has(name);
}

/** Whether the engine's kernels multiply synchronously (the built-in ones). */
export function isSyncStatEngine(e: StatEngine): e is SyncStatEngine {
  return e === tsStatEngine || e === wasmStatEngine;
}

/** The engine of that name registered in this thread, or the default one. */
export function statEngine(name: string | undefined): StatEngine {
  return (name !== undefined ? engines.get(name) : undefined) ?? defaultStatEngine;
}

// ---- shared statistics and the per-thread kernel cache ----------------------------------------------

/** A statistic whose arrays live in shared memory, with a key naming it in every thread's kernel cache. */
export interface StatHandle {
  key: string;
  stat: LayerStatistic;
}

const handles = new WeakMap<object, StatHandle>();
const KEY_PREFIX = Math.floor(Math.random() * 2 ** 48).toString(36);
let keyCounter = 0;

/** `a` itself when it lives in shared memory, else a shared copy. */
export function shared<T extends Float32Array | Float64Array>(a: T): T {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const out = sharedArray(a.constructor as unknown as { new (b: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number }, a.length);
  out.set(a);
  return out;
}

/**
 * The statistic with its arrays in shared memory (copied there unless they already are) and a fresh key;
 * the same handle for the same statistic object.
 */
export function shareStatistic(stat: LayerStatistic | StatHandle): StatHandle {
  if ("key" in stat) return stat;
  const known = handles.get(stat);
  if (known) return known;
  const s: LayerStatistic = isFactor(stat) ? { ...stat, X: shared(stat.X) } : { ...stat, H: shared(stat.H) };
  const handle = { key: `${KEY_PREFIX}.${++keyCounter}`, stat: s };
  handles.set(stat, handle);
  return handle;
}

interface CacheEntry {
  kernel: Promise<StatKernel> | StatKernel;
  bytes: number;
  /** Tasks using the kernel now (`withCachedKernel`): it is never disposed under them. */
  users: number;
  /** Evicted while in use: disposed when its last user is done. */
  evicted: boolean;
}

/** Kernels kept per thread, at most (the least recently used goes first). */
export const KERNEL_CACHE_ENTRIES = 16;
/** Bytes of kernels (statistic copies included) kept per thread besides the one in use, by default. */
export const KERNEL_CACHE_BYTES = 512 * 2 ** 20;
const kernelCache = new Map<string, CacheEntry>();
/**
 * This thread's bound on the cache's bytes: KERNEL_CACHE_BYTES, or what a memory budget leaves (a wave
 * of statistics sets it for its layers: `clearKernelsTask`).
 */
let cacheLimitBytes = KERNEL_CACHE_BYTES;

/** Sets this thread's bound on cached kernel bytes (undefined: KERNEL_CACHE_BYTES) and applies it. */
export function setKernelCacheLimit(bytes?: number): void {
  cacheLimitBytes = bytes === undefined ? KERNEL_CACHE_BYTES : Math.max(0, Math.min(KERNEL_CACHE_BYTES, bytes));
  evict();
}

function statBytes(stat: LayerStatistic): number {
  return isFactor(stat) ? stat.X.byteLength : stat.H.byteLength;
}

/**
 * Runs `use` with this thread's kernel for a shared statistic and an engine: built once, then reused by
 * the tasks that land on this thread (the blocks of a split layer, the output errors). The cache holds a
 * few kernels and a bounded number of bytes; older ones are disposed, but never while a task uses them
 * (a thread may interleave several tasks at their awaits: a layer fine-tuned on one thread holds its
 * kernel across its iterations while other layers' tasks build theirs).
 */
export async function withCachedKernel<T>(handle: StatHandle, engineName: string | undefined, rows: number, use: (kernel: StatKernel) => T | Promise<T>): Promise<T> {
  const engine = statEngine(engineName);
  const key = `${engine.name}|${handle.key}|${rows}`;
  let entry = kernelCache.get(key);
  if (entry) {
    kernelCache.delete(key);
    kernelCache.set(key, entry);
  } else {
    const made = engine.kernel(handle.stat, rows);
    const e: CacheEntry = { kernel: made, bytes: 2 * statBytes(handle.stat), users: 0, evicted: false };
    entry = e;
    kernelCache.set(key, e);
    if (made instanceof Promise)
      made.then(
        (k) => (e.bytes = k.bytes + statBytes(handle.stat)),
        () => kernelCache.delete(key),
      );
    else e.bytes = made.bytes + statBytes(handle.stat);
  }
  entry.users++;
  evict();
  try {
    return await use(await entry.kernel);
  } finally {
    entry.users--;
    if (entry.evicted && entry.users === 0) dispose(entry);
    else evict();
  }
}

function dispose(e: CacheEntry): void {
  void Promise.resolve(e.kernel).then(
    (k) => k.dispose?.(),
    () => undefined,
  );
}

function evict(): void {
  let total = 0;
  for (const e of kernelCache.values()) total += e.bytes;
  for (const [key, e] of kernelCache) {
    if (kernelCache.size <= 1 || (kernelCache.size <= KERNEL_CACHE_ENTRIES && total <= cacheLimitBytes)) break;
    kernelCache.delete(key);
    total -= e.bytes;
    if (e.users > 0) e.evicted = true;
    else dispose(e);
  }
}

/** Drops this thread's cached kernels (tests; the end of a run in the orchestrating thread). */
export async function clearKernelCache(): Promise<void> {
  const entries = [...kernelCache.values()];
  kernelCache.clear();
  for (const e of entries) {
    if (e.users > 0) {
      e.evicted = true;
      continue;
    }
    try {
      await (await e.kernel).dispose?.();
    } catch {
      // a kernel that failed to build has nothing to release
    }
  }
}

/**
 * The "stat.clearKernels" task (`tasks.ts`, broadcast to every thread between waves): `clearKernelCache`,
 * then the cache's bound for what follows (`setKernelCacheLimit`: a wave's room, or the default).
 */
export async function clearKernelsTask(input: { cacheBytes?: number }): Promise<number> {
  const entries = kernelCache.size;
  await clearKernelCache();
  setKernelCacheLimit(input.cacheBytes);
  return entries;
}

// ---- products on a map ------------------------------------------------------------------------------

/** Input of the "stat.product" task: P = A H for rows [r0, r1) into a shared output (and T = A X). */
export interface ProductTaskInput {
  stat: StatHandle;
  engine?: string;
  rows: number;
  /** A [rows, cols] (shared, read). */
  a: Float32Array | Float64Array;
  /** P [rows, cols] (shared, the task writes its rows). */
  out: Float64Array;
  /** Factor form: T [rows, r] (shared, the task writes its rows), when wanted. */
  t?: Float64Array;
  r0: number;
  r1: number;
}

/** The "stat.product" task (`tasks.ts`); returns the block's tr(A H A^T). */
export function productTask(x: ProductTaskInput): Promise<number> {
  return withCachedKernel(x.stat, x.engine, x.rows, (kernel) => productBlock(kernel, x));
}

async function productBlock(kernel: StatKernel, x: ProductTaskInput): Promise<number> {
  const cols = x.stat.stat.cols;
  const len = (x.r1 - x.r0) * cols;
  const a = new Float64Array(len);
  for (let i = 0; i < len; i++) a[i] = x.a[x.r0 * cols + i]!;
  const r = isFactor(x.stat.stat) ? x.stat.stat.r : 0;
  const t = x.t ? new Float64Array((x.r1 - x.r0) * r) : undefined;
  const p = x.out.subarray(x.r0 * cols, x.r1 * cols);
  const quad = await kernel.multiply(x.r0, x.r1, a, p, t);
  if (t) x.t!.set(t, x.r0 * r);
  return quad;
}

/**
 * P = A H (and, factor form, T = A X) for a row matrix A [rows, cols], the blocks of `rowBlocks` as tasks
 * on `map`; P and T in shared memory. Returns them and tr(A H A^T) (summed in block order).
 */
export async function productsOn(
  map: ParallelMap,
  a: Float32Array | Float64Array,
  rows: number,
  stat: LayerStatistic | StatHandle,
  opts: { engine?: string; wantT?: boolean } = {},
): Promise<{ p: Float64Array; t?: Float64Array; quad: number }> {
  const handle = shareStatistic(stat);
  validateStatistic(handle.stat, rows);
  const { cols } = handle.stat;
  const out = sharedArray(Float64Array, rows * cols);
  const t = opts.wantT && isFactor(handle.stat) ? sharedArray(Float64Array, rows * handle.stat.r) : undefined;
  const sa = shared(a);
  const blocks = rowBlocks(rows, handle.stat.groups, productRowFlops(handle.stat));
  const quads = await map.run<ProductTaskInput, number>(
    "stat.product",
    blocks.map(([r0, r1]) => ({ stat: handle, ...(opts.engine !== undefined ? { engine: opts.engine } : {}), rows, a: sa, out, ...(t ? { t } : {}), r0, r1 })),
  );
  let quad = 0;
  for (const q of quads) quad += q;
  return { p: out, ...(t ? { t } : {}), quad };
}

// ---- the quadratic form on a map -------------------------------------------------------------------

/** Input of the "stat.quadratic" task: tr(A H A^T) and tr((B - A) H (B - A)^T) over rows [r0, r1). */
export interface QuadraticTaskInput {
  stat: StatHandle;
  engine?: string;
  rows: number;
  /** A [rows, cols] (shared). */
  a: Float32Array | Float64Array;
  /** B [rows, cols] (shared), optional. */
  b?: Float32Array | Float64Array;
  r0: number;
  r1: number;
}

export interface QuadraticTaskOutput {
  /** tr(A H A^T) over the block. */
  a: number;
  /** tr((B - A) H (B - A)^T) over the block (0 without B). */
  diff: number;
}

/** The "stat.quadratic" task (`tasks.ts`). */
export function quadraticTask(t: QuadraticTaskInput): Promise<QuadraticTaskOutput> {
  return withCachedKernel(t.stat, t.engine, t.rows, (kernel) => quadraticBlock(kernel, t.stat.stat.cols, t.a, t.b, t.r0, t.r1));
}

/** tr(A H A^T) (and tr((B - A) H (B - A)^T)) over rows [r0, r1) of row matrices with `cols` columns. */
async function quadraticBlock(
  kernel: StatKernel,
  cols: number,
  a: Float32Array | Float64Array,
  b: Float32Array | Float64Array | undefined,
  r0: number,
  r1: number,
): Promise<QuadraticTaskOutput> {
  const len = (r1 - r0) * cols;
  const e = new Float64Array(len);
  const p = new Float64Array(len);
  for (let i = 0; i < len; i++) e[i] = a[r0 * cols + i]!;
  const qa = await kernel.multiply(r0, r1, e, p);
  if (!b) return { a: qa, diff: 0 };
  for (let i = 0; i < len; i++) e[i] = b[r0 * cols + i]! - a[r0 * cols + i]!;
  return { a: qa, diff: await kernel.multiply(r0, r1, e, p) };
}

/** The same as `quadraticBlock` for a synchronous kernel. */
function quadraticBlockSync(
  kernel: SyncStatKernel,
  cols: number,
  a: Float32Array | Float64Array,
  b: Float32Array | Float64Array | undefined,
  r0: number,
  r1: number,
): QuadraticTaskOutput {
  const len = (r1 - r0) * cols;
  const e = new Float64Array(len);
  const p = new Float64Array(len);
  for (let i = 0; i < len; i++) e[i] = a[r0 * cols + i]!;
  const qa = kernel.multiply(r0, r1, e, p);
  if (!b) return { a: qa, diff: 0 };
  for (let i = 0; i < len; i++) e[i] = b[r0 * cols + i]! - a[r0 * cols + i]!;
  return { a: qa, diff: kernel.multiply(r0, r1, e, p) };
}

/**
 * tr(A H A^T) and, with B, tr((B - A) H (B - A)^T) for row matrices [rows, cols], over the blocks of
 * `rowBlocks` on `map` (each block a task), summed in block order: the same bytes on any map.
 */
export async function quadraticForms(
  map: ParallelMap,
  a: Float32Array | Float64Array,
  b: Float32Array | Float64Array | undefined,
  rows: number,
  stat: LayerStatistic | StatHandle,
  engine?: string,
): Promise<QuadraticTaskOutput> {
  const handle = shareStatistic(stat);
  validateStatistic(handle.stat, rows);
  const blocks = rowBlocks(rows, handle.stat.groups, productRowFlops(handle.stat));
  const sa = shared(a);
  const sb = b ? shared(b) : undefined;
  const outs = await map.run<QuadraticTaskInput, QuadraticTaskOutput>(
    "stat.quadratic",
    blocks.map(([r0, r1]) => ({ stat: handle, ...(engine !== undefined ? { engine } : {}), rows, a: sa, ...(sb ? { b: sb } : {}), r0, r1 })),
  );
  let qa = 0;
  let qd = 0;
  for (const o of outs) {
    qa += o.a;
    qd += o.diff;
  }
  return { a: qa, diff: qd };
}

/** The same sums in this thread with a synchronous engine (default: WebAssembly). */
export function quadraticFormsSync(
  a: Float32Array | Float64Array,
  b: Float32Array | Float64Array | undefined,
  rows: number,
  stat: LayerStatistic,
  engine: SyncStatEngine = defaultStatEngine,
): QuadraticTaskOutput {
  validateStatistic(stat, rows);
  const kernel = engine.kernel(stat, rows);
  let qa = 0;
  let qd = 0;
  for (const [r0, r1] of rowBlocks(rows, stat.groups, productRowFlops(stat))) {
    const o = quadraticBlockSync(kernel, stat.cols, a, b, r0, r1);
    qa += o.a;
    qd += o.diff;
  }
  return { a: qa, diff: qd };
}
