/**
 * Calibration and evaluation data from files (the file-system side of src/core/calib/source.ts).
 *
 * PATH (--calib / --eval) is one of:
 * - a `.npy` file: a batch, its first axis the samples (read by sample ranges, never whole);
 * - several `.npy` batch files (an array of paths): one per model input, named by file stem
 *   (`ids.npy` feeds input "ids") or taken in input order; all hold the same number of samples;
 * - a folder of one-sample files, all `.npy`, all `.pb` (ONNX TensorProto) or all images (`.png`,
 *   `.jpg`, `.jpeg`), sorted by name with digit runs compared as numbers (img2 before img10);
 *   hidden files (.*) are ignored;
 * - a model-zoo folder holding `test_data_set_N` folders with `input_M.pb` files (one sample per
 *   folder, one tensor per input; other files such as model.onnx are ignored), or one such folder;
 * - a single `.pb`, `.png` or `.jpg` file (one sample).
 * Folder samples are read batch by batch, so memory stays bounded by the batch, not the folder.
 */
import { open, readdir, readFile, stat } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { InputError } from "../core/errors.js";
import { decodeImage } from "../core/calib/image.js";
import { NPY_PREFIX_BYTES, npyDataOffset, parseNpy, parseNpyHeader, viewBytes, type NdArray, type NpyHeader } from "../core/calib/npy.js";
import type { SampleValue } from "../core/calib/preprocess.js";
import {
  parseLabels,
  prepareData,
  randomData,
  type ModelInputSpec,
  type PrepareOptions,
  type PreparedData,
  type SampleSource,
} from "../core/calib/source.js";
import { decodeTensorProto } from "../core/calib/tensor-pb.js";

export interface OpenDataOptions extends Omit<PrepareOptions, "labels" | "labelsPath"> {
  /** --calib / --eval PATH; undefined gives seeded random data shaped from the model (with a warning). */
  path?: string | string[];
  /** --labels FILE: integer .npy [N] or text, one integer per line, indexed like the data. */
  labels?: string;
  /** Number of random samples when `path` is undefined (default: `count`, else 32). */
  randomCount?: number;
}

/**
 * Opens a data source and prepares batches for the model inputs (the inputs to feed, not initializers).
 * Throws InputError for a missing path, an empty folder, mixed or unknown files, samples that cannot
 * feed an input, a range out of bounds and a labels count that differs from the sample count.
 */
export async function openData(inputs: ModelInputSpec[], opts: OpenDataOptions = {}): Promise<PreparedData> {
  const role = opts.role ?? "calib";
  if (opts.path === undefined) {
    if (opts.labels) throw new InputError(`--labels ${opts.labels} was given without --${role} data to label.`);
    const { randomCount, count, seed, batchSize } = opts;
    return randomData(inputs, {
      ...((randomCount ?? count) !== undefined ? { count: randomCount ?? count } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ...(batchSize !== undefined ? { batchSize } : {}),
    });
  }
  const source = await openSource(opts.path, role);
  const { path: _p, labels: labelsPath, randomCount: _r, ...rest } = opts;
  const prep: PrepareOptions = { ...rest, role };
  if (labelsPath !== undefined) {
    prep.labels = await readLabels(labelsPath);
    prep.labelsPath = labelsPath;
  }
  return prepareData(source, inputs, prep);
}

/** Reads a labels file (.npy by its magic bytes, else text). */
export async function readLabels(path: string): Promise<number[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new InputError(`Labels file ${path} cannot be read (${code(e)}).`);
  }
  return parseLabels(bytes, path);
}

/** Opens PATH (see the file comment) as a lazily read sample source. `role` names the flag in messages. */
export async function openSource(path: string | string[], role = "calib"): Promise<SampleSource> {
  const paths = typeof path === "string" ? [path] : path;
  if (paths.length === 0) throw new InputError(`--${role} was given no path.`);
  if (paths.length > 1) {
    for (const p of paths) {
      const st = await statOrThrow(p, role);
      if (!st.isFile() || extname(p).toLowerCase() !== ".npy")
        throw new InputError(`${p} is not a .npy file; several --${role} paths must each be a .npy batch file (one per model input).`);
    }
    return npyBatchSource(paths);
  }
  const p = paths[0]!;
  const st = await statOrThrow(p, role);
  if (st.isFile()) {
    const ext = extname(p).toLowerCase();
    if (ext === ".npy") return npyBatchSource([p]);
    const kind = FILE_KINDS[ext];
    if (kind) return filesSource(kind, p, [p]);
    throw new InputError(`${p} is not a supported data file (expected .npy, .pb, .png, .jpg or .jpeg, or a folder of them).`);
  }
  if (!st.isDirectory()) throw new InputError(`${p} is neither a file nor a folder.`);
  return folderSource(p);
}

