/**
 * Writing an output model to temporary files: one protobuf file, or, when it would pass the protobuf
 * limit (or external data is asked for), the model file plus one data file beside it (`X.onnx.data`),
 * laid out by src/core/onnx/external-out.ts. The data file is written tensor by tensor (never one
 * buffer of the whole output). Both go to temporary names (io/write-atomic.ts); the caller renames them
 * into place with its other outputs, after its last cancel check.
 */
import { closeSync, fsyncSync, openSync, rmSync } from "node:fs";
import { basename } from "node:path";
import { DEFAULT_ALIGN, DEFAULT_MODEL_LIMIT, layoutExternal, type ExternalLayout } from "../core/onnx/external-out.js";
import type { DenseSink } from "../core/compress.js";
import type { EncodedModel } from "../core/onnx/encode-pieces.js";
import type { ModelProto } from "../core/onnx/proto.js";
import type { Report } from "../core/report.js";
import { tempPathFor, writeAllSync, writeTemp, writeTempWith } from "./write-atomic.js";
import { dataPathFor } from "./paths.js";

/**
 * Undocumented test hook: the model file's limit in bytes (default 2 GiB less 64 MiB), so that a test can
 * see a small model split into a data file.
 */
export const MODEL_LIMIT_ENV = "SSVQ_MODEL_LIMIT_BYTES";

export { dataPathFor };

export interface WriteModelOptions {
  /** Always write a data file (`--external-data`). */
  externalData?: boolean;
  /** The model file's limit (default: MODEL_LIMIT_ENV, else the layout's default). */
  limit?: number;
  threshold?: number;
  align?: number;
  /** The model already encoded (written piece by piece when it fits and no data file is forced). */
  encoded?: EncodedModel;
  /** Tensors already in the output's data file (the dense format's sink): the rest go after them. */
  spool?: DataSpool;
}

/**
 * The output's data file while the run writes it (`DenseSink`): at a temporary name beside it, each
 * tensor at an aligned offset as its layer is done, so that the run holds one layer rather than the
 * output. `stageModel` appends the other large tensors and hands it over to be renamed; `discard`
 * removes it (a failed or cancelled run).
 */
export class DataSpool implements DenseSink {
  readonly tmp: string;
  private fd: number | undefined;
  bytes = 0;
  tensors = 0;

  constructor(readonly dataPath: string, private readonly align = DEFAULT_ALIGN) {
    this.tmp = tempPathFor(dataPath);
    this.fd = openSync(this.tmp, "wx");
  }

  put(bytes: Uint8Array): { location: string; offset: number; length: number } {
    const offset = Math.ceil(this.bytes / this.align) * this.align;
    this.appendAt(offset, bytes);
    this.tensors++;
    return { location: basename(this.dataPath), offset, length: bytes.length };
  }

  /** Appends at the end (zeros up to `offset` first). */
  appendAt(offset: number, bytes: Uint8Array): void {
    if (offset < this.bytes) throw new Error(`DataSpool: offset ${offset} before the end ${this.bytes}`);
    if (this.fd === undefined) throw new Error("DataSpool: closed");
    writeAllSync(this.fd, new Uint8Array(offset - this.bytes));
    writeAllSync(this.fd, bytes);
    this.bytes = offset + bytes.length;
  }

  /** fsync'd and closed: ready to be renamed to `dataPath`. */
  finish(): void {
    if (this.fd === undefined) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = undefined;
  }

  discard(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    rmSync(this.tmp, { force: true });
  }
}

export interface StagedModel {
  /** Temporary file -> final path, in the order to rename (the data file before the model that reads it). */
  renames: [string, string][];
  modelBytes: number;
  /** The data file (final path) and its size, when one is written. */
  data?: { path: string; bytes: number; tensors: number };
}

