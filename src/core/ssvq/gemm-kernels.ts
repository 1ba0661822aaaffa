/**
 * The heavy product of fine-tuning (DESIGN.md section 1): P = E H, with E = W_hat - W a row matrix
 * [m, k] and H = X X^T / n a symmetric [k, k] block, all row-major float64. The gradient is G = 2 P and
 * the loss sum(E .* P). One call costs 2 m k^2 flops; it runs once per fine-tuning iteration and group.
 *
 * Two kernels, both bit-for-bit reproducible on every machine (fixed summation order, no threads):
 *  - `symmMulPlain`: the textbook triple loop (out[i, j] = sum_c E[i, c] H[c, j]), the reference;
 *  - `symmMulBlocked`: uses H's symmetry so both operands are read along rows (out[i, j] = E row i . H
 *    row j), in 4 x 4 register tiles (8 loads feed 16 multiply-adds), optionally over blocks of `kc`
 *    columns of the reduction. `npm run bench -- finetune` (src/bench/finetune.ts) times both, the
 *    WebAssembly SIMD kernel (`gemm-wasm.ts`, about 4x faster, what fine-tuning uses where available) and
 *    onnxruntime's MatMul.
 *
 * Both kernels give the same values up to rounding (they sum in different orders), each always the same.
 */

/**
 * Columns of the reduction per block in `symmMulBlocked`. `bench finetune` found no gain from blocking
 * the reduction (kc 256 and 1024 were as fast or slower than none at 400, 1152 and 2304 columns: the
 * register tiles already reuse each load 4 times, and scalar JavaScript is far from memory-bound), so
 * the default is the whole reduction.
 */
export const DEFAULT_KC = 1 << 30;

/** out[m, k] = E[m, k] H[k, k]: the textbook loop (H read down its columns). */
export function symmMulPlain(e: Float64Array, m: number, k: number, h: Float64Array, out: Float64Array): void {
  for (let i = 0; i < m; i++) {
    const ei = i * k;
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let c = 0; c < k; c++) s += e[ei + c]! * h[c * k + j]!;
      out[ei + j] = s;
    }
  }
}

/**
 * out[m, k] = E[m, k] H[k, k] for a symmetric H (only its symmetry is used: out[i, j] = E_i . H_j).
 * `e`, `h` and `out` may be subarrays; `out` must not overlap `e` or `h`.
 */
export function symmMulBlocked(e: Float64Array, m: number, k: number, h: Float64Array, out: Float64Array, kc = DEFAULT_KC): void {
  out.fill(0, 0, m * k);
  const m4 = m - (m % 4);
  const k4 = k - (k % 4);
  for (let c0 = 0; c0 < k; c0 += kc) {
    const c1 = Math.min(k, c0 + kc);
    // Full 4 x 4 tiles: j (rows of H) outside, so the four H rows stay in cache while E streams past.
    for (let j = 0; j < k4; j += 4) {
      const h0 = j * k;
      const h1 = h0 + k;
      const h2 = h1 + k;
      const h3 = h2 + k;
      for (let i = 0; i < m4; i += 4) {
        const e0 = i * k;
        const e1 = e0 + k;
        const e2 = e1 + k;
        const e3 = e2 + k;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
        let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
        let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
        for (let c = c0; c < c1; c++) {
          const x0 = e[e0 + c]!;
          const x1 = e[e1 + c]!;
          const x2 = e[e2 + c]!;
          const x3 = e[e3 + c]!;
          const y0 = h[h0 + c]!;
          const y1 = h[h1 + c]!;
          const y2 = h[h2 + c]!;
          const y3 = h[h3 + c]!;
          s00 += x0 * y0;
          s01 += x0 * y1;
          s02 += x0 * y2;
          s03 += x0 * y3;
          s10 += x1 * y0;
          s11 += x1 * y1;
          s12 += x1 * y2;
          s13 += x1 * y3;
          s20 += x2 * y0;
          s21 += x2 * y1;
          s22 += x2 * y2;
          s23 += x2 * y3;
          s30 += x3 * y0;
          s31 += x3 * y1;
          s32 += x3 * y2;
          s33 += x3 * y3;
        }
        out[e0 + j] += s00;
        out[e0 + j + 1] += s01;
        out[e0 + j + 2] += s02;
        out[e0 + j + 3] += s03;
        out[e1 + j] += s10;
        out[e1 + j + 1] += s11;
        out[e1 + j + 2] += s12;
        out[e1 + j + 3] += s13;
        out[e2 + j] += s20;
        out[e2 + j + 1] += s21;
        out[e2 + j + 2] += s22;
        out[e2 + j + 3] += s23;
        out[e3 + j] += s30;
        out[e3 + j + 1] += s31;
        out[e3 + j + 2] += s32;
        out[e3 + j + 3] += s33;
      }
      // The last m % 4 rows of E against these four H rows.
      for (let i = m4; i < m; i++) {
        const ei = i * k;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let c = c0; c < c1; c++) {
          const x = e[ei + c]!;
          s0 += x * h[h0 + c]!;
          s1 += x * h[h1 + c]!;
          s2 += x * h[h2 + c]!;
          s3 += x * h[h3 + c]!;
        }
        out[ei + j] += s0;
        out[ei + j + 1] += s1;
        out[ei + j + 2] += s2;
        out[ei + j + 3] += s3;
      }
    }
    // The last k % 4 rows of H against every row of E.
    for (let j = k4; j < k; j++) {
      const hj = j * k;
      for (let i = 0; i < m; i++) {
        const ei = i * k;
        let s = 0;
        for (let c = c0; c < c1; c++) s += e[ei + c]! * h[hj + c]!;
        out[ei + j] += s;
      }
    }
  }
}

