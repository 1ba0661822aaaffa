/**
 * NumPy `.npy` files: parse (format versions 1, 2 and 3) and write (version 1, or 2 for huge headers).
 *
 * Supported dtypes: |u1 |i1 <u2 <i2 <u4 <i4 <u8 <i8 <f2 <f4 <f8 |b1 (and the same with `=` or `|`).
 * Big-endian data and Fortran-order arrays are refused with a message that says how to re-save them.
 * Parsing returns a zero-copy view of the input bytes when the data offset is aligned to the element size
 * (it is for files written by NumPy and read with Node's readFile); otherwise the data is copied.
 * float16 values are kept as their IEEE bit patterns in a Uint16Array (as onnxruntime expects them).
 * This file also defines the element types and typed arrays shared by the calibration readers.
 * Assumes a little-endian host (every platform Node ships for).
 */
import { InputError } from "../errors.js";

/** Element types, named as ONNX Runtime names its tensor types. */
export type ElemType =
  | "float32"
  | "float16"
  | "float64"
  | "int8"
  | "uint8"
  | "int16"
  | "uint16"
  | "int32"
  | "uint32"
  | "int64"
  | "uint64"
  | "bool";

/** The typed array holding each element type (float16: bit patterns; bool: 0/1 bytes). */
export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/** An n-dimensional array in C (row-major) order. */
export interface NdArray {
  elemType: ElemType;
  shape: number[];
  data: TypedArray;
}

/** What the header of a .npy file says; the data starts at `dataOffset`. */
export interface NpyHeader {
  elemType: ElemType;
  shape: number[];
  /** Bytes before the data: magic, version, header length field and header. */
  dataOffset: number;
  /** Size of the data in bytes (elements x element size). */
  dataBytes: number;
  version: 1 | 2 | 3;
}

interface TypeInfo {
  size: number;
  ctor: { new (buffer: ArrayBuffer, byteOffset: number, length: number): TypedArray; new (length: number): TypedArray };
  descr: string;
}

const TYPES: Record<ElemType, TypeInfo> = {
  uint8: { size: 1, ctor: Uint8Array, descr: "|u1" },
  int8: { size: 1, ctor: Int8Array, descr: "|i1" },
  bool: { size: 1, ctor: Uint8Array, descr: "|b1" },
  uint16: { size: 2, ctor: Uint16Array, descr: "<u2" },
  int16: { size: 2, ctor: Int16Array, descr: "<i2" },
  float16: { size: 2, ctor: Uint16Array, descr: "<f2" },
  uint32: { size: 4, ctor: Uint32Array, descr: "<u4" },
  int32: { size: 4, ctor: Int32Array, descr: "<i4" },
  float32: { size: 4, ctor: Float32Array, descr: "<f4" },
  uint64: { size: 8, ctor: BigUint64Array, descr: "<u8" },
  int64: { size: 8, ctor: BigInt64Array, descr: "<i8" },
  float64: { size: 8, ctor: Float64Array, descr: "<f8" },
};

/** Bytes per element. */
export function elemSize(t: ElemType): number {
  return TYPES[t].size;
}

/** The largest array Node.js allocates (4 GiB); larger input data is refused with an InputError. */
const MAX_ARRAY_BYTES = 2 ** 32;

/** A zero-filled typed array of `length` elements of type `t`; `what` names it in the error for a size Node.js cannot allocate. */
export function allocTyped(t: ElemType, length: number, what = "input data"): TypedArray {
  const bytes = length * TYPES[t].size;
  if (!Number.isSafeInteger(length) || length < 0 || bytes > MAX_ARRAY_BYTES)
    throw new InputError(`${what} of ${length} ${t} values (${(bytes / 2 ** 30).toFixed(2)} GiB) cannot be held at once: arrays stop at 4 GiB`);
  return new TYPES[t].ctor(length);
}

/**
 * Views `byteLength / elemSize` elements of type `t` over `bytes` (little-endian), without copying when
 * the offset is aligned, else over a copy.
 */
export function viewBytes(t: ElemType, bytes: Uint8Array): TypedArray {
  const { size, ctor } = TYPES[t];
  const length = Math.floor(bytes.byteLength / size);
  if (bytes.byteOffset % size === 0) return new ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
  // A copy, made explicitly: Buffer.prototype.slice would return another unaligned view.
  const copy = new Uint8Array(length * size);
  copy.set(bytes.subarray(0, length * size));
  return new ctor(copy.buffer, 0, length);
}

