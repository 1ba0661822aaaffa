/**
 * Generated models for the benchmarks (deterministic weights, He-scaled so activations keep their size).
 *
 * `generateFashionCnn`: the 1.2M-parameter Fashion-MNIST CNN of issue 11 (Conv 1->32 3x3, Conv 32->64 3x3,
 * MaxPool 2x2, Gemm 128 x 9216, Gemm 10 x 128, ReLUs between; input [batch, 1, 28, 28]): its 128 x 9216
 * Gemm fed by a few hundred calibration samples is the case where the statistic's factor X (9216 x 512)
 * is far cheaper than H (9216 x 9216).
 *
 * `generateSegmentationCnn`: a 100 MB convolutional encoder-decoder shaped like ISNet (many 3 x 3
 * convolutions of 64-512 channels, strided down to 1/16 and resized back up; input [batch, 3, 512, 512],
 * output a one-channel mask at 1/2 size): ten 4608-column convolutions whose H (4608 x 4608) is 85 MB each
 * in float32, the model whose statistics do not fit at once under a small memory budget.
 */
import { valueInfo } from "../core/onnx/build.js";
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  create,
  encodeModel,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType as DT,
  TensorProtoSchema,
  type NodeProto,
  type TensorProto,
} from "../core/onnx/proto.js";
import { Rng } from "../core/rng.js";

/** A small graph builder for the generated benchmark models. */
class ModelWriter {
  readonly inits: TensorProto[] = [];
  readonly nodes: NodeProto[] = [];
  private readonly rng: Rng;

  constructor(seed: number) {
    this.rng = new Rng(seed);
  }

  tensor(name: string, dims: number[], fanIn: number): string {
    const n = dims.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    const s = Math.sqrt(2 / fanIn);
    for (let i = 0; i < n; i++) v[i] = this.rng.normal() * s;
    this.inits.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.FLOAT, rawData: new Uint8Array(v.buffer) }));
    return name;
  }

  /** A float32 tensor of given values (no randomness). */
  constant(name: string, dims: number[], values: number[]): string {
    const v = Float32Array.from(values);
    this.inits.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.FLOAT, rawData: new Uint8Array(v.buffer) }));
    return name;
  }

  op(opType: string, input: string[], output: string, attrs: Record<string, number | number[]> = {}, name = ""): string {
    const attribute = Object.entries(attrs).map(([k, v]) =>
      typeof v === "number"
        ? create(AttributeProtoSchema, { name: k, type: AT.INT, i: BigInt(v) })
        : create(AttributeProtoSchema, { name: k, type: AT.INTS, ints: v.map(BigInt) }),
    );
    this.nodes.push(create(NodeProtoSchema, { opType, input, output: [output], name, attribute }));
    return output;
  }

  encode(name: string, input: [string, (number | string)[]], output: [string, (number | string)[]]): Uint8Array {
    return encodeModel(
      create(ModelProtoSchema, {
        irVersion: 8n,
        producerName: "ssvq-bench",
        opsetImport: [create(OperatorSetIdProtoSchema, { domain: "", version: 13n })],
        graph: create(GraphProtoSchema, {
          name,
          node: this.nodes,
          initializer: this.inits,
          input: [valueInfo(input[0], input[1])],
          output: [valueInfo(output[0], output[1])],
        }),
      }),
    );
  }
}

/** The issue 11 CNN: 1,199,882 parameters; input "input" [batch, 1, 28, 28], output "logits" [batch, 10]. */
export function generateFashionCnn(seed = 1): Uint8Array {
  const m = new ModelWriter(seed);
  let x = "input";
  const conv = (i: number, cin: number, cout: number) => {
    m.tensor(`conv${i}.weight`, [cout, cin, 3, 3], cin * 9);
    m.tensor(`conv${i}.bias`, [cout], cout);
    m.op("Conv", [x, `conv${i}.weight`, `conv${i}.bias`], `c${i}`, { kernel_shape: [3, 3] }, `conv${i}`);
    x = m.op("Relu", [`c${i}`], `r${i}`);
  };
  conv(1, 1, 32);
  conv(2, 32, 64);
  m.op("MaxPool", [x], "pool", { kernel_shape: [2, 2], strides: [2, 2] });
  m.op("Flatten", ["pool"], "flat", { axis: 1 });
  m.tensor("fc1.weight", [128, 9216], 9216);
  m.tensor("fc1.bias", [128], 128);
  m.op("Gemm", ["flat", "fc1.weight", "fc1.bias"], "fc1", { transB: 1 }, "fc1");
  m.op("Relu", ["fc1"], "fr1");
  m.tensor("fc2.weight", [10, 128], 128);
  m.tensor("fc2.bias", [10], 10);
  m.op("Gemm", ["fr1", "fc2.weight", "fc2.bias"], "logits", { transB: 1 }, "fc2");
  return m.encode("fashion-cnn", ["input", ["batch", 1, 28, 28]], ["logits", ["batch", 10]]);
}

/**
 * The ISNet-like network (25.1M parameters, 100 MB): Conv 3x3 with ReLU throughout, strides 2 down to
 * 32 x 32, nearest-neighbour Resize back up to 256 x 256, a 1 x 1 head. Input "input" [batch, 3, 512, 512],
 * output "mask" [batch, 1, 256, 256].
 */
export function generateSegmentationCnn(seed = 1): Uint8Array {
  const m = new ModelWriter(seed);
  let x = "input";
  let i = 0;
  const conv = (cin: number, cout: number, stride = 1, k = 3, relu = true) => {
    i++;
    m.tensor(`conv${i}.weight`, [cout, cin, k, k], cin * k * k);
    m.tensor(`conv${i}.bias`, [cout], cout);
    const p = (k - 1) >> 1;
    m.op("Conv", [x, `conv${i}.weight`, `conv${i}.bias`], `c${i}`, { kernel_shape: [k, k], strides: [stride, stride], pads: [p, p, p, p] }, `conv${i}`);
    x = relu ? m.op("Relu", [`c${i}`], `r${i}`) : `c${i}`;
  };
  const scales = m.constant("up2.scales", [4], [1, 1, 2, 2]);
  let ups = 0;
  const up = () => {
    ups++;
    x = m.op("Resize", [x, "", scales], `up${ups}`, {}, `resize${ups}`);
  };
  conv(3, 64, 2); // 256 x 256
  conv(64, 64);
  conv(64, 128, 2); // 128
  conv(128, 128);
  conv(128, 256, 2); // 64
  conv(256, 256);
  conv(256, 512);
  conv(512, 512);
  conv(512, 512);
  conv(512, 512, 2); // 32
  for (let j = 0; j < 5; j++) conv(512, 512);
  up(); // 64
  conv(512, 512);
  conv(512, 256);
  up(); // 128
  conv(256, 128);
  conv(128, 64);
  up(); // 256
  conv(64, 64);
  conv(64, 1, 1, 1, false);
  // Resize's mode defaults to nearest.
  const last = m.nodes[m.nodes.length - 1]!;
  last.output = ["mask"];
  return m.encode("segmentation-cnn", ["input", ["batch", 3, 512, 512]], ["mask", ["batch", 1, 256, 256]]);
}
