/**
 * Opening a model file: read, decode, check every tensor's declared size against the data present and
 * the machine's memory, and open external data strictly inside the model's folder.
 */
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync, statSync, type Stats } from "node:fs";
import { totalmem } from "node:os";
import { dirname, join, relative, resolve, sep, isAbsolute } from "node:path";
import { InputError, quoted } from "../core/errors.js";
import { type ExternalDataReader, type ExternalDataRef, externalRef } from "../core/onnx/external.js";
import { decodeModel, type ModelProto, type TensorProto } from "../core/onnx/proto.js";
import { checkTensorSize, declaredBytes, formatBytes, TYPED_ARRAY_MAX_BYTES } from "../core/onnx/tensor-data.js";
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
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(`${quoted(path, 300)}: ${code === "ENAMETOOLONG" ? "the name is too long" : code === "EACCES" ? "permission denied" : "no such file"}`);
  }
  if (st.isDirectory()) throw new InputError(`${path} is a folder, not an ONNX model file`);
  if (!st.isFile()) throw new InputError(`${path} is not a regular file (a named pipe, socket or device), not an ONNX model file`);
  // A protobuf message stops at 2 GiB; larger models keep their weights in external data files.
  if (st.size >= 2 ** 31)
    throw new InputError(`${path} is ${formatBytes(st.size)}: an ONNX file over 2 GiB is not a valid protobuf; larger models keep their weights in external data`);
  const memoryLimit = opts.memoryLimit ?? totalmem();
  if (st.size > memoryLimit)
    throw new InputError(`${path} is ${formatBytes(st.size)}, more than this machine's memory (${formatBytes(memoryLimit)})`);
  const bytes = readFileSync(abs);
  const model = decodeModel(bytes, path);
  const dir = dirname(abs);
  const readExternal = externalReader(dir);
  const externalFiles = new Set<string>();
  walkTensors(model, (t, _place, where) => {
    checkTensorSize(t, quoted(where), memoryLimit);
    const ref = externalRef(t);
    if (ref) {
      checkExternalFile(dir, t, ref, t.name);
      externalFiles.add(ref.segments.join("/"));
    }
  });
  return { path: abs, dir, bytes, model, readExternal, externalFiles: [...externalFiles] };
}

/** Why a path could not be resolved, in words (ENOENT alone means "does not exist"). */
function missingReason(e: unknown): string {
  switch ((e as NodeJS.ErrnoException).code) {
    case "ENAMETOOLONG":
      return "whose name is too long for the file system";
    case "ELOOP":
      return "which is a loop of links";
    case "ENOTDIR":
      return "which goes through something that is not a folder";
    case "EACCES":
      return "which cannot be read (permission denied)";
    default:
      return "which does not exist next to the model";
  }
}

/** The real path of an external file, refused when it (or a link on the way) leads outside `dir`. */
function resolveInside(dir: string, ref: ExternalDataRef, tensor: string): string {
  const candidate = join(dir, ...ref.segments);
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch (e) {
    throw new InputError(`tensor ${quoted(tensor)} keeps its data in ${quoted(ref.location)}, ${missingReason(e)}`);
  }
  const realDir = realpathSync(dir);
  const rel = relative(realDir, real);
  if (rel === "" || rel.startsWith(".." + sep) || rel === ".." || isAbsolute(rel))
    throw new InputError(
      `tensor ${quoted(tensor)} keeps its data in ${quoted(ref.location)}, which links outside the model's folder; external data must stay inside it`,
    );
  return real;
}

/** External data must be a regular file: a folder, FIFO, socket or device is refused before it is opened. */
function regularFileSize(st: Stats, ref: ExternalDataRef, tensor: string): number {
  if (st.isFile()) return st.size;
  const what = st.isDirectory() ? "a folder" : st.isFIFO() ? "a named pipe (FIFO)" : st.isSocket() ? "a socket" : st.isCharacterDevice() || st.isBlockDevice() ? "a device" : "not a regular file";
  throw new InputError(`tensor ${quoted(tensor)} keeps its data in ${quoted(ref.location)}, which is ${what}; external data must be a regular file`);
}

/** The bytes an external tensor reads: its declared length, else what its shape takes. */
function externalSpan(t: TensorProto, ref: ExternalDataRef): number {
  return ref.length ?? declaredBytes(t) ?? 0;
}

function checkExternalFile(dir: string, t: TensorProto, ref: ExternalDataRef, tensor: string): void {
  const real = resolveInside(dir, ref, tensor);
  const size = regularFileSize(statSync(real), ref, tensor);
  const end = ref.offset + externalSpan(t, ref);
  if (ref.offset > size || end > size)
    throw new InputError(`tensor ${quoted(tensor)} reads bytes ${ref.offset} to ${end} of ${quoted(ref.location)}, which has only ${size} bytes`);
}

/** Reads external tensor bytes, each time re-checking that the file is inside `dir` and regular. */
export function externalReader(dir: string): ExternalDataReader {
  return (ref, tensor) => {
    const real = resolveInside(dir, ref, tensor);
    regularFileSize(statSync(real), ref, tensor);
    // Non-blocking: should the file have become a FIFO since the check, opening it does not hang.
    const fd = openSync(real, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const size = regularFileSize(fstatSync(fd), ref, tensor);
      const length = ref.length ?? size - ref.offset;
      if (ref.offset > size || ref.offset + length > size)
        throw new InputError(`tensor ${quoted(tensor)}: ${quoted(ref.location)} is shorter than its data`);
      if (length > TYPED_ARRAY_MAX_BYTES)
        throw new InputError(`tensor ${quoted(tensor)} reads ${length} bytes from ${quoted(ref.location)}; a single tensor over 4 GiB is not supported`);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, length - done, ref.offset + done);
        if (n === 0) throw new InputError(`tensor ${quoted(tensor)}: ${quoted(ref.location)} ended early`);
        done += n;
      }
      return out;
    } finally {
      closeSync(fd);
    }
  };
}
