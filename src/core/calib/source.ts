/**
 * Data sources for calibration and evaluation, independent of where the bytes come from:
 *
 * - `ModelInputSpec`: what a model input takes (name, element type, shape with the batch dim first).
 * - `SampleSource`: `count` samples read on demand (src/io/calib-files.ts implements it for files).
 * - `parseRange` / `selectIndices`: "A:B" (half-open, like Python) and a seeded subset of `count` samples
 *   from it, in increasing order.
 * - `parseLabels`: integer labels from a .npy [N] (or [N,1]) or a text file with one integer per line,
 *   indexed like the source.
 * - `prepareData`: matches each sample's values to the model inputs (by name when every value is named
 *   after a distinct input, else by order), checks the first sample fits, and yields batches of feeds
 *   (`{type, data, dims}`, ready for `new ort.Tensor(type, data, dims)`); memory stays one batch.
 * - `randomData`: seeded random inputs shaped from the model when no source is given, with a warning.
 *
 * Every result carries a JSON-ready `DataInfo` for the report: source, paths, range, indices used.
 */
import { InputError, quoted } from "../errors.js";
import { Rng } from "../rng.js";
import { allocTyped, elemSize, isNpy, numElements, parseNpy, type ElemType, type TypedArray } from "./npy.js";
import { numberToF16 as f16, shapeSample, type Preprocess, type SampleValue, type ShapedSample } from "./preprocess.js";

/** The largest batch of one input fed at once (Node.js arrays stop at 4 GiB). */
const MAX_FEED_BYTES = 2 ** 32;

/** A model input as the data side needs it. `shape[0]` is the batch dim; null = dynamic. */
export interface ModelInputSpec {
  name: string;
  elemType: ElemType;
  shape: (number | null)[];
}

export type SourceKind = "npy" | "npy-files" | "pb-files" | "image-files" | "model-zoo";

/** Samples read on demand; each sample is one value per model input, in file order. */
export interface SampleSource {
  kind: SourceKind;
  /** The path(s) the user gave, for the report. */
  paths: string[];
  /** Number of samples available. */
  count: number;
  /** Reads the samples at `indices` (increasing), one array of values per sample. */
  read(indices: number[]): Promise<SampleValue[][]>;
  /** Names one sample in messages, e.g. "sample 3 of x.npy" or a file path. */
  describe(index: number): string;
}

/** One feed, ready for `new ort.Tensor(type, data, dims)`; dims include the batch. */
export interface Feed {
  type: ElemType;
  data: TypedArray;
  dims: number[];
}

export interface Batch {
  /** Source indices of the samples in this batch. */
  indices: number[];
  /** One feed per model input, by input name. */
  feeds: Record<string, Feed>;
  /** The samples' labels when labels were given. */
  labels?: number[];
}

/** What the report records about the data used. JSON-serialisable. */
export interface DataInfo {
  source: SourceKind | "random";
  paths: string[];
  /** Total samples in the source. */
  available: number;
  /** The half-open range samples were taken from. */
  range: [number, number];
  /** Seed of the subset (and of random data). */
  seed: number;
  /** Source indices used, increasing. */
  indices: number[];
  /** How sample values were matched to model inputs. */
  matchedBy: "name" | "order" | "random";
  /** Per model input: which sample value feeds it and its per-sample dims (from the first sample). */
  inputs: { name: string; value: number; valueName?: string; sampleDims: number[]; type: ElemType }[];
  preprocess: Preprocess;
  labels?: string;
  warnings: string[];
}

export interface PreparedData {
  info: DataInfo;
  /** Labels of the samples used, aligned with `info.indices`. */
  labels?: number[];
  /** Yields the batches in index order; may be called again (re-reads the source). */
  batches(): AsyncGenerator<Batch>;
}

/** A half-open range of sample indices; `end` undefined = up to the last sample. */
export interface Range {
  start: number;
  end?: number;
}

/** Parses "A:B" (also "A:" and ":B"); half-open; bounds are checked by selectIndices. */
export function parseRange(text: string, flag = "--calib-range"): Range {
  const m = /^\s*(\d*)\s*:\s*(\d*)\s*$/.exec(text);
  if (!m) throw new InputError(`${flag} "${text}" is not a range like 0:512 (start inclusive, end exclusive).`);
  const start = m[1] === "" ? 0 : Number(m[1]);
  if (m[2] === "") return { start };
  const end = Number(m[2]);
  if (end <= start) throw new InputError(`${flag} "${text}" is empty: its end must be greater than its start.`);
  return { start, end };
}

