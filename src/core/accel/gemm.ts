/**
 * A layer lowered to GEMMs, and the compute cycles of a GEMM on the systolic array.
 *
 * A layer is `groups` independent GEMMs, each of M output pixels or tokens (rows of the input operand),
 * K the reduction, N outputs: out[M, N] = in[M, K] x weights[K, N].
 */
import type { Dataflow } from "./params.js";

export interface GemmLayer {
  /** The layer's name (ONNX node name, or `OpType_index`; the SCALE-Sim layer name). */
  name: string;
  /** Conv, ConvTranspose, Gemm, MatMul, or `scalesim-conv` / `scalesim-gemm` for a topology row. */
  opType: string;
  M: number;
  K: number;
  N: number;
  /** Independent GEMMs of M x K x N (convolution groups, MatMul batch). */
  groups: number;
  /**
   * Whether the K x N operand is a constant weight (stored in the format being simulated). When false
   * it is an activation (attention's Q x K^T, for example): moved at `bytesPerActivation`, never compressed.
   */
  constantWeights: boolean;
  /** The weight tensor's name, used to find per-layer figures of a compression. */
  weightName?: string;
  /** Elements of the input feature map actually read (the tensor, not its im2col expansion), all groups. */
  ifmapElements: number;
  /** Elements of the output written, all groups. */
  ofmapElements: number;
}

/**
 * Compute cycles of one M x K x N GEMM on an R x C array: the closed forms SCALE-Sim v2 produces (checked
 * against its COMPUTE_REPORT to the cycle, test/accel.test.ts):
 *   ws: ceil(K/R) * ceil(N/C) * (2R + C + M - 2) - 1   (weights fill the array, M rows stream through)
 *   is: ceil(K/R) * ceil(M/C) * (2R + C + N - 2) - 1   (inputs fill the array, N weight columns stream)
 *   os: ceil(M/R) * ceil(N/C) * (R + C + K - 2) - 1    (each PE accumulates one output over K)
 * They do not depend on the number format: the array runs one MAC per PE per cycle at any width.
 */
export function gemmComputeCycles(dataflow: Dataflow, R: number, C: number, M: number, K: number, N: number): number {
  const cd = (a: number, b: number) => Math.ceil(a / b);
  switch (dataflow) {
    case "ws":
      return cd(K, R) * cd(N, C) * (2 * R + C + M - 2) - 1;
    case "is":
      return cd(K, R) * cd(M, C) * (2 * R + C + N - 2) - 1;
    case "os":
      return cd(M, R) * cd(N, C) * (R + C + K - 2) - 1;
  }
}

/** A layer's compute cycles: its groups run one after another, each with the closed form. */
export function layerComputeCycles(dataflow: Dataflow, R: number, C: number, l: GemmLayer): number {
  return l.groups * gemmComputeCycles(dataflow, R, C, l.M, l.K, l.N);
}

/**
 * How many times the array reads each weight from the weight buffer: once per pass of the stationary
 * tile in WS (times any re-streaming the tiling needs), once per fold of R output rows in OS, once per
 * fold of C input columns in IS (SCALE-Sim's SRAM filter reads follow the same counts).
 */
export function weightPassesIntoArray(dataflow: Dataflow, R: number, C: number, M: number): number {
  switch (dataflow) {
    case "ws":
      return 1;
    case "os":
      return Math.ceil(M / R);
    case "is":
      return Math.ceil(M / C);
  }
}
