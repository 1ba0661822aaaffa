/**
 * onnxruntime's GEMM as the engine of the products with a layer's statistic (`StatEngine`, see
 * src/core/ssvq/stat-product.ts): P = E H with H fixed for a layer's whole run (an initializer), or, for
 * the factor form, T = E X and P = T X^T / n with X an initializer (Gemm with transB, then MatMul, in one
 * session). `npm run bench -- finetune` measures the H form at about 47 GFLOP/s in float64 on one thread
 * (100 in float32), against 18 for the WebAssembly kernel: the fastest, so compression jobs use it, in
 * float64 like the other engines (in float32 the tiny ViT lost 0.3 points of accuracy). The factor form:
 * about 65 GFLOP/s in float64 for blocks of 64 rows of a 9216 x 512 X (170 in float32; float64 kept, so
 * that both forms give the same results to rounding). One intra-op thread: the same bytes on whichever
 * worker thread a block runs, and a row's values do not depend on the other rows of its block (measured
 * for blocks of 4 to 512 rows). Registered in each thread that runs the products (`registerOrtProduct`):
 * core cannot import onnxruntime.
 */
import * as ort from "onnxruntime-node";
import { create } from "@bufbuild/protobuf";
import { valueInfo } from "../core/onnx/build.js";
import {
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
} from "../core/onnx/proto.js";
import { FAST_PRODUCT_MIN_FLOPS, registerProductEngine, type LayerProduct, type ProductEngine } from "../core/ssvq/finetune.js";
import {
  isFactor,
  productRowFlops,
  registerStatEngine,
  validateStatistic,
  wasmStatEngine,
  type LayerStatistic,
  type StatEngine,
  type StatKernel,
} from "../core/ssvq/stat-product.js";
import { AttributeProto_AttributeType, AttributeProtoSchema } from "../core/onnx/proto.js";
import { encodeModelPieces, joinPieces } from "../core/onnx/encode-pieces.js";

const encodeModelOnce = (model: Parameters<typeof encodeModelPieces>[0]): Uint8Array => joinPieces(encodeModelPieces(model));

/**
 * The engine name compression jobs ask for: onnxruntime's MatMul in float64 for every product but the
 * fine-tuning iterations between checks, which run in float32 (`StatKernel.multiplyFast`).
 */
export const ORT_PRODUCT = "ort-matmul-mixed";
/** The same engine with every product in float64. */
export const ORT_FLOAT64_PRODUCT = "ort-matmul-float64";

/**
 * A one-node MatMul model: E [m, k] (input) times H [k, k]; H is an input too, or, with `hValues`, an
 * initializer (as a fine-tuning engine uses it: H is fixed for the whole run, so onnxruntime may pre-pack
 * it). With `groups` > 1, E is [groups, m, k] and H [groups, k, k] (batched MatMul).
 */
export function matMulModel(m: number, k: number, elemType: number, hValues?: Float32Array | Float64Array, groups = 1): Uint8Array {
  const vi = (name: string, dims: number[]) => valueInfo(name, dims, elemType);
  const lead = groups > 1 ? [groups] : [];
  const initializer = hValues
    ? [
        create(TensorProtoSchema, {
          name: "H",
          dims: [...lead, k, k].map(BigInt),
          dataType: elemType,
          rawData: new Uint8Array(hValues.buffer, hValues.byteOffset, hValues.byteLength).slice(),
        }),
      ]
    : [];
  const graph = create(GraphProtoSchema, {
    name: "matmul",
    node: [create(NodeProtoSchema, { opType: "MatMul", input: ["E", "H"], output: ["P"], name: "mm" })],
    input: hValues ? [vi("E", [...lead, m, k])] : [vi("E", [m, k]), vi("H", [k, k])],
    output: [vi("P", [...lead, m, k])],
    initializer,
  });
  return encodeModel(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: "ssvq-bench",
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
      graph,
    }),
  );
}

/**
 * A fine-tuning product engine on onnxruntime's MatMul (one intra-op thread), float32 or float64: the
 * shape of what src/io could offer to `finetuneLayerWith` if onnxruntime is chosen. float32 converts E
 * to float32 and P back on every product.
 */
export function ortProductEngine(precision: "float32" | "float64"): ProductEngine {
  return {
    name: `ort-matmul-${precision}`,
    async forLayer(h: Float64Array, groups: number, rows: number, cols: number): Promise<LayerProduct> {
      const Arr = precision === "float32" ? Float32Array : Float64Array;
      const type = precision === "float32" ? TensorProto_DataType.FLOAT : TensorProto_DataType.DOUBLE;
      const rpg = rows / groups;
      const session = await ort.InferenceSession.create(matMulModel(rpg, cols, type, Arr.from(h), groups), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: "sequential",
        logSeverityLevel: 3,
      });
      const dims = groups > 1 ? [groups, rpg, cols] : [rpg, cols];
      const buffer = new Arr(rows * cols);
      return {
        async multiply(e: Float64Array, out: Float64Array): Promise<void> {
          buffer.set(e);
          const r = await session.run({ E: new ort.Tensor(precision, buffer, dims) });
          out.set(r["P"]!.data as Float32Array | Float64Array);
        },
        dispose: () => session.release(),
      };
    },
  };
}

