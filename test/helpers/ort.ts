/** Running models in onnxruntime-node from tests. */
import * as ort from "onnxruntime-node";
import { readFileSync } from "node:fs";
import { fixture } from "./paths.js";

export type Feeds = Record<string, { data: Float32Array; dims: number[] }>;

export async function runModel(
  model: Uint8Array | string,
  feeds: Feeds,
  options: ort.InferenceSession.SessionOptions = {},
): Promise<Record<string, Float32Array>> {
  const session =
    typeof model === "string"
      ? await ort.InferenceSession.create(model, { intraOpNumThreads: 1, ...options })
      : await ort.InferenceSession.create(model, { intraOpNumThreads: 1, ...options });
  try {
    const input: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) input[k] = new ort.Tensor("float32", v.data, v.dims);
    const out = await session.run(input);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await session.release();
  }
}

/** The 2,000 Fashion-MNIST test images as [n, 1, 28, 28] pixel/255, and their labels. */
export function fashionImages(): { x: Float32Array; y: Uint8Array; n: number } {
  const raw = readFileSync(fixture("fashion_test2000_x_u8.npy"));
  const header = raw.readUInt16LE(8) + 10;
  const px = raw.subarray(header);
  const x = Float32Array.from(px, (v) => v / 255);
  const lab = readFileSync(fixture("fashion_test2000_y_u8.npy"));
  const y = Uint8Array.from(lab.subarray(lab.readUInt16LE(8) + 10));
  return { x, y, n: y.length };
}

export function argmaxRows(logits: Float32Array, classes: number): Uint32Array {
  const n = logits.length / classes;
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < classes; j++) if (logits[i * classes + j]! > logits[i * classes + best]!) best = j;
    out[i] = best;
  }
  return out;
}

export const maxAbsDiff = (a: Float32Array, b: Float32Array): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
