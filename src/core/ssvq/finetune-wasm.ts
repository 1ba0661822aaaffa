/**
 * Fine-tuning's per-weight loops (finetune.ts) as a WebAssembly module: E' of a block (`errorE`), the
 * codebook gradient (`gradient`) and the gradient with the latents' Adam step and their sign flips
 * (`adam`, with or without progressive freezing). They run on the layer's state where it lies: the state
 * arrays are views of one WebAssembly memory (`stateMemory`), shared between threads when a layer's
 * blocks run on a pool (WebAssembly reads and writes shared memory as fast as ordinary memory, where V8's
 * typed arrays on a SharedArrayBuffer are 2-3x slower).
 *
 * The same float64 operations in the same order as the TypeScript loops they replace (`gradientsAndAdam`,
 * `beforeProduct`): IEEE arithmetic without fused multiply-add, square root and division correctly
 * rounded, float64 -> float32 rounded to nearest; the Adam step runs two weights at a time in f64x2
 * lanes (the same operations per lane), the codebook gradient's sums one position at a time in row
 * order. So the results are the same bytes as the TypeScript loops, on every machine: only the speed
 * changes.
 *
 * Functions (pointers are byte addresses in the memory; n positions from each pointer; pm's elements are
 * float64, or float32 for the `32` variants):
 *  - gradient(n, pm, cb, neg, gC, scale): gC[cb[p]] += ±scale pm[p];
 *  - adam(n, pm, cb, neg, cbook, gC, latent, mL, vL, frozen, fneg, flipEma, balance, scale, step, inv2,
 *    momentum, a) -> flips: as `gradientsAndAdam` (`freeze` variants: frozen positions keep their state,
 *    flips go into the flip EMA and the balance);
 *  - errorE(n, cbook, cb, neg, wn, out): out[p] = ±cbook[cb[p]] - wn[p] (float64 or float32 out).
 */
import { compileModule, I32, name, op, section, simd, uleb, V128, vec, wasmApi, type WasmMemory } from "./wasm-asm.js";

const F64 = 0x7c;

// ---- instruction names used below (the encoders are wasm-asm.ts's) ------------------------------------------

const { get, set, tee, i32Load, i32Store, u8Load, i32Store8, u16Load, i32Store16, f64Load, f64Store, f32Load, f32Store } = op;
const i32c = op.i32;
const f64c = op.f64;
const I = { add: op.add, sub: op.sub, shl: op.shl, and: op.and, or: op.or, xor: op.xor, popcnt: op.popcnt, ne: op.ne, ltS: op.ltS, geS: op.geS, select: op.select };
const D = { add: op.f64Add, sub: op.f64Sub, mul: op.f64Mul, neg: op.f64Neg, lt: op.f64Lt, demote: op.demote, promote: op.promote };
const { block, loop, end, br, brIf } = op;
const ifThen = op.if;
const V = {
  load: (offset = 0) => simd(0x00, 3, ...uleb(offset)),
  /** v128.load64_zero: lane 0 from memory, lane 1 zero. */
  load64Zero: (offset = 0) => simd(0x5d, 3, ...uleb(offset)),
  store: (offset = 0) => simd(0x0b, 3, ...uleb(offset)),
  /** v128.store64_lane 0. */
  store64Lane0: (offset = 0) => simd(0x5b, 3, ...uleb(offset), 0),
  const: (bytes: number[]) => simd(0x0c, ...bytes),
  splat: simd(0x14), // f64x2.splat
  extract: (lane: number) => simd(0x21, lane), // f64x2.extract_lane
  replace: (lane: number) => simd(0x22, lane), // f64x2.replace_lane
  i64Splat: simd(0x12),
  i64Replace: (lane: number) => simd(0x1e, lane),
  bitselect: simd(0x52),
  lt: simd(0x49), // f64x2.lt
  i64Bitmask: simd(0xc4),
  add: simd(0xf0),
  sub: simd(0xf1),
  mul: simd(0xf2),
  div: simd(0xf3),
  sqrt: simd(0xef),
};
const f64x2 = (x: number): number[] => V.const([...new Uint8Array(Float64Array.of(x, x).buffer)]);
const i64ExtendS = [0xac];