/**
 * out[i * ldo + j] = sum_c A[i * red + c] B[j * red + c] for i < m, j < n: the rectangular "dot" form
 * A B^T that the products with a factor statistic use (`stat-product.ts`), in the 4 x 4 register tiles of
 * `symmMulBlocked`. Each output is summed in column order over the whole reduction, so a row's values do
 * not depend on the other rows computed with it. `out` must not overlap `a` or `b`.
 */
export function gemmNT(a: Float64Array, m: number, b: Float64Array, n: number, red: number, out: Float64Array, ldo: number): void {
  const m4 = m - (m % 4);
  const n4 = n - (n % 4);
  for (let j = 0; j < n4; j += 4) {
    const b0 = j * red;
    const b1 = b0 + red;
    const b2 = b1 + red;
    const b3 = b2 + red;
    for (let i = 0; i < m4; i += 4) {
      const a0 = i * red;
      const a1 = a0 + red;
      const a2 = a1 + red;
      const a3 = a2 + red;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let c = 0; c < red; c++) {
        const x0 = a[a0 + c]!;
        const x1 = a[a1 + c]!;
        const x2 = a[a2 + c]!;
        const x3 = a[a3 + c]!;
        const y0 = b[b0 + c]!;
        const y1 = b[b1 + c]!;
        const y2 = b[b2 + c]!;
        const y3 = b[b3 + c]!;
        s00 += x0 * y0;
        s01 += x0 * y1;
        s02 += x0 * y2;
        s03 += x0 * y3;
        s10 += x1 * y0;
        s11 += x1 * y1;
        s12 += x1 * y2;
        s13 += x1 * y3;
        s20 += x2 * y0;
        s21 += x2 * y1;
        s22 += x2 * y2;
        s23 += x2 * y3;
        s30 += x3 * y0;
        s31 += x3 * y1;
        s32 += x3 * y2;
        s33 += x3 * y3;
      }
      let o = i * ldo + j;
      out[o] = s00;
      out[o + 1] = s01;
      out[o + 2] = s02;
      out[o + 3] = s03;
      o += ldo;
      out[o] = s10;
      out[o + 1] = s11;
      out[o + 2] = s12;
      out[o + 3] = s13;
      o += ldo;
      out[o] = s20;
      out[o + 1] = s21;
      out[o + 2] = s22;
      out[o + 3] = s23;
      o += ldo;
      out[o] = s30;
      out[o + 1] = s31;
      out[o + 2] = s32;
      out[o + 3] = s33;
    }
    for (let i = m4; i < m; i++) {
      const ai = i * red;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let c = 0; c < red; c++) {
        const x = a[ai + c]!;
        s0 += x * b[b0 + c]!;
        s1 += x * b[b1 + c]!;
        s2 += x * b[b2 + c]!;
        s3 += x * b[b3 + c]!;
      }
      const o = i * ldo + j;
      out[o] = s0;
      out[o + 1] = s1;
      out[o + 2] = s2;
      out[o + 3] = s3;
    }
  }
  for (let j = n4; j < n; j++) {
    const bj = j * red;
    for (let i = 0; i < m; i++) {
      const ai = i * red;
      let s = 0;
      for (let c = 0; c < red; c++) s += a[ai + c]! * b[bj + c]!;
      out[i * ldo + j] = s;
    }
  }
}
