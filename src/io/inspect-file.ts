/**
 * Inspecting a model file: what `ssvq inspect --json` prints and the inspector shows. One function for
 * the CLI and the extension's background job, so both show the same thing.
 *
 * Keep it light: nothing here (or below) imports onnxruntime, so an inspection starts fast.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { readBackCompression, type CompressionReadback } from "../core/onnx/readback.js";
import { summarizeModel, type ModelSummary } from "../core/onnx/summary.js";
import { loadModel } from "./model-file.js";

export interface ModelInspection extends ModelSummary {
  /** The model's absolute path. */
  path: string;
  fileBytes: number;
  /** External data files the model reads, relative to its folder. */
  externalFiles: string[];
  /** Their sizes on disk, together. */
  externalBytes: number;
  /** A compressed model (`ssvq.*` metadata): its parameters and layers, read back from the file itself. */
  compression?: CompressionReadback;
}

/** Reads and summarises a model; throws InputError (one clear line) for a file that is not a readable model. */
export function inspectFile(path: string): ModelInspection {
  const loaded = loadModel(path);
  const summary = summarizeModel(loaded.model);
  const compression = readBackCompression(loaded.model, loaded.readExternal);
  return {
    path: loaded.path,
    fileBytes: loaded.bytes.length,
    externalFiles: loaded.externalFiles,
    externalBytes: loaded.externalFiles.reduce((a, f) => a + statSync(join(loaded.dir, f)).size, 0),
    ...summary,
    ...(compression ? { compression } : {}),
  };
}
