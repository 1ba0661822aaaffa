/**
 * Opening a model file: read, decode, check every tensor's declared size against the data present and
 * the machine's memory, and open external data strictly inside the model's folder.
 */
import { closeSync, fstatSync, openSync, readSync, realpathSync, statSync } from "node:fs";
import { totalmem } from "node:os";
import { dirname, join, relative, resolve, sep, isAbsolute } from "node:path";
import { InputError } from "../core/errors.js";
import { type ExternalDataReader, type ExternalDataRef, externalRef } from "../core/onnx/external.js";
import { decodeModel, type ModelProto } from "../core/onnx/proto.js";
import { checkTensorSize, formatBytes } from "../core/onnx/tensor-data.js";
import { walkTensors } from "../core/onnx/walk.js";
import { readFileSync } from "node:fs";

export interface LoadedModel {
  path: string;
  /** The folder external data is resolved against. */
  dir: string;
  bytes: Uint8Array;
  model: ModelProto;
  readExternal: ExternalDataReader;
  /** External files the model reads, relative to `dir`. */
  externalFiles: string[];
}

export interface LoadOptions {
  /** Refuse tensors larger than this (default: the machine's memory). */
  memoryLimit?: number;
}

export function loadModel(path: string, opts: LoadOptions = {}): LoadedModel {
  const abs = resolve(path);
  let st;
  try {
    st = statSync(abs);
  } catch {
    throw new InputError(`${path}: no such file`);
  }
  if (st.isDirectory()) throw new InputError(`${path} is a folder, not an ONNX model file`);
  const memoryLimit = opts.memoryLimit ?? totalmem();
  if (st.size > memoryLimit)
    throw new InputError(`${path} is ${formatBytes(st.size)}, more than this machine's memory (${formatBytes(memoryLimit)})`);
  const bytes = readFileSync(abs);
  const model = decodeModel(bytes, path);
  const dir = dirname(abs);
  const readExternal = externalReader(dir);
  const externalFiles = new Set<string>();
  walkTensors(model, (t, _place, where) => {
    checkTensorSize(t, JSON.stringify(where), memoryLimit);
    const ref = externalRef(t);
    if (ref) {
      checkExternalFile(dir, ref, t.name);
      externalFiles.add(ref.segments.join("/"));
    }
  });
  return { path: abs, dir, bytes, model, readExternal, externalFiles: [...externalFiles] };
}

/** The real path of an external file, refused when it (or a link on the way) leads outside `dir`. */
function resolveInside(dir: string, ref: ExternalDataRef, tensor: string): string {
  const candidate = join(dir, ...ref.segments);
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch {
    throw new InputError(
      `tensor ${JSON.stringify(tensor)} keeps its data in ${JSON.stringify(ref.location)}, which does not exist next to the model (${candidate})`,
    );
  }
  const realDir = realpathSync(dir);
  const rel = relative(realDir, real);
  if (rel === "" || rel.startsWith(".." + sep) || rel === ".." || isAbsolute(rel))
    throw new InputError(
      `tensor ${JSON.stringify(tensor)} keeps its data in ${JSON.stringify(ref.location)}, which links outside the model's folder; external data must stay inside it`,
    );
  return real;
}

function checkExternalFile(dir: string, ref: ExternalDataRef, tensor: string): void {
  const real = resolveInside(dir, ref, tensor);
  const size = statSync(real).size;
  const end = ref.offset + (ref.length ?? 0);
  if (ref.offset > size || end > size)
    throw new InputError(
      `tensor ${JSON.stringify(tensor)} reads bytes ${ref.offset} to ${end} of ${JSON.stringify(ref.location)}, which has only ${size} bytes`,
    );
}

/** Reads external tensor bytes, each time re-checking that the file is inside `dir`. */
export function externalReader(dir: string): ExternalDataReader {
  return (ref, tensor) => {
    const real = resolveInside(dir, ref, tensor);
    const fd = openSync(real, "r");
    try {
      const size = fstatSync(fd).size;
      const length = ref.length ?? size - ref.offset;
      if (ref.offset + length > size)
        throw new InputError(`tensor ${JSON.stringify(tensor)}: ${JSON.stringify(ref.location)} is shorter than its data`);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, length - done, ref.offset + done);
        if (n === 0) throw new InputError(`tensor ${JSON.stringify(tensor)}: ${JSON.stringify(ref.location)} ended early`);
        done += n;
      }
      return out;
    } finally {
      closeSync(fd);
    }
  };
}
