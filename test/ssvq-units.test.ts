import { test } from "node:test";
import assert from "node:assert/strict";
import { packFields, planeWidths, unpackFields, planeLookupTable, indexBits } from "../src/core/ssvq/pack.js";
import { fromRows, toRows, subvectorShape, toSubvectors, fromSubvectors } from "../src/core/ssvq/layout.js";
import { quantizeRows, reconstructRows, relativeError } from "../src/core/ssvq/quantize.js";
import { estimateBits, layerBits } from "../src/core/ssvq/bits.js";
import type { RowLayout } from "../src/core/onnx/weights.js";
import { Rng } from "../src/core/rng.js";
import { randomValues } from "./helpers/models.js";

test("bit planes: every width from 1 to 16 packs and unpacks exactly, with no wasted bits", () => {
  const rng = new Rng(3);
  for (let bits = 1; bits <= 16; bits++) {
    const widths = planeWidths(bits);
    assert.equal(widths.reduce((a, p) => a + p.width, 0), bits);
    const n = 1000 + bits;
    const values = Uint32Array.from({ length: n }, () => rng.int(2 ** bits));
    const planes = packFields(values, bits);
    assert.deepEqual(unpackFields(planes, n), values);
    const bytes = planes.reduce((a, p) => a + p.bytes.length, 0);
    assert.ok(bytes <= Math.ceil((n * bits) / 8) + planes.length, `bits ${bits}: ${bytes} bytes`);
  }
  assert.deepEqual(planeWidths(6), [
    { width: 4, shift: 0 },
    { width: 2, shift: 4 },
  ]);
  assert.equal(indexBits(16), 4);
  assert.equal(indexBits(64), 6);
  assert.equal(indexBits(100), 7);
});

test("lookup tables agree with the packing: table[byte][j] is field j", () => {
  for (const w of [1, 2, 4]) {
    const per = 8 / w;
    const values = Uint32Array.from({ length: per * 5 }, (_, i) => (i * 7) % (1 << w));
    const [plane] = packFields(values, w);
    const lut = planeLookupTable(w);
    const viaLut: number[] = [];
    for (const byte of plane!.bytes) for (let j = 0; j < per; j++) viaLut.push(lut[byte * per + j]!);
    assert.deepEqual(viaLut, Array.from(values));
  }
});

test("row layouts: toRows and fromRows are inverse, and put the reduction dimension in columns", () => {
  const layouts: [RowLayout, number][] = [
    [{ kind: "conv", rows: 4, cols: 18, groups: 1, transposed: false }, 72],
    [{ kind: "gemm", rows: 5, cols: 6, groups: 1, transposed: true }, 30],
    [{ kind: "matmul", rows: 3, cols: 7, groups: 1, transposed: true }, 21],
    [{ kind: "convtranspose", rows: 24, cols: 2, groups: 2, transposed: true }, 48],
  ];
  for (const [layout, n] of layouts) {
    const v = randomValues(n, n);
    assert.deepEqual(fromRows(toRows(v, layout), layout), v, layout.kind);
  }
  // MatMul B [K=2, N=3] = [[1,2,3],[4,5,6]] -> rows [N, K] = [[1,4],[2,5],[3,6]].
  const m = toRows(Float32Array.from([1, 2, 3, 4, 5, 6]), { kind: "matmul", rows: 3, cols: 2, groups: 1, transposed: true });
  assert.deepEqual(Array.from(m), [1, 4, 2, 5, 3, 6]);
  // ConvTranspose [Cin=2, Cout/g=1, 1, 2], g=2: group 0 row = W[0,0,0,:] read as a column over Cin/g=1.
  const ct = toRows(Float32Array.from([1, 2, 3, 4]), { kind: "convtranspose", rows: 4, cols: 1, groups: 2, transposed: true });
  assert.deepEqual(Array.from(ct), [1, 2, 3, 4]);
});

test("sub-vectors pad the last one of each row with zeros", () => {
  const s = subvectorShape(2, 5, 4);
  assert.deepEqual([s.perRow, s.count, s.paddedCols], [2, 4, 8]);
  const rows = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const sub = toSubvectors(rows, s);
  assert.deepEqual(Array.from(sub), [1, 2, 3, 4, 5, 0, 0, 0, 6, 7, 8, 9, 10, 0, 0, 0]);
  assert.deepEqual(fromSubvectors(sub, s), rows);
});

test("SSVQ: non-negative codebook, signs are sign(W), error below VQ at the same k and d", async () => {
  const rows = 64;
  const cols = 72;
  const w = randomValues(rows * cols, 11);
  const ssvq = await quantizeRows(w, rows, cols, { mode: "ssvq", k: 16, d: 4, seed: 1, kmeansIters: 25 });
  const vq = await quantizeRows(w, rows, cols, { mode: "vq", k: 16, d: 4, seed: 1, kmeansIters: 25 });
  assert.equal(ssvq.mode, "ssvq");
  if (ssvq.mode !== "ssvq") return;
  assert.ok(ssvq.codebook.every((v) => v >= 0), "SSVQ codebook must be non-negative");
  const rec = reconstructRows(ssvq);
  for (let i = 0; i < w.length; i++) if (w[i] !== 0 && rec[i] !== 0) assert.equal(Math.sign(rec[i]!), Math.sign(w[i]!));
  const eS = relativeError(w, rec);
  const eV = relativeError(w, reconstructRows(vq));
  assert.ok(eS < eV, `SSVQ ${eS} should beat VQ ${eV} at equal k, d`);
  // Bits: 1 sign + log2(16)/4 index + codebook share.
  const b = layerBits(ssvq, 32);
  assert.equal(b.bitsPerWeight, 1 + 4 / 4 + (16 * 4 * 32) / (rows * cols));
  assert.deepEqual(estimateBits("ssvq", 16, 4, rows, cols, 32), b);
});

test("INT8 and INT4 round to nearest per output row", async () => {
  const w = randomValues(8 * 50, 5);
  for (const [mode, bound] of [
    ["int8", 0.01],
    ["int4", 0.15],
  ] as const) {
    const q = await quantizeRows(w, 8, 50, { mode, k: 0, d: 0, seed: 0, kmeansIters: 0 });
    const rec = reconstructRows(q);
    const e = relativeError(w, rec);
    assert.ok(e < bound, `${mode} error ${e}`);
    if (q.mode === "int4" || q.mode === "int8") {
      const lim = q.mode === "int4" ? 8 : 128;
      assert.ok(q.q.every((v) => v >= -lim && v < lim));
      for (let r = 0; r < 8; r++) {
        const max = Math.max(...Array.from(w.subarray(r * 50, r * 50 + 50), Math.abs));
        assert.ok(Math.abs(q.scales[r]! * (lim - 1) - max) < 1e-6 * max + 1e-7);
      }
    }
  }
});
