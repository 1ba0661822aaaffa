/**
 * The fine-tuning product P = E H (H symmetric) as a WebAssembly SIMD kernel: the same dot-product form
 * as `symmMulBlocked` (out[i, j] = E row i . H row j), in 2 x 4 tiles of f64x2 accumulators (8
 * accumulators + 6 loads fit the 16 vector registers), vectorised along the reduction. Rows are stored
 * with an even stride kp (zero-padded), so the reduction runs two columns at a time; each sum is its
 * even-column lane plus its odd-column lane. The kernel is the rectangular A B^T (m rows of A, n rows
 * of B, separate output stride), so the products with a factor statistic use it too (`WasmGemm`); a
 * row's outputs do not depend on the other rows computed with it. WebAssembly arithmetic is IEEE without fused multiply-add,
 * so the results are the same bytes on every machine (they differ in rounding from the TypeScript
 * kernels, which sum in another order).
 *
 * The module (about 1.2 KB) is assembled below, byte by byte, so no build step or binary file is
 * needed; `wasmAvailable()` says whether this runtime has WebAssembly with SIMD (Node >= 16.4 and
 * VS Code's Electron do). Each layer gets its own instance and memory (H, E and P, float64, at the even
 * stride), released with the layer.
 */

// ---- the kernel's instructions (the encoding basics are in wasm-asm.ts) -----------------------------------------------------------------

import { compileModule, I32, name, op, section, simd, uleb, V128, vec, wasmApi } from "./wasm-asm.js";

const { get, set, i32, add, mul, shl, gtS, geS, ltS, block, loop, end, br, brIf } = op;
const ifThen = op.if;
const vload = (addrLocal: number, offsetLocal: number): number[] => [...get(addrLocal), ...get(offsetLocal), ...add, ...simd(0x00), 3, 0];
const vzero = [...simd(0x0c), ...new Array<number>(16).fill(0)];
const f64x2Add = simd(0xf0);
const f64x2Mul = simd(0xf2);
const lane = (l: number): number[] => simd(0x21).concat([l]);
/** f64.store at [addrLocal + offset] of lane0 + lane1 of v128 local `acc`. */
const storeSum = (addrLocal: number, offset: number, acc: number): number[] => [
  ...get(addrLocal),
  ...get(acc),
  ...lane(0),
  ...get(acc),
  ...lane(1),
  0xa0, // f64.add
  0x39, 3, ...uleb(offset), // f64.store align 8
];

// Parameters and locals of `mul(a, b, out, m, n, rp, os)`: byte pointers; m rows of A; n rows of B and
// columns of the output; rp the (even) row stride of A and B in elements (the reduction, zero-padded to
// it); os the row stride of the output in elements.
const [E, H, OUT, M, K] = [0, 1, 2, 3, 4];
const KP = 5;
const OS = 6;
const [I, J, C, SB, PE0, PE1, PH0, PH1, PH2, PH3, PO, OSB] = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
const ACC = 19; // 8 accumulators: ACC + 4 r + q
const X0 = 27;
const X1 = 28;
const Y = 29; // 4 loads: Y + q

/** acc[r][q] += x_r * y_q over the reduction, for `rowsE` rows of E (1 or 2) and `rowsH` rows of H (1 or 4). */
function reduction(rowsE: number, rowsH: number): number[] {
  const code: number[] = [];
  for (let r = 0; r < rowsE; r++) for (let q = 0; q < rowsH; q++) code.push(...vzero, ...set(ACC + 4 * r + q));
  code.push(...i32(0), ...set(C));
  code.push(...block, ...loop);
  code.push(...get(C), ...get(SB), ...geS, ...brIf(1));
  code.push(...vload(PE0, C), ...set(X0));
  if (rowsE > 1) code.push(...vload(PE1, C), ...set(X1));
  const ph = [PH0, PH1, PH2, PH3];
  for (let q = 0; q < rowsH; q++) code.push(...vload(ph[q]!, C), ...set(Y + q));
  for (let r = 0; r < rowsE; r++)
    for (let q = 0; q < rowsH; q++) {
      const acc = ACC + 4 * r + q;
      code.push(...get(acc), ...get(r === 0 ? X0 : X1), ...get(Y + q), ...f64x2Mul, ...f64x2Add, ...set(acc));
    }
  code.push(...get(C), ...i32(16), ...add, ...set(C), ...br(0));
  code.push(...end, ...end);
  return code;
}

