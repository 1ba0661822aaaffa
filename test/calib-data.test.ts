import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import jpeg from "jpeg-js";
import pngjs from "pngjs";
import { TensorProtoSchema, TensorProto_DataType } from "onnx-buf";
import { isInputError } from "../src/core/errors.js";
import { decodeImage } from "../src/core/calib/image.js";
import { parseNpy, writeNpy, type ElemType, type NdArray, type TypedArray } from "../src/core/calib/npy.js";
import {
  f16ToNumber,
  numberToF16,
  parsePreprocess,
  resizeBilinear,
  shapeSample,
  type Preprocess,
} from "../src/core/calib/preprocess.js";
import {
  parseLabels,
  parseRange,
  prepareData,
  randomData,
  selectIndices,
  type Batch,
  type ModelInputSpec,
  type PreparedData,
  type SampleSource,
} from "../src/core/calib/source.js";
import { decodeTensorProto, encodeTensorProto } from "../src/core/calib/tensor-pb.js";
import { naturalCompare, openData, readLabels } from "../src/io/calib-files.js";
import { fixture } from "./helpers/paths.js";

const X = fixture("fashion_test2000_x_u8.npy");
const Y = fixture("fashion_test2000_y_u8.npy");
const LENET: ModelInputSpec[] = [{ name: "input", elemType: "float32", shape: [null, 1, 28, 28] }];

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), "ssvq-calib-"));
});
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** All batches of a prepared source, concatenated per input. */
async function collect(d: PreparedData): Promise<{ batches: Batch[]; feeds: Record<string, { dims: number[]; data: number[] }> }> {
  const batches: Batch[] = [];
  const feeds: Record<string, { dims: number[]; data: number[] }> = {};
  for await (const b of d.batches()) {
    batches.push(b);
    for (const [name, f] of Object.entries(b.feeds)) {
      const acc = (feeds[name] ??= { dims: [0, ...f.dims.slice(1)], data: [] });
      acc.dims[0]! += f.dims[0]!;
      for (const v of Array.from(f.data as ArrayLike<number | bigint>)) acc.data.push(Number(v));
    }
  }
  return { batches, feeds };
}

async function rejects(fn: () => Promise<unknown> | unknown, pattern: RegExp): Promise<void> {
  await assert.rejects(
    async () => fn(),
    (e: unknown) => {
      assert.ok(isInputError(e), `expected InputError, got ${String(e)}`);
      assert.match((e as Error).message, pattern);
      return true;
    },
  );
}

const fixtureX = (): NdArray => parseNpy(readFileSync(X), X);