export interface SelectOptions {
  /** "A:B" or a parsed range; default: everything. */
  range?: string | Range;
  /** Take a seeded subset of this many samples from the range. */
  count?: number;
  seed?: number;
  /** "calib" or "eval": names the flags in messages (default "calib"). */
  role?: string;
}

/** The indices to use from a source of `total` samples named `sourceName`. */
export function selectIndices(
  total: number,
  opts: SelectOptions,
  sourceName: string,
): { range: [number, number]; indices: number[]; warnings: string[] } {
  const role = opts.role ?? "calib";
  const r = typeof opts.range === "string" ? parseRange(opts.range, `--${role}-range`) : (opts.range ?? { start: 0 });
  const start = r.start;
  const end = r.end ?? total;
  const text = typeof opts.range === "string" ? opts.range : `${start}:${end}`;
  if (end > total || start >= total)
    throw new InputError(`--${role}-range ${text} is out of bounds: ${sourceName} holds ${total} samples (valid: 0:${total}).`);
  if (end <= start) throw new InputError(`--${role}-range ${text} is empty.`);
  const warnings: string[] = [];
  const n = end - start;
  let indices: number[];
  if (opts.count === undefined) indices = Array.from({ length: n }, (_, i) => start + i);
  else {
    if (!Number.isInteger(opts.count) || opts.count <= 0)
      throw new InputError(`--${role}-count must be a positive integer (got ${opts.count}).`);
    if (opts.count > n) warnings.push(`--${role}-count ${opts.count} is more than the ${n} samples in range ${start}:${end}; using all ${n}.`);
    indices = new Rng(opts.seed ?? 0).sampleIndices(n, Math.min(opts.count, n)).map((i) => start + i);
  }
  return { range: [start, end], indices, warnings };
}

/** Labels from a .npy (integer [N] or [N,1]) or text (one integer per line; blank lines at the end ignored). */
export function parseLabels(bytes: Uint8Array, source: string): number[] {
  if (isNpy(bytes)) {
    const a = parseNpy(bytes, source);
    if (a.shape.length === 0 || a.shape.slice(1).some((d) => d !== 1))
      throw new InputError(`${source} must hold one label per sample (shape [N]), but its shape is [${a.shape.join(",")}].`);
    if (a.elemType.startsWith("float") || a.elemType === "bool")
      throw new InputError(`${source} holds ${a.elemType} values; labels must be integers.`);
    return Array.from(a.data as ArrayLike<number | bigint>, Number);
  }
  const text = new TextDecoder("utf-8").decode(bytes);
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === "") lines.pop();
  return lines.map((line, i) => {
    const t = line.trim();
    if (!/^[-+]?\d+$/.test(t))
      throw new InputError(`${source} line ${i + 1} is "${t.slice(0, 40)}", not an integer; a labels file holds one integer per line.`);
    return Number(t);
  });
}

export interface PrepareOptions extends SelectOptions {
  preprocess?: Preprocess;
  /** Samples per batch (default 32); a fixed batch dim in the model overrides it. */
  batchSize?: number;
  /** Labels indexed like the source (length = source.count). */
  labels?: number[];
  /** The labels file, for messages and the report. */
  labelsPath?: string;
}

/**
 * Prepares batches from a source for the given model inputs (those that need feeding, not initializers).
 * Reads and shapes the first selected sample to fail early with a clear message.
 */