/** The product of the dims (1 for a scalar). */
export function numElements(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** Bytes of the fixed prefix (magic, version, length field) large enough for every version. */
export const NPY_PREFIX_BYTES = 12;

/** True when the bytes start with the .npy magic string. */
export function isNpy(bytes: Uint8Array): boolean {
  return bytes.length >= 6 && MAGIC.every((b, i) => bytes[i] === b);
}

/**
 * The data offset (= total header size) from the first NPY_PREFIX_BYTES bytes of a file, so a reader can
 * fetch just the header of a large file.
 */
export function npyDataOffset(prefix: Uint8Array, source: string): number {
  if (!isNpy(prefix)) throw new InputError(`${source} is not a NumPy .npy file (the magic string \\x93NUMPY is missing).`);
  if (prefix.length < 10) throw new InputError(`${source} is truncated inside its .npy header.`);
  const major = prefix[6]!;
  const dv = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  if (major === 1) return 10 + dv.getUint16(8, true);
  if (major === 2 || major === 3) {
    if (prefix.length < 12) throw new InputError(`${source} is truncated inside its .npy header.`);
    return 12 + dv.getUint32(8, true);
  }
  throw new InputError(`${source} uses .npy format version ${major}.${prefix[7]}, which is not supported (versions 1, 2 and 3 are).`);
}

/** Parses the header of a .npy file; `bytes` must hold at least the whole header. */
export function parseNpyHeader(bytes: Uint8Array, source: string): NpyHeader {
  const dataOffset = npyDataOffset(bytes, source);
  if (bytes.length < dataOffset) throw new InputError(`${source} is truncated inside its .npy header.`);
  const version = bytes[6] as 1 | 2 | 3;
  const headerStart = version === 1 ? 10 : 12;
  const raw = bytes.subarray(headerStart, dataOffset);
  const text = version === 3 ? new TextDecoder("utf-8").decode(raw) : latin1(raw);

  if (/['"]descr['"]\s*:\s*\[/.test(text))
    throw new InputError(`${source} holds a structured (record) array, which is not supported; save a plain numeric array.`);
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(text)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined)
    throw new InputError(`${source} has a malformed .npy header (expected 'descr', 'fortran_order' and 'shape'): ${text.trim().slice(0, 120)}`);

  const shape: number[] = [];
  for (const part of shapeText.split(",")) {
    const p = part.trim().replace(/L$/, "");
    if (p === "") continue;
    if (!/^\d+$/.test(p)) throw new InputError(`${source} has a malformed shape (${shapeText}) in its .npy header.`);
    shape.push(Number(p));
  }
  const elemType = dtypeOf(descr, source);
  if (fortran === "True" && shape.filter((d) => d > 1).length > 1)
    throw new InputError(
      `${source} stores its array in Fortran (column-major) order, which is not supported; ` +
        `re-save it with np.save(path, np.ascontiguousarray(a)).`,
    );
  const dataBytes = numElements(shape) * TYPES[elemType].size;
  return { elemType, shape, dataOffset, dataBytes, version };
}

/** Parses a whole .npy file. `source` names the file in error messages. */
export function parseNpy(bytes: Uint8Array, source: string): NdArray {
  const h = parseNpyHeader(bytes, source);
  const available = bytes.length - h.dataOffset;
  if (available < h.dataBytes)
    throw new InputError(
      `${source} is truncated: its header declares shape (${h.shape.join(", ")}) of ${h.elemType}, ` +
        `${h.dataBytes} bytes, but only ${available} bytes of data follow.`,
    );
  const data = viewBytes(h.elemType, bytes.subarray(h.dataOffset, h.dataOffset + h.dataBytes));
  return { elemType: h.elemType, shape: h.shape, data };
}

/** Encodes an array as a .npy file (format 1.0, or 2.0 when the header exceeds 64 KiB). */
export function writeNpy(arr: NdArray): Uint8Array {
  const { descr, size } = TYPES[arr.elemType];
  const n = numElements(arr.shape);
  if (arr.data.length !== n)
    throw new Error(`writeNpy: shape (${arr.shape.join(", ")}) needs ${n} elements, data has ${arr.data.length}`);
  const shapeText = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(", ")})`;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  let version = 1;
  let prefixLen = 10;
  let total = prefixLen + dict.length + 1;
  let padded = Math.ceil(total / 64) * 64;
  if (padded - prefixLen > 0xffff) {
    version = 2;
    prefixLen = 12;
    total = prefixLen + dict.length + 1;
    padded = Math.ceil(total / 64) * 64;
  }
  const headerLen = padded - prefixLen;
  const out = new Uint8Array(padded + n * size);
  out.set(MAGIC, 0);
  out[6] = version;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, headerLen, true);
  else dv.setUint32(8, headerLen, true);
  const header = dict + " ".repeat(headerLen - dict.length - 1) + "\n";
  for (let i = 0; i < header.length; i++) out[prefixLen + i] = header.charCodeAt(i);
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, n * size), padded);
  return out;
}

function dtypeOf(descr: string, source: string): ElemType {
  const m = /^([<>=|]?)([a-zA-Z])(\d*)$/.exec(descr);
  const order = m?.[1] ?? "";
  const kind = m?.[2] ?? "";
  const bytes = Number(m?.[3] || "0");
  const table: Record<string, ElemType> = {
    u1: "uint8", i1: "int8", b1: "bool", u2: "uint16", i2: "int16", f2: "float16",
    u4: "uint32", i4: "int32", f4: "float32", u8: "uint64", i8: "int64", f8: "float64",
  };
  const t = m ? table[`${kind}${bytes || (kind === "b" ? 1 : 0)}`] : undefined;
  if (!t)
    throw new InputError(
      `${source} has dtype '${descr}', which is not supported ` +
        `(supported: uint8, int8, uint16, int16, uint32, int32, uint64, int64, float16, float32, float64, bool).`,
    );
  if (order === ">" && TYPES[t].size > 1)
    throw new InputError(
      `${source} stores big-endian values ('${descr}'), which are not supported; re-save it little-endian with a.astype('<${kind}${bytes}').`,
    );
  return t;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}
