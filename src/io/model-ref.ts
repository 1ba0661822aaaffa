/**
 * A compressed model for onnxruntime before it is written: its bytes when it fits in one protobuf, else
 * (over 2 GiB, so never encoded whole) a copy written with external data into a private temporary folder
 * beside the output, given by path and removed afterwards. The folder is named like the run's other
 * temporary files (`.<output>.<pid>-<random>.tmp`), so the job client removes it after a killed worker.
 */
import { copyFileSync, linkSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import type { ModelProto } from "../core/onnx/proto.js";
import { tempPathFor } from "./write-atomic.js";
import { stageModel, type DataSpool } from "./write-external.js";

/**
 * With `spool` (a dense output whose tensors already went to its data file), the model file and a link
 * to the unfinished data file, under its final name, go into the private folder.
 */
export async function withModelRef<T>(
  outPath: string,
  encoded: Uint8Array,
  proto: ModelProto,
  spool: DataSpool | undefined,
  use: (model: Uint8Array | string) => Promise<T>,
): Promise<T> {
  if (encoded.length > 0 && !spool) return use(encoded);
  const dir = tempPathFor(outPath);
  mkdirSync(dir);
  const path = join(dir, basename(outPath));
  try {
    if (spool) {
      const data = join(dir, basename(spool.dataPath));
      try {
        linkSync(spool.tmp, data);
      } catch {
        copyFileSync(spool.tmp, data);
      }
      writeFileSync(path, encoded);
      return await use(path);
    }
    const staged = stageModel(path, proto, { externalData: true });
    for (const [from, to] of staged.renames) renameSync(from, to);
    return await use(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
