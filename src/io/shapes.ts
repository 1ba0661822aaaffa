/**
 * The real shapes of the values the simulator's lowering needs, measured by running the model once in
 * onnxruntime-node on zero inputs of the given shapes, with those values exposed as extra graph outputs
 * (on an in-memory copy: the caller's model is not changed). Values inside If/Loop/Scan bodies cannot be
 * exposed; the lowering skips those layers and says so.
 *
 * Shapes that depend on the input values (NonZero, a Reshape computed from data) are the ones zero inputs
 * give.
 */
import * as ort from "onnxruntime-node";
import { createSession, ortMessage } from "./ort.js";
import { sessionModel } from "./capture.js";
import { watchedOrtCall } from "./ort-activity.js";
import { create } from "@bufbuild/protobuf";
import { InputError, quoted } from "../core/errors.js";
import { totalmem } from "node:os";
import { valuesToMeasure } from "../core/accel/lower.js";
import type { ExternalDataReader } from "../core/onnx/external.js";
import {
  encodeModel,
  TensorProto_DataType as DT,
  ValueInfoProtoSchema,
  type ModelProto,
  type ValueInfoProto,
} from "../core/onnx/proto.js";
import { dtypeBits, dtypeName } from "../core/onnx/dtype.js";
import { formatBytes, tensorDims, TYPED_ARRAY_MAX_BYTES } from "../core/onnx/tensor-data.js";

/** A declared dimension: a number, a symbolic name, or unknown. */
type DeclaredDim = number | string | null;

export interface ShapeRun {
  /** Dims of every measured value, of the graph inputs fed and of the main graph's initializers. */
  dims: Map<string, number[]>;
  /** The shapes the inputs were fed with. */
  inputs: Record<string, number[]>;
  /** With `dynamicAsOne`: the inputs whose dynamic dimensions were taken as 1. */
  assumed: string[];
}

/**
 * Parses `--shape` values: `name=1,3,224,224` (or `1x3x224x224`). A name may itself contain `=`: the
 * last one separates it from the dims.
 */
export function parseShapeSpecs(specs: readonly string[]): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const spec of specs) {
    const at = spec.lastIndexOf("=");
    if (at <= 0) throw new InputError(`--shape ${JSON.stringify(spec)} must be NAME=DIMS, for example input=1,3,224,224`);
    const name = spec.slice(0, at);
    const text = spec.slice(at + 1).trim();
    const dims = text === "" ? [] : text.split(/[,x]/).map((d) => d.trim());
    if (!dims.every((d) => /^\d+$/.test(d)))
      throw new InputError(`--shape ${JSON.stringify(spec)}: dimensions must be whole numbers separated by commas`);
    if (Object.hasOwn(out, name)) throw new InputError(`--shape gives ${JSON.stringify(name)} twice`);
    out[name] = dims.map(Number);
  }
  return out;
}

function declaredShape(v: ValueInfoProto): { elemType: number; dims: DeclaredDim[] | undefined } | undefined {
  if (v.type?.value.case !== "tensorType") return undefined;
  const tt = v.type.value.value;
  const dims = tt.shape
    ? tt.shape.dim.map((d): DeclaredDim =>
        d.value.case === "dimValue" ? Number(d.value.value) : d.value.case === "dimParam" ? d.value.value : null,
      )
    : undefined;
  return { elemType: tt.elemType, dims };
}

const showDims = (d: readonly DeclaredDim[]): string => `[${d.map((x) => (x === null ? "?" : String(x))).join(", ")}]`;

/**
 * The shape each real graph input is fed with: given, or fully fixed in the model; else an InputError, or
 * with `assume` each dynamic dimension taken as 1 (recorded in `assume`, one line per input).
 */
