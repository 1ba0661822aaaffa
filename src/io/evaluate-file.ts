/**
 * `ssvq eval` as the background job runs it: a model (and optionally another to compare) on evaluation
 * samples, in onnxruntime; the models are given to onnxruntime by path when they keep external data.
 */
import { parsePreprocess } from "../core/calib/preprocess.js";
import type { EvaluationReport } from "../core/calib/eval-metrics.js";
import type { EvaluateJobSpec } from "../job/protocol.js";
import { openData } from "./calib-files.js";
import { evaluateModels } from "./evaluate.js";
import { loadModel } from "./model-file.js";
import { modelInputs } from "./ort.js";

export async function evaluateFile(spec: EvaluateJobSpec, signal?: AbortSignal): Promise<{ report: EvaluationReport; warnings: string[] }> {
  const preprocess = parsePreprocess(spec.preprocess);
  const loaded = loadModel(spec.model);
  const other = spec.compare !== undefined ? loadModel(spec.compare) : undefined;
  const data = await openData(modelInputs(loaded.model), {
    path: spec.data.path,
    role: "eval",
    preprocess,
    ...(spec.data.range !== undefined ? { range: spec.data.range } : {}),
    ...(spec.data.count !== undefined ? { count: spec.data.count } : {}),
    ...(spec.data.labels !== undefined ? { labels: spec.data.labels } : {}),
    ...(spec.batchSize !== undefined ? { batchSize: spec.batchSize } : {}),
  });
  const ref = (m: ReturnType<typeof loadModel>) => (m.externalFiles.length > 0 ? m.path : m.bytes);
  const report = await evaluateModels(ref(loaded), other ? ref(other) : undefined, data, {
    names: { original: spec.model, ...(spec.compare !== undefined ? { compressed: spec.compare } : {}) },
    ...(signal ? { signal } : {}),
  });
  return { report, warnings: data.info.warnings };
}