// ---------------------------------------------------------------------------------------------------

type FileKind = "npy" | "pb" | "image";
const FILE_KINDS: Record<string, FileKind> = { ".npy": "npy", ".pb": "pb", ".png": "image", ".jpg": "image", ".jpeg": "image" };
const KIND_NAMES: Record<FileKind, string> = { npy: ".npy", pb: ".pb", image: "image (.png/.jpg)" };

async function folderSource(dir: string): Promise<SampleSource> {
  let entries;
  try {
    entries = (await readdir(dir, { withFileTypes: true })).filter((e) => !e.name.startsWith("."));
  } catch (e) {
    throw new InputError(`Data folder ${dir} cannot be read (${code(e)}).`);
  }
  const zooDirs = entries.filter((e) => e.isDirectory() && /^test_data_set_/.test(e.name)).map((e) => e.name).sort(naturalCompare);
  if (zooDirs.length > 0) {
    const sampleDirs = zooDirs.map((d) => join(dir, d));
    return zooSource(dir, sampleDirs);
  }
  if (entries.some((e) => e.isFile() && INPUT_PB.test(e.name))) return zooSource(dir, [dir]);

  const sub = entries.find((e) => e.isDirectory());
  if (sub)
    throw new InputError(
      `Data folder ${dir} holds a subfolder (${sub.name}); expected one sample per file (.npy, .pb or images) or model-zoo test_data_set_* folders.`,
    );
  const files = entries.filter((e) => e.isFile()).map((e) => e.name).sort(naturalCompare);
  if (files.length === 0) throw new InputError(`Data folder ${dir} is empty; it should hold one sample per file (.npy, .pb, .png or .jpg).`);
  const unknown = files.find((f) => !FILE_KINDS[extname(f).toLowerCase()]);
  if (unknown)
    throw new InputError(`Data folder ${dir} holds ${unknown}, which is not a .npy, .pb, .png or .jpg file; keep only sample files in it.`);
  const kinds = [...new Set(files.map((f) => FILE_KINDS[extname(f).toLowerCase()]!))];
  if (kinds.length > 1)
    throw new InputError(
      `Data folder ${dir} mixes ${kinds.map((k) => KIND_NAMES[k]).join(" and ")} files; use one kind of sample file per folder.`,
    );
  return filesSource(kinds[0]!, dir, files.map((f) => join(dir, f)));
}

const INPUT_PB = /^input_(\d+)\.pb$/;

function filesSource(kind: FileKind, shown: string, files: string[]): SampleSource {
  return {
    kind: kind === "npy" ? "npy-files" : kind === "pb" ? "pb-files" : "image-files",
    paths: [shown],
    count: files.length,
    describe: (i) => files[i] ?? `sample ${i} of ${shown}`,
    read: (indices) =>
      Promise.all(
        indices.map(async (i): Promise<SampleValue[]> => {
          const file = files[i]!;
          const bytes = await readOrThrow(file);
          if (kind === "image") return [{ kind: "image", image: decodeImage(bytes, file) }];
          if (kind === "pb") {
            const t = decodeTensorProto(bytes, file);
            return [t.name ? { kind: "tensor", name: t.name, array: t } : { kind: "tensor", array: t }];
          }
          return [{ kind: "tensor", array: parseNpy(bytes, file) }];
        }),
      ),
  };
}

function zooSource(shown: string, sampleDirs: string[]): SampleSource {
  return {
    kind: "model-zoo",
    paths: [shown],
    count: sampleDirs.length,
    describe: (i) => sampleDirs[i] ?? `sample ${i} of ${shown}`,
    read: (indices) =>
      Promise.all(
        indices.map(async (i): Promise<SampleValue[]> => {
          const dir = sampleDirs[i]!;
          let names: string[];
          try {
            names = await readdir(dir);
          } catch (e) {
            throw new InputError(`Model-zoo data folder ${dir} cannot be read (${code(e)}).`);
          }
          const inputs = names
            .map((n) => ({ n, m: INPUT_PB.exec(n) }))
            .filter((x) => x.m)
            .sort((a, b) => Number(a.m![1]) - Number(b.m![1]));
          if (inputs.length === 0) throw new InputError(`Model-zoo data folder ${dir} holds no input_N.pb files.`);
          return Promise.all(
            inputs.map(async ({ n }): Promise<SampleValue> => {
              const file = join(dir, n);
              const t = decodeTensorProto(await readOrThrow(file), file);
              return t.name ? { kind: "tensor", name: t.name, array: t } : { kind: "tensor", array: t };
            }),
          );
        }),
      ),
  };
}