export function inputShapes(
  model: ModelProto,
  given: Readonly<Record<string, number[]>>,
  assume?: string[],
): Record<string, { elemType: number; dims: number[] }> {
  const g = model.graph!;
  const initNames = new Set(g.initializer.map((t) => t.name));
  const real = g.input.filter((i) => !initNames.has(i.name));
  const known = new Set(real.map((i) => i.name));
  for (const name of Object.keys(given))
    if (!known.has(name))
      throw new InputError(
        `--shape names ${JSON.stringify(name)}, which is not an input of the model (inputs: ${[...known].map((x) => JSON.stringify(x)).join(", ") || "none"})`,
      );
  const out: Record<string, { elemType: number; dims: number[] }> = {};
  for (const input of real) {
    const decl = declaredShape(input);
    if (!decl) throw new InputError(`input ${quoted(input.name)} is not a tensor; only tensor inputs can be simulated`);
    const g2 = given[input.name];
    if (g2) {
      if (decl.dims && decl.dims.length !== g2.length)
        throw new InputError(
          `--shape ${input.name}=${g2.join(",")} has ${g2.length} dimensions but the input is declared ${showDims(decl.dims)}`,
        );
      decl.dims?.forEach((d, i) => {
        if (typeof d === "number" && d > 0 && d !== g2[i])
          throw new InputError(
            `--shape ${input.name}=${g2.join(",")} sets dimension ${i} to ${g2[i]} but the model fixes it at ${d} (declared ${showDims(decl.dims!)})`,
          );
      });
      out[input.name] = { elemType: decl.elemType, dims: g2 };
      continue;
    }
    if (!decl.dims || decl.dims.some((d) => typeof d !== "number" || d <= 0)) {
      const shown = decl.dims ? showDims(decl.dims) : "of unknown rank";
      const example = decl.dims ? decl.dims.map((d) => (typeof d === "number" && d > 0 ? d : 1)).join(",") : "1,3,224,224";
      if (assume && decl.dims) {
        out[input.name] = { elemType: decl.elemType, dims: example.split(",").map(Number) };
        assume.push(`input ${JSON.stringify(input.name)} has dynamic dimensions ${shown}: simulated as ${input.name}=${example}`);
        continue;
      }
      throw new InputError(
        `input ${JSON.stringify(input.name)} has dynamic dimensions ${shown}; give its shape with --shape ${input.name}=${example}`,
      );
    }
    out[input.name] = { elemType: decl.elemType, dims: decl.dims as number[] };
  }
  return out;
}

function zeroTensor(name: string, elemType: number, dims: number[]): ort.Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  // The zeros fed, and onnxruntime's activations of the same order, must fit: refuse before allocating.
  const bytes = n * Math.max(1, (dtypeBits(elemType) ?? 8) / 8);
  const limit = Math.min(TYPED_ARRAY_MAX_BYTES, totalmem() / 4);
  if (!Number.isSafeInteger(n) || bytes > limit)
    throw new InputError(
      `input ${quoted(name)} of shape [${dims.length > 8 ? `${dims.slice(0, 8).join(", ")}, ...` : dims.join(", ")}] would take ${formatBytes(bytes)} to run the model once; give a smaller shape with --shape`,
    );
  switch (elemType) {
    case DT.FLOAT:
      return new ort.Tensor("float32", new Float32Array(n), dims);
    case DT.FLOAT16:
      return new ort.Tensor("float16", new Uint16Array(n), dims);
    case DT.DOUBLE:
      return new ort.Tensor("float64", new Float64Array(n), dims);
    case DT.INT8:
      return new ort.Tensor("int8", new Int8Array(n), dims);
    case DT.UINT8:
      return new ort.Tensor("uint8", new Uint8Array(n), dims);
    case DT.INT16:
      return new ort.Tensor("int16", new Int16Array(n), dims);
    case DT.UINT16:
      return new ort.Tensor("uint16", new Uint16Array(n), dims);
    case DT.INT32:
      return new ort.Tensor("int32", new Int32Array(n), dims);
    case DT.UINT32:
      return new ort.Tensor("uint32", new Uint32Array(n), dims);
    case DT.INT64:
      return new ort.Tensor("int64", new BigInt64Array(n), dims);
    case DT.UINT64:
      return new ort.Tensor("uint64", new BigUint64Array(n), dims);
    case DT.BOOL:
      return new ort.Tensor("bool", new Uint8Array(n), dims);
    case DT.STRING:
      return new ort.Tensor("string", new Array<string>(n).fill(""), dims);
  }
  throw new InputError(`input ${quoted(name)} is ${dtypeName(elemType)}, which cannot be fed to onnxruntime here`);
}

