/**
 * One compression, end to end in memory: find the weights, quantize each selected one, and write the
 * output model (decode subgraphs or dense weights) with its report. Pure: bytes in, bytes out.
 */
import { CancelledError, InputError } from "./errors.js";
import { dtypeBits, dtypeName } from "./onnx/dtype.js";
import {
  floatsAs,
  GraphBuilder,
  lookupTableName,
  lookupTableTensor,
  mergesSigns,
  MIN_SPLIT_OPSET,
  transposeRows,
  writeDecode,
  writeDecodeInt8Unscaled,
  writeDecodeSplit,
  writeSplitProduct,
  type DecodeSource,
  type LookupTable,
} from "./onnx/decode-graph.js";
import { buildSplitCodes, codesPerElement, SPLIT_CODE_WIDTHS, splitCodeBits, type SplitCodes, type SplitOrientation } from "./onnx/split-product.js";
import { isDefaultDomain } from "./onnx/scopes.js";
import { clearField } from "@bufbuild/protobuf";
import type { ExternalDataReader } from "./onnx/external.js";
import {
  create,
  decodeModel,
  defaultOpset,
  NodeProtoSchema,
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  TensorProto_DataType,
  TensorProtoSchema,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from "./onnx/proto.js";
import { declaredBytes, rawBytes, tensorToFloat32 } from "./onnx/tensor-data.js";
import { walkGraphs, walkTensors } from "./onnx/walk.js";
import { findWeights, weightKey, type WeightInfo } from "./onnx/weights.js";
import type { ParallelMap } from "./parallel.js";
import { dropRecycled } from "./shared-recycle.js";
import { relativeOutputErrorOn, type LayerStatistic } from "./ssvq/objective.js";
import { clearKernelCache, productRowFlops, rowBlocks, setKernelCacheLimit, shareStatistic, type StatHandle } from "./ssvq/stat-product.js";
import { SCHEMA_VERSION, type CompressConfig, type KeptWeight, type LayerReport, type Report } from "./report.js";
import { estimateBits, layerBits } from "./ssvq/bits.js";
import { fromRows, toRows } from "./ssvq/layout.js";
import { indexBits, packFields, packPlane } from "./ssvq/pack.js";
import { isIntQuantized, quantizeRows, quantizedError, reconstructRows, relativeError, usageHistogram, type Quantized, type VqQuantized } from "./ssvq/quantize.js";
import {
  applyFinetune,
  createCheckRecord,
  finetuneCheckCount,
  finetuneLayerOn,
  readCheckRecord,
  resolveFinetuneOptions,
  type FinetuneOptions,
  type FinetuneResult,
  type FinetuneTaskInput,
  type FreezeCheck,
} from "./ssvq/finetune.js";
import { serialMap } from "./tasks.js";
import { pointKey, pointLabel, type OperatingPoint } from "./alloc/candidates.js";
import { VERSION } from "../version.js";
import { PROTOBUF_MAX_BYTES, setExternal } from "./onnx/external-out.js";
import { encodeModelPieces, joinPieces, type EncodedModel } from "./onnx/encode-pieces.js";

export type ProgressEvent =
  | { kind: "stage"; stage: string }
  | { kind: "fraction"; stage: string; fraction: number }
  | ({ kind: "freezeCheck"; layer: string } & FreezeCheck)
  /** A layer starts (quantize) or ends (finetune); quantizing also says the source bytes of the layers before it, of all. */
  | { kind: "layer"; index: number; count: number; name: string; rows: number; cols: number; bytes?: { done: number; total: number } }
  /** Statistics in waves: wave `index` of `count` starts (its capture, quantize and finetune stages follow). */
  | { kind: "wave"; index: number; count: number; layers: number };

export interface CompressInput {
  /** The source model's bytes (decoded afresh here, so the caller's copy is never touched). */
  bytes: Uint8Array;
  /** Names the source in messages and the report. */
  path: string;
  readExternal?: ExternalDataReader;
}

export interface CompressRun {
  config: CompressConfig;
  map?: ParallelMap;
  onProgress?: (e: ProgressEvent) => void;
  signal?: AbortSignal;
  /** Only estimate the sizes (no k-means, no output model). */
  dryRun?: boolean;
  /**
   * Calibration statistics by weight name (either form: H, or X when that is cheaper): each layer's
   * relative output error is reported. Shared statistics (`shareStatistic`) are not copied to the threads.
   */
  stats?: ReadonlyMap<string, LayerStatistic | StatHandle>;
  /**
   * Statistics captured wave by wave (instead of `stats`): each wave is captured, quantized, fine-tuned
   * and freed before the next (src/core/calib/waves.ts). Ignored by the sequential variant.
   */
  waves?: StatisticWaves;
  /**
   * With `config.sequential`: the statistics of one layer on the network whose earlier layers carry the
   * given reconstructed weights (by weightKey, as stored), or undefined for a layer that cannot be
   * observed. Called in graph order, one layer at a time.
   */
  sequentialStats?: (weight: WeightInfo, compressedSoFar: ReadonlyMap<string, Float32Array>) => Promise<SequentialLayerStats | undefined>;
  /**
   * The engine of the products with the statistics (fine-tuning, output errors), registered in every
   * thread of `map` (default: WebAssembly; `registerStatEngine`).
   */
  productEngine?: string;
  /**
   * Each layer's own operating point (by weightKey), from the search of --ratio / --bits; layers not in
   * it use the config's mode, k and d. A layer planned at "fp" is kept as it is.
   */
  plan?: ReadonlyMap<string, OperatingPoint>;
  /** Quantizations already computed (by `quantCacheKey`): reused instead of running k-means again. */
  quantCache?: ReadonlyMap<string, Quantized>;
  /**
   * Return every layer's final quantization (`CompressResult.quantized`, for a sweep to reuse). Without
   * it a layer keeps only its packed output once it is final, and the run's memory follows the layers
   * in work rather than the whole model.
   */
  keepQuantized?: boolean;
  /**
   * Where the dense format's final tensors go as each layer is done (an output data file), so that the
   * run does not hold the whole output; without it they stay in the model until it is written.
   */
  denseSink?: DenseSink;
}

/** Takes a final dense tensor's little-endian bytes and says where they now are, as external data. */
export interface DenseSink {
  put(bytes: Uint8Array): { location: string; offset: number; length: number };
}

/** The key of one layer's quantization at one point in `CompressRun.quantCache`. */
export const quantCacheKey = (w: WeightInfo, p: OperatingPoint): string => `${weightKey(w)}|${pointKey(p)}`;

/** Statistics that come in waves of layers (`planWaves`). */
export interface StatisticWaves {
  /** Weight names per wave, in order; a selected weight in none has no statistics. */
  waves: readonly (readonly string[])[];
  /** Per wave, 1 when its products must run on one thread (this one) to fit; default: the map's threads. */
  threads?: readonly number[];
  /**
   * Per wave, the bytes of product kernels each thread may keep cached besides the one in use: the room
   * the memory budget leaves beyond the wave's plan (default: KERNEL_CACHE_BYTES, stat-product.ts).
   */
  kernelCacheBytes?: readonly number[];
  /** The statistics of one wave's weights (those that can be calibrated). */
  capture(names: readonly string[], wave: number): Promise<ReadonlyMap<string, LayerStatistic | StatHandle>>;
  /** Lets go of statistics kept for another run over the same waves, once no run needs them. */
  release?(): void;
}

/** What the sequential variant fine-tunes one layer with. */
export interface SequentialLayerStats {
  /** H_qq (or X_q): the layer's input statistic on the compressed prefix. */
  stat: LayerStatistic | StatHandle;
  /** The effective target W' (row matrix): ||W_hat X_q - W X_fp||^2 = tr((W_hat - W') H_qq (W_hat - W')^T) + const. */
  target: Float32Array;
  /** ||W_hat X_q - W X_fp|| / ||W X_fp|| for a row matrix W_hat. */
  outputError(wHat: Float32Array): number | Promise<number>;
}

export interface CompressResult {
  /**
   * The output model as one buffer, joined from `encoded` when first read (a writer should take
   * `encoded` instead); empty for a dry run, and for a model over 2 GiB (written from `proto` with
   * external data).
   */
  readonly model: Uint8Array;
  /** The output's encoding in pieces (large tensors as views of `proto`'s data); undefined for a dry run. */
  encoded?: EncodedModel;
  /** The output model decoded (the source model for a dry run). */
  proto: ModelProto;
  report: Report;
  /**
   * With `keepQuantized`: each compressed layer's final quantization (after fine-tuning), by
   * `quantCacheKey`; otherwise (and for a dry run) empty.
   */
  quantized: Map<string, Quantized>;
}

interface Selected {
  weight: WeightInfo;
  /** The weight's row matrix [rows, cols] (while the layer is in work). */
  rows?: Float32Array;
  /** Its quantization (while in work, or kept with `keepQuantized`). */
  q?: Quantized;
  /** Its reconstruction as stored, for the dense format (written when final) and the sequential variant (kept). */
  stored?: Float32Array;
  /** What the output stores, once the layer is final (`settle`): index planes and sign bits packed. */
  packed?: PackedLayer;
  /** Final: only what the output stores is kept (`settle`). */
  settled?: boolean;
  report?: LayerReport;
}

/** Which weights to compress and why the others are kept. */
export function selectWeights(model: ModelProto, config: CompressConfig): { selected: WeightInfo[]; kept: KeptWeight[] } {
  const scan = findWeights(model);
  const kept: KeptWeight[] = scan.skipped.map((s) => ({ name: s.name, opType: s.opType, dims: s.dims, reason: s.reason }));
  const pattern = config.layers !== undefined ? new RegExp(config.layers) : undefined;
  const selected: WeightInfo[] = [];
  let matched = 0;
  for (const w of scan.weights) {
    const elements = w.layout.rows * w.layout.cols;
    const names = [w.name, ...w.consumers.map((c) => c.node)];
    const opType = w.consumers[0]!.opType;
    if (pattern && !names.some((n) => pattern.test(n))) {
      kept.push({ name: w.name, opType, dims: w.dims, reason: `not matched by --layers ${config.layers}` });
      continue;
    }
    matched++;
    if (elements < config.minWeights) {
      kept.push({ name: w.name, opType, dims: w.dims, reason: `${elements} weights, fewer than --min-weights ${config.minWeights}` });
      continue;
    }
    selected.push(w);
  }
  if (selected.length === 0) {
    if (scan.weights.length === 0)
      throw new InputError(
        scan.skipped.length
          ? `nothing to compress: none of the model's ${scan.skipped.length} layer weights can be compressed (${scan.skipped[0]!.reason})`
          : "nothing to compress: the model has no constant weights of Conv, ConvTranspose, Gemm or MatMul",
      );
    if (pattern && matched === 0)
      throw new InputError(`--layers ${config.layers} matches none of the model's ${scan.weights.length} compressible weights`);
    throw new InputError(
      `nothing to compress: all ${matched} matching weights have fewer than --min-weights ${config.minWeights} elements`,
    );
  }
  return { selected, kept };
}

export async function compressModel(input: CompressInput, run: CompressRun): Promise<CompressResult> {
  const { config } = run;
  const timings: Record<string, number> = {};
  const time = async <T>(stage: string, f: () => T | Promise<T>): Promise<T> => {
    run.onProgress?.({ kind: "stage", stage });
    const t0 = performance.now();
    const r = await f();
    // Stages that come back wave after wave add up.
    timings[stage] = (timings[stage] ?? 0) + (performance.now() - t0) / 1000;
    return r;
  };
  const checkCancel = () => {
    if (run.signal?.aborted) throw new CancelledError();
  };
  const model = await time("read", () => decodeModel(input.bytes, input.path));
  const opset = defaultOpset(model);
  const { selected: all, kept } = selectWeights(model, config);
  const selected = run.plan ? all.filter((w) => run.plan!.get(weightKey(w))?.mode !== "fp") : all;
  if (selected.length !== all.length)
    for (const w of all)
      if (run.plan!.get(weightKey(w))?.mode === "fp")
        kept.push({ name: w.name, opType: w.consumers[0]!.opType, dims: w.dims, reason: "the search kept it at full precision (the better use of the bits)" });
  const pointOf = (w: WeightInfo): OperatingPoint => run.plan?.get(weightKey(w)) ?? { mode: config.mode, k: config.k, d: config.d };
  const sel: Selected[] = selected.map((weight) => ({ weight }));
  const warnings: string[] = [];
  /**
   * A final layer keeps only what the output stores: its packed planes, or for the dense format its
   * reconstruction written into the tensor at once (the sequential variant keeps every reconstruction
   * for the compressed prefix it observes, and writes at the end).
   */
  const settle = (s: Selected): void => {
    if (s.settled || !s.q) return;
    if (config.format === "dense") {
      if (config.sequential) return;
      writeDenseLayer(s, run.denseSink, sunk);
    } else s.packed = packLayer(s.q, s.weight, splitPlan(s.weight, s.q));
    s.settled = true;
    if (!run.keepQuantized) s.q = undefined;
    s.rows = undefined;
    if (!config.sequential) s.stored = undefined;
  };
  const quantized = new Map<string, Quantized>();
  // Tensors the dense sink took: external data of the output, not of the source.
  const sunk = new Set<TensorProto>();
  // Which layers the output stores as a split product (decided from the graph, before it is rewritten).
  let readers: { users: ValueReaders; graphOf: Map<string, GraphProto> } | undefined;
  const splitPlan = (w: WeightInfo, q: Quantized): SplitPlan | undefined => {
    if (isIntQuantized(q) || config.format === "dense") return undefined;
    if (!readers) {
      const graphOf = new Map<string, GraphProto>();
      walkGraphs(model, ({ graph, path }) => graphOf.set(path, graph));
      readers = { users: valueReaders(model), graphOf };
    }
    return splitPlanFor(w, q, readers.graphOf.get(w.graphPath)!, readers.users, opset ?? 0);
  };

  if (!run.dryRun) {
    const index = new Map(sel.map((s, i) => [s, i]));
    // Fine-tuning's layer count: the SSVQ/VQ layers that will have statistics (those in a wave, or in `stats`).
    const inWave = new Set(run.waves?.waves.flat());
    const tunable = sel.filter((s) => {
      const p = pointOf(s.weight);
      const calibrated = config.sequential || (run.waves ? inWave.has(s.weight.name) : (run.stats?.has(s.weight.name) ?? false));
      return (p.mode === "ssvq" || p.mode === "vq") && calibrated;
    }).length;
    const tuning: TuneProgress = { done: 0, count: Math.max(1, tunable), missing: [], warnings: [] };
    const sourceBytes = (w: WeightInfo) => declaredBytes(w.tensor) ?? 0;
    const bytes = { done: 0, total: sel.reduce((a, s) => a + sourceBytes(s.weight), 0) };
    // The sequential variant observes one layer at a time itself: one group, without wave statistics.
    const groups = waveGroups(sel, (s) => s.weight.name, config.sequential ? undefined : run.waves);
    for (const [w, wave] of groups.entries()) {
      checkCancel();
      if (run.waves) run.onProgress?.({ kind: "wave", index: w, count: groups.length, layers: wave.layers.length });
      const stats = wave.capture ? await time("capture", () => wave.capture!()) : run.stats;
      checkCancel();
      if (wave.cacheBytes !== undefined) await boundKernelCache(run.map ?? serialMap, wave.cacheBytes);
      // The same bytes on any map: a wave that only fits on one thread runs its products here.
      const products = wave.serial ? serialMap : (run.map ?? serialMap);
      await time("quantize", async () => {
        for (const s of wave.layers) {
          checkCancel();
          const w = s.weight;
          run.onProgress?.({ kind: "layer", index: index.get(s)!, count: sel.length, name: w.name, rows: w.layout.rows, cols: w.layout.cols, bytes: { ...bytes } });
          bytes.done += sourceBytes(w);
          const values = tensorToFloat32(w.tensor, input.readExternal);
          const rows = toRows(values, w.layout);
          const point = pointOf(w);
          if (point.mode === "fp") throw new Error(`layer ${w.name} is planned at full precision but selected`);
          const q =
            run.quantCache?.get(quantCacheKey(w, point)) ??
            (await quantizeRows(rows, w.layout.rows, w.layout.cols, {
              mode: point.mode,
              k: point.k,
              d: point.d,
              seed: config.seed,
              kmeansIters: config.kmeansIters,
              map: run.map,
              roundStored: (v) => roundTo(v, w.dtype),
            }));
          s.q = q;
          s.rows = rows;
          const stat = stats?.get(w.name);
          // A layer fine-tuned next gets its k-means output error from fine-tuning's first loss (the same
          // product): measured here only for the layers that stay as they are.
          const tunedNext = config.finetune && !isIntQuantized(q);
          const stores = config.format === "dense" || config.sequential;
          // The reconstruction only where it is used (an INT layer's weight error is summed without it).
          const rec = stores || (stat && !tunedNext) ? reconstructRows(q) : undefined;
          // The reconstruction as stored: the dense format writes it, the sequential variant observes it.
          if (stores) s.stored = fromRows(rec!, w.layout);
          s.report = layerReport(w, q, rec ? relativeError(rows, rec) : quantizedError(rows, q));
          if (stat && !tunedNext) s.report.outputError = await relativeOutputErrorOn(products, rows, rec!, w.layout.rows, shareStatistic(stat), run.productEngine);
          if (!tunedNext) settle(s);
        }
      });
      // What k-means kept for its next layer (shared-recycle.ts) is not held through fine-tuning.
      dropRecycled();
      checkCancel();
      if (config.finetune) await time("finetune", () => finetune(wave.layers, { ...run, stats, map: products }, tuning, checkCancel, settle));
      for (const s of wave.layers) settle(s);
      if (wave.capture) await releaseStatistics(run.map ?? serialMap);
    }
    if (tuning.missing.length && !config.sequential)
      warnings.push(`${tuning.missing.length} layers were not fine-tuned, having no calibration statistics: ${tuning.missing.join(", ")}`);
    warnings.push(...tuning.warnings);
  } else {
    for (const s of sel) s.report = estimatedLayer(s.weight, pointOf(s.weight));
  }
  checkCancel();

  let encoded: EncodedModel | undefined;
  if (!run.dryRun) {
    encoded = await time("write", () => {
      if (config.format === "dense") writeDense(sel, run.denseSink, sunk);
      else writeDecodeGraphs(model, sel, opset ?? 0);
      inlineExternal(model, input.readExternal, sunk);
      setMetadata(model, config, sel);
      return encodeModelPieces(model);
    });
  }
  const fits = encoded !== undefined && encoded.bytes <= PROTOBUF_MAX_BYTES;

  const report: Report = {
    schemaVersion: SCHEMA_VERSION,
    tool: { name: "ssvq", version: VERSION },
    source: { path: input.path, fileBytes: input.bytes.length, producer: model.producerName, opset },
    output: null,
    config,
    layers: sel.map((s) => s.report!),
    kept,
    sizes: sizes(input.bytes.length, decodeModel(input.bytes, input.path), sel, fits ? encoded!.bytes : 0),
    timings,
    warnings,
  };
  if (run.keepQuantized) for (const s of sel) if (s.q) quantized.set(quantCacheKey(s.weight, pointOf(s.weight)), s.q);
  let joined: Uint8Array | undefined;
  return {
    get model() {
      return (joined ??= fits ? joinPieces(encoded!) : new Uint8Array(0));
    },
    ...(encoded ? { encoded } : {}),
    proto: model,
    report,
    quantized,
  };
}

/** Fine-tuning's progress over the waves: layers done of `count`, those without statistics, warnings. */
interface TuneProgress {
  done: number;
  count: number;
  missing: string[];
  warnings: string[];
}

/** One wave: its layers and, when statistics come wave by wave, how to capture them. */
export interface WaveGroup<T> {
  layers: T[];
  /** Run the wave's products (output errors, fine-tuning) in this thread alone: one copy of each kernel. */
  serial?: boolean;
  capture?: () => Promise<ReadonlyMap<string, LayerStatistic | StatHandle>>;
  /** Bytes of product kernels each thread may keep cached for this wave (`StatisticWaves.kernelCacheBytes`). */
  cacheBytes?: number;
}

/**
 * The layers of each wave of `source`, in the given order, with how to capture the wave's statistics;
 * layers in no wave come last, in a group without statistics. Without `source`, one group of them all.
 */
export function waveGroups<T>(layers: readonly T[], nameOf: (layer: T) => string, source: StatisticWaves | undefined): WaveGroup<T>[] {
  if (!source) return [{ layers: [...layers] }];
  const placed = new Set<T>();
  const groups: WaveGroup<T>[] = [];
  source.waves.forEach((names, wave) => {
    const set = new Set(names);
    const members = layers.filter((l) => set.has(nameOf(l)) && !placed.has(l));
    for (const l of members) placed.add(l);
    const cacheBytes = source.kernelCacheBytes?.[wave];
    if (members.length)
      groups.push({
        layers: members,
        capture: () => source.capture(names, wave),
        ...(source.threads?.[wave] === 1 ? { serial: true } : {}),
        ...(cacheBytes !== undefined ? { cacheBytes } : {}),
      });
  });
  const rest = layers.filter((l) => !placed.has(l));
  if (rest.length) groups.push({ layers: rest });
  return groups;
}

/**
 * Frees what a wave's statistics left behind: the product kernels every thread keeps for them (each
 * thread's cache), so that the next wave starts from the memory the last one had before it.
 */
export async function releaseStatistics(map: ParallelMap): Promise<void> {
  await boundKernelCache(map, undefined);
}

/**
 * Empties every thread's cache of product kernels and bounds its bytes from now on: `cacheBytes` (the
 * room a wave's memory budget leaves beyond its plan, which counts one kernel per thread), or undefined
 * for the default bound.
 */
export async function boundKernelCache(map: ParallelMap, cacheBytes: number | undefined): Promise<void> {
  await map.broadcast?.("stat.clearKernels", cacheBytes === undefined ? {} : { cacheBytes });
  await clearKernelCache();
  setKernelCacheLimit(cacheBytes);
}

/** How often `finetune` looks for new checks of the layers being fine-tuned (milliseconds). */
export const LIVE_CHECK_POLL_MS = 150;

/**
 * Emits the "freezeCheck" events of the layers being fine-tuned as their checks happen: each layer's task
 * gets a check record (`createCheckRecord`) that it fills on its thread, and a timer reads the records of
 * the running layers. Each check is emitted once, in iteration order per layer; when a layer's task has
 * ended, `finish` emits the checks not emitted yet (from the record, then, should it have been too small,
 * from the result), so that a layer's events are exactly its result's `stats.checks`. Without a thread
 * pool (or while the orchestrating thread is busy) the checks simply come later. Reading never changes a
 * result.
 */
class LiveChecks {
  private readonly running = new Map<Float64Array, { layer: string; emitted: number }>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private failure: { error: unknown } | undefined;
  private closed = false;

  constructor(
    private readonly onProgress: (e: ProgressEvent) => void,
    private readonly options: FinetuneOptions,
  ) {}

  /** A record for one layer's task input, polled from now until `finish`. */
  start(layer: string): Float64Array {
    const record = createCheckRecord(finetuneCheckCount(this.options));
    this.running.set(record, { layer, emitted: 0 });
    if (!this.timer && !this.failure && !this.closed) {
      this.timer = setInterval(() => this.pollAll(), LIVE_CHECK_POLL_MS);
      // The tasks keep the process alive, not this timer.
      (this.timer as { unref?: () => void }).unref?.();
    }
    return record;
  }

  /** After the layer's task has ended: emits the checks not emitted yet; stops polling the record. */
  finish(record: Float64Array, checks: readonly FreezeCheck[]): void {
    this.rethrow();
    const entry = this.running.get(record);
    if (!entry) return;
    this.poll(record);
    this.running.delete(record);
    if (this.running.size === 0) this.stopTimer();
    for (let i = entry.emitted; i < checks.length; i++) this.onProgress({ kind: "freezeCheck", layer: entry.layer, ...checks[i]! });
    entry.emitted = Math.max(entry.emitted, checks.length);
  }

  /** Stops polling (a run that failed or was cancelled). */
  close(): void {
    this.closed = true;
    this.stopTimer();
    this.running.clear();
  }

  private poll(record: Float64Array): void {
    const entry = this.running.get(record)!;
    const fresh = readCheckRecord(record, entry.emitted);
    // Counted before emitting: a listener that throws does not get the same check again.
    entry.emitted += fresh.length;
    for (const c of fresh) this.onProgress({ kind: "freezeCheck", layer: entry.layer, ...c });
  }

  private pollAll(): void {
    try {
      for (const record of this.running.keys()) this.poll(record);
    } catch (error) {
      // A listener that throws fails the run (as it would on the orchestrating thread), at the next layer end.
      this.failure ??= { error };
      this.stopTimer();
    }
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.error;
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * Fine-tunes every SSVQ/VQ layer that has calibration statistics on the map's threads, with an event per
 * check as it happens (`LiveChecks`) and one per layer when it is done (after its checks). Each layer is
 * one task, the largest first, so that the pool's queue keeps all threads busy; a layer that would be the
 * long pole (at least its share of the whole work, `splitLayer`) is split instead: its iterations are
 * driven from here and each one's row blocks run as tasks on every thread (`finetuneLayerOn`). A layer's
 * result depends on that layer alone, not on where or how it ran: the order and the split only change
 * when events arrive.
 */
async function finetune(sel: Selected[], run: CompressRun, tuning: TuneProgress, checkCancel: () => void, settle: (s: Selected) => void): Promise<void> {
  const options = run.config.finetuning ?? resolveFinetuneOptions();
  const warnings = tuning.warnings;
  const todo = sel.filter((s) => s.q && !isIntQuantized(s.q));
  if (todo.length === 0) return;
  if (!run.config.sequential) for (const s of todo) if (!run.stats?.has(s.weight.name)) tuning.missing.push(s.weight.name);
  const ready = todo.filter((s) => run.stats?.has(s.weight.name));
  const map = run.map ?? serialMap;
  const engine = run.productEngine;
  const live = run.onProgress ? new LiveChecks(run.onProgress, options) : undefined;
  /** Fine-tunes one layer, as one task or split over the threads; its checks are emitted on the way (`live`). */
  const tune = async (s: Selected, input: { w: Float32Array; stat: StatHandle; quantized: VqQuantized }, split: boolean): Promise<FinetuneResult> => {
    const progress = live?.start(s.weight.name);
    let r: FinetuneResult;
    if (split) {
      r = await finetuneLayerOn(map, input, options, { ...(engine !== undefined ? { engine } : {}), ...(progress ? { progress } : {}), hooks: { signal: run.signal } });
    } else {
      [r] = await map.run<FinetuneTaskInput, FinetuneResult>("finetune.layer", [{ ...input, options, engine, ...(progress ? { progress } : {}) }]);
    }
    checkCancel();
    if (progress) live!.finish(progress, r.stats.checks);
    return r;
  };
  try {
    if (run.config.sequential) {
      if (!run.sequentialStats) throw new Error("the sequential variant needs sequentialStats");
      const compressed = new Map<string, Float32Array>();
      for (const s of todo) {
        checkCancel();
        const seq = await run.sequentialStats(s.weight, compressed);
        if (seq) {
          const t0 = performance.now();
          const stat = shareStatistic(seq.stat);
          // One layer at a time: it gets every thread.
          const r = await tune(s, { w: seq.target, stat, quantized: s.q as VqQuantized }, splitLayer(stat, s, 1, 1, map.threads));
          const errorBefore = await seq.outputError(reconstructRows(s.q!));
          await apply(s, r, (performance.now() - t0) / 1000, { before: errorBefore, after: seq.outputError });
        } else warnings.push(`layer ${s.weight.name} was not fine-tuned: its inputs cannot be observed (inside an If/Loop/Scan body)`);
        run.onProgress?.({ kind: "layer", index: tuning.done++, count: tuning.count, name: s.weight.name, rows: s.weight.layout.rows, cols: s.weight.layout.cols });
        compressed.set(weightKey(s.weight), s.stored!);
      }
      return;
    }
    const stats = ready.map((s) => shareStatistic(run.stats!.get(s.weight.name)!));
    const costs = ready.map((s, i) => layerCost(stats[i]!, s, options.iters));
    const total = costs.reduce((a, b) => a + b, 0);
    const order = ready.map((_, i) => i).sort((a, b) => costs[b]! - costs[a]! || a - b);
    await Promise.all(
      order.map(async (index) => {
        const s = ready[index]!;
        const stat = stats[index]!;
        const t0 = performance.now();
        const r = await tune(s, { w: s.rows!, stat, quantized: s.q as VqQuantized }, splitLayer(stat, s, costs[index]! / total, ready.length, map.threads));
        const seconds = (performance.now() - t0) / 1000;
        await apply(s, r, seconds, undefined, stat);
        run.onProgress?.({ kind: "layer", index: tuning.done++, count: tuning.count, name: s.weight.name, rows: s.weight.layout.rows, cols: s.weight.layout.cols });
      }),
    );
  } finally {
    live?.close();
  }

  async function apply(
    s: Selected,
    r: FinetuneResult,
    seconds: number,
    sequential?: { before: number; after: (wHat: Float32Array) => number | Promise<number> },
    stat?: StatHandle,
  ): Promise<void> {
    const w = s.weight;
    const tuned = applyFinetune(s.q as VqQuantized, r);
    tuned.codebook = roundTo(tuned.codebook, w.dtype);
    s.q = tuned;
    const rec = reconstructRows(tuned);
    s.stored = fromRows(rec, w.layout);
    const before = s.report!;
    const outputError = sequential ? await sequential.after(rec) : await relativeOutputErrorOn(map, s.rows!, rec, w.layout.rows, stat!, engine);
    s.report = {
      ...layerReport(w, tuned, relativeError(s.rows!, rec)),
      outputError,
      finetune: {
        iters: r.stats.iters,
        errorBefore: sequential ? sequential.before : r.stats.errorBefore,
        errorAfter: sequential ? outputError : r.stats.errorAfter,
        signsChanged: r.stats.signsChanged,
        signsChangedFraction: r.stats.signsChangedFraction,
        frozenFraction: r.stats.frozenFraction,
        reassigned: r.stats.reassigned,
        codebookBefore: before.codebook ?? [],
        checks: r.stats.checks,
        product: r.stats.product,
        seconds,
      },
    };
    settle(s);
  }
}

/** Flops of a layer's fine-tuning products (its iterations, plus the reference and the final products). */
function layerCost(stat: StatHandle, s: Selected, iters: number): number {
  return (iters + 3) * s.weight.layout.rows * productRowFlops(stat.stat);
}

/**
 * Whether a layer is fine-tuned split over the threads rather than as one task: with more than one
 * thread, when its products come in more than one block (`rowBlocks`) and it is the long pole, at least
 * its share of the whole work (`share` of the total cost >= 1 / threads), or when there are fewer layers
 * than threads. Only where the work runs depends on it, never the result.
 */
function splitLayer(stat: StatHandle, s: Selected, share: number, layers: number, threads: number): boolean {
  if (threads < 2) return false;
  if (rowBlocks(s.weight.layout.rows, stat.stat.groups, productRowFlops(stat.stat)).length < 2) return false;
  return share * threads >= 1 || layers < threads;
}

const roundTo = (v: Float32Array, dtype: number): Float32Array => {
  const t = floatsAs("", [v.length], v, dtype);
  return tensorToFloat32(t);
};

/** What every layer entry says about the weight itself. */
function weightFields(w: WeightInfo) {
  return {
    name: w.name,
    graphPath: w.graphPath,
    opType: w.consumers[0]!.opType,
    consumers: w.consumers.map((c) => c.node),
    dims: w.dims,
    dtype: dtypeName(w.dtype),
    rows: w.layout.rows,
    cols: w.layout.cols,
    groups: w.layout.groups,
  };
}

function layerReport(w: WeightInfo, q: Quantized, weightError: number): LayerReport {
  const base = { ...weightFields(w), mode: q.mode, bits: layerBits(q, dtypeBits(w.dtype)!), weightError };
  if (isIntQuantized(q)) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of q.scales) {
      lo = Math.min(lo, s);
      hi = Math.max(hi, s);
    }
    return { ...base, scaleRange: [lo, hi] };
  }
  const codebook: number[][] = [];
  for (let j = 0; j < q.k; j++) codebook.push(Array.from(q.codebook.subarray(j * q.d, (j + 1) * q.d)));
  return { ...base, k: q.k, d: q.d, codebook, usage: usageHistogram(q), kmeansIterations: q.kmeansIterations };
}

function estimatedLayer(w: WeightInfo, c: OperatingPoint): LayerReport {
  if (c.mode === "fp") throw new Error(`${pointLabel(c)} is not a compressed layer`);
  const vq = c.mode === "ssvq" || c.mode === "vq";
  return {
    ...weightFields(w),
    mode: c.mode,
    ...(vq ? { k: c.k, d: c.d } : {}),
    bits: estimateBits(c.mode, c.k, c.d, w.layout.rows, w.layout.cols, dtypeBits(w.dtype)!),
    weightError: NaN,
  };
}

/** Replaces each weight's values by its reconstruction, in place and at its own dtype (those not written yet). */
function writeDense(sel: Selected[], sink?: DenseSink, sunk?: Set<TensorProto>): void {
  for (const s of sel) if (s.stored) writeDenseLayer(s, sink, sunk);
}

/** Tensors smaller than this stay in the model rather than go to the dense sink (external-out.ts's threshold). */
const SINK_MIN_BYTES = 1024;

function writeDenseLayer(s: Selected, sink?: DenseSink, sunk?: Set<TensorProto>): void {
  const w = s.weight;
  const t = floatsAs(w.tensor.name, w.dims, s.stored!, w.dtype);
  clearData(w.tensor);
  s.stored = undefined;
  if (sink && t.rawData.length >= SINK_MIN_BYTES) {
    const at = sink.put(t.rawData);
    setExternal(w.tensor, at.location, at.offset, at.length);
    sunk?.add(w.tensor);
  } else w.tensor.rawData = t.rawData;
}

function clearData(t: TensorProto): void {
  t.floatData = [];
  t.int32Data = [];
  t.int64Data = [];
  t.doubleData = [];
  t.uint64Data = [];
  t.externalData = [];
  // Not set at all (as in a model that never had external data), rather than set to DEFAULT.
  clearField(t, TensorProtoSchema.field.dataLocation);
  t.rawData = new Uint8Array(0);
}

/** Every name used anywhere in the model, so that new names never collide. */
function usedNames(model: ModelProto): Set<string> {
  const names = new Set<string>();
  walkGraphs(model, ({ graph }) => {
    for (const v of [...graph.input, ...graph.output, ...graph.valueInfo]) names.add(v.name);
    for (const t of graph.initializer) names.add(t.name);
    for (const n of graph.node) {
      n.input.forEach((x) => names.add(x));
      n.output.forEach((x) => names.add(x));
      if (n.name) names.add(n.name);
    }
  });
  return names;
}

/** Replaces each selected weight by its decode subgraph, in the graph that holds the weight. */
function writeDecodeGraphs(model: ModelProto, sel: Selected[], opset: number): void {
  const names = usedNames(model);
  const fresh = (base: string): string => {
    let name = base;
    for (let i = 1; names.has(name); i++) name = `${base}_${i}`;
    names.add(name);
    return name;
  };
  const main = model.graph!;
  const luts = new Map<LookupTable, string>();
  const lut = (table: LookupTable): string => {
    let name = luts.get(table);
    if (!name) {
      name = fresh(lookupTableName(table));
      luts.set(table, name);
    }
    return name;
  };
  // New tensors go into initializers (IR >= 4) or, for older IR versions that require every
  // initializer to be a graph input, into Constant nodes. Never into graph.input.
  const asConstants = Number(model.irVersion) < 4;
  const builders = new Map<GraphProto, GraphBuilder>();
  const graphOf = new Map<string, GraphProto>();
  walkGraphs(model, ({ graph, path }) => graphOf.set(path, graph));
  const builder = (g: GraphProto) => {
    let b = builders.get(g);
    if (!b) builders.set(g, (b = new GraphBuilder(opset, fresh, lut)));
    return b;
  };
  // Decode nodes replace a Constant node in place, or go before everything for an initializer.
  // Lists grow one item at a time: a model may have thousands of layers (no spread of long arrays into
  // calls, no copy per layer).
  const replacements = new Map<NodeProto, NodeProto[]>();
  const prepend = new Map<GraphProto, NodeProto[]>();
  const removeInit = new Map<GraphProto, Set<TensorProto>>();
  const removeInput = new Map<GraphProto, Set<string>>();
  const addTo = <K, V>(m: Map<K, V[] | Set<V>>, key: K, make: () => V[] | Set<V>, value: V) => {
    let c = m.get(key);
    if (!c) m.set(key, (c = make()));
    if (Array.isArray(c)) c.push(value);
    else c.add(value);
  };
  const users = valueReaders(model);
  // Nodes that go right after a consumer whose output is scaled (INT8 scaled after the product).
  const after = new Map<NodeProto, NodeProto[]>();
  // Nodes that replace a consumer (the split product).
  const instead = new Map<NodeProto, NodeProto[]>();
  for (const [i, { weight: w, packed }] of sel.entries()) {
    const g = graphOf.get(w.graphPath)!;
    const b = builder(g);
    const before = b.nodes.length;
    const stored = `${w.name || "weight"}.ssvq`;
    const target = { output: w.name, dims: w.dims, dtype: w.dtype, layout: w.layout };
    const products = packed!.kind === "int8" ? productConsumers(w, g, users, opset) : undefined;
    if (packed!.kind === "vq" && packed!.codes) {
      const p = packed!;
      const codebook = floatsAs("", [p.k, p.d], p.codebook, w.dtype);
      b.tensor(`${stored}.codebook`, codebook);
      const parts = writeDecodeSplit(b, target, { codebook: b.tensors[b.tensors.length - 1]!, d: p.d, signed: p.codes!.signed, codes: p.codes! }, `ssvq${i}`, stored);
      for (const n of users.readers.get(w.name) ?? []) instead.set(n, writeSplitProduct(b, n, parts, w.layout.cols, `ssvq${i}`));
      // The weight's name now holds the int32 codes: a value_info of the float weight would contradict it.
      g.valueInfo = g.valueInfo.filter((v) => v.name !== w.name);
    } else if (packed!.kind === "int8" && products) {
      const scales = writeDecodeInt8Unscaled(b, target, packed!, stored);
      const nodes = b.nodes.splice(before);
      for (const n of products) {
        const start = b.nodes.length;
        scaleOutput(b, n, scales, `ssvq${i}`);
        after.set(n, b.nodes.splice(start));
      }
      b.nodes.push(...nodes);
    } else writeDecode(b, target, decodeSource(b, w, packed!, stored), `ssvq${i}`, stored);
    const nodes = b.nodes.slice(before);
    if (w.storage === "constant") replacements.set(w.constantNode!, nodes);
    else {
      for (const n of nodes) addTo(prepend, g, () => [], n);
      addTo(removeInit, g, () => new Set(), w.tensor);
      if (w.alsoGraphInput) addTo(removeInput, g, () => new Set(), w.name);
    }
  }
  for (const [table, name] of luts) builder(main).tensors.push(lookupTableTensor(name, table));
  for (const [g, b] of builders) {
    const drop = removeInit.get(g);
    if (drop) g.initializer = g.initializer.filter((t) => !drop.has(t));
    const dropInput = removeInput.get(g);
    if (dropInput) g.input = g.input.filter((v) => !dropInput.has(v.name));
    const nodes: NodeProto[] = [];
    for (const t of b.tensors) {
      if (asConstants) nodes.push(constantNode(t));
      else g.initializer.push(t);
    }
    for (const n of prepend.get(g) ?? []) nodes.push(n);
    for (const n of g.node) {
      const r = replacements.get(n) ?? instead.get(n);
      if (r) for (const x of r) nodes.push(x);
      else nodes.push(n);
      for (const x of after.get(n) ?? []) nodes.push(x);
    }
    g.node = nodes;
  }
}

/** The nodes that read each value name, in every graph, and the names that are graph outputs. */
interface ValueReaders {
  readers: Map<string, NodeProto[]>;
  graphOf: Map<NodeProto, GraphProto>;
  outputs: Set<string>;
}

function valueReaders(model: ModelProto): ValueReaders {
  const readers = new Map<string, NodeProto[]>();
  const graphOf = new Map<NodeProto, GraphProto>();
  const outputs = new Set<string>();
  walkGraphs(model, ({ graph }) => {
    for (const o of graph.output) outputs.add(o.name);
    for (const n of graph.node) {
      graphOf.set(n, graph);
      for (const x of n.input) {
        if (!x) continue;
        let list = readers.get(x);
        if (!list) readers.set(x, (list = []));
        if (list[list.length - 1] !== n) list.push(n);
      }
    }
  });
  return { readers, graphOf, outputs };
}

/**
 * The MatMul and Gemm nodes that read an INT8 weight as their B, when they are all its readers (in this
 * graph, no other input, no graph output) and each output can simply be multiplied by the scales: a
 * Gemm's C moves after the Mul, so it needs beta 1 and, below opset 11 where C is required, no C.
 */
function productConsumers(w: WeightInfo, g: GraphProto, users: ValueReaders, opset: number): NodeProto[] | undefined {
  if (w.dtype !== TensorProto_DataType.FLOAT) return undefined;
  const nodes = productReaders(w, g, users);
  for (const n of nodes ?? []) {
    const beta = n.attribute.find((a) => a.name === "beta")?.f ?? 1;
    if (n.opType === "Gemm" && n.input[2] && (beta !== 1 || opset < 11)) return undefined;
  }
  return nodes;
}

/** A 2-D weight's readers when they are all MatMul or Gemm nodes of its graph reading it as B (and only as B), with one output each. */
function productReaders(w: WeightInfo, g: GraphProto, users: ValueReaders): NodeProto[] | undefined {
  if (w.dims.length !== 2 || w.layout.kind === "convtranspose" || users.outputs.has(w.name)) return undefined;
  const nodes = users.readers.get(w.name) ?? [];
  if (nodes.length === 0) return undefined;
  for (const n of nodes)
    if (
      users.graphOf.get(n) !== g ||
      !isDefaultDomain(n) ||
      (n.opType !== "MatMul" && n.opType !== "Gemm") ||
      n.input.indexOf(w.name) !== 1 ||
      n.input.lastIndexOf(w.name) !== 1 ||
      n.output.length !== 1
    )
      return undefined;
  return nodes;
}

/** Weights smaller than this keep the codebook Gather reshaped to the weight (their load memory is small; s products would cost more than they save). */
export const SPLIT_MIN_WEIGHTS = 65536;

interface SplitPlan {
  orientation: SplitOrientation;
  bits: number;
  signed: boolean;
}

/**
 * Whether an SSVQ/VQ layer is stored as a split product (split-product.ts): read only by MatMul/Gemm as
 * B (Slice steps need opset 10; a Gemm without C, 11), its reduction a multiple of s, one code per
 * sub-vector of 1, 2, 4, 8 or 16 bits (SSVQ only with the signs joined to the index), and, when several
 * codes share a byte, a (signed) codebook of exactly 2^b rows for the field tables to index.
 */
function splitPlanFor(w: WeightInfo, q: VqQuantized, g: GraphProto, users: ValueReaders, opset: number): SplitPlan | undefined {
  if (opset < MIN_SPLIT_OPSET || w.layout.rows * w.layout.cols < SPLIT_MIN_WEIGHTS) return undefined;
  const nodes = productReaders(w, g, users);
  if (!nodes) return undefined;
  const orientationOf = (n: NodeProto): SplitOrientation =>
    n.opType === "Gemm" && Number(n.attribute.find((a) => a.name === "transB")?.i ?? 0) !== 0 ? "nk" : "kn";
  const orientation = orientationOf(nodes[0]!);
  if (nodes.some((n) => orientationOf(n) !== orientation || (n.opType === "Gemm" && opset < 11))) return undefined;
  const signed = q.mode === "ssvq";
  if (signed && !mergesSigns(q.k, q.d, q.shape.rows * q.shape.paddedCols)) return undefined;
  const bits = splitCodeBits(q.k, q.d, signed);
  if (!SPLIT_CODE_WIDTHS.has(bits)) return undefined;
  const per = codesPerElement(bits);
  if (per > 1 && q.k * (signed ? 2 ** q.d : 1) !== 2 ** bits) return undefined;
  if (q.shape.paddedCols !== q.shape.cols || q.shape.cols % (q.d * per) !== 0) return undefined;
  return { orientation, bits, signed };
}

/** `n`'s output becomes Mul(n's product, scales) (+ C for a Gemm, taken out of it), under the same name. */
function scaleOutput(b: GraphBuilder, n: NodeProto, scales: string, base: string): void {
  const out = n.output[0]!;
  const c = n.opType === "Gemm" ? n.input[2] : undefined;
  n.output[0] = b.fresh(`${base}/unscaled`);
  if (c) n.input = n.input.slice(0, 2);
  const scaled = b.op("Mul", [n.output[0], scales], `${base}/scaled`, {}, c ? undefined : out);
  if (c) b.op("Add", [scaled, c], `${base}/bias`, {}, out);
}

function constantNode(t: TensorProto): NodeProto {
  const name = t.name;
  t.name = "";
  return create(NodeProtoSchema, {
    opType: "Constant",
    name: `${name}/Constant`,
    output: [name],
    attribute: [create(AttributeProtoSchema, { name: "value", type: AttributeProto_AttributeType.TENSOR, t })],
  });
}

/** A final layer as the output stores it: INT values (INT4 packed), or the codebook and packed index and sign planes. */
type PackedLayer =
  | Exclude<DecodeSource, { kind: "vq" }>
  | (Omit<Extract<DecodeSource, { kind: "vq" }>, "codebook"> & { k: number; codebook: Float32Array; codes?: SplitCodes & { signed: boolean } });

function packLayer(q: Quantized, w: WeightInfo, split: SplitPlan | undefined): PackedLayer {
  if (isIntQuantized(q)) {
    // INT8 goes into the weight's layout now, so that a transposed copy is not made at the write beside the row matrix.
    if (q.mode === "int8")
      // (ConvTranspose keeps the row format, writeDecodeRows.)
      return w.layout.transposed && w.layout.kind !== "convtranspose"
        ? { kind: "int8", q: transposeRows(q.q, q.rows, q.cols), scales: q.scales, rows: q.rows, cols: q.cols, weightLayout: true }
        : { kind: "int8", q: q.q, scales: q.scales, rows: q.rows, cols: q.cols };
    const biased = Uint8Array.from(q.q, (v) => v + 8);
    return { kind: "int4", plane: packPlane(biased, 4, 0), scales: q.scales, rows: q.rows, cols: q.cols };
  }
  const common = { kind: "vq" as const, k: q.k, codebook: q.codebook, count: q.shape.count, d: q.d, rows: q.shape.rows, paddedCols: q.shape.paddedCols };
  if (split) {
    const codes = buildSplitCodes({ rows: q.shape.rows, cols: q.shape.cols, k: q.k, d: q.d, bits: split.bits, orientation: split.orientation }, q.assignments, q.signs);
    return { ...common, indexPlanes: [], codes: { ...codes, signed: split.signed } };
  }
  return { ...common, indexPlanes: packFields(q.assignments, indexBits(q.k)), signs: q.signs ? packPlane(q.signs, 1, 0) : undefined };
}

function decodeSource(b: GraphBuilder, w: WeightInfo, p: PackedLayer, stored: string): DecodeSource {
  if (p.kind !== "vq") return p;
  b.tensor(`${stored}.codebook`, floatsAs("", [p.k, p.d], p.codebook, w.dtype));
  const { k: _k, codebook: _c, ...rest } = p;
  return { ...rest, codebook: b.tensors[b.tensors.length - 1]! };
}

/** External tensors are written into the output, whose folder may differ from the source's. */
function inlineExternal(model: ModelProto, readExternal: ExternalDataReader | undefined, keep: ReadonlySet<TensorProto>): void {
  walkTensors(model, (t) => {
    if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL || keep.has(t)) return;
    const bytes = rawBytes(t, readExternal)!;
    clearData(t);
    t.rawData = bytes as Uint8Array<ArrayBuffer>;
  });
}