describe("npy", () => {
  const samples: Record<ElemType, number[]> = {
    uint8: [0, 1, 255, 7, 128, 3],
    int8: [-128, 127, 0, -1, 5, 6],
    uint16: [0, 65535, 1, 2, 3, 4],
    int16: [-32768, 32767, 0, -1, 2, 3],
    uint32: [0, 4294967295, 1, 2, 3, 4],
    int32: [-2147483648, 2147483647, 0, -1, 2, 3],
    uint64: [0, 2 ** 53, 1, 2, 3, 4],
    int64: [-(2 ** 53), 2 ** 53, 0, -1, 2, 3],
    float16: [0x3c00, 0xc000, 0x7bff, 0x0001, 0, 0x8000],
    float32: [1.5, -2.25, 3e38, 1e-45, 0, -0],
    float64: [Math.PI, -1e300, 5e-324, 0, 1, 2],
    bool: [1, 0, 1, 1, 0, 0],
  };
  const ctor: Record<ElemType, (v: number[]) => TypedArray> = {
    uint8: (v) => Uint8Array.from(v),
    int8: (v) => Int8Array.from(v),
    uint16: (v) => Uint16Array.from(v),
    int16: (v) => Int16Array.from(v),
    uint32: (v) => Uint32Array.from(v),
    int32: (v) => Int32Array.from(v),
    uint64: (v) => BigUint64Array.from(v, BigInt),
    int64: (v) => BigInt64Array.from(v, BigInt),
    float16: (v) => Uint16Array.from(v),
    float32: (v) => Float32Array.from(v),
    float64: (v) => Float64Array.from(v),
    bool: (v) => Uint8Array.from(v),
  };
  for (const t of Object.keys(samples) as ElemType[]) {
    test(`round trip ${t}`, () => {
      for (const shape of [[2, 3], [6], [1, 2, 3, 1]]) {
        const arr: NdArray = { elemType: t, shape, data: ctor[t](samples[t]) };
        const bytes = writeNpy(arr);
        assert.equal((bytes.length - arr.data.byteLength) % 64, 0, "header padded to 64");
        const back = parseNpy(bytes, "x.npy");
        assert.equal(back.elemType, t);
        assert.deepEqual(back.shape, shape);
        assert.deepEqual(Array.from(back.data as ArrayLike<unknown>), Array.from(arr.data as ArrayLike<unknown>));
        assert.equal(back.data.buffer, bytes.buffer, "zero-copy view");
      }
    });
  }

  test("scalar and empty shapes; unaligned input is copied", () => {
    const s = parseNpy(writeNpy({ elemType: "float32", shape: [], data: Float32Array.of(4) }), "s.npy");
    assert.deepEqual(s.shape, []);
    assert.equal((s.data as Float32Array)[0], 4);
    const e = parseNpy(writeNpy({ elemType: "int32", shape: [0, 3], data: new Int32Array(0) }), "e.npy");
    assert.deepEqual(e.shape, [0, 3]);
    const bytes = writeNpy({ elemType: "float64", shape: [2], data: Float64Array.of(1, 2) });
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const c = parseNpy(shifted.subarray(1), "c.npy");
    assert.deepEqual(Array.from(c.data as Float64Array), [1, 2]);
  });

  test("reads version 2 and 3 headers and numpy's own files", () => {
    const mk = (version: 2 | 3, dict: string, data: Uint8Array): Uint8Array => {
      const header = new TextEncoder().encode(dict);
      const total = Math.ceil((12 + header.length + 1) / 64) * 64;
      const out = new Uint8Array(total + data.length);
      out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
      new DataView(out.buffer).setUint32(8, total - 12, true);
      out.set(header, 12);
      out.fill(0x20, 12 + header.length, total - 1);
      out[total - 1] = 0x0a;
      out.set(data, total);
      return out;
    };
    const a = parseNpy(mk(2, "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", Uint8Array.of(1, 0, 255, 255)), "v2.npy");
    assert.deepEqual(Array.from(a.data as Int16Array), [1, -1]);
    const b = parseNpy(mk(3, "{'descr': '|u1', 'fortran_order': False, 'shape': (3L,), 'é': 1}", Uint8Array.of(9, 8, 7)), "v3.npy");
    assert.deepEqual(Array.from(b.data as Uint8Array), [9, 8, 7]);
    const x = fixtureX();
    assert.deepEqual(x.shape, [2000, 28, 28]);
    assert.equal(x.elemType, "uint8");
    const logits = parseNpy(readFileSync(fixture("fashion_lenet5.test2000_logits_f32.npy")), "logits");
    assert.deepEqual(logits.shape, [2000, 10]);
    assert.equal(logits.elemType, "float32");
  });

  test("refuses big-endian, Fortran order, truncated data, bad magic, unsupported dtypes", () => {
    const good = writeNpy({ elemType: "float32", shape: [2, 2], data: new Float32Array(4) });
    const patch = (from: string, to: string): Uint8Array => {
      const text = Buffer.from(good).toString("latin1").replace(from, to);
      return new Uint8Array(Buffer.from(text, "latin1"));
    };
    const cases: [Uint8Array, RegExp][] = [
      [patch("'<f4'", "'>f4'"), /bad\.npy stores big-endian values \('>f4'\).*astype\('<f4'\)/],
      [patch("'fortran_order': False", "'fortran_order': True "), /bad\.npy stores its array in Fortran .*ascontiguousarray/],
      [good.subarray(0, good.length - 3), /bad\.npy is truncated: .*16 bytes, but only 13/],
      [Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), /bad\.npy is not a NumPy \.npy file/],
      [patch("'<f4'", "'<c8'"), /bad\.npy has dtype '<c8', which is not supported/],
      [patch("'<f4'", "'|O8'"), /bad\.npy has dtype '\|O8', which is not supported/],
      [good.subarray(0, 40), /bad\.npy is truncated inside its \.npy header/],
    ];
    for (const [bytes, re] of cases)
      assert.throws(
        () => parseNpy(bytes, "bad.npy"),
        (e: unknown) => isInputError(e) && re.test((e as Error).message),
        re.source,
      );
    // Fortran order is harmless (and accepted) when at most one dim exceeds 1.
    const vec = writeNpy({ elemType: "uint8", shape: [1, 3], data: Uint8Array.of(1, 2, 3) });
    const fv = Buffer.from(Buffer.from(vec).toString("latin1").replace("'fortran_order': False", "'fortran_order': True "), "latin1");
    assert.deepEqual(Array.from(parseNpy(fv, "fv.npy").data as Uint8Array), [1, 2, 3]);
  });
});