// ---- the functions -----------------------------------------------------------------------------------

/** Adam's constants, as finetune.ts computes them (1 - beta in float64, not its exact decimal). */
export const ADAM = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/** The address of element p of an array at byte pointer `ptrLocal`, elements of 2^shift bytes. */
const addr = (ptrLocal: number, pLocal: number, shift: number, lane = 0): number[] =>
  shift === 0
    ? [...get(ptrLocal), ...get(pLocal), ...I.add, ...(lane ? i32c(lane) : []), ...(lane ? I.add : [])]
    : [...get(ptrLocal), ...get(pLocal), ...(lane ? [...i32c(lane), ...I.add] : []), ...i32c(shift), ...I.shl, ...I.add];

/** `body` for each position p = 0, 1, ..., n - 1 (i32 locals `p` and `n`). */
const eachPosition = (p: number, n: number, body: number[]): number[] => [
  ...i32c(0),
  ...set(p),
  ...block,
  ...loop,
  ...get(p),
  ...get(n),
  ...I.geS,
  ...brIf(1),
  ...body,
  ...get(p),
  ...i32c(1),
  ...I.add,
  ...set(p),
  ...br(0),
  ...end,
  ...end,
];

/** gradient(n, pm, cb, neg, gC, scale). */
function gradientCode(pm32: boolean): { params: number[]; result: number[]; locals: number[][]; code: number[] } {
  const [N, PM, CB, NEG, GC, SCALE] = [0, 1, 2, 3, 4, 5];
  const [P, A] = [6, 7];
  const G = 8;
  const code = eachPosition(P, N, [
    // g = scale * pm[p]
    ...get(SCALE),
    ...addr(PM, P, pm32 ? 2 : 3),
    ...(pm32 ? [...f32Load(), ...D.promote] : f64Load()),
    ...D.mul,
    ...set(G),
    // a = gC + 8 cb[p]; gC[a] += neg[p] ? -g : g
    ...get(GC),
    ...addr(CB, P, 2),
    ...i32Load(),
    ...i32c(3),
    ...I.shl,
    ...I.add,
    ...tee(A),
    ...get(A),
    ...f64Load(),
    ...get(G),
    ...D.neg,
    ...get(G),
    ...addr(NEG, P, 0),
    ...u8Load(),
    ...I.select,
    ...D.add,
    ...f64Store(),
  ]);
  return { params: [I32, I32, I32, I32, I32, F64], result: [], locals: [[2, I32], [1, F64]], code };
}

/** errorE(n, cbook, cb, neg, wn, out). */
function errorCode(out32: boolean): { params: number[]; result: number[]; locals: number[][]; code: number[] } {
  const [N, CBOOK, CB, NEG, WN, OUT] = [0, 1, 2, 3, 4, 5];
  const [P, X] = [6, 7];
  const code = eachPosition(P, N, [
    ...addr(OUT, P, out32 ? 2 : 3),
    // v = cbook[cb[p]]; (neg ? -v : v) - wn[p]
    ...get(CBOOK),
    ...addr(CB, P, 2),
    ...i32Load(),
    ...i32c(3),
    ...I.shl,
    ...I.add,
    ...f64Load(),
    ...tee(X),
    ...D.neg,
    ...get(X),
    ...addr(NEG, P, 0),
    ...u8Load(),
    ...I.select,
    ...addr(WN, P, 3),
    ...f64Load(),
    ...D.sub,
    ...(out32 ? [...D.demote, ...f32Store()] : f64Store()),
  ]);
  return { params: [I32, I32, I32, I32, I32, I32], result: [], locals: [[1, I32], [1, F64]], code };
}

/**
 * adam(n, pm, cb, neg, cbook, gC, latent, mL, vL, frozen, fneg, flipEma, balance, scale, step, inv2,
 * momentum, a) -> flips; two positions per round in f64x2 lanes, the last odd one alone (lane 0).
 */
