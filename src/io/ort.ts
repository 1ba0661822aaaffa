/**
 * onnxruntime-node, set up the same way everywhere: one intra-op and one inter-op thread, sequential
 * execution, warnings off the console. Results do not depend on the machine's core count, and the
 * worker threads of our own pool are not fought over.
 */
import * as ort from "onnxruntime-node";
import { InputError } from "../core/errors.js";
import { halfToFloat, bfloat16ToFloat } from "../core/onnx/dtype.js";
import type { Feed } from "../core/calib/source.js";
import { modelInputs as specFromModel } from "../core/calib/capture-plan.js";
import type { ModelProto } from "../core/onnx/proto.js";
import type { ModelInputSpec } from "../core/calib/source.js";
import { watchedOrtCall } from "./ort-activity.js";

export { ort };
export type Session = ort.InferenceSession;

/** Deterministic session options (see the file comment). */
export const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = Object.freeze({
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
  // Fatal only: onnxruntime's own (coloured) log lines must not reach the user's terminal; its errors
  // come back as exceptions and are said in our one line.
  logSeverityLevel: 4,
});

ort.env.logLevel = "fatal";

export interface CreateSessionOptions {
  /** Names the model in error messages (default "the model"). */
  label?: string;
  /** Overrides of SESSION_OPTIONS. */
  options?: ort.InferenceSession.SessionOptions;
  /**
   * For a model given as bytes that keeps tensors in external files: the folder their locations are
   * relative to (the source model's). onnxruntime resolves them against the working directory for a model
   * loaded from bytes, and reads them from the files itself (nothing inlined in memory, no 2 GiB limit).
   */
  externalDataDir?: string;
}

/** Session creations that have changed the working directory and not yet restored it, and to where. */
let chdirDepth = 0;
let homeDir = "";
let modelDir = "";

/**
 * A session for a model given as bytes or as a file path (a path lets onnxruntime find external data
 * next to the model). onnxruntime's refusal (unknown operator, invalid graph) becomes an InputError.
 */
export async function createSession(model: Uint8Array | string, opts: CreateSessionOptions = {}): Promise<Session> {
  const options = { ...SESSION_OPTIONS, ...opts.options };
  const dir = typeof model === "string" ? undefined : opts.externalDataDir;
  if (dir !== undefined) {
    // Process-wide: the worker does nothing else with relative paths while a session is created.
    if (chdirDepth > 0 && modelDir !== dir) throw new Error("sessions over models of different folders were created at once");
    if (chdirDepth === 0) {
      homeDir = process.cwd();
      process.chdir(dir);
      modelDir = dir;
    }
    chdirDepth++;
  }
  try {
    return await watchedOrtCall(() =>
      typeof model === "string" ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options),
    );
  } catch (e) {
    throw new InputError(`onnxruntime cannot load ${opts.label ?? "the model"}: ${firstLine(e)}`, { cause: e });
  } finally {
    if (dir !== undefined && --chdirDepth === 0) process.chdir(homeDir);
  }
}

/** Runs a session; onnxruntime's errors (wrong shapes or types fed) become InputErrors naming `label`. */
export async function runSession(
  session: Session,
  feeds: Record<string, ort.Tensor>,
  fetches?: readonly string[],
  label = "the model",
): Promise<Record<string, ort.Tensor>> {
  try {
    const out = await watchedOrtCall(() => (fetches ? session.run(feeds, fetches) : session.run(feeds)));
    return out as Record<string, ort.Tensor>;
  } catch (e) {
    throw new InputError(`onnxruntime failed to run ${label}: ${firstLine(e)}`, { cause: e });
  }
}

/** A batch's feeds as onnxruntime tensors (the data is shared, not copied). */
export function toOrtFeeds(feeds: Record<string, Feed>): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const [name, f] of Object.entries(feeds)) out[name] = new ort.Tensor(f.type, f.data as never, f.dims);
  return out;
}

/** The inputs a model needs fed (graph.input minus initializers), as the data readers take them. */
export function modelInputs(model: ModelProto): ModelInputSpec[] {
  return specFromModel(model);
}

/**
 * A numeric tensor's values as Float32Array (float32 as it is, float16/bfloat16 converted) or
 * Float64Array (float64 and integers); undefined for strings and other types.
 */
export function tensorValues(t: ort.Tensor): Float32Array | Float64Array | undefined {
  const d = t.data as unknown;
  if ((t.type as string) === "bfloat16") return Float32Array.from(d as Uint16Array, bfloat16ToFloat);
  switch (t.type) {
    case "float32":
      return d as Float32Array;
    case "float64":
      return d as Float64Array;
    case "float16": {
      if (d instanceof Uint16Array) return Float32Array.from(d, halfToFloat);
      return Float32Array.from(d as ArrayLike<number>);
    }
    case "int64":
    case "uint64":
      return Float64Array.from(d as BigInt64Array, Number);
    case "int8":
    case "uint8":
    case "int16":
    case "uint16":
    case "int32":
    case "uint32":
    case "bool":
      return Float64Array.from(d as ArrayLike<number>);
  }
  return undefined;
}

function firstLine(e: unknown): string {
  return ortMessage(e);
}

/**
 * onnxruntime's error as one readable line: its first line, from its last "[ONNXRuntimeError] : N : CODE :"
 * on, without C++ function signatures, qualified names and source locations, at most 200 characters.
 */
export function ortMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  let line = msg.split("\n").find((l) => l.trim() !== "") ?? msg;
  const marker = /\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*/g;
  let last: RegExpExecArray | null = null;
  for (let m = marker.exec(line); m; m = marker.exec(line)) last = m;
  if (last) line = line.slice(last.index + last[0].length);
  line = line
    .replace(/^\s*\[[^\]]*\]\s*/, "")
    // "Non-zero status code returned while running Conv node. Name:'c1' Status Message: ..."
    .replace(/Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message:\s*/g, (_, op: string, name: string) => `${op} node ${JSON.stringify(name)}: `)
    // "onnxruntime::Status onnxruntime::Foo::Bar(const T&) "
    .replace(/(?:[\w:<>]+\s+)?(?:\w+::)+[\w~<>]+\([^()]*(?:\([^()]*\)[^()]*)*\)\s*(?:const\s*)?/g, "")
    // "/onnxruntime_src/x.cc:123 FunctionName " and "tensorprotoutils.cc:1469 ValidateEmbedded... "
    .replace(/\S*\.(?:cc|cpp|h|hpp):\d+(?:\s+[A-Za-z_][\w:~<>]*(?=\s))?\s*/g, "")
    .replace(/\bstd::bad_alloc\b/g, "out of memory (bad_alloc)")
    // Any qualified name left ("onnx::ModelProto"): its last part.
    .replace(/\b(?:\w+::)+(\w+)/g, "$1")
    .replace(/\s+/g, " ")
    // Names from a damaged file reach its messages raw: control characters are shown as escapes.
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
    .trim();
  if (line === "") line = "it reported an error with no message";
  // Cut at 200 characters, never inside an escape ("\\x1f").
  return line.length > 200 ? `${line.slice(0, 197).replace(/\\(?:x[0-9a-f]?)?$/, "")}...` : line;
}