export async function prepareData(source: SampleSource, inputs: ModelInputSpec[], opts: PrepareOptions = {}): Promise<PreparedData> {
  const name = source.paths.join(", ");
  if (inputs.length === 0) throw new InputError(`The model has no inputs to feed from ${name}.`);
  const sel = selectIndices(source.count, opts, name);
  const warnings = [...sel.warnings];
  const pre = opts.preprocess ?? {};
  const batchSize = resolveBatchSize(inputs, opts.batchSize, sel.indices.length);

  let labels: number[] | undefined;
  if (opts.labels) {
    if (opts.labels.length !== source.count)
      throw new InputError(
        `${opts.labelsPath ?? "The labels"} has ${opts.labels.length} labels but ${name} holds ${source.count} samples; labels are indexed like the data.`,
      );
    labels = sel.indices.map((i) => opts.labels![i]!);
  }

  const first = sel.indices[0]!;
  const [firstValues] = await source.read([first]);
  const { mapping, matchedBy } = matchInputs(firstValues!, inputs, source.describe(first));
  const shapedFirst = inputs.map((inp, i) => shapeOne(firstValues!, mapping[i]!, inp, pre, source.describe(first)));
  for (const [i, inp] of inputs.entries()) {
    const v = firstValues![mapping[i]!]!;
    const isFloat = inp.elemType.startsWith("float");
    if (isFloat && pre.scale === undefined && (v.kind === "image" || v.array.elemType === "uint8"))
      warnings.push(
        `Input "${inp.name}" is fed ${v.kind === "image" ? "image pixels" : "uint8 values"} 0-255 without --scale; models trained on pixel/255 need --scale 1/255.`,
      );
  }

  const info: DataInfo = {
    source: source.kind,
    paths: source.paths,
    available: source.count,
    range: sel.range,
    seed: opts.seed ?? 0,
    indices: sel.indices,
    matchedBy,
    inputs: inputs.map((inp, i) => ({
      name: inp.name,
      value: mapping[i]!,
      ...(nameOf(firstValues![mapping[i]!]!) ? { valueName: nameOf(firstValues![mapping[i]!]!) } : {}),
      sampleDims: shapedFirst[i]!.dims,
      type: inp.elemType,
    })),
    preprocess: pre,
    ...(opts.labelsPath ? { labels: opts.labelsPath } : {}),
    warnings,
  };

  async function* batches(): AsyncGenerator<Batch> {
    for (let s = 0; s < sel.indices.length; s += batchSize) {
      const chunk = sel.indices.slice(s, s + batchSize);
      const samples = await source.read(chunk);
      let group: { index: number; shaped: ShapedSample[] }[] = [];
      for (const [j, values] of samples.entries()) {
        const where = source.describe(chunk[j]!);
        if (values.length !== firstValues!.length)
          throw new InputError(`${where} holds ${values.length} tensor(s) where the first sample holds ${firstValues!.length}.`);
        const shaped = inputs.map((inp, i) => shapeOne(values, mapping[i]!, inp, pre, where));
        if (group.length > 0 && !shaped.every((t, i) => sameDims(t.dims, group[0]!.shaped[i]!.dims))) {
          yield assemble(group, inputs, labels, sel.indices, s);
          group = [];
        }
        group.push({ index: chunk[j]!, shaped });
      }
      if (group.length > 0) yield assemble(group, inputs, labels, sel.indices, s);
    }
  }

  return { info, ...(labels ? { labels } : {}), batches };
}

export interface RandomOptions {
  /** Number of random samples (default 32). */
  count?: number;
  seed?: number;
  batchSize?: number;
}

/**
 * Seeded random inputs shaped from the model: dynamic dims other than the batch become 1; float inputs
 * get standard normal values, uint8 0-255, int8 -128..127, bool 0/1, other integers 0-9.
 * `info.warnings` carries a warning for the report.
 */
export function randomData(inputs: ModelInputSpec[], opts: RandomOptions = {}): PreparedData {
  const count = opts.count ?? 32;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(count) || count <= 0) throw new InputError(`The number of random samples must be a positive integer (got ${count}).`);
  const batchSize = resolveBatchSize(inputs, opts.batchSize, count);
  const dims = inputs.map((inp) => inp.shape.slice(1).map((d) => d ?? 1));
  const dynamic = inputs.some((inp) => inp.shape.slice(1).some((d) => d === null));
  const warning =
    `No data given: using ${count} random samples shaped from the model (seed ${seed}; float inputs standard normal` +
    `${dynamic ? "; dynamic dimensions set to 1" : ""}). Results on random inputs may not reflect real data.`;
  const indices = Array.from({ length: count }, (_, i) => i);
  const info: DataInfo = {
    source: "random",
    paths: [],
    available: count,
    range: [0, count],
    seed,
    indices,
    matchedBy: "random",
    inputs: inputs.map((inp, i) => ({ name: inp.name, value: i, sampleDims: dims[i]!, type: inp.elemType })),
    preprocess: {},
    warnings: [warning],
  };
  // A declared shape too large to feed is refused here, with the input's name, before any allocation.
  for (const [i, inp] of inputs.entries()) {
    const perSample = numElements(dims[i]!) * elemSize(inp.elemType);
    if (!(perSample * Math.min(batchSize, count) <= MAX_FEED_BYTES))
      throw new InputError(
        `input ${quoted(inp.name)} of shape [${dims[i]!.join(", ")}] takes ${(perSample / 2 ** 30).toFixed(2)} GiB per sample; ` +
          `a batch of ${Math.min(batchSize, count)} cannot be held at once (arrays stop at 4 GiB): give real data, or a smaller --batch`,
      );
  }
  async function* batches(): AsyncGenerator<Batch> {
    const rng = new Rng(seed);
    for (let s = 0; s < count; s += batchSize) {
      const b = Math.min(batchSize, count - s);
      const feeds: Record<string, Feed> = {};
      for (const [i, inp] of inputs.entries()) {
        const n = b * numElements(dims[i]!);
        feeds[inp.name] = { type: inp.elemType, data: randomArray(inp.elemType, n, rng), dims: [b, ...dims[i]!] };
      }
      yield { indices: indices.slice(s, s + b), feeds };
    }
  }
  return { info, batches };
}