function adamCode(pm32: boolean, freeze: boolean): { params: number[]; result: number[]; locals: number[][]; code: number[] } {
  const [N, PM, CB, NEG, CBOOK, GC, LAT, ML, VL, FROZEN, FNEG, EMA, BAL] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const [SCALE, STEP, INV2, MOM, AA] = [13, 14, 15, 16, 17];
  // i32 locals
  const [P, FLIPS, A, S, A2, B16] = [18, 19, 20, 21, 22, 23];
  // f64 locals
  const [G, GP, E] = [24, 25, 26];
  // v128 locals
  const [GPV, M1, M2, L, STEPV, INV2V, MASK, OLDM, OLDV, OLDL] = [27, 28, 29, 30, 31, 32, 33, 34, 35, 36];
  const c1 = 1 - ADAM.beta1;
  const c2 = 1 - ADAM.beta2;

  /** The address of element P of the array at `ptr` (the lane's element by the instruction's offset). */
  const at = (ptr: number, shift: number): number[] => addr(ptr, P, shift);

  /** One round at position P with `lanes` (1 or 2) positions. */
  const round = (lanes: number): number[] => {
    const vload = lanes === 2 ? V.load() : V.load64Zero();
    const vstore = lanes === 2 ? V.store() : V.store64Lane0();
    const c: number[] = [];
    // Per lane: g, the codebook gradient (the sign before this step), gp = g cbook[i].
    for (let j = 0; j < lanes; j++) {
      c.push(...get(SCALE), ...at(PM, pm32 ? 2 : 3), ...(pm32 ? [...f32Load(4 * j), ...D.promote] : f64Load(8 * j)), ...D.mul, ...set(G));
      c.push(...at(CB, 2), ...i32Load(4 * j), ...i32c(3), ...I.shl, ...set(A));
      c.push(...get(GC), ...get(A), ...I.add, ...tee(A2), ...get(A2), ...f64Load());
      c.push(...get(G), ...D.neg, ...get(G), ...at(NEG, 0), ...u8Load(j), ...I.select, ...D.add, ...f64Store());
      c.push(...get(G), ...get(CBOOK), ...get(A), ...I.add, ...f64Load(), ...D.mul, ...set(GP));
      if (j === 0) c.push(...get(GP), ...V.splat, ...set(GPV));
      else c.push(...get(GPV), ...get(GP), ...V.replace(1), ...set(GPV));
    }
    if (freeze) {
      // MASK: all ones in the lanes of free positions (frozen - 1 sign-extended).
      c.push(...at(FROZEN, 0), ...u8Load(), ...i32c(1), ...I.sub, ...i64ExtendS, ...V.i64Splat);
      if (lanes === 2) c.push(...at(FROZEN, 0), ...u8Load(1), ...i32c(1), ...I.sub, ...i64ExtendS, ...V.i64Replace(1));
      c.push(...set(MASK));
    }
    // m1 = beta1 mL + (1 - beta1) gp; m2 = beta2 vL + (1 - beta2) gp gp.
    c.push(...at(ML, 3), ...vload, ...set(OLDM));
    c.push(...f64x2(ADAM.beta1), ...get(OLDM), ...V.mul, ...f64x2(c1), ...get(GPV), ...V.mul, ...V.add, ...set(M1));
    c.push(...at(VL, 3), ...vload, ...set(OLDV));
    c.push(...f64x2(ADAM.beta2), ...get(OLDV), ...V.mul, ...f64x2(c2), ...get(GPV), ...V.mul, ...get(GPV), ...V.mul, ...V.add, ...set(M2));
    // l = latent - (step m1) / (sqrt(m2 inv2) + eps).
    c.push(...at(LAT, 3), ...vload, ...set(OLDL));
    c.push(...get(OLDL), ...get(STEPV), ...get(M1), ...V.mul, ...get(M2), ...get(INV2V), ...V.mul, ...V.sqrt, ...f64x2(ADAM.eps), ...V.add, ...V.div, ...V.sub, ...set(L));
    const keep = (fresh: number, old: number): number[] => (freeze ? [...get(fresh), ...get(old), ...get(MASK), ...V.bitselect] : get(fresh));
    c.push(...at(ML, 3), ...keep(M1, OLDM), ...vstore);
    c.push(...at(VL, 3), ...keep(M2, OLDV), ...vstore);
    c.push(...at(LAT, 3), ...keep(L, OLDL), ...vstore);
    if (lanes === 2 && !freeze) {
      // Both lanes at once, the sign bytes as one 16-bit word (byte j = lane j): the new signs l < 0.
      c.push(...get(L), ...f64x2(0), ...V.lt, ...V.i64Bitmask, ...tee(B16), ...i32c(1), ...I.and, ...get(B16), ...i32c(2), ...I.and, ...i32c(7), ...I.shl, ...I.or, ...set(B16));
      c.push(...get(FLIPS), ...at(NEG, 0), ...u16Load(), ...get(B16), ...I.xor, ...I.popcnt, ...I.add, ...set(FLIPS));
      c.push(...at(NEG, 0), ...get(B16), ...i32Store16());
      return c;
    }
    // Per free lane: the sign, its flip, and (freezing) the flip EMA and the balance (branches: flips are rare).
    for (let j = 0; j < lanes; j++) {
      c.push(...block);
      if (freeze) c.push(...at(FROZEN, 0), ...u8Load(j), ...brIf(0));
      c.push(...get(L), ...V.extract(j), ...f64c(0), ...D.lt, ...set(S));
      c.push(...at(NEG, 0), ...u8Load(j), ...get(S), ...I.ne, ...ifThen);
      c.push(...at(NEG, 0), ...get(S), ...i32Store8(j), ...get(FLIPS), ...i32c(1), ...I.add, ...set(FLIPS), ...end);
      if (freeze) {
        c.push(...at(EMA, 3), ...get(MOM), ...at(EMA, 3), ...f64Load(8 * j), ...D.mul, ...set(E));
        c.push(...at(FNEG, 0), ...u8Load(j), ...get(S), ...I.ne, ...ifThen);
        c.push(...at(FNEG, 0), ...get(S), ...i32Store8(j), ...get(E), ...get(AA), ...D.add, ...set(E), ...end);
        c.push(...get(E), ...f64Store(8 * j));
        c.push(...at(BAL, 2), ...at(BAL, 2), ...i32Load(4 * j), ...i32c(1), ...i32c(-1), ...get(S), ...I.select, ...I.add, ...i32Store(4 * j));
      }
      c.push(...end);
    }
    return c;
  };

  const code = [
    ...get(STEP),
    ...V.splat,
    ...set(STEPV),
    ...get(INV2),
    ...V.splat,
    ...set(INV2V),
    ...i32c(0),
    ...set(P),
    ...block,
    ...loop,
    // while p + 2 <= n
    ...get(P),
    ...i32c(2),
    ...I.add,
    ...get(N),
    ...op.gtS,
    ...brIf(1),
    ...round(2),
    ...get(P),
    ...i32c(2),
    ...I.add,
    ...set(P),
    ...br(0),
    ...end,
    ...end,
    ...get(P),
    ...get(N),
    ...I.ltS,
    ...ifThen,
    ...round(1),
    ...end,
    ...get(FLIPS),
  ];
  return {
    params: [...new Array<number>(13).fill(I32), F64, F64, F64, F64, F64],
    result: [I32],
    locals: [
      [6, I32],
      [3, F64],
      [10, V128],
    ],
    code,
  };
}

