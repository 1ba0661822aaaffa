/**
 * A minimal WebAssembly assembler for the k-means kernels (kmeans-kernel.ts, kmeans-scan.ts), the fine-tuning product (gemm-wasm.ts) and fine-tuning's per-weight loops (finetune-wasm.ts): LEB128
 * numbers, sections, and encoders of the instructions they use, each returning its bytes. No build
 * step or binary file: the modules are assembled at run time.
 */


export const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
export const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
};
export const name = (s: string): number[] => [...uleb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
export const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes];
export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
export const f32Bytes = (v: number): number[] => [...new Uint8Array(Float32Array.of(v).buffer)];

export const I32 = 0x7f;
export const F32 = 0x7d;
export const V128 = 0x7b;

/** Instruction encoders (each returns its bytes). */
export const op = {
  get: (l: number) => [0x20, ...uleb(l)],
  set: (l: number) => [0x21, ...uleb(l)],
  tee: (l: number) => [0x22, ...uleb(l)],
  i32: (v: number) => [0x41, ...sleb(v)],
  f32: (v: number) => [0x43, ...f32Bytes(v)],
  add: [0x6a],
  sub: [0x6b],
  mul: [0x6c],
  shl: [0x74],
  shrU: [0x76],
  ltS: [0x48],
  geS: [0x4e],
  ne: [0x47],
  f32Lt: [0x5d],
  f32Le: [0x5f],
  f32Mul: [0x94],
  select: [0x1b],
  i32Load: (offset = 0) => [0x28, 2, ...uleb(offset)],
  f32Load: (offset = 0) => [0x2a, 2, ...uleb(offset)],
  i32Store: (offset = 0) => [0x36, 2, ...uleb(offset)],
  f32Store: (offset = 0) => [0x38, 2, ...uleb(offset)],
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  if: [0x04, 0x40],
  else: [0x05],
  end: [0x0b],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  call: (f: number) => [0x10, ...uleb(f)],
  eq: [0x46],
  eqz: [0x45],
  gtS: [0x4a],
  and: [0x71],
  or: [0x72],
  xor: [0x73],
  popcnt: [0x69],
  /** i32.load8_u, i32.store8, i32.load16_u, i32.store16 (byte alignment). */
  u8Load: (offset = 0) => [0x2d, 0, ...uleb(offset)],
  i32Store8: (offset = 0) => [0x3a, 0, ...uleb(offset)],
  u16Load: (offset = 0) => [0x2f, 0, ...uleb(offset)],
  i32Store16: (offset = 0) => [0x3b, 0, ...uleb(offset)],
  f64: (x: number) => [0x44, ...new Uint8Array(Float64Array.of(x).buffer)],
  f64Load: (offset = 0) => [0x2b, 3, ...uleb(offset)],
  f64Store: (offset = 0) => [0x39, 3, ...uleb(offset)],
  f64Add: [0xa0],
  f64Sub: [0xa1],
  f64Mul: [0xa2],
  f64Neg: [0x9a],
  f64Sqrt: [0x9f],
  f64Eq: [0x61],
  f64Lt: [0x63],
  f64Gt: [0x64],
  f64Le: [0x65],
  f64Ge: [0x66],
  demote: [0xb6],
  promote: [0xbb],
};
export const simd = (code: number, ...imm: number[]): number[] => [0xfd, ...uleb(code), ...imm];
export const v = {
  load: (offset = 0) => simd(0x00, 4, ...uleb(offset)),
  load32Splat: (offset = 0) => simd(0x09, 2, ...uleb(offset)),
  store: (offset = 0) => simd(0x0b, 4, ...uleb(offset)),
  const: (bytes: number[]) => simd(0x0c, ...bytes),
  shuffle: (lanes: number[]) => simd(0x0d, ...lanes),
  i32Splat: simd(0x11),
  f32Splat: simd(0x13),
  f32Replace: (lane: number) => simd(0x20, lane),
  f32Extract: (lane: number) => simd(0x1f, lane),
  i32Extract: (lane: number) => simd(0x1b, lane),
  f32Lt: simd(0x43),
  bitselect: simd(0x52),
  i32Add: simd(0xae),
  f32Add: simd(0xe4),
  f32Sub: simd(0xe5),
  f32Mul: simd(0xe6),
  f32Pmin: simd(0xea),
  f32Pmax: simd(0xeb),
  f32Gt: simd(0x44),
  f32Sqrt: simd(0xe3),
  and: simd(0x4e),
  or: simd(0x50),
  xor: simd(0x51),
  i32MinS: simd(0xb6),
  i32MaxS: simd(0xb8),
  f64x2PromoteLow: simd(0x5f),
  f64x2Add: simd(0xf0),
};
export const i32x4 = (a: number, b: number, c: number, d: number): number[] =>
  v.const([...new Uint8Array(Int32Array.of(a, b, c, d).buffer)]);
export const f32x4 = (x: number): number[] => v.const([...new Uint8Array(Float32Array.of(x, x, x, x).buffer)]);

// ---- compiling ---------------------------------------------------------------------------------------

/** A WebAssembly memory (core's TypeScript library has no DOM types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}

/** The part of the WebAssembly API the kernels use. */
export interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
}

export const wasmApi = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

/** The module `bytes` assembles, compiled; null where this runtime has no WebAssembly or refuses it (no SIMD, say). */
export function compileModule(bytes: () => Uint8Array): object | null {
  try {
    const b = bytes();
    return wasmApi && wasmApi.validate(b) ? new wasmApi.Module(b) : null;
  } catch {
    return null;
  }
}