function setMetadata(model: ModelProto, c: CompressConfig, sel: Selected[]): void {
  const entries: Record<string, string> = {
    "ssvq.version": VERSION,
    "ssvq.config": JSON.stringify({
      mode: c.mode,
      k: c.k,
      d: c.d,
      ...(c.ratio !== undefined ? { ratio: c.ratio } : {}),
      ...(c.bits !== undefined ? { bits: c.bits } : {}),
      seed: c.seed,
      kmeansIters: c.kmeansIters,
      format: c.format,
      finetune: c.finetune,
      ...(c.finetune ? { finetuning: c.finetuning ?? resolveFinetuneOptions() } : {}),
      ...(c.sequential ? { sequential: true } : {}),
    }),
    // graphPath tells apart weights of the same name in different If/Loop/Scan bodies.
    "ssvq.layers": JSON.stringify(
      sel.map((s) => ({
        name: s.weight.name,
        ...(s.weight.graphPath ? { graphPath: s.weight.graphPath } : {}),
        mode: s.report!.mode,
        k: s.report!.k,
        d: s.report!.d,
        bitsPerWeight: s.report!.bits.bitsPerWeight,
      })),
    ),
  };
  model.metadataProps = [
    ...model.metadataProps.filter((p) => !p.key.startsWith("ssvq.")),
    ...Object.entries(entries).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
  ];
}