const FUNCTIONS: Array<[string, ReturnType<typeof adamCode>]> = [
  ["gradient", gradientCode(false)],
  ["gradient32", gradientCode(true)],
  ["adam", adamCode(false, false)],
  ["adam32", adamCode(true, false)],
  ["adamFreeze", adamCode(false, true)],
  ["adamFreeze32", adamCode(true, true)],
  ["errorE", errorCode(false)],
  ["errorE32", errorCode(true)],
];

/** The module, importing env.memory (shared or not: the import's type says which). */
function moduleBytes(shared: boolean): Uint8Array {
  const types = section(1, vec(FUNCTIONS.map(([, f]) => [0x60, ...vec(f.params.map((t) => [t])), ...vec(f.result.map((t) => [t]))])));
  const limits = shared ? [0x03, ...uleb(0), ...uleb(65536)] : [0x00, ...uleb(0)];
  const imports = section(2, vec([[...name("env"), ...name("memory"), 0x02, ...limits]]));
  const funcs = section(3, vec(FUNCTIONS.map((_, i) => uleb(i))));
  const exports = section(7, vec(FUNCTIONS.map(([n], i) => [...name(n), 0x00, ...uleb(i)])));
  const bodies = FUNCTIONS.map(([, f]) => {
    const body = [...vec(f.locals.map(([count, type]) => [...uleb(count!), type!])), ...f.code, ...end];
    return [...uleb(body.length), ...body];
  });
  const code = section(10, vec(bodies));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...types, ...imports, ...funcs, ...exports, ...code]);
}