/** The limit MODEL_LIMIT_ENV sets, or undefined. */
export function modelLimitFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const text = env[MODEL_LIMIT_ENV];
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${MODEL_LIMIT_ENV}=${text} is not a positive integer`);
  return n;
}

/**
 * Writes `model` to temporary files for `outPath` (and `<outPath>.data` when needed). Nothing is left
 * behind when a write fails.
 */
export function stageModel(outPath: string, model: ModelProto, opts: WriteModelOptions = {}): StagedModel {
  const limit = opts.limit ?? modelLimitFromEnv();
  const encoded = opts.encoded;
  if (opts.spool) return stageWithSpool(outPath, model, opts.spool, opts, limit);
  if (!opts.externalData && encoded && encoded.bytes > 0 && encoded.bytes <= (limit ?? DEFAULT_MODEL_LIMIT)) {
    const tmp = writeTempWith(outPath, (put) => {
      for (const p of encoded.pieces) put(p);
    });
    return { renames: [[tmp, outPath]], modelBytes: encoded.bytes };
  }
  const dataPath = dataPathFor(outPath);
  const layout = layoutExternal(model, {
    location: basename(dataPath),
    force: opts.externalData === true,
    ...(limit !== undefined ? { limit } : {}),
    ...(opts.threshold !== undefined ? { threshold: opts.threshold } : {}),
    ...(opts.align !== undefined ? { align: opts.align } : {}),
  });
  if (!layout.external) {
    const tmp = writeTemp(outPath, layout.model);
    return { renames: [[tmp, outPath]], modelBytes: layout.model.length };
  }
  const dataTmp = writeDataTemp(dataPath, layout);
  try {
    const modelTmp = writeTemp(outPath, layout.model);
    return {
      renames: [
        [dataTmp, dataPath],
        [modelTmp, outPath],
      ],
      modelBytes: layout.model.length,
      data: { path: dataPath, bytes: layout.dataBytes, tensors: layout.tensors },
    };
  } catch (e) {
    rmSync(dataTmp, { force: true });
    throw e;
  }
}

/** The model beside a data file the run has begun (the spool): the other large tensors go after its own. */
function stageWithSpool(outPath: string, model: ModelProto, spool: DataSpool, opts: WriteModelOptions, limit: number | undefined): StagedModel {
  const dataPath = spool.dataPath;
  const layout = layoutExternal(model, {
    location: basename(dataPath),
    force: opts.externalData === true,
    start: spool.bytes,
    ...(limit !== undefined ? { limit } : {}),
    ...(opts.threshold !== undefined ? { threshold: opts.threshold } : {}),
    ...(opts.align !== undefined ? { align: opts.align } : {}),
  });
  for (const c of layout.chunks) spool.appendAt(c.offset, c.bytes);
  spool.finish();
  const modelTmp = writeTemp(outPath, layout.model);
  return {
    renames: [
      [spool.tmp, dataPath],
      [modelTmp, outPath],
    ],
    modelBytes: layout.model.length,
    data: { path: dataPath, bytes: spool.bytes, tensors: spool.tensors + layout.tensors },
  };
}

/** The data file at a temporary name: each tensor at its offset, zeros between (fsync'd). */
function writeDataTemp(dataPath: string, layout: ExternalLayout): string {
  return writeTempWith(dataPath, (put) => {
    let at = 0;
    for (const c of layout.chunks) {
      if (c.offset > at) put(new Uint8Array(c.offset - at));
      put(c.bytes);
      at = c.offset + c.bytes.length;
    }
  });
}

/** The report's output and on-disk sizes from what was written (the data file counts towards the ratio). */
export function recordOutput(report: Report, path: string, format: "ssvq" | "dense", staged: StagedModel): void {
  report.output = { path, format, ...(staged.data ? { data: staged.data } : {}) };
  const s = report.sizes;
  const { outputDataBytes: _old, ...rest } = s;
  const onDisk = staged.modelBytes + (staged.data?.bytes ?? 0);
  report.sizes = { ...rest, outputFileBytes: onDisk, ...(staged.data ? { outputDataBytes: staged.data.bytes } : {}), diskRatio: s.sourceFileBytes / onDisk };
}