/** Bytes of every tensor of a model at its own width (the report's originalTensorBytes), and of those stored externally. */
export function tensorBytes(source: ModelProto): { originalTensorBytes: number; externalBytes: number } {
  let originalTensorBytes = 0;
  let externalBytes = 0;
  walkTensors(source, (t, place) => {
    if (place === "attribute" && !(t.dataType && t.dims.length)) return;
    const b = declaredBytes(t) ?? 0;
    originalTensorBytes += b;
    if (t.dataLocation === TensorProto_DataLocation.EXTERNAL) externalBytes += b;
  });
  return { originalTensorBytes, externalBytes };
}

function sizes(sourceFileBytes: number, source: ModelProto, sel: Selected[], outputFileBytes: number): Report["sizes"] {
  const { originalTensorBytes, externalBytes } = tensorBytes(source);
  let replaced = 0;
  let bits = 0;
  let weights = 0;
  for (const s of sel) {
    replaced += declaredBytes(s.weight.tensor) ?? 0;
    bits += s.report!.bits.totalBits;
    weights += s.report!.bits.weights;
  }
  const compressedTensorBytes = originalTensorBytes - replaced + bits / 8;
  // The source "file" includes its external data: the output carries all of it inline.
  const sourceBytes = sourceFileBytes + externalBytes;
  const theoreticalFileBytes = sourceBytes - replaced + bits / 8;
  return {
    originalTensorBytes,
    compressedTensorBytes,
    tensorRatio: originalTensorBytes / compressedTensorBytes,
    sourceFileBytes: sourceBytes,
    theoreticalFileBytes,
    outputFileBytes,
    diskRatio: outputFileBytes ? sourceBytes / outputFileBytes : sourceBytes / theoreticalFileBytes,
    compressedLayers: sel.length,
    compressedWeights: weights,
    bitsPerWeight: bits / weights,
  };
}

