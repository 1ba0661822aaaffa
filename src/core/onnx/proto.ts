/**
 * The ONNX protobuf schema (ONNX 1.20, compiled for @bufbuild/protobuf by `onnx-buf`) and lossless
 * decoding and encoding of whole models.
 *
 * Why this library: @bufbuild/protobuf keeps fields it does not know as unknown fields and writes them
 * back, decodes `bytes` fields as views into the input (tensor bytes are never copied on decode), and
 * writes fields in field-number order, so a model written by the reference C++ serializer round-trips
 * byte for byte. `onnx-proto` (ONNX 1.10 schema, protobufjs 6) drops fields newer than its schema.
 * `npm run bench -- io` measures decode time and memory.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { badLengthPrefix } from "./wire-lengths.js";
import {
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProtoSchema,
  type ModelProto,
} from "onnx-buf";
import { InputError, quoted } from "../errors.js";

export type {
  AttributeProto,
  GraphProto,
  ModelProto,
  NodeProto,
  OperatorSetIdProto,
  StringStringEntryProto,
  TensorProto,
  TypeProto,
  ValueInfoProto,
} from "onnx-buf";
export { AttributeProto_AttributeType, TensorProto_DataLocation, TensorProto_DataType } from "onnx-buf";
export { create };
export {
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProtoSchema,
};
export {
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  FunctionProtoSchema,
} from "onnx-buf";

/**
 * Decodes an ONNX model. `what` names the source in error messages (usually the file path).
 * Refuses, with an InputError, bytes that are not a protobuf message or not an ONNX model.
 */
export function decodeModel(bytes: Uint8Array, what = "the model"): ModelProto {
  if (bytes.length === 0) throw new InputError(`${what} is empty (0 bytes): not an ONNX model`);
  let model: ModelProto;
  const badLength = badLengthPrefix(bytes, ModelProtoSchema);
  if (badLength) {
    const text = whyUnreadable(bytes, undefined);
    throw new InputError(`${what} is not a readable ONNX model: ${text === TEXT_FILE ? text : `${badLength} (damaged or truncated)`}`);
  }
  try {
    model = fromBinary(ModelProtoSchema, bytes, { readUnknownFields: true });
  } catch (e) {
    throw new InputError(`${what} is not a readable ONNX model: ${whyUnreadable(bytes, e)}`, { cause: e });
  }
  const problem = implausibleModel(model);
  if (problem) throw new InputError(`${what} is not an ONNX model: ${problem}`);
  return model;
}

/** Encodes a model; unknown fields read by decodeModel are written back. */
export function encodeModel(model: ModelProto): Uint8Array {
  return toBinary(ModelProtoSchema, model, { writeUnknownFields: true });
}

const TEXT_FILE = "it is a text file, not a binary ONNX protobuf";

function whyUnreadable(bytes: Uint8Array, e: unknown): string {
  const head = bytes.subarray(0, 512);
  const printable = head.every((b) => b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127) || b >= 0xc0 || (b >= 0x80 && b < 0xc0));
  if (printable) return TEXT_FILE;
  const msg = e instanceof Error ? e.message : String(e);
  if (/maximum recursion depth/i.test(msg))
    return "it nests messages deeper than the reader's limit of 100 levels (subgraphs inside subgraphs about 30 deep), which is refused";
  if (/premature EOF|out of range/i.test(msg)) return "it ends in the middle of a field (truncated?)";
  return "its bytes are not a valid protobuf message (damaged, or another kind of file)";
}

/**
 * Random bytes or text can decode as a protobuf message by chance. A real model has an IR version,
 * a graph, and at least one opset import (except IR 1-2 models, which may omit opsets).
 */
function implausibleModel(m: ModelProto): string | undefined {
  const ir = Number(m.irVersion);
  if (!(ir >= 1 && ir <= 64)) return `its IR version is ${m.irVersion} (a model has 1 to about 12)`;
  if (!m.graph) return "it has no graph";
  if (ir >= 3 && m.opsetImport.length === 0) return "it imports no operator set";
  for (const o of m.opsetImport) {
    const v = Number(o.version);
    if (!(v >= 1 && v <= 1000)) return `it imports operator set ${quoted(o.domain)} at version ${o.version}`;
  }
  const badNode = m.graph.node.find((n) => n.opType === "" || !/^[\w.]+$/.test(n.opType));
  if (badNode) return `a node has the operator type ${JSON.stringify(badNode.opType)}`;
  return undefined;
}

/** The version of the default ("" or "ai.onnx") operator set, or undefined. */
export function defaultOpset(model: ModelProto): number | undefined {
  const o = model.opsetImport.find((x) => x.domain === "" || x.domain === "ai.onnx");
  return o ? Number(o.version) : undefined;
}

/** A new empty tensor message (for building models). */
export const newTensor = (init: Parameters<typeof create<typeof TensorProtoSchema>>[1]) => create(TensorProtoSchema, init);
export const newNode = (init: Parameters<typeof create<typeof NodeProtoSchema>>[1]) => create(NodeProtoSchema, init);
export const newAttribute = (init: Parameters<typeof create<typeof AttributeProtoSchema>>[1]) =>
  create(AttributeProtoSchema, init);
export const newGraph = (init: Parameters<typeof create<typeof GraphProtoSchema>>[1]) => create(GraphProtoSchema, init);
export const newModel = (init: Parameters<typeof create<typeof ModelProtoSchema>>[1]) => create(ModelProtoSchema, init);
