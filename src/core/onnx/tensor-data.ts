/** Reading the values of a TensorProto, wherever they are stored, and checking its declared size. */
import { InputError, quoted } from "../errors.js";
import { formatBytes } from "../text-table.js";
import { bfloat16ToFloat, dtypeBits, dtypeName, halfToFloat, rawByteLength } from "./dtype.js";
import { externalRef, type ExternalDataReader } from "./external.js";
import { TensorProto_DataType as DT, type TensorProto } from "./proto.js";

export const tensorDims = (t: TensorProto): number[] => t.dims.map(Number);

/** The largest typed array Node.js can allocate (4 GiB): a tensor read or converted whole must fit. */
export const TYPED_ARRAY_MAX_BYTES = 2 ** 32;

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Dims for a message: a damaged file may declare thousands. */
const shortDims = (dims: readonly number[]): string => (dims.length > 8 ? `${dims.slice(0, 8).join(", ")}, ... (${dims.length} dims)` : dims.join(", "));

/** Number of elements of a tensor's values stored in a typed field (not raw_data). */
function typedFieldLength(t: TensorProto): number {
  return (
    t.floatData.length +
    t.int32Data.length +
    t.int64Data.length +
    t.doubleData.length +
    t.uint64Data.length +
    t.stringData.length
  );
}

/** The bytes a tensor declares, or undefined where its width is not fixed (strings). */
export function declaredBytes(t: TensorProto): number | undefined {
  return rawByteLength(t.dataType, elementCount(tensorDims(t)));
}

/**
 * Refuses a tensor whose declared shape does not fit the data it carries, or would need more memory
 * than `memoryLimit` bytes: a damaged or hostile file must fail here, not in an allocation.
 */
export function checkTensorSize(t: TensorProto, where: string, memoryLimit: number): void {
  const dims = tensorDims(t);
  if (dims.some((d) => d < 0 || !Number.isSafeInteger(d)))
    throw new InputError(`tensor ${where} has an invalid shape [${shortDims(dims)}]`);
  const count = elementCount(dims);
  const bits = dtypeBits(t.dataType);
  const bytes = bits === undefined ? 0 : Math.ceil((count * bits) / 8);
  if (!Number.isSafeInteger(count) || bytes > memoryLimit)
    throw new InputError(
      `tensor ${where} declares shape [${shortDims(dims)}] of ${dtypeName(t.dataType)}, ` +
        `${formatBytes(bytes)}, more than this machine can hold (${formatBytes(memoryLimit)})`,
    );
  if (bytes > TYPED_ARRAY_MAX_BYTES)
    throw new InputError(
      `tensor ${where} is ${formatBytes(bytes)}; a single tensor over 4 GiB is not supported (Node.js arrays stop at 4 GiB)`,
    );
  const ext = externalRef(t);
  if (ext) {
    if (ext.length !== undefined && ext.length !== bytes)
      throw new InputError(
        `tensor ${where} declares ${formatBytes(bytes)} but its external data length is ${ext.length} bytes`,
      );
    return;
  }
  if (t.rawData.length > 0) {
    if (t.rawData.length !== bytes)
      throw new InputError(
        `tensor ${where} declares shape [${shortDims(dims)}] of ${dtypeName(t.dataType)} (${bytes} bytes) ` +
          `but carries ${t.rawData.length} bytes: the model is damaged or truncated`,
      );
    return;
  }
  const stored = typedFieldLength(t);
  if (stored !== 0 && stored !== count && !(t.dataType === DT.COMPLEX64 || t.dataType === DT.COMPLEX128)) {
    // Sub-byte and 16-bit types may be packed several per int32; only a clearly wrong count is refused.
    const perValue = bits !== undefined && bits < 16 ? Math.ceil(count / Math.floor(32 / bits)) : count;
    if (stored !== perValue)
      throw new InputError(
        `tensor ${where} declares ${count} elements but carries ${stored}: the model is damaged or truncated`,
      );
  }
}


/** The raw little-endian bytes of a tensor stored in raw_data or externally; undefined for typed fields. */
export function rawBytes(t: TensorProto, readExternal?: ExternalDataReader): Uint8Array | undefined {
  const ext = externalRef(t);
  if (ext) {
    if (!readExternal) throw new InputError(`tensor ${quoted(t.name)} is stored in an external file that was not opened`);
    // Without a length the tensor spans what its shape and type need (as onnxruntime reads it), not the
    // rest of the file; with one, the two must agree.
    const need = declaredBytes(t);
    if (need !== undefined && ext.length !== undefined && ext.length !== need)
      throw new InputError(`tensor ${quoted(t.name)} declares ${ext.length} bytes of external data, but its shape and type need ${need}`);
    return readExternal(ext.length === undefined && need !== undefined ? { ...ext, length: need } : ext, t.name);
  }
  return t.rawData.length > 0 || typedFieldLength(t) === 0 ? t.rawData : undefined;
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Values of a float32, float16, bfloat16 or float64 tensor as float32. */
export function tensorToFloat32(t: TensorProto, readExternal?: ExternalDataReader): Float32Array {
  const count = elementCount(tensorDims(t));
  if (count * 4 > TYPED_ARRAY_MAX_BYTES)
    throw new InputError(
      `tensor ${JSON.stringify(t.name.slice(0, 200))} has ${count} values: as float32 that is over 4 GiB, more than one Node.js array holds; such a layer is not supported yet`,
    );
  const raw = rawBytes(t, readExternal);
  // External float32 data was just read into a buffer of its own: on a little-endian machine it is
  // taken as it is (a layer-sized copy less on a large model). Inline data stays the model's: copied.
  if (raw && t.dataType === DT.FLOAT && LITTLE_ENDIAN && externalRef(t) && raw.byteOffset % 4 === 0 && raw.length === count * 4)
    return new Float32Array(raw.buffer, raw.byteOffset, count);
  const out = new Float32Array(count);
  if (raw) {
    const need = rawByteLength(t.dataType, count);
    if (need === undefined || raw.length < need)
      throw new InputError(`tensor ${quoted(t.name)} carries ${raw.length} bytes, fewer than its shape needs`);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    switch (t.dataType) {
      case DT.FLOAT:
        for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
        return out;
      case DT.FLOAT16:
        for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
        return out;
      case DT.BFLOAT16:
        for (let i = 0; i < count; i++) out[i] = bfloat16ToFloat(view.getUint16(2 * i, true));
        return out;
      case DT.DOUBLE:
        for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
        return out;
    }
  } else {
    switch (t.dataType) {
      case DT.FLOAT:
        out.set(t.floatData);
        return out;
      case DT.FLOAT16:
        t.int32Data.forEach((v, i) => (out[i] = halfToFloat(v)));
        return out;
      case DT.BFLOAT16:
        t.int32Data.forEach((v, i) => (out[i] = bfloat16ToFloat(v)));
        return out;
      case DT.DOUBLE:
        out.set(t.doubleData);
        return out;
    }
  }
  throw new InputError(`tensor ${quoted(t.name)} is ${dtypeName(t.dataType)}, not a floating-point type`);
}

export { formatBytes };
