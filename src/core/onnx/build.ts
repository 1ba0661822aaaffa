/** Building small ONNX messages (generated benchmark models, helper graphs run in onnxruntime, the fuzzer's and the tests' models). */
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  create,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from "./proto.js";

/** A tensor value: numbers are fixed dimensions, strings symbolic ones; no dims, no shape at all. */
export function valueInfo(name: string, dims: readonly (number | string)[] | undefined, elemType: number = TensorProto_DataType.FLOAT): ValueInfoProto {
  const shape = dims
    ? {
        shape: create(TensorShapeProtoSchema, {
          dim: dims.map((d) =>
            create(TensorShapeProto_DimensionSchema, {
              value: typeof d === "number" ? { case: "dimValue", value: BigInt(d) } : { case: "dimParam", value: d },
            }),
          ),
        }),
      }
    : {};
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: "tensorType", value: create(TypeProto_TensorSchema, { elemType, ...shape }) } }),
  });
}

/** An attribute's value: INT, INTS, STRING, FLOAT ({ float }), TENSOR or GRAPH. */
export type AttrValue = number | number[] | string | TensorProto | GraphProto | { float: number };

export function attr(name: string, v: AttrValue): AttributeProto {
  if (typeof v === "number") return create(AttributeProtoSchema, { name, type: AT.INT, i: BigInt(v) });
  if (typeof v === "string") return create(AttributeProtoSchema, { name, type: AT.STRING, s: new TextEncoder().encode(v) as Uint8Array<ArrayBuffer> });
  if (Array.isArray(v)) return create(AttributeProtoSchema, { name, type: AT.INTS, ints: v.map(BigInt) });
  if ("float" in v) return create(AttributeProtoSchema, { name, type: AT.FLOAT, f: v.float });
  if (v.$typeName === "onnx.TensorProto") return create(AttributeProtoSchema, { name, type: AT.TENSOR, t: v });
  return create(AttributeProtoSchema, { name, type: AT.GRAPH, g: v });
}

export function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name = ""): NodeProto {
  return create(NodeProtoSchema, { opType, input: inputs, output: outputs, name, attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) });
}

export function graph(g: { nodes: NodeProto[]; inputs: ValueInfoProto[]; outputs: ValueInfoProto[]; initializers?: TensorProto[]; name?: string }): GraphProto {
  return create(GraphProtoSchema, { name: g.name ?? "g", node: g.nodes, input: g.inputs, output: g.outputs, initializer: g.initializers ?? [] });
}

/** A model of one graph importing the default domain at `opset`. */
export function model(g: GraphProto, o: { opset?: number; irVersion?: number; producer: string }): ModelProto {
  return create(ModelProtoSchema, {
    irVersion: BigInt(o.irVersion ?? 7),
    producerName: o.producer,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: BigInt(o.opset ?? 13) })],
    graph: g,
  });
}