const SESSION = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: "sequential", logSeverityLevel: 3 } as const;

/** Groups above which a layer's products use the WebAssembly kernel (one session per group here). */
export const ORT_MAX_GROUPS = 16;

type Precision = "float32" | "float64";

/** The values' bytes in `precision` (the constructors convert in one native pass; `from` iterates). */
const raw = (v: Float32Array | Float64Array, precision: Precision): Uint8Array<ArrayBuffer> =>
  new Uint8Array((precision === "float32" ? new Float32Array(v) : new Float64Array(v)).buffer);

function ortModel(
  nodes: ReturnType<typeof create<typeof NodeProtoSchema>>[],
  init: { name: string; dims: number[]; values: Float32Array | Float64Array },
  cols: number,
  outputs: Array<[string, (number | string)[]]>,
  precision: Precision,
): Uint8Array {
  const type = precision === "float32" ? TensorProto_DataType.FLOAT : TensorProto_DataType.DOUBLE;
  const vi = (name: string, dims: (number | string)[]) => valueInfo(name, dims, type);
  // encodeModel's bytes, with the statistic copied once (the library's writer copies it twice, growing
  // its buffer as it goes).
  return encodeModelOnce(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: "ssvq-product",
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
      graph: create(GraphProtoSchema, {
        name: "product",
        node: nodes,
        input: [vi("E", ["m", cols])],
        output: outputs.map(([n, d]) => vi(n, d)),
        initializer: [create(TensorProtoSchema, { name: init.name, dims: init.dims.map(BigInt), dataType: type, rawData: raw(init.values, precision) })],
      }),
    }),
  );
}

/** P = E H_g: MatMul with H an initializer, E [m, cols] of any m. */
function gramModel(h: Float32Array | Float64Array, cols: number, precision: Precision): Uint8Array {
  return ortModel([create(NodeProtoSchema, { opType: "MatMul", input: ["E", "H"], output: ["P"] })], { name: "H", dims: [cols, cols], values: h }, cols, [["P", ["m", cols]]], precision);
}

/** T = E X_g^T-stored (Gemm, transB), P = T X (MatMul): X sample-major [r, cols] an initializer. */
function factorModel(x: Float32Array | Float64Array, r: number, cols: number, precision: Precision): Uint8Array {
  const transB = create(AttributeProtoSchema, { name: "transB", type: AttributeProto_AttributeType.INT, i: 1n });
  return ortModel(
    [
      create(NodeProtoSchema, { opType: "Gemm", input: ["E", "X"], output: ["T"], attribute: [transB] }),
      create(NodeProtoSchema, { opType: "MatMul", input: ["T", "X"], output: ["P"] }),
    ],
    { name: "X", dims: [r, cols], values: x },
    cols,
    [
      ["T", ["m", r]],
      ["P", ["m", cols]],
    ],
    precision,
  );
}

type Sessions = ort.InferenceSession[];

/** One session per group for the statistic in this precision; the bytes its initializers hold. */
async function createSessions(stat: LayerStatistic, precision: Precision): Promise<{ sessions: Sessions; bytes: number }> {
  const { groups, cols } = stat;
  const size = precision === "float32" ? 4 : 8;
  const sessions: Sessions = [];
  let bytes = 0;
  try {
    for (let g = 0; g < groups; g++) {
      let model: Uint8Array;
      if (isFactor(stat)) {
        const x = stat.X.subarray(g * stat.r * cols, (g + 1) * stat.r * cols);
        bytes += 2 * size * x.length;
        model = factorModel(x, stat.r, cols, precision);
      } else {
        const h = stat.H.subarray(g * cols * cols, (g + 1) * cols * cols);
        bytes += 2 * size * h.length;
        model = gramModel(h, cols, precision);
      }
      sessions.push(await ort.InferenceSession.create(model, SESSION));
    }
  } catch (e) {
    await Promise.all(sessions.map((s) => s.release()));
    throw e;
  }
  return { sessions, bytes };
}

/**
 * The products over a layer's sessions in one precision: P = A H for rows [r0, r1) into p, returning
 * tr(A H A^T) (accumulated in float64) as `StatKernel.multiply` does; a factor's T = A X^T into `t` when
 * given. Ordinary memory is read and written in place; shared memory (which onnxruntime refuses) goes
 * through buffers reused from call to call.
 */