/** PO = out + i * OSB + j * 8. */
const outPtr = [...get(OUT), ...get(I), ...get(OSB), ...mul, ...add, ...get(J), ...i32(3), ...shl, ...add, ...set(PO)];
/** PE0 = e + i * SB (and PE1 = PE0 + SB). */
const ePtr = (two: boolean): number[] => [
  ...get(E), ...get(I), ...get(SB), ...mul, ...add, ...set(PE0),
  ...(two ? [...get(PE0), ...get(SB), ...add, ...set(PE1)] : []),
];

function kernelBody(): number[] {
  const c: number[] = [];
  c.push(...get(KP), ...i32(3), ...shl, ...set(SB));
  c.push(...get(OS), ...i32(3), ...shl, ...set(OSB));
  c.push(...i32(0), ...set(J));
  // j in steps of 4 while j + 4 <= k
  c.push(...block, ...loop);
  c.push(...get(J), ...i32(4), ...add, ...get(K), ...gtS, ...brIf(1));
  c.push(...get(H), ...get(J), ...get(SB), ...mul, ...add, ...set(PH0));
  c.push(...get(PH0), ...get(SB), ...add, ...set(PH1));
  c.push(...get(PH1), ...get(SB), ...add, ...set(PH2));
  c.push(...get(PH2), ...get(SB), ...add, ...set(PH3));
  c.push(...i32(0), ...set(I));
  //   i in steps of 2 while i + 2 <= m
  c.push(...block, ...loop);
  c.push(...get(I), ...i32(2), ...add, ...get(M), ...gtS, ...brIf(1));
  c.push(...ePtr(true), ...reduction(2, 4), ...outPtr);
  for (let q = 0; q < 4; q++) c.push(...storeSum(PO, 8 * q, ACC + q));
  c.push(...get(PO), ...get(OSB), ...add, ...set(PO));
  for (let q = 0; q < 4; q++) c.push(...storeSum(PO, 8 * q, ACC + 4 + q));
  c.push(...get(I), ...i32(2), ...add, ...set(I), ...br(0));
  c.push(...end, ...end);
  //   the last row when m is odd
  c.push(...get(I), ...get(M), ...ltS, ...ifThen);
  c.push(...ePtr(false), ...reduction(1, 4), ...outPtr);
  for (let q = 0; q < 4; q++) c.push(...storeSum(PO, 8 * q, ACC + q));
  c.push(...end);
  c.push(...get(J), ...i32(4), ...add, ...set(J), ...br(0));
  c.push(...end, ...end);
  // the last k % 4 rows of H, one at a time, against every row of E
  c.push(...block, ...loop);
  c.push(...get(J), ...get(K), ...geS, ...brIf(1));
  c.push(...get(H), ...get(J), ...get(SB), ...mul, ...add, ...set(PH0));
  c.push(...i32(0), ...set(I));
  c.push(...block, ...loop);
  c.push(...get(I), ...get(M), ...geS, ...brIf(1));
  c.push(...ePtr(false), ...reduction(1, 1), ...outPtr, ...storeSum(PO, 0, ACC));
  c.push(...get(I), ...i32(1), ...add, ...set(I), ...br(0));
  c.push(...end, ...end);
  c.push(...get(J), ...i32(1), ...add, ...set(J), ...br(0));
  c.push(...end, ...end);
  return c;
}

function moduleBytes(): Uint8Array {
  const type = section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32], [I32], [I32], [I32]]), ...vec([])]]));
  const imports = section(2, vec([[...name("env"), ...name("memory"), 0x02, 0x00, ...uleb(1)]]));
  const funcs = section(3, vec([uleb(0)]));
  const exports = section(7, vec([[...name("mul"), 0x00, ...uleb(0)]]));
  const locals = vec([[...uleb(OSB - I + 1), I32], [...uleb(Y + 4 - ACC), V128]]);
  const code = [...locals, ...kernelBody(), ...end];
  const codeSection = section(10, vec([[...uleb(code.length), ...code]]));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...type, ...imports, ...funcs, ...exports, ...codeSection]);
}

// ---- the engine --------------------------------------------------------------------------------------

let compiled: object | null | undefined;

function wasmModule(): object | null {
  if (compiled === undefined) compiled = compileModule(moduleBytes);
  return compiled;
}