export interface ShapeOptions {
  /** For models with external data (src/io/model-file.ts loadModel's `readExternal`): read inline, up to 2 GB. */
  readExternal?: ExternalDataReader;
  /** The model's folder: external tensors are then read by onnxruntime from the files instead (any size). */
  modelDir?: string;
  /** Take dynamic dimensions not given as 1 (batch 1) instead of refusing; `ShapeRun.assumed` says which. */
  dynamicAsOne?: boolean;
}

/**
 * Runs the model once on zero inputs (shapes from `given` or fixed in the model) and returns the dims of
 * every value the lowering needs. InputError for unresolved dynamic dimensions, unknown input names, or
 * a model onnxruntime cannot run.
 */
export async function measureShapes(
  model: ModelProto,
  given: Readonly<Record<string, number[]>> = {},
  opts: ShapeOptions = {},
): Promise<ShapeRun> {
  const g = model.graph;
  if (!g) throw new InputError("the model has no graph");
  const assumed: string[] = [];
  const feeds = inputShapes(model, given, opts.dynamicAsOne ? assumed : undefined);
  const dims = new Map<string, number[]>();
  for (const t of g.initializer) dims.set(t.name, tensorDims(t));
  for (const [name, f] of Object.entries(feeds)) dims.set(name, [...f.dims]);

  const outputs = new Set(g.output.map((o) => o.name));
  const toExpose = valuesToMeasure(model).filter((v) => !dims.has(v));
  // Graph outputs need no type: onnxruntime infers it from the producing node.
  const extra = toExpose.filter((v) => !outputs.has(v)).map((name) => create(ValueInfoProtoSchema, { name }));
  const wanted = toExpose;

  if (wanted.length > 0) {
    // A shallow copy: the same nodes and tensors, more outputs. With the model's folder, onnxruntime reads
    // external tensors from the files (any size); without, they are read inline (`sessionModel`).
    const copy = sessionModel({ ...model, graph: { ...g, output: [...g.output, ...extra] } }, { readExternal: opts.readExternal, dir: opts.modelDir });
    const session = await createSession(encodeModel(copy.model), {
      label: "the model to measure its shapes",
      options: { graphOptimizationLevel: "disabled" },
      ...(copy.externalDataDir !== undefined ? { externalDataDir: copy.externalDataDir } : {}),
    });
    try {
      const feedTensors: Record<string, ort.Tensor> = {};
      for (const [name, f] of Object.entries(feeds)) feedTensors[name] = zeroTensor(name, f.elemType, f.dims);
      let result: ort.InferenceSession.OnnxValueMapType;
      try {
        result = await watchedOrtCall(() => session.run(feedTensors, wanted));
      } catch (e) {
        const shapes = Object.entries(feeds).map(([n, f]) => `${n}=${f.dims.join(",")}`).join(" ");
        throw new InputError(`onnxruntime cannot run the model on zero inputs of shape ${shapes}: ${firstLine(e)}`, { cause: e });
      }
      for (const name of wanted) {
        const v = result[name];
        if (v && "dims" in v) dims.set(name, [...(v as ort.Tensor).dims]);
        (v as ort.Tensor | undefined)?.dispose?.();
      }
    } finally {
      await session.release();
    }
  }
  const inputs: Record<string, number[]> = {};
  for (const [name, f] of Object.entries(feeds)) inputs[name] = f.dims;
  return { dims, inputs, assumed };
}

const firstLine = (e: unknown): string => ortMessage(e);