describe("TensorProto .pb", () => {
  test("raw_data and typed fields decode to the same tensor", () => {
    const f = Float32Array.of(1, -2, 3.5, 4, 5, 6);
    const raw = decodeTensorProto(encodeTensorProto({ name: "x", elemType: "float32", shape: [2, 3], data: f }), "x.pb");
    assert.equal(raw.name, "x");
    assert.deepEqual(raw.shape, [2, 3]);
    assert.deepEqual(Array.from(raw.data as Float32Array), Array.from(f));
    const enc = (init: Parameters<typeof create<typeof TensorProtoSchema>>[1]): Uint8Array =>
      toBinary(TensorProtoSchema, create(TensorProtoSchema, init));
    const typed = decodeTensorProto(enc({ dims: [2n, 3n], dataType: TensorProto_DataType.FLOAT, floatData: Array.from(f) }), "t.pb");
    assert.deepEqual(Array.from(typed.data as Float32Array), Array.from(f));
    const i64 = decodeTensorProto(enc({ dims: [3n], dataType: TensorProto_DataType.INT64, int64Data: [1n, -2n, 3n] }), "i.pb");
    assert.equal(i64.elemType, "int64");
    assert.deepEqual(Array.from(i64.data as BigInt64Array), [1n, -2n, 3n]);
    const h = decodeTensorProto(enc({ dims: [2n], dataType: TensorProto_DataType.FLOAT16, int32Data: [0x3c00, 0xc000] }), "h.pb");
    assert.equal(h.elemType, "float16");
    assert.deepEqual(Array.from(h.data as Uint16Array, f16ToNumber), [1, -2]);
    const u8 = decodeTensorProto(enc({ dims: [2n], dataType: TensorProto_DataType.UINT8, int32Data: [7, 255] }), "u.pb");
    assert.deepEqual(Array.from(u8.data as Uint8Array), [7, 255]);
    const d = decodeTensorProto(enc({ dims: [1n], dataType: TensorProto_DataType.DOUBLE, doubleData: [0.1] }), "d.pb");
    assert.deepEqual(Array.from(d.data as Float64Array), [0.1]);
    const bf = decodeTensorProto(enc({ dims: [1n], dataType: TensorProto_DataType.BFLOAT16, int32Data: [0x3fc0] }), "b.pb");
    assert.equal(bf.elemType, "float32");
    assert.deepEqual(Array.from(bf.data as Float32Array), [1.5]);
  });

  test("refuses truncated, string and garbage tensors", () => {
    const enc = (init: Parameters<typeof create<typeof TensorProtoSchema>>[1]): Uint8Array =>
      toBinary(TensorProtoSchema, create(TensorProtoSchema, init));
    assert.throws(
      () => decodeTensorProto(enc({ dims: [4n], dataType: TensorProto_DataType.FLOAT, rawData: new Uint8Array(12) }), "short.pb"),
      (e: unknown) => isInputError(e) && /short\.pb is truncated: dims \[4\] of float32 need 16 bytes/.test((e as Error).message),
    );
    assert.throws(
      () => decodeTensorProto(enc({ dims: [1n], dataType: TensorProto_DataType.STRING, stringData: [new Uint8Array(1)] }), "s.pb"),
      (e: unknown) => isInputError(e) && /s\.pb holds STRING data, which is not supported/.test((e as Error).message),
    );
    assert.throws(
      () => decodeTensorProto(Uint8Array.of(0xff, 0xff, 0xff, 0xff), "junk.pb"),
      (e: unknown) => isInputError(e) && /junk\.pb is not a valid ONNX TensorProto/.test((e as Error).message),
    );
  });
});

describe("images", () => {
  test("PNG gray and RGB; JPEG RGB", () => {
    const gray = new pngjs.PNG({ width: 3, height: 2 });
    gray.data = Buffer.from([0, 10, 20, 30, 40, 255]);
    const g = decodeImage(pngjs.PNG.sync.write(gray, { colorType: 0, inputColorType: 0, inputHasAlpha: false }), "g.png");
    assert.deepEqual([g.height, g.width, g.channels], [2, 3, 1]);
    assert.deepEqual(Array.from(g.data), [0, 10, 20, 30, 40, 255]);

    const rgba = new pngjs.PNG({ width: 2, height: 1 });
    rgba.data = Buffer.from([1, 2, 3, 0, 250, 251, 252, 128]);
    const c = decodeImage(pngjs.PNG.sync.write(rgba), "c.png");
    assert.equal(c.channels, 3);
    assert.deepEqual(Array.from(c.data), [1, 2, 3, 250, 251, 252], "alpha dropped, not blended");

    const w = 16;
    const h = 8;
    const px = Buffer.alloc(w * h * 4);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) px.set([x * 16, y * 32, 128, 255], (y * w + x) * 4);
    const jpg = jpeg.encode({ width: w, height: h, data: px }, 100).data;
    const j = decodeImage(jpg, "j.jpg");
    assert.deepEqual([j.height, j.width, j.channels], [h, w, 3]);
    let maxErr = 0;
    for (let i = 0; i < w * h; i++) for (let ch = 0; ch < 3; ch++) maxErr = Math.max(maxErr, Math.abs(j.data[i * 3 + ch]! - px[i * 4 + ch]!));
    assert.ok(maxErr <= 8, `JPEG error ${maxErr}`);

    assert.throws(() => decodeImage(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), "x.png"), (e: unknown) => isInputError(e) && /x\.png is neither a PNG nor a JPEG/.test((e as Error).message));
    const broken = pngjs.PNG.sync.write(gray, { colorType: 0, inputColorType: 0, inputHasAlpha: false }).subarray(0, 30);
    assert.throws(() => decodeImage(broken, "b.png"), (e: unknown) => isInputError(e) && /b\.png is not a readable PNG/.test((e as Error).message));
  });
});