/**
 * The conventional-VQ operating point to compare an SSVQ compression with: among k = 2..4096 (powers of
 * two) and d = 1..16, the (k, d) whose whole-model tensor size, over the same layers, is the largest not
 * above `budgetBytes` (ties: the larger k). Undefined when none fits.
 */
export function nearestVqConfig(model: ModelProto, config: CompressConfig, budgetBytes: number, originalTensorBytes: number): { k: number; d: number; tensorBytes: number } | undefined {
  const { selected } = selectWeights(model, config);
  const replaced = selected.reduce((a, w) => a + (declaredBytes(w.tensor) ?? 0), 0);
  let best: { k: number; d: number; tensorBytes: number } | undefined;
  for (const d of [1, 2, 4, 8, 16])
    for (let k = 2; k <= 4096; k *= 2) {
      const bits = selected.reduce((a, w) => a + estimateBits("vq", k, d, w.layout.rows, w.layout.cols, dtypeBits(w.dtype)!).totalBits, 0);
      const tensorBytes = originalTensorBytes - replaced + bits / 8;
      if (tensorBytes > budgetBytes) continue;
      if (!best || tensorBytes > best.tensorBytes || (tensorBytes === best.tensorBytes && k > best.k)) best = { k, d, tensorBytes };
    }
  return best;
}

/**
 * The source model with some weights replaced by dense values (as stored, by weightKey): the network
 * the sequential variant observes. Decoded afresh from `bytes`; external tensors stay external.
 */
export function withDenseWeights(bytes: Uint8Array, path: string, values: ReadonlyMap<string, Float32Array>): ModelProto {
  const model = decodeModel(bytes, path);
  const sel: Selected[] = findWeights(model)
    .weights.filter((w) => values.has(weightKey(w)))
    .map((weight) => ({ weight, stored: values.get(weightKey(weight))! }));
  writeDense(sel);
  return model;
}
