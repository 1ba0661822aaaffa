/**
 * ONNX `TensorProto` files (`.pb`, as in the model zoo's `test_data_set_N/input_M.pb`): decode to a typed
 * array with its dims, from `raw_data` or from the typed fields (`float_data`, `int32_data`, `int64_data`,
 * `double_data`, `uint64_data`). float16 stays as bit patterns (Uint16Array); bfloat16 is widened to
 * float32 (exact). Strings, complex, 8-bit and 4-bit float types and external data are refused.
 * `encodeTensorProto` writes the inverse (raw_data), for tests and tools.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { TensorProtoSchema, TensorProto_DataLocation, TensorProto_DataType as DT } from "onnx-buf";
import { InputError } from "../errors.js";
import { allocTyped, elemSize, numElements, viewBytes, type ElemType, type NdArray } from "./npy.js";

/** A decoded tensor: `name` is the TensorProto's name ("" when unset). */
export interface DecodedTensor extends NdArray {
  name: string;
}

const TO_ONNX: Record<ElemType, number> = {
  float32: DT.FLOAT,
  uint8: DT.UINT8,
  int8: DT.INT8,
  uint16: DT.UINT16,
  int16: DT.INT16,
  int32: DT.INT32,
  int64: DT.INT64,
  bool: DT.BOOL,
  float16: DT.FLOAT16,
  float64: DT.DOUBLE,
  uint32: DT.UINT32,
  uint64: DT.UINT64,
};

const FROM_ONNX = new Map(Object.entries(TO_ONNX).map(([name, code]) => [code, name as ElemType]));

/** Decodes a serialized TensorProto. `source` names the file in error messages. */
export function decodeTensorProto(bytes: Uint8Array, source: string): DecodedTensor {
  let t;
  try {
    t = fromBinary(TensorProtoSchema, bytes);
  } catch (e) {
    throw new InputError(`${source} is not a valid ONNX TensorProto file (${(e as Error).message}).`);
  }
  const dims = t.dims.map((d) => Number(d));
  if (dims.some((d) => d < 0 || !Number.isSafeInteger(d)))
    throw new InputError(`${source} has invalid dims [${t.dims.join(", ")}].`);
  if (t.dataLocation === TensorProto_DataLocation.EXTERNAL)
    throw new InputError(`${source} keeps its data in an external file, which is not supported for input tensors.`);
  const n = numElements(dims);
  const dtName = DT[t.dataType] ?? String(t.dataType);

  if (t.dataType === DT.BFLOAT16) {
    const bits = new Uint16Array(n);
    if (t.rawData.length > 0) {
      checkRaw(t.rawData.length, n * 2, source, dims, "bfloat16");
      bits.set(viewBytes("uint16", t.rawData.subarray(0, n * 2)) as Uint16Array);
    } else {
      checkCount(t.int32Data.length, n, source, dims);
      for (let i = 0; i < n; i++) bits[i] = t.int32Data[i]! & 0xffff;
    }
    const out = new Float32Array(n);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = bits[i]! << 16;
    return { name: t.name, elemType: "float32", shape: dims, data: out };
  }

  const elemType = FROM_ONNX.get(t.dataType);
  if (!elemType)
    throw new InputError(
      `${source} holds ${dtName} data, which is not supported as model input data ` +
        `(supported: float, float16, bfloat16, double, int8-int64, uint8-uint64, bool).`,
    );

  if (t.rawData.length > 0) {
    const size = elemSize(elemType);
    checkRaw(t.rawData.length, n * size, source, dims, elemType);
    return { name: t.name, elemType, shape: dims, data: viewBytes(elemType, t.rawData.subarray(0, n * size)) };
  }

  const data = allocTyped(elemType, n);
  switch (elemType) {
    case "float32":
      checkCount(t.floatData.length, n, source, dims);
      (data as Float32Array).set(t.floatData.slice(0, n));
      break;
    case "float64":
      checkCount(t.doubleData.length, n, source, dims);
      (data as Float64Array).set(t.doubleData.slice(0, n));
      break;
    case "int64":
      checkCount(t.int64Data.length, n, source, dims);
      (data as BigInt64Array).set(t.int64Data.slice(0, n));
      break;
    case "uint32":
    case "uint64": {
      checkCount(t.uint64Data.length, n, source, dims);
      if (elemType === "uint64") (data as BigUint64Array).set(t.uint64Data.slice(0, n));
      else for (let i = 0; i < n; i++) (data as Uint32Array)[i] = Number(t.uint64Data[i]!);
      break;
    }
    default: {
      // int32_data carries int32, int16, int8, uint16, uint8, bool and float16 (bit patterns), one per entry.
      checkCount(t.int32Data.length, n, source, dims);
      const d = data as Int32Array | Int16Array | Int8Array | Uint16Array | Uint8Array;
      for (let i = 0; i < n; i++) d[i] = t.int32Data[i]!;
    }
  }
  return { name: t.name, elemType, shape: dims, data };
}

/** Encodes a tensor as a TensorProto with raw_data (little-endian). */
export function encodeTensorProto(t: { name?: string; elemType: ElemType; shape: number[]; data: NdArray["data"] }): Uint8Array {
  const n = numElements(t.shape);
  if (t.data.length !== n) throw new Error(`encodeTensorProto: dims [${t.shape}] need ${n} elements, data has ${t.data.length}`);
  const raw = new Uint8Array(n * elemSize(t.elemType));
  raw.set(new Uint8Array(t.data.buffer, t.data.byteOffset, raw.length));
  const msg = create(TensorProtoSchema, {
    name: t.name ?? "",
    dataType: TO_ONNX[t.elemType],
    dims: t.shape.map((d) => BigInt(d)),
    rawData: raw,
  });
  return toBinary(TensorProtoSchema, msg);
}

function checkRaw(have: number, need: number, source: string, dims: number[], type: string): void {
  if (have < need)
    throw new InputError(
      `${source} is truncated: dims [${dims.join(", ")}] of ${type} need ${need} bytes of raw_data, the file has ${have}.`,
    );
}

function checkCount(have: number, need: number, source: string, dims: number[]): void {
  if (have < need)
    throw new InputError(`${source} is truncated: dims [${dims.join(", ")}] need ${need} values, the file has ${have}.`);
}