describe("preprocess", () => {
  test("option parsing", () => {
    assert.deepEqual(parsePreprocess({ scale: "1/255", mean: "0.485, 0.456,0.406", std: "[0.229 0.224 0.225]", size: "224x200", layout: "NHWC" }), {
      scale: "1/255",
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
      size: [224, 200],
      layout: "nhwc",
    });
    assert.deepEqual(parsePreprocess({ size: "32" }).size, [32, 32]);
    assert.throws(() => parsePreprocess({ scale: "1/0" }), /--scale "1\/0" is not a number or a fraction like 1\/255/);
    assert.throws(() => parsePreprocess({ scale: "abc" }), /--scale "abc"/);
    assert.throws(() => parsePreprocess({ mean: "a,b" }), /--mean "a,b" is not a list of numbers/);
    assert.throws(() => parsePreprocess({ std: "0.5,0" }), /--std must not contain 0/);
    assert.throws(() => parsePreprocess({ size: "22x" }), /--size "22x" is not a size like 224x224/);
    assert.throws(() => parsePreprocess({ layout: "chw" }), /--layout "chw" must be nchw or nhwc/);
  });

  test("bilinear resize", () => {
    // 4x4 -> 2x2 with half-pixel centres averages 2x2 blocks.
    const src = Float64Array.from({ length: 16 }, (_, i) => i);
    assert.deepEqual(Array.from(resizeBilinear(src, 4, 4, 1, 2, 2)), [2.5, 4.5, 10.5, 12.5]);
    // 2x2 -> 4x4 (matches OpenCV INTER_LINEAR / ONNX Resize half_pixel).
    const up = resizeBilinear(Float64Array.of(0, 4, 8, 12), 2, 2, 1, 4, 4);
    assert.deepEqual(Array.from(up), [0, 1, 3, 4, 2, 3, 5, 6, 6, 7, 9, 10, 8, 9, 11, 12]);
    // Constant stays constant, channels stay apart.
    const rgb = Float64Array.from({ length: 3 * 3 * 3 }, (_, i) => [10, 20, 30][i % 3]!);
    const r = resizeBilinear(rgb, 3, 3, 3, 5, 7);
    for (let i = 0; i < r.length; i++) assert.ok(Math.abs(r[i]! - [10, 20, 30][i % 3]!) < 1e-9);
    // Through shapeSample: a 4x4 gray image to a [1,2,2] input with --size 2x2.
    const img = { kind: "image" as const, image: { height: 4, width: 4, channels: 1 as const, data: Float32Array.from(src) } };
    const out = shapeSample(img, { name: "x", dims: [1, 2, 2], elemType: "float32" }, { size: [2, 2] }, "img");
    assert.deepEqual(out.dims, [1, 2, 2]);
    assert.deepEqual(Array.from(out.data as Float32Array), [2.5, 4.5, 10.5, 12.5]);
    assert.throws(
      () => shapeSample(img, { name: "x", dims: [1, 2, 2], elemType: "float32" }, {}, "a.png"),
      (e: unknown) => isInputError(e) && /a\.png is 4x4 \(HxW\) but input "x" takes 2x2; pass --size 2x2/.test((e as Error).message),
    );
  });

  test("scale, mean and std per channel; layouts; gray/RGB conversion", () => {
    // A 2x2 RGB image, HWC.
    const hwc = Float32Array.of(0, 51, 102, 255, 204, 153, 10, 20, 30, 40, 50, 60);
    const img = { kind: "image" as const, image: { height: 2, width: 2, channels: 3 as const, data: hwc } };
    const pre: Preprocess = { scale: "1/255", mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5] };
    const m = [0.5, 0.4, 0.3];
    const s = [0.2, 0.25, 0.5];
    const nchw = shapeSample(img, { name: "x", dims: [3, 2, 2], elemType: "float32" }, pre, "img");
    assert.deepEqual(nchw.dims, [3, 2, 2]);
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < 4; p++)
        assert.ok(Math.abs((nchw.data as Float32Array)[c * 4 + p]! - (hwc[p * 3 + c]! / 255 - m[c]!) / s[c]!) < 1e-6);
    // An nhwc model (inferred from [2,2,3]) keeps HWC order.
    const nhwc = shapeSample(img, { name: "x", dims: [2, 2, 3], elemType: "float32" }, pre, "img");
    assert.deepEqual(nhwc.dims, [2, 2, 3]);
    for (let i = 0; i < 12; i++) assert.ok(Math.abs((nhwc.data as Float32Array)[i]! - (hwc[i]! / 255 - m[i % 3]!) / s[i % 3]!) < 1e-6);
    // --layout overrides inference for dynamic shapes.
    const dyn = shapeSample(img, { name: "x", dims: [null, null, null], elemType: "float32" }, { layout: "nhwc" }, "img");
    assert.deepEqual(dyn.dims, [2, 2, 3]);
    // RGB to a 1-channel input: luma.
    const gray = shapeSample(img, { name: "x", dims: [1, 2, 2], elemType: "float32" }, {}, "img");
    assert.ok(Math.abs((gray.data as Float32Array)[0]! - (0.587 * 51 + 0.114 * 102)) < 1e-4);
    // Gray array to 3 channels: copies.
    const g3 = shapeSample({ kind: "tensor", array: { elemType: "uint8", shape: [2, 2], data: Uint8Array.of(1, 2, 3, 4) } }, { name: "x", dims: [3, 2, 2], elemType: "float32" }, {}, "g");
    assert.deepEqual(Array.from(g3.data as Float32Array), [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
    // Mean list length must fit the channels.
    assert.throws(
      () => shapeSample(img, { name: "x", dims: [3, 2, 2], elemType: "float32" }, { mean: [1, 2] }, "img"),
      /--mean has 2 values but input "x" has 3 channel\(s\); give 1 or 3/,
    );
    // float16 inputs get half bits.
    const h = shapeSample(img, { name: "x", dims: [3, 2, 2], elemType: "float16" }, { scale: 0.5 }, "img");
    assert.ok(h.data instanceof Uint16Array);
    assert.equal(f16ToNumber((h.data as Uint16Array)[1]!), 127.5);
    assert.equal(numberToF16(1), 0x3c00);
    assert.equal(numberToF16(65504), 0x7bff);
    assert.equal(numberToF16(1e6), 0x7c00);
    assert.equal(f16ToNumber(numberToF16(2 ** -24)), 2 ** -24);
  });

  test("integer inputs take integer values as they are", async () => {
    const d = await collect(await openData([{ name: "ids", elemType: "int64", shape: [null, 784] }], { path: X, range: "0:1", preprocess: { scale: "1/255" } }));
    assert.deepEqual(d.feeds.ids!.data, Array.from(fixtureX().data.subarray(0, 784) as Uint8Array));
    const f = join(tmp, "frac.npy");
    writeFileSync(f, writeNpy({ elemType: "float32", shape: [1, 2], data: Float32Array.of(1, 2.5) }));
    await rejects(
      () => openData([{ name: "ids", elemType: "int32", shape: [null, 2] }], { path: f }),
      /sample 0 of .*frac\.npy holds non-integer values \(2\.5\) but input "ids" takes int32/,
    );
  });

  test("array nhwc -> nchw, and flat samples reshaped by element count", async () => {
    // [N,4,5,3] HWC arrays feeding an NCHW [N,3,4,5] input are transposed.
    const n = 3;
    const data = Float32Array.from({ length: n * 4 * 5 * 3 }, (_, i) => i);
    const path = join(tmp, "nhwc.npy");
    writeFileSync(path, writeNpy({ elemType: "float32", shape: [n, 4, 5, 3], data }));
    const d = await openData([{ name: "x", elemType: "float32", shape: [null, 3, 4, 5] }], { path });
    const { feeds } = await collect(d);
    assert.deepEqual(feeds.x!.dims, [3, 3, 4, 5]);
    for (let s = 0; s < n; s++)
      for (let c = 0; c < 3; c++)
        for (let y = 0; y < 4; y++)
          for (let x = 0; x < 5; x++)
            assert.equal(feeds.x!.data[((s * 3 + c) * 4 + y) * 5 + x], data[((s * 4 + y) * 5 + x) * 3 + c]);
    // The same data feeding an NHWC input is passed through.
    const same = await collect(await openData([{ name: "x", elemType: "float32", shape: [null, 4, 5, 3] }], { path }));
    assert.deepEqual(same.feeds.x!.data, Array.from(data));
    // A flat [N,60] batch feeding [N,3,4,5] is reshaped; [N,784] from [N,28,28] too.
    const flat = join(tmp, "flat.npy");
    writeFileSync(flat, writeNpy({ elemType: "float32", shape: [n, 60], data }));
    const r = await collect(await openData([{ name: "x", elemType: "float32", shape: [null, 3, 4, 5] }], { path: flat }));
    assert.deepEqual(r.feeds.x!.data, Array.from(data));
    const vec = await collect(await openData([{ name: "v", elemType: "float32", shape: [null, 784] }], { path: X, range: "0:2" }));
    assert.deepEqual(vec.feeds.v!.dims, [2, 784]);
    assert.deepEqual(vec.feeds.v!.data, Array.from(fixtureX().data.subarray(0, 2 * 784) as Uint8Array));
  });
});