/** Whether this runtime runs the SIMD kernel (WebAssembly with fixed-width SIMD). */
export function wasmAvailable(): boolean {
  return wasmModule() !== null;
}

type MulFn = (a: number, b: number, out: number, m: number, n: number, rp: number, os: number) => void;

/**
 * The products of one layer: H's `groups` blocks [k, k] are copied once into the instance's memory;
 * `multiply(e, out)` copies E [rows, k] in, runs the kernel per group, and copies P out.
 */
export class WasmSymmMul {
  readonly rows: number;
  readonly k: number;
  readonly groups: number;
  private readonly kp: number;
  private readonly mulFn: MulFn;
  private readonly mem: Float64Array;
  private readonly hOff: number;
  private readonly eOff: number;
  private readonly oOff: number;

  constructor(h: Float64Array, groups: number, rows: number, k: number) {
    const mod = wasmModule();
    if (!mod) throw new Error("WebAssembly SIMD is not available");
    this.rows = rows;
    this.k = k;
    this.groups = groups;
    const kp = (this.kp = k + (k % 2));
    const values = groups * k * kp + 2 * rows * kp;
    const bytes = values * 8;
    if (bytes > 2 ** 32 - 65536) throw new Error(`layer too large for the WebAssembly kernel (${bytes} bytes)`);
    const memory = new wasmApi!.Memory({ initial: Math.max(1, Math.ceil(bytes / 65536)) });
    const instance = new wasmApi!.Instance(mod, { env: { memory } });
    this.mulFn = instance.exports["mul"] as MulFn;
    this.mem = new Float64Array(memory.buffer);
    this.hOff = 0;
    this.eOff = groups * k * kp;
    this.oOff = this.eOff + rows * kp;
    for (let g = 0; g < groups; g++)
      for (let j = 0; j < k; j++) this.mem.set(h.subarray((g * k + j) * k, (g * k + j + 1) * k), this.hOff + (g * k + j) * kp);
  }

  /** out [rows, k] = E [rows, k] H, group by group. */
  multiply(e: Float64Array, out: Float64Array): void {
    const { rows, k, kp, groups, mem } = this;
    if (kp === k) mem.set(e.subarray(0, rows * k), this.eOff);
    else for (let r = 0; r < rows; r++) mem.set(e.subarray(r * k, (r + 1) * k), this.eOff + r * kp);
    const rpg = rows / groups;
    for (let g = 0; g < groups; g++)
      this.mulFn(8 * (this.eOff + g * rpg * kp), 8 * (this.hOff + g * k * kp), 8 * (this.oOff + g * rpg * kp), rpg, k, kp, kp);
    if (kp === k) out.set(mem.subarray(this.oOff, this.oOff + rows * k));
    else for (let r = 0; r < rows; r++) out.set(mem.subarray(this.oOff + r * kp, this.oOff + r * kp + k), r * k);
  }
}

/**
 * A WebAssembly memory of float64 values with the rectangular kernel: `nt` computes
 * out[i * os + j] = sum_c A[i * rp + c] B[j * rp + c] (i < m, j < n) for matrices placed in `mem` (offsets in
 * elements; rp even, rows zero-padded to it). Throws when the memory would exceed 4 GB.
 */
export class WasmGemm {
  readonly mem: Float64Array;
  private readonly mulFn: MulFn;

  constructor(values: number) {
    const mod = wasmModule();
    if (!mod) throw new Error("WebAssembly SIMD is not available");
    const bytes = values * 8;
    if (bytes > 2 ** 32 - 65536) throw new Error(`too large for the WebAssembly kernel (${bytes} bytes)`);
    const memory = new wasmApi!.Memory({ initial: Math.max(1, Math.ceil(bytes / 65536)) });
    const instance = new wasmApi!.Instance(mod, { env: { memory } });
    this.mulFn = instance.exports["mul"] as MulFn;
    this.mem = new Float64Array(memory.buffer);
  }

  nt(aOff: number, bOff: number, outOff: number, m: number, n: number, rp: number, os: number): void {
    this.mulFn(8 * aOff, 8 * bOff, 8 * outOff, m, n, rp, os);
  }
}

/** out[m, k] = E[m, k] H[k, k] (H symmetric) with the SIMD kernel, for one-off products (benchmarks, tests). */
export function symmMulWasm(e: Float64Array, m: number, k: number, h: Float64Array, out: Float64Array): void {
  new WasmSymmMul(h, 1, m, k).multiply(e, out);
}