// ---------------------------------------------------------------------------------------------------

function resolveBatchSize(inputs: ModelInputSpec[], requested: number | undefined, total: number): number {
  for (const inp of inputs)
    if (inp.shape.length === 0) throw new InputError(`Model input "${inp.name}" is a scalar; it cannot take a batch of samples.`);
  const fixed = [...new Set(inputs.map((i) => i.shape[0]).filter((d): d is number => d !== null))];
  if (fixed.length > 1)
    throw new InputError(`The model's inputs have different fixed batch sizes (${fixed.join(", ")}); they cannot be fed together.`);
  if (fixed.length === 1) {
    const b = fixed[0]!;
    if (total % b !== 0)
      throw new InputError(`The model takes batches of exactly ${b} samples, but ${total} samples were selected; choose a multiple of ${b}.`);
    return b;
  }
  const b = requested ?? 32;
  if (!Number.isInteger(b) || b <= 0) throw new InputError(`The batch size must be a positive integer (got ${b}).`);
  return b;
}

function nameOf(v: SampleValue): string | undefined {
  return v.kind === "tensor" && v.name ? v.name : undefined;
}

function matchInputs(values: SampleValue[], inputs: ModelInputSpec[], where: string): { mapping: number[]; matchedBy: "name" | "order" } {
  const names = values.map(nameOf);
  const inputNames = inputs.map((i) => i.name);
  if (names.every((n) => n !== undefined) && new Set(names).size === names.length && inputNames.every((n) => names.includes(n)))
    return { mapping: inputNames.map((n) => names.indexOf(n)), matchedBy: "name" };
  if (values.length !== inputs.length)
    throw new InputError(
      `${where} holds ${values.length} tensor(s) but the model takes ${inputs.length} input(s) (${inputNames.join(", ")}); ` +
        `give one tensor per input, named after the input or in the input order.`,
    );
  return { mapping: inputs.map((_, i) => i), matchedBy: "order" };
}

function shapeOne(values: SampleValue[], valueIndex: number, inp: ModelInputSpec, pre: Preprocess, where: string): ShapedSample {
  const v = values[valueIndex];
  if (!v) throw new InputError(`${where} has no tensor for input "${inp.name}".`);
  return shapeSample(v, { name: inp.name, dims: inp.shape.slice(1), elemType: inp.elemType }, pre, where);
}

function assemble(
  group: { index: number; shaped: ShapedSample[] }[],
  inputs: ModelInputSpec[],
  labels: number[] | undefined,
  allIndices: number[],
  chunkStart: number,
): Batch {
  const feeds: Record<string, Feed> = {};
  for (const [i, inp] of inputs.entries()) {
    const dims = group[0]!.shaped[i]!.dims;
    const per = numElements(dims);
    const data = allocTyped(inp.elemType, per * group.length);
    group.forEach((g, j) => (data as Uint8Array).set(g.shaped[i]!.data as Uint8Array, j * per));
    feeds[inp.name] = { type: inp.elemType, data, dims: [group.length, ...dims] };
  }
  const indices = group.map((g) => g.index);
  const batch: Batch = { indices, feeds };
  if (labels) {
    // labels are aligned with the selected indices; find this group's position in them.
    const pos = allIndices.indexOf(indices[0]!, chunkStart);
    batch.labels = labels.slice(pos, pos + indices.length);
  }
  return batch;
}

function sameDims(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function randomArray(t: ElemType, n: number, rng: Rng): TypedArray {
  const out = allocTyped(t, n);
  for (let i = 0; i < n; i++) {
    switch (t) {
      case "float32":
      case "float64":
        (out as Float32Array)[i] = rng.normal();
        break;
      case "float16":
        (out as Uint16Array)[i] = f16(rng.normal());
        break;
      case "uint8":
        (out as Uint8Array)[i] = rng.int(256);
        break;
      case "int8":
        (out as Int8Array)[i] = rng.int(256) - 128;
        break;
      case "bool":
        (out as Uint8Array)[i] = rng.int(2);
        break;
      case "int64":
      case "uint64":
        (out as BigInt64Array)[i] = BigInt(rng.int(10));
        break;
      default:
        (out as Int32Array)[i] = rng.int(10);
    }
  }
  return out;
}
