/**
 * Does onnxruntime accept this model? A model it refuses (an operator it does not know, an attribute an
 * operator does not have, an empty required input, shapes that cannot agree) would give a compressed
 * output nobody can run, so compress asks onnxruntime first.
 *
 * The model is checked as a skeleton: the main graph's large initializers become graph inputs of the same
 * type and shape, so onnxruntime checks operators, types and shapes exactly as it would, without the
 * weights in memory (a model of several GB costs what its graph costs). Small tensors (shape constants,
 * which shape inference reads) stay, read from external data when they live there. A graph input
 * declared over 1 GiB is checked twice: as declared with nothing folded, then symbolic at the default
 * optimizations (from its static shape onnxruntime would fold huge constants).
 */
import { clone } from "@bufbuild/protobuf";
import type { TypeProto_Tensor } from "onnx-buf";
import { encodeModel, ModelProtoSchema, TensorProto_DataLocation, type GraphProto, type ModelProto, type TensorProto, type ValueInfoProto } from "../core/onnx/proto.js";
import { valueInfo } from "../core/onnx/build.js";
import { hasExternalTensors, isExternal, type ExternalDataReader } from "../core/onnx/external.js";
import { declaredBytes, rawBytes } from "../core/onnx/tensor-data.js";
import { dtypeBits } from "../core/onnx/dtype.js";
import { walkNodes, walkTensors } from "../core/onnx/walk.js";
import { InputError } from "../core/errors.js";
import { createSession, ortMessage } from "./ort.js";

/** Tensors up to this many bytes stay in the skeleton (shape constants are far smaller). */
const KEEP_BYTES = 64 * 1024;
/**
 * A graph input declared larger than this keeps its dims symbolic in the skeleton. No one can feed it
 * from memory, and from its static shape onnxruntime would fold shape-derived subgraphs into huge
 * constants at load (fuzz seed 1203: Silero VAD with an input declared [1, 2^40] took 16 GB and 67 s).
 */
const HUGE_INPUT_BYTES = 2 ** 30;

/** Domains onnxruntime implements; a model using another one needs custom operators it cannot check. */
const ORT_DOMAINS = new Set(["", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.microsoft.mlfeaturizers", "ai.onnx.training", "ai.onnx.preview.training", "com.ms.internal.nhwc"]);

export interface LoadCheck {
  /** Said in the report when the check could not be made (custom operator domains). */
  warning?: string;
}

/**
 * Throws an InputError with onnxruntime's one-line reason when it refuses the model. `label` names the
 * model in that line.
 */
export async function checkOrtLoads(model: ModelProto, readExternal: ExternalDataReader | undefined, label: string): Promise<LoadCheck> {
  const used = new Set<string>();
  walkNodes(model, (n) => used.add(n.domain));
  // Model-local functions are expanded by onnxruntime: their domains are checked like the rest.
  const local = new Set(model.functions.map((f) => f.domain));
  const foreign = [...used].filter((d) => !ORT_DOMAINS.has(d) && !local.has(d));
  if (foreign.length > 0)
    return {
      warning: `the model uses operators of ${foreign.map((d) => JSON.stringify(d.slice(0, 60))).join(", ")}, which onnxruntime does not implement; it was checked against the ONNX rules only`,
    };
  const skeleton = skeletonOf(model, readExternal);
  let session;
  try {
    // Inputs declared huge are symbolic in the skeleton; their declared shapes are checked first with
    // nothing folded (shape inference alone refuses a dim such as 2^63 - 1).
    if (model.graph!.input.some((v) => declaredInputBytes(v) > HUGE_INPUT_BYTES)) {
      const declared = await createSession(encodeModel(skeletonOf(model, readExternal, false)), { label, options: { graphOptimizationLevel: "disabled" } });
      await declared.release();
    }
    session = await createSession(encodeModel(skeleton), { label });
  } catch (e) {
    // A valid model onnxruntime's CPU build has no kernel for (bfloat16 Conv, say) runs elsewhere: the
    // ONNX rules accepted it, so it is compressed, with a warning.
    const cause = (e as Error).cause;
    const raw = cause instanceof Error ? cause.message : "";
    if (/NOT_IMPLEMENTED|Could not find an implementation/i.test(raw))
      return { warning: `onnxruntime's CPU build cannot run this model (${ortMessage(cause)}); it was checked against the ONNX rules only` };
    throw e;
  }
  await session.release();
  return {};
}

/** The skeleton; with `symbolic`, graph inputs declared over HUGE_INPUT_BYTES get symbolic dims. */
function skeletonOf(model: ModelProto, readExternal: ExternalDataReader | undefined, symbolic = true): ModelProto {
  const g = model.graph;
  if (!g) throw new InputError("the model has no graph");
  const declared = new Set(g.input.map((i) => i.name));
  const initializer: TensorProto[] = [];
  const input: ValueInfoProto[] = symbolic ? g.input.map(symbolicIfHuge) : [...g.input];
  for (const t of g.initializer) {
    if ((declaredBytes(t) ?? Infinity) <= KEEP_BYTES) {
      initializer.push(t);
      continue;
    }
    if (!declared.has(t.name)) input.push(valueInfo(t.name, t.dims.map(Number), t.dataType));
  }
  const graph: GraphProto = { ...g, initializer, input };
  const skeleton: ModelProto = { ...model, graph };
  // Any external tensor left (small ones, and those in subgraphs or Constant nodes) is read inline: the
  // bytes given to onnxruntime have no folder to resolve file names against.
  if (!hasExternalTensors(skeleton)) return skeleton;
  // A deep copy, so that the caller's model is not changed (its large main-graph tensors are not in it).
  const copy = clone(ModelProtoSchema, skeleton);
  walkTensors(copy, (t) => {
    if (!isExternal(t)) return;
    t.rawData = Uint8Array.from(rawBytes(t, readExternal) ?? []);
    t.externalData = [];
    t.dataLocation = TensorProto_DataLocation.DEFAULT;
  });
  return copy;
}

/** A tensor input's bytes by its static dims (dynamic ones count as 1); 0 for other inputs. */
function declaredInputBytes(v: ValueInfoProto): number {
  const t = v.type?.value.case === "tensorType" ? v.type.value.value : undefined;
  const dims = t?.shape?.dim;
  if (!t || !dims) return 0;
  let bytes = (dtypeBits(t.elemType) ?? 8) / 8;
  for (const d of dims) if (d.value.case === "dimValue") bytes *= Number(d.value.value);
  return bytes;
}

/** The input as declared, or with its static dims made symbolic when it is declared over HUGE_INPUT_BYTES. */
function symbolicIfHuge(v: ValueInfoProto): ValueInfoProto {
  if (!(declaredInputBytes(v) > HUGE_INPUT_BYTES)) return v;
  const t = v.type!.value.value as TypeProto_Tensor;
  const dims = t.shape!.dim;
  return valueInfo(
    v.name,
    dims.map((d, i) => (d.value.case === "dimParam" ? d.value.value : `${v.name}_dim${i}`)),
    t.elemType,
  );
}
