/**
 * How much each layer's quantization error moves the model's output (issue 12's sensitivity): the model
 * is run on calibration samples with that one layer replaced by a perturbed copy (all others as they are),
 * and its output change is measured against the original's, sum ||y' - y||^2 / sum ||y||^2 over every
 * float output. One onnxruntime session per layer, on at most `samples` samples.
 */
import { CancelledError } from "../core/errors.js";
import { withDenseWeights } from "../core/compress.js";
import type { ExternalDataReader } from "../core/onnx/external.js";
import { encodeModel } from "../core/onnx/proto.js";
import type { Batch } from "../core/calib/source.js";
import { sessionModel } from "./capture.js";
import { dirname } from "node:path";
import { createSession, runSession, tensorValues, toOrtFeeds } from "./ort.js";

/** Calibration samples the sensitivities are measured on, at most. */
export const SENSITIVITY_SAMPLES = 128;

export const MODEL_CHANGE = "sum ||y' - y||^2 / sum ||y||^2 over the model's float outputs, this layer alone perturbed";

export interface SensitivityOptions {
  samples?: number;
  readExternal?: ExternalDataReader;
  label?: string;
  signal?: AbortSignal;
  onProgress?: (fraction: number) => void;
}

/**
 * The output change of the model for each perturbation (one layer, by weightKey, its values as stored, or
 * a function that makes them when that layer's turn comes),
 * in the perturbations' order, and the samples it was measured on.
 */
export async function measureModelChanges(
  bytes: Uint8Array,
  path: string,
  perturbations: readonly { key: string; stored: Float32Array | (() => Float32Array) }[],
  data: { batches(): AsyncGenerator<Batch> },
  o: SensitivityOptions = {},
): Promise<{ changes: number[]; samples: number }> {
  const limit = o.samples ?? SENSITIVITY_SAMPLES;
  const label = o.label ?? path;
  const check = () => {
    if (o.signal?.aborted) throw new CancelledError();
  };
  const original = await createSession(path, { label });
  const batches: { feeds: Batch["feeds"]; outputs: Record<string, Float32Array | Float64Array> }[] = [];
  let samples = 0;
  let energy = 0;
  try {
    for await (const batch of data.batches()) {
      check();
      const y = await runSession(original, toOrtFeeds(batch.feeds), undefined, label);
      const outputs: Record<string, Float32Array | Float64Array> = {};
      for (const [name, t] of Object.entries(y)) {
        const v = tensorValues(t);
        if (!v) continue;
        outputs[name] = v;
        for (const x of v) energy += x * x;
      }
      batches.push({ feeds: batch.feeds, outputs });
      samples += batch.indices.length;
      if (samples >= limit) break;
    }
  } finally {
    await original.release();
  }
  const changes: number[] = [];
  for (const [i, p] of perturbations.entries()) {
    check();
    const values = typeof p.stored === "function" ? p.stored() : p.stored;
    // The other weights stay where they are: onnxruntime reads external ones from the model's folder.
    const model = sessionModel(withDenseWeights(bytes, path, new Map([[p.key, values]])), { readExternal: o.readExternal, dir: dirname(path) });
    const session = await createSession(encodeModel(model.model), {
      label: `${label} with ${p.key} perturbed`,
      ...(model.externalDataDir !== undefined ? { externalDataDir: model.externalDataDir } : {}),
    });
    let diff = 0;
    try {
      for (const b of batches) {
        const y = await runSession(session, toOrtFeeds(b.feeds), Object.keys(b.outputs), label);
        for (const [name, ref] of Object.entries(b.outputs)) {
          const v = tensorValues(y[name]!)!;
          for (let j = 0; j < ref.length; j++) {
            const e = v[j]! - ref[j]!;
            diff += Number.isFinite(e) ? e * e : 0;
          }
        }
      }
    } finally {
      await session.release();
    }
    // No float output (or outputs all zero): the change cannot be measured; the layer gets the others' sensitivity (`sensitivities`).
    changes.push(energy > 0 ? diff / energy : NaN);
    o.onProgress?.((i + 1) / perturbations.length);
  }
  return { changes, samples };
}