// ---- the instance ------------------------------------------------------------------------------------

export type { WasmMemory };

const compiled = new Map<boolean, object | null>();

function wasmModule(shared: boolean): object | null {
  let mod = compiled.get(shared);
  if (mod === undefined) {
    mod = compileModule(() => moduleBytes(shared));
    compiled.set(shared, mod);
  }
  return mod;
}

let disabled = false;

/** Turns the WebAssembly loops off (true) or back on, for tests and benchmarks of the TypeScript loops. */
export function disableFinetuneWasm(off: boolean): void {
  disabled = off;
}

/** The largest state memory made (bytes): below WebAssembly's 4 GiB, with room to spare. */
export const MAX_STATE_BYTES = 2 ** 32 - 2 ** 20;

/**
 * A WebAssembly memory of at least `bytes` bytes for a layer's state (shared between threads or not), or
 * null where the kernel is unavailable, turned off, or the state would not fit.
 */
export function stateMemory(bytes: number, shared: boolean): WasmMemory | null {
  if (disabled || !wasmApi || bytes > MAX_STATE_BYTES || !wasmModule(shared)) return null;
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  try {
    return new wasmApi.Memory(shared ? { initial: pages, maximum: pages, shared: true } : { initial: pages });
  } catch {
    // Out of memory for one block of this size: plain typed arrays instead.
    return null;
  }
}

type Ptr = number;
export interface FinetuneWasm {
  gradient(n: number, pm: Ptr, cb: Ptr, neg: Ptr, gC: Ptr, scale: number): void;
  gradient32(n: number, pm: Ptr, cb: Ptr, neg: Ptr, gC: Ptr, scale: number): void;
  adam(n: number, pm: Ptr, cb: Ptr, neg: Ptr, cbook: Ptr, gC: Ptr, latent: Ptr, mL: Ptr, vL: Ptr, frozen: Ptr, fneg: Ptr, flipEma: Ptr, balance: Ptr, scale: number, step: number, inv2: number, momentum: number, a: number): number;
  adam32: FinetuneWasm["adam"];
  adamFreeze: FinetuneWasm["adam"];
  adamFreeze32: FinetuneWasm["adam"];
  errorE(n: number, cbook: Ptr, cb: Ptr, neg: Ptr, wn: Ptr, out: Ptr): void;
  errorE32: FinetuneWasm["errorE"];
}

const instances = new WeakMap<WasmMemory, FinetuneWasm>();

/** The kernel on `memory` in this thread (instantiated on first use; a memory from another thread gets its own). */
export function finetuneWasm(memory: WasmMemory): FinetuneWasm {
  let k = instances.get(memory);
  if (!k) {
    const mod = wasmModule(memory.buffer instanceof SharedArrayBuffer);
    if (!mod) throw new Error("fine-tuning's WebAssembly kernel is not available in this thread");
    k = new wasmApi!.Instance(mod, { env: { memory } }).exports as unknown as FinetuneWasm;
    instances.set(memory, k);
  }
  return k;
}
