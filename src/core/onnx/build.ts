/** Building small ONNX messages (generated benchmark models, helper graphs run in onnxruntime). */
import {
  create,
  TensorProto_DataType,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type ValueInfoProto,
} from "./proto.js";

/** A tensor value: numbers are fixed dimensions, strings symbolic ones. */
export function valueInfo(name: string, dims: readonly (number | string)[], elemType: number = TensorProto_DataType.FLOAT): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: "tensorType",
        value: create(TypeProto_TensorSchema, {
          elemType,
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map((d) =>
              create(TensorShapeProto_DimensionSchema, {
                value: typeof d === "number" ? { case: "dimValue", value: BigInt(d) } : { case: "dimParam", value: d },
              }),
            ),
          }),
        }),
      },
    }),
  });
}