describe("data sources", () => {
  test("fixture x_u8, range 0:512, scale 1/255 -> [512,1,28,28] = pixel/255", async () => {
    const x = fixtureX();
    const d = await openData(LENET, { path: X, range: "0:512", preprocess: parsePreprocess({ scale: "1/255" }), batchSize: 100 });
    assert.equal(d.info.source, "npy");
    assert.deepEqual(d.info.paths, [X]);
    assert.deepEqual(d.info.range, [0, 512]);
    assert.equal(d.info.available, 2000);
    assert.deepEqual(d.info.indices, Array.from({ length: 512 }, (_, i) => i));
    assert.equal(d.info.matchedBy, "order");
    assert.deepEqual(d.info.inputs, [{ name: "input", value: 0, sampleDims: [1, 28, 28], type: "float32" }]);
    assert.deepEqual(d.info.warnings, []);
    const { batches, feeds } = await collect(d);
    assert.deepEqual(batches.map((b) => b.feeds.input!.dims[0]), [100, 100, 100, 100, 100, 12]);
    assert.ok(batches.every((b) => b.feeds.input!.data instanceof Float32Array && b.feeds.input!.type === "float32"));
    assert.deepEqual(feeds.input!.dims, [512, 1, 28, 28]);
    const px = x.data as Uint8Array;
    for (let i = 0; i < 512 * 784; i++) if (feeds.input!.data[i] !== Math.fround(px[i]! / 255)) assert.fail(`element ${i}`);
    // Without --scale: raw values and a warning.
    const raw = await openData(LENET, { path: X, range: "0:2" });
    assert.match(raw.info.warnings[0]!, /uint8 values 0-255 without --scale/);
    // JSON-serialisable report info.
    assert.deepEqual(JSON.parse(JSON.stringify(d.info)).preprocess, { scale: "1/255" });
  });

  test("labels from .npy and text agree; eval range 512:2000 aligned", async () => {
    const y = parseNpy(readFileSync(Y), Y).data as Uint8Array;
    const txt = join(tmp, "labels.txt");
    writeFileSync(txt, Array.from(y).join("\n") + "\n\n");
    const fromNpy = await readLabels(Y);
    const fromTxt = await readLabels(txt);
    assert.equal(fromNpy.length, 2000);
    assert.deepEqual(fromNpy, fromTxt);
    assert.deepEqual(fromNpy, Array.from(y));
    for (const labels of [Y, txt]) {
      const d = await openData(LENET, { path: X, range: "512:2000", labels, role: "eval", preprocess: { scale: "1/255" }, batchSize: 256 });
      assert.deepEqual(d.labels, Array.from(y.subarray(512)));
      assert.equal(d.info.labels, labels);
      for await (const b of d.batches()) assert.deepEqual(b.labels, b.indices.map((i) => y[i]));
    }
    assert.deepEqual(parseLabels(new TextEncoder().encode("1\r\n-2\r\n3"), "l.txt"), [1, -2, 3]);
    const i64 = writeNpy({ elemType: "int64", shape: [2, 1], data: BigInt64Array.of(4n, 5n) });
    assert.deepEqual(parseLabels(i64, "l.npy"), [4, 5]);
  });

  test("PNG, .pb and .npy folders give the same tensors as the .npy batch", async () => {
    const x = fixtureX();
    const n = 24;
    const dirs = { png: join(tmp, "png"), pb: join(tmp, "pb"), npy: join(tmp, "npyfiles"), jpg: join(tmp, "jpg") };
    for (const dir of Object.values(dirs)) mkdirSync(dir);
    for (let i = 0; i < n; i++) {
      const px = (x.data as Uint8Array).subarray(i * 784, (i + 1) * 784);
      const png = new pngjs.PNG({ width: 28, height: 28 });
      png.data = Buffer.from(px);
      // Names chosen so that natural order (img2 < img10) differs from plain string order.
      writeFileSync(join(dirs.png, `img${i}.png`), pngjs.PNG.sync.write(png, { colorType: 0, inputColorType: 0, inputHasAlpha: false }));
      writeFileSync(join(dirs.pb, `t${i}.pb`), encodeTensorProto({ name: "input", elemType: "uint8", shape: [1, 1, 28, 28], data: px.slice() }));
      writeFileSync(join(dirs.npy, `s${i}.npy`), writeNpy({ elemType: "uint8", shape: [28, 28], data: px.slice() }));
    }
    writeFileSync(join(dirs.png, ".DS_Store"), "ignored");
    const pre = parsePreprocess({ scale: "1/255" });
    const ref = await collect(await openData(LENET, { path: X, range: `0:${n}`, preprocess: pre, batchSize: 10 }));
    for (const [kind, path] of [["image-files", dirs.png], ["pb-files", dirs.pb], ["npy-files", dirs.npy]] as const) {
      const d = await openData(LENET, { path, preprocess: pre, batchSize: 10 });
      assert.equal(d.info.source, kind);
      assert.equal(d.info.available, n);
      const got = await collect(d);
      assert.deepEqual(got.feeds.input!.dims, [n, 1, 28, 28], kind);
      assert.deepEqual(got.feeds.input!.data, ref.feeds.input!.data, kind);
      assert.deepEqual(got.batches.map((b) => b.indices.length), [10, 10, 4]);
    }
    const pbInfo = await openData(LENET, { path: dirs.pb });
    assert.equal(pbInfo.info.matchedBy, "name");
    assert.deepEqual(["img10.png", "img2.png", "img1.png"].sort(naturalCompare), ["img1.png", "img2.png", "img10.png"]);
  });

  test("model-zoo folders and several .npy files feed several inputs", async () => {
    const zoo = join(tmp, "zoo");
    const specs: ModelInputSpec[] = [
      { name: "ids", elemType: "int64", shape: [null, 4] },
      { name: "scale", elemType: "float32", shape: [null, 2] },
    ];
    for (let s = 0; s < 3; s++) {
      const dir = join(zoo, `test_data_set_${s}`);
      mkdirSync(dir, { recursive: true });
      // Files in the "wrong" order on purpose: matched by tensor name.
      writeFileSync(join(dir, "input_0.pb"), encodeTensorProto({ name: "scale", elemType: "float32", shape: [1, 2], data: Float32Array.of(s, -s) }));
      writeFileSync(join(dir, "input_1.pb"), encodeTensorProto({ name: "ids", elemType: "int64", shape: [1, 4], data: BigInt64Array.of(1n, 2n, 3n, BigInt(s)) }));
      writeFileSync(join(dir, "output_0.pb"), encodeTensorProto({ name: "out", elemType: "float32", shape: [1], data: Float32Array.of(0) }));
    }
    writeFileSync(join(zoo, "model.onnx"), "not read");
    const d = await openData(specs, { path: zoo, batchSize: 2 });
    assert.equal(d.info.source, "model-zoo");
    assert.equal(d.info.matchedBy, "name");
    const { batches, feeds } = await collect(d);
    assert.equal(batches.length, 2);
    assert.ok(batches[0]!.feeds.ids!.data instanceof BigInt64Array);
    assert.deepEqual(feeds.ids!.dims, [3, 4]);
    assert.deepEqual(feeds.ids!.data, [1, 2, 3, 0, 1, 2, 3, 1, 1, 2, 3, 2]);
    assert.deepEqual(feeds.scale!.data, [0, -0, 1, -1, 2, -2]);
    // One test_data_set folder alone is one sample.
    const one = await collect(await openData(specs, { path: join(zoo, "test_data_set_1") }));
    assert.deepEqual(one.feeds.scale!.data, [1, -1]);
    // Several .npy batch files, one per input, named by stem.
    const ids = join(tmp, "ids.npy");
    const sc = join(tmp, "scale.npy");
    writeFileSync(ids, writeNpy({ elemType: "int64", shape: [2, 4], data: BigInt64Array.of(1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n) }));
    writeFileSync(sc, writeNpy({ elemType: "float32", shape: [2, 2], data: Float32Array.of(1, 2, 3, 4) }));
    const multi = await openData(specs, { path: [sc, ids] });
    assert.equal(multi.info.matchedBy, "name");
    const m = await collect(multi);
    assert.deepEqual(m.feeds.ids!.data, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(m.feeds.scale!.data, [1, 2, 3, 4]);
  });

  test("seeded subset is deterministic, sorted and inside the range", async () => {
    const a = await openData(LENET, { path: X, range: "0:512", count: 50, seed: 7 });
    const b = await openData(LENET, { path: X, range: "0:512", count: 50, seed: 7 });
    const c = await openData(LENET, { path: X, range: "0:512", count: 50, seed: 8 });
    assert.deepEqual(a.info.indices, b.info.indices);
    assert.notDeepEqual(a.info.indices, c.info.indices);
    assert.equal(a.info.indices.length, 50);
    assert.equal(new Set(a.info.indices).size, 50);
    assert.deepEqual([...a.info.indices].sort((p, q) => p - q), a.info.indices);
    assert.ok(a.info.indices.every((i) => i >= 0 && i < 512));
    const x = fixtureX().data as Uint8Array;
    const seen: number[] = [];
    for await (const batch of a.batches()) {
      seen.push(...batch.indices);
      const f = batch.feeds.input!;
      batch.indices.forEach((idx, j) => assert.equal((f.data as Float32Array)[j * 784 + 300], x[idx * 784 + 300]));
    }
    assert.deepEqual(seen, a.info.indices);
    const over = selectIndices(10, { range: "2:6", count: 9 }, "s");
    assert.deepEqual(over.indices, [2, 3, 4, 5]);
    assert.match(over.warnings[0]!, /--calib-count 9 is more than the 4 samples/);
    assert.deepEqual(parseRange("5:"), { start: 5 });
    assert.deepEqual(selectIndices(10, { range: ":3" }, "s").indices, [0, 1, 2]);
  });

  test("reads lazily, one batch at a time; samples of different sizes start a new batch", async () => {
    const reads: number[][] = [];
    const sizes = [4, 4, 4, 6, 6, 4, 4];
    const source: SampleSource = {
      kind: "image-files",
      paths: ["mem"],
      count: sizes.length,
      describe: (i) => `img${i}`,
      read: async (indices) => {
        reads.push(indices);
        return indices.map((i) => [
          { kind: "image", image: { height: sizes[i]!, width: 2, channels: 1, data: new Float32Array(sizes[i]! * 2).fill(i) } },
        ]);
      },
    };
    const d = await prepareData(source, [{ name: "x", elemType: "float32", shape: [null, 1, null, null] }], { batchSize: 3 });
    reads.length = 0;
    const { batches } = await collect(d);
    assert.deepEqual(reads, [[0, 1, 2], [3, 4, 5], [6]]);
    assert.deepEqual(batches.map((b) => [b.indices, b.feeds.x!.dims]), [
      [[0, 1, 2], [3, 1, 4, 2]],
      [[3, 4], [2, 1, 6, 2]],
      [[5], [1, 1, 4, 2]],
      [[6], [1, 1, 4, 2]],
    ]);
    // With --size every sample has the same size.
    const sized = await collect(await prepareData(source, [{ name: "x", elemType: "float32", shape: [null, 1, null, null] }], { batchSize: 3, preprocess: { size: [5, 5] } }));
    assert.deepEqual(sized.batches.map((b) => b.feeds.x!.dims), [[3, 1, 5, 5], [3, 1, 5, 5], [1, 1, 5, 5]]);
  });

  test("random inputs shaped from the model, seeded, with a warning", async () => {
    const specs: ModelInputSpec[] = [
      { name: "img", elemType: "float32", shape: [null, 3, null, 8] },
      { name: "tok", elemType: "int64", shape: [null, 5] },
    ];
    const a = await openData(specs, { count: 5, seed: 3, batchSize: 2 });
    const b = await collect(randomData(specs, { count: 5, seed: 3, batchSize: 2 }));
    const ga = await collect(a);
    assert.equal(a.info.source, "random");
    assert.deepEqual(a.info.indices, [0, 1, 2, 3, 4]);
    assert.match(a.info.warnings[0]!, /No data given: using 5 random samples .*dynamic dimensions set to 1/);
    assert.deepEqual(ga.feeds.img!.dims, [5, 3, 1, 8]);
    assert.deepEqual(ga.feeds.tok!.dims, [5, 5]);
    assert.deepEqual(ga.feeds.img!.data, b.feeds.img!.data);
    assert.deepEqual(ga.batches.map((x) => x.indices), [[0, 1], [2, 3], [4]]);
    const c = await collect(randomData(specs, { count: 5, seed: 4, batchSize: 2 }));
    assert.notDeepEqual(c.feeds.img!.data, ga.feeds.img!.data);
    // A fixed batch dim wins over the requested batch size.
    const fixed = await collect(randomData([{ name: "x", elemType: "float16", shape: [1, 2] }], { count: 3 }));
    assert.deepEqual(fixed.batches.map((x) => x.feeds.x!.dims), [[1, 2], [1, 2], [1, 2]]);
  });

  test("bad inputs give InputError with a clear message", async () => {
    const empty = join(tmp, "empty");
    mkdirSync(empty);
    const mixed = join(tmp, "mixed");
    mkdirSync(mixed);
    writeFileSync(join(mixed, "a.npy"), writeNpy({ elemType: "uint8", shape: [28, 28], data: new Uint8Array(784) }));
    writeFileSync(join(mixed, "b.png"), "x");
    const unknown = join(tmp, "unknown");
    mkdirSync(unknown);
    writeFileSync(join(unknown, "a.npy"), "x");
    writeFileSync(join(unknown, "notes.txt"), "x");
    const nested = join(tmp, "nested");
    mkdirSync(join(nested, "cats"), { recursive: true });
    const short = join(tmp, "short.txt");
    writeFileSync(short, "1\n2\n3\n");
    const badLabel = join(tmp, "bad-label.txt");
    writeFileSync(badLabel, "1\ncat\n");
    const trunc = join(tmp, "trunc.npy");
    writeFileSync(trunc, readFileSync(X).subarray(0, 100000));
    const garbage = join(tmp, "garbage.txt");
    writeFileSync(garbage, "x");

    await rejects(() => openData(LENET, { path: join(tmp, "nope.npy") }), /nope\.npy does not exist \(given to --calib\)/);
    await rejects(() => openData(LENET, { path: join(tmp, "nope"), role: "eval" }), /nope does not exist \(given to --eval\)/);
    await rejects(() => openData(LENET, { path: empty }), /Data folder .*empty is empty/);
    await rejects(() => openData(LENET, { path: mixed }), /Data folder .*mixed mixes \.npy and image \(\.png\/\.jpg\) files/);
    await rejects(() => openData(LENET, { path: unknown }), /Data folder .*unknown holds notes\.txt, which is not a \.npy, \.pb, \.png or \.jpg file/);
    await rejects(() => openData(LENET, { path: nested }), /holds a subfolder \(cats\)/);
    await rejects(() => openData(LENET, { path: garbage }), /garbage\.txt is not a supported data file/);
    await rejects(() => openData(LENET, { path: trunc }), /trunc\.npy is truncated: .*1568000 bytes, but only/);
    await rejects(
      () => openData([{ name: "input", elemType: "float32", shape: [null, 100] }], { path: X }),
      /sample 0 of .*x_u8\.npy has shape \[28,28\] \(784 elements\), which cannot feed input "input" of shape \[N,100\] \(100 elements per sample\)/,
    );
    await rejects(
      () => openData([{ name: "input", elemType: "float32", shape: [null, 1, 32, 32] }], { path: X }),
      /sample 0 of .*x_u8\.npy is 28x28 \(HxW\) but input "input" takes 32x32; pass --size 32x32 to resize/,
    );
    await rejects(() => openData(LENET, { path: X, range: "0:3000" }), /--calib-range 0:3000 is out of bounds: .*x_u8\.npy holds 2000 samples/);
    await rejects(() => openData(LENET, { path: X, range: "2000:", role: "eval" }), /--eval-range 2000: is out of bounds/);
    await rejects(() => openData(LENET, { path: X, range: "5:5" }), /--calib-range "5:5" is empty/);
    await rejects(() => openData(LENET, { path: X, range: "a-b" }), /--calib-range "a-b" is not a range like 0:512/);
    await rejects(() => openData(LENET, { path: X, count: 0 }), /--calib-count must be a positive integer/);
    await rejects(() => openData(LENET, { path: X, labels: short }), /short\.txt has 3 labels but .*x_u8\.npy holds 2000 samples/);
    await rejects(() => openData(LENET, { path: X, labels: badLabel }), /bad-label\.txt line 2 is "cat", not an integer/);
    await rejects(() => openData(LENET, { path: X, labels: join(tmp, "none.txt") }), /Labels file .*none\.txt cannot be read \(ENOENT\)/);
    await rejects(() => openData(LENET, { labels: Y }), /--labels .* was given without --calib data/);
    await rejects(
      () => openData([...LENET, { name: "mask", elemType: "float32", shape: [null, 4] }], { path: X }),
      /holds 1 tensor\(s\) but the model takes 2 input\(s\) \(input, mask\)/,
    );
    await rejects(
      () => openData([{ name: "input", elemType: "float32", shape: [8, 1, 28, 28] }], { path: X, range: "0:20" }),
      /takes batches of exactly 8 samples, but 20 samples were selected/,
    );
    await rejects(() => openData(LENET, { path: X, preprocess: { size: [20, 20] } }), /--size 20x20 does not match input "input", which takes 28x28 images/);
  });
});