function productRunner<A extends Float32Array | Float64Array>(stat: LayerStatistic, rows: number, sessions: Sessions, precision: Precision, make: (n: number) => A) {
  const { groups, cols } = stat;
  const rpg = rows / groups;
  const r = isFactor(stat) ? stat.r : 0;
  let input = make(0);
  let pOut = make(0);
  let tOut = make(0);
  return async (r0: number, r1: number, a: A, p: A, t?: Float64Array, loss = true): Promise<number> => {
    const m = r1 - r0;
    const inPlace = !(a.buffer instanceof SharedArrayBuffer) && !(p.buffer instanceof SharedArrayBuffer);
    if (!inPlace && input.length < m * cols) {
      input = make(m * cols);
      pOut = make(m * cols);
    }
    if (tOut.length < m * r) tOut = make(m * r);
    const src = inPlace ? a : input;
    if (!inPlace) input.set(a.subarray(0, m * cols));
    let quad = 0;
    for (let s = r0; s < r1; ) {
      const g = Math.floor(s / rpg);
      const e = Math.min(r1, (g + 1) * rpg);
      const i0 = s - r0;
      const here = e - s;
      const o = i0 * cols;
      const feeds = { E: new ort.Tensor(precision, src.subarray(o, o + here * cols), [here, cols]) };
      const pv = inPlace ? p.subarray(o, o + here * cols) : pOut.subarray(0, here * cols);
      if (isFactor(stat)) {
        const tv = tOut.subarray(0, here * r);
        await sessions[g]!.run(feeds, { P: new ort.Tensor(precision, pv, [here, cols]), T: new ort.Tensor(precision, tv, [here, r]) });
        const n = stat.n;
        for (let i = 0; i < pv.length; i++) p[o + i] = pv[i]! / n;
        if (loss) for (let i = 0; i < tv.length; i++) quad += tv[i]! * tv[i]!;
        if (t) t.set(tv, i0 * r);
      } else {
        await sessions[g]!.run(feeds, { P: new ort.Tensor(precision, pv, [here, cols]) });
        // The block's sum(A .* P), row-major (P into place from the buffer first).
        if (!inPlace) p.set(pv, o);
        if (loss) for (let i = 0; i < pv.length; i++) quad += src[o + i]! * pv[i]!;
      }
      s = e;
    }
    if (!loss) return NaN;
    return isFactor(stat) ? quad / stat.n : quad;
  };
}

/**
 * An onnxruntime engine: float64 products (one session per group), and with `fast` also float32 ones
 * (`StatKernel.multiplyFast`, a second session per group) for a layer large enough for fine-tuning's
 * fast products (FAST_PRODUCT_MIN_FLOPS), its sessions made on the first float32 product (so a kernel
 * used for output errors only never holds them; `bytes` counts them). A layer of more than
 * ORT_MAX_GROUPS groups, or a factor of no columns, uses the WebAssembly kernel.
 */
function ortEngine(name: string, fast: boolean): StatEngine {
  return {
    name,
    async kernel(stat: LayerStatistic, rows: number): Promise<StatKernel> {
      validateStatistic(stat, rows);
      if (stat.groups > ORT_MAX_GROUPS || (isFactor(stat) && stat.r === 0)) return wasmStatEngine.kernel(stat, rows);
      const full = await createSessions(stat, "float64");
      const multiply = productRunner<Float64Array>(stat, rows, full.sessions, "float64", (n) => new Float64Array(n));
      const wantsFast = fast && rows * productRowFlops(stat) >= FAST_PRODUCT_MIN_FLOPS;
      let low: Promise<{ sessions: Sessions; bytes: number }> | undefined;
      let runFast: ((r0: number, r1: number, a: Float32Array, p: Float32Array, t?: Float64Array, loss?: boolean) => Promise<number>) | undefined;
      const multiplyFast = async (r0: number, r1: number, a: Float32Array, p: Float32Array, loss = true): Promise<number> => {
        if (!runFast) {
          low ??= createSessions(stat, "float32");
          const made = await low;
          runFast ??= productRunner<Float32Array>(stat, rows, made.sessions, "float32", (n) => new Float32Array(n));
        }
        return runFast(r0, r1, a, p, undefined, loss);
      };
      return {
        engine: name,
        // The float32 sessions hold half the float64 ones' bytes.
        bytes: full.bytes + (wantsFast ? full.bytes / 2 : 0),
        multiply,
        ...(wantsFast ? { multiplyFast } : {}),
        async dispose(): Promise<void> {
          const made = low ? await low.catch(() => undefined) : undefined;
          await Promise.all([...full.sessions.splice(0), ...(made?.sessions.splice(0) ?? [])].map((s) => s.release()));
        },
      };
    },
  };
}

/**
 * What compression jobs use (`ORT_PRODUCT`): float64 products, and float32 ones for the fine-tuning
 * iterations between checks (see `StatKernel.multiplyFast`).
 */
export const ortStatEngine: StatEngine = ortEngine(ORT_PRODUCT, true);

/** Every product in float64 (`ORT_FLOAT64_PRODUCT`): what compression jobs used before the mixed engine. */
export const ortFloat64StatEngine: StatEngine = ortEngine(ORT_FLOAT64_PRODUCT, false);

/**
 * Makes the onnxruntime engines available to the product tasks (fine-tuning, output errors) run in this
 * thread: the mixed one (`ORT_PRODUCT`) and the float64 one (`ORT_FLOAT64_PRODUCT`) as `StatEngine`s, and
 * the legacy whole-layer float64 `ProductEngine` (by the float64 name, which the `StatEngine` takes first).
 */
export function registerOrtProduct(): void {
  registerProductEngine(ortProductEngine("float64"));
  registerStatEngine(ortStatEngine);
  registerStatEngine(ortFloat64StatEngine);
}