/** One or more .npy batch files (one per input); samples are read by contiguous runs of indices. */
async function npyBatchSource(paths: string[]): Promise<SampleSource> {
  const heads = await Promise.all(paths.map(readNpyHeader));
  for (const [i, h] of heads.entries()) {
    if (h.shape.length === 0)
      throw new InputError(`${paths[i]} holds a single value (shape ()); a batch file needs the samples on its first axis.`);
    if (h.shape[0] !== heads[0]!.shape[0])
      throw new InputError(`${paths[i]} holds ${h.shape[0]} samples but ${paths[0]} holds ${heads[0]!.shape[0]}; the files must match.`);
  }
  const count = heads[0]!.shape[0]!;
  if (count === 0) throw new InputError(`${paths[0]} holds no samples (its first axis is 0).`);
  const stems = paths.map((p) => basename(p, extname(p)));
  return {
    kind: "npy",
    paths,
    count,
    describe: (i) => `sample ${i} of ${paths.length === 1 ? paths[0] : paths.join(" + ")}`,
    async read(indices) {
      const out: SampleValue[][] = indices.map(() => []);
      for (const [f, path] of paths.entries()) {
        const h = heads[f]!;
        const sampleShape = h.shape.slice(1);
        const sampleBytes = h.dataBytes / count;
        const fh = await open(path, "r");
        try {
          for (let s = 0; s < indices.length; ) {
            let e = s + 1;
            while (e < indices.length && indices[e] === indices[e - 1]! + 1) e++;
            const runBytes = (e - s) * sampleBytes;
            const buf = new Uint8Array(runBytes);
            const { bytesRead } = await fh.read(buf, 0, runBytes, h.dataOffset + indices[s]! * sampleBytes);
            if (bytesRead < runBytes) throw new InputError(`${path} is truncated: it ended while reading sample ${indices[s]}.`);
            for (let j = s; j < e; j++) {
              const array: NdArray = {
                elemType: h.elemType,
                shape: sampleShape,
                data: viewBytes(h.elemType, buf.subarray((j - s) * sampleBytes, (j - s + 1) * sampleBytes)),
              };
              out[j]!.push(paths.length > 1 ? { kind: "tensor", name: stems[f]!, array } : { kind: "tensor", array });
            }
            s = e;
          }
        } finally {
          await fh.close();
        }
      }
      return out;
    },
  };
}

async function readNpyHeader(path: string): Promise<NpyHeader> {
  const fh = await open(path, "r").catch((e: unknown) => {
    throw new InputError(`${path} cannot be read (${code(e)}).`);
  });
  try {
    const size = (await fh.stat()).size;
    const prefix = new Uint8Array(Math.min(NPY_PREFIX_BYTES, size));
    await fh.read(prefix, 0, prefix.length, 0);
    const offset = npyDataOffset(prefix, path);
    const head = new Uint8Array(Math.min(offset, size));
    await fh.read(head, 0, head.length, 0);
    const h = parseNpyHeader(head, path);
    if (size - h.dataOffset < h.dataBytes)
      throw new InputError(
        `${path} is truncated: its header declares shape (${h.shape.join(", ")}) of ${h.elemType}, ` +
          `${h.dataBytes} bytes, but only ${size - h.dataOffset} bytes of data follow.`,
      );
    return h;
  } finally {
    await fh.close();
  }
}

async function statOrThrow(path: string, role: string) {
  try {
    return await stat(path);
  } catch (e) {
    const c = code(e);
    throw new InputError(
      c === "ENOENT" ? `${path} does not exist (given to --${role}).` : `${path} cannot be read (${c}; given to --${role}).`,
    );
  }
}

async function readOrThrow(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new InputError(`${path} cannot be read (${code(e)}).`);
  }
}

function code(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e);
}

/** Compares names with digit runs as numbers ("img2" < "img10"); ties broken by code points. */
export function naturalCompare(a: string, b: string): number {
  const ta = a.match(/\d+|\D+/g) ?? [];
  const tb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    const x = ta[i]!;
    const y = tb[i]!;
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const nx = BigInt(x);
      const ny = BigInt(y);
      if (nx !== ny) return nx < ny ? -1 : 1;
      continue;
    }
    return x < y ? -1 : 1;
  }
  if (ta.length !== tb.length) return ta.length - tb.length;
  return a < b ? -1 : a > b ? 1 : 0;
}
