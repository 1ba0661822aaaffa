/**
 * Activation capture: runs the ORIGINAL model with onnxruntime on calibration batches, with input 0 of
 * every node that consumes a compressible weight exposed as an extra graph output (on an in-memory copy
 * of the model), and accumulates per weight H = X X^T / n in float64 (src/core/calib/stats.ts; the sample
 * matrix X per layer kind is described in src/core/calib/im2col.ts).
 *
 * Memory stays bounded: one batch at a time; each activation is turned into statistics as soon as the
 * batch has run, in chunks of at most 8 MB; and when one batch's exposed activations would exceed
 * `maxActivationBytes` (estimated from onnxruntime's inferred output shapes with the batch's own input
 * dims), the layers are split into several passes over the data, each with its own session and outputs.
 * Only the statistics are held for the whole run: per weight H (groups * cols^2 float64), or, with a
 * `choose` that picks the factor form for it, X itself (groups * samples * cols, float32 for float32
 * activations), decided when the weight's first activation shows how many columns a sample gives (the
 * data's sample count known), before anything is kept.
 *
 * Weights read inside If/Loop/Scan bodies are reported as uncalibrated with the reason, as are layers
 * whose activation turns out not to fit the weight.
 */
import { create } from "@bufbuild/protobuf";
import { CancelledError, InputError } from "../core/errors.js";
import {
  estimateOutputBytes,
  estimateOutputDims,
  planCapture,
  samplerFor,
  type CaptureConsumer,
  type CaptureTarget,
  type Uncalibrated,
  type ValueMetadataLike,
} from "../core/calib/capture-plan.js";
import type { Batch, DataInfo } from "../core/calib/source.js";
import {
  FactorAccumulator,
  GramAccumulator,
  jsGram,
  type AnyLayerStats,
  type FactorLayerStats,
  type GramEngine,
  type LayerStats,
} from "../core/calib/stats.js";
import { externalRef, hasExternalTensors, type ExternalDataReader } from "../core/onnx/external.js";
import {
  encodeModel,
  TensorProto_DataLocation,
  ValueInfoProtoSchema,
  type GraphProto,
  type ModelProto,
  type TensorProto,
} from "../core/onnx/proto.js";
import { rawBytes } from "../core/onnx/tensor-data.js";
import { walkTensors } from "../core/onnx/walk.js";
import type { WeightInfo } from "../core/onnx/weights.js";
import { createSession, ort, runSession, tensorValues, toOrtFeeds, type Session } from "./ort.js";
import { OrtGram } from "./ort-gram.js";
import { PooledGram } from "../core/calib/gram-pool.js";
import type { ParallelMap } from "../core/parallel.js";

export { OrtGram };

export type { AnyLayerStats, FactorLayerStats, LayerStats, Uncalibrated };

/** What `choose` decides a weight's statistic form from. */
export interface FormQuery {
  /** The weight's name. */
  name: string;
  groups: number;
  cols: number;
  /** Columns of X per group over the whole data (estimated from the first activation: exact unless the data's samples differ in shape). */
  samples: number;
}

/** The data capture reads: anything that yields batches (a `PreparedData` from `openData`). */
export interface CaptureData {
  batches(): AsyncGenerator<Batch>;
  /** When given, `info.indices.length` is the total for progress. */
  info?: Pick<DataInfo, "indices">;
}

export interface CaptureProgress {
  /** 0-based pass over the data, of `passes`. */
  pass: number;
  passes: number;
  samplesDone: number;
  /** Undefined when the data does not say how many samples it holds. */
  samplesTotal: number | undefined;
  /** 0..1 over all passes (undefined without samplesTotal). */
  fraction: number | undefined;
}

export interface CaptureOptions {
  signal?: AbortSignal;
  onProgress?: (p: CaptureProgress) => void;
  /**
   * How H += X X^T is computed: "ort" (default) runs the products through onnxruntime's float64 GEMM,
   * about ten times faster than "js" (the blocked TypeScript kernel, bit-for-bit reproducible across
   * machines); or any GramEngine.
   */
  gram?: "ort" | "js" | GramEngine;
  /**
   * A thread pool for the "ort" products (`PooledGram`): they run on its threads while the model runs on
   * the next batch here, the same bytes as in this thread. Pass the pool when it idles during capture.
   */
  pool?: ParallelMap;
  /** Bound on one batch's exposed activations per pass (default 256 MiB). */
  maxActivationBytes?: number;
  /** Reads external tensor data (from `loadModel`); without `modelDir`, external tensors are inlined in the capture copy. */
  readExternal?: ExternalDataReader;
  /** The model's folder: its external tensors are then read by onnxruntime from the files (`sessionModel`). */
  modelDir?: string;
  /** Names the model in messages. */
  label?: string;
  /**
   * The statistic form of each weight (`chooseStatisticForm`); without it every weight gets H. Asked
   * once per weight, at its first activation, and only when the data says how many samples it holds.
   */
  choose?: (q: FormQuery) => "gram" | "factor";
  /**
   * The precision H is kept in (default float64). float32 halves the memory; each chunk's products are
   * still computed in float64 and only then added into H.
   */
  gramPrecision?: "float32" | "float64";
}

/** A weight's statistic in the gram form, with the nodes whose inputs were accumulated. */
export interface LayerCapture extends LayerStats {
  /** The nodes whose inputs were accumulated. */
  consumers: string[];
}

/** A weight's statistic in the factor form. */
export interface FactorLayerCapture extends FactorLayerStats {
  consumers: string[];
}

export type AnyLayerCapture = LayerCapture | FactorLayerCapture;

export interface CaptureResult<L extends AnyLayerCapture = LayerCapture> {
  /** Per weight name, in the order of the weights given. */
  layers: Map<string, L>;
  uncalibrated: Uncalibrated[];
  /** Data samples (batch items) run through the model, per pass. */
  samples: number;
  batches: number;
  passes: number;
  gram: string;
  seconds: number;
}

export const DEFAULT_MAX_ACTIVATION_BYTES = 256 * 1024 * 1024;

/**
 * Which accumulator a weight gets, decided at its first activation (`sampler`, from a batch of `items`
 * data samples): the factor form when `choose` picks it, knowing the data's size.
 */
export function accumulatorFor(
  target: CaptureTarget,
  sampler: { groups: number; cols: number; samples: number },
  items: number,
  total: number | undefined,
  activation: ArrayLike<number>,
  choose: CaptureOptions["choose"],
  cols = target.cols,
  gramPrecision: "float32" | "float64" = "float64",
  planned?: StatisticEstimate,
): GramAccumulator | FactorAccumulator {
  if (choose && total !== undefined && items > 0) {
    // A form decided from the estimated shapes stands (the memory was planned for it).
    const samples = planned?.known ? planned.samples : Math.ceil((sampler.samples / items) * total) * target.consumers.length;
    const form = planned?.known ? planned.form : choose({ name: target.name, groups: target.groups, cols: target.cols, samples });
    if (form === "factor") return new FactorAccumulator(target.groups, cols, samples, activation instanceof Float64Array ? "float64" : "float32");
  }
  return new GramAccumulator(target.groups, cols, gramPrecision);
}

/** What a weight's statistic is expected to hold, estimated before capture (from onnxruntime's inferred shapes). */
export interface StatisticEstimate {
  form: "gram" | "factor";
  /** Columns of X per group over the whole data (all consumers); 0 when unknown. */
  samples: number;
  /** Bytes the statistic holds once captured (an upper bound when the shapes are unknown). */
  bytes: number;
  /** Whether the activation shapes were known (else the estimate assumes H in float64). */
  known: boolean;
}

/**
 * Capture prepared once and run for any subset of the weights: the waves of a compression under a
 * memory budget (src/io/compress-file.ts) capture a group of layers at a time. The passes over the data
 * (the activations each session exposes) are planned once from the first batch, for all the weights, and
 * every run uses the same sessions whatever subset it accumulates, so that a weight's statistic is the
 * same bytes in any wave.
 */
export interface CaptureRunner {
  /** The weights that can be calibrated, in order. */
  readonly targets: readonly CaptureTarget[];
  /** The weights that cannot be, with the reason (inside If/Loop/Scan bodies, no activation). */
  readonly uncalibrated: readonly Uncalibrated[];
  /** Per weight name: what its statistic will hold. */
  readonly estimates: ReadonlyMap<string, StatisticEstimate>;
  /** Estimated bytes of one batch's exposed activations in the largest pass. */
  readonly activationBytes: number;
  /**
   * Captures the statistics of the named weights (default: all). Runs only the passes that expose their
   * activations. `uncalibrated` lists the named weights whose activations turned out unusable (and, for
   * a run of all weights, the runner's `uncalibrated` too).
   */
  capture(names?: ReadonlySet<string>, progress?: (p: CaptureProgress) => void): Promise<CaptureResult<AnyLayerCapture>>;
  /** Releases the engine's session. */
  close(): Promise<void>;
}

/**
 * Captures the activation statistics of `weights` (from `findWeights(model)`) on `data`: H for every
 * weight, or with `choose`, either form.
 * Throws CancelledError when `signal` fires, InputError when the model or the data cannot run.
 */
export function captureActivations(model: ModelProto, weights: readonly WeightInfo[], data: CaptureData, opts?: CaptureOptions & { choose?: undefined }): Promise<CaptureResult>;
export function captureActivations(model: ModelProto, weights: readonly WeightInfo[], data: CaptureData, opts: CaptureOptions): Promise<CaptureResult<AnyLayerCapture>>;
export async function captureActivations(
  model: ModelProto,
  weights: readonly WeightInfo[],
  data: CaptureData,
  opts: CaptureOptions = {},
): Promise<CaptureResult<AnyLayerCapture>> {
  const runner = await openCapture(model, weights, data, opts);
  try {
    return await runner.capture(undefined, opts.onProgress);
  } finally {
    await runner.close();
  }
}

/**
 * Prepares capture (`CaptureRunner`): plans what to expose, reads the first batch to split the
 * activations into passes and to estimate each weight's statistic.
 */
export async function openCapture(model: ModelProto, weights: readonly WeightInfo[], data: CaptureData, opts: CaptureOptions = {}): Promise<CaptureRunner> {
  const label = opts.label ?? "the model";
  const plan = planCapture(model, weights);
  const engine = resolveEngine(opts.gram, opts.pool);
  let ready: Session | undefined;
  const release = async () => {
    const s = ready;
    ready = undefined;
    if (s) await s.release().catch(() => undefined);
    if ("release" in engine && typeof engine.release === "function") await (engine as OrtGram).release();
  };
  try {
    const total = data.info?.indices.length;
    const graph = model.graph!;
    const inits = new Set(graph.initializer.map((t) => t.name));
    const graphInputs = new Set(graph.input.map((i) => i.name).filter((n) => !inits.has(n)));
    const exposed = plan.activations.filter((a) => !graphInputs.has(a));
    const fromFeeds = plan.activations.filter((a) => graphInputs.has(a));
    const base = plan.targets.length > 0 ? sessionModel(model, { readExternal: opts.readExternal, dir: opts.modelDir }) : { model };
    const sessionFor = (fetches: readonly string[]) =>
      fetches.length > 0
        ? createSession(encodeModel(cutToOutputs(base.model, fetches)), {
            label: `${label} (with exposed activations)`,
            ...(base.externalDataDir !== undefined ? { externalDataDir: base.externalDataDir } : {}),
          })
        : undefined;

    // The passes and the estimates, from the first batch and a session exposing everything.
    let passes: string[][] = [exposed];
    let activationBytes = 0;
    const estimates = new Map<string, StatisticEstimate>();
    if (plan.targets.length > 0) {
      const iterator = data.batches();
      try {
        const first = await iterator.next();
        if (first.done) throw new InputError("The calibration data holds no samples.");
        checkAbort(opts.signal);
        const batch = first.value;
        const feedDims: Record<string, number[]> = {};
        for (const [name, f] of Object.entries(batch.feeds)) feedDims[name] = f.dims;
        const shapes = new Map<string, { type: string; dims: number[] | undefined }>();
        for (const name of fromFeeds) {
          const f = batch.feeds[name];
          if (f) shapes.set(name, { type: f.type, dims: f.dims });
        }
        const session = await sessionFor(exposed);
        if (session) {
          let keep = false;
          try {
            const io = (names: readonly string[], meta: readonly unknown[]) => names.map((name, i) => ({ name, meta: meta[i] as ValueMetadataLike | undefined }));
            const inputs = io(session.inputNames, session.inputMetadata);
            const outputs = io(session.outputNames, session.outputMetadata);
            const sizes = estimateOutputBytes(inputs, outputs, feedDims, batch.indices.length);
            passes = splitPasses(exposed, sizes, opts.maxActivationBytes ?? DEFAULT_MAX_ACTIVATION_BYTES);
            for (const p of passes) activationBytes = Math.max(activationBytes, p.reduce((a, n) => a + (sizes.get(n) ?? 0), 0));
            for (const [name, v] of estimateOutputDims(inputs, outputs, feedDims, batch.indices.length)) shapes.set(name, v);
            // One pass: the first capture runs this session (it exposes exactly that pass).
            keep = passes.length === 1;
            if (keep) ready = session;
          } finally {
            if (!keep) await session.release();
          }
        }
        for (const target of plan.targets) estimates.set(target.name, estimateStatistic(target, shapes, batch.indices.length, total, opts));
      } finally {
        await iterator.return?.(undefined).catch(() => undefined);
      }
    }

    const readers = new Map<string, { target: CaptureTarget; consumer: CaptureConsumer }[]>();
    for (const target of plan.targets)
      for (const consumer of target.consumers) {
        const list = readers.get(consumer.activation) ?? [];
        list.push({ target, consumer });
        readers.set(consumer.activation, list);
      }

    const capture = async (names: ReadonlySet<string> | undefined, onProgress?: (p: CaptureProgress) => void): Promise<CaptureResult<AnyLayerCapture>> => {
      const t0 = performance.now();
      const wanted = (name: string) => !names || names.has(name);
      const uncalibrated = names ? [] : [...plan.uncalibrated];
      const targets = plan.targets.filter((t) => wanted(t.name));
      const done = (layers: Map<string, AnyLayerCapture>, samples: number, batches: number, passCount: number): CaptureResult<AnyLayerCapture> => ({
        layers,
        uncalibrated,
        samples,
        batches,
        passes: passCount,
        gram: engine.name,
        seconds: (performance.now() - t0) / 1000,
      });
      if (targets.length === 0) return done(new Map(), 0, 0, 0);
      const active = new Set(targets.flatMap((t) => t.consumers.map((c) => c.activation)));
      // Only the passes that expose a wanted activation, each with all of its fetches (the same sessions
      // as a run of every weight); activations fed from the data are read with the first pass run.
      let runs = passes.filter((p) => p.some((a) => active.has(a)));
      const feedsWanted = fromFeeds.filter((a) => active.has(a));
      if (runs.length === 0) runs = [[]];
      const accs = new Map<string, GramAccumulator | FactorAccumulator>();
      const failed = new Map<string, string>();
      const consume = async (name: string, tensor: ort.Tensor, items: number) => {
        const list = readers.get(name) ?? [];
        const x = tensorValues(tensor);
        const dims = tensor.dims.map(Number);
        for (const { target, consumer } of list) {
          if (!wanted(target.name) || failed.has(target.name)) continue;
          if (!x || !(x instanceof Float32Array || x instanceof Float64Array) || !tensor.type.startsWith("float")) {
            failed.set(target.name, `the input of ${consumer.opType} ${consumer.node} is ${tensor.type}, not a float tensor`);
            continue;
          }
          let sampler;
          try {
            sampler = samplerFor(consumer, x, dims);
            if (sampler.groups !== target.groups || sampler.cols !== target.cols)
              throw new InputError(
                `the input of ${consumer.opType} ${consumer.node} has shape [${dims.join(", ")}], giving ${sampler.groups} x ${sampler.cols} columns where the weight needs ${target.groups} x ${target.cols}`,
              );
          } catch (e) {
            if (!(e instanceof InputError)) throw e;
            failed.set(target.name, e.message);
            continue;
          }
          let acc = accs.get(target.name);
          if (!acc) accs.set(target.name, (acc = accumulatorFor(target, sampler, items, total, x, opts.choose, target.cols, opts.gramPrecision, estimates.get(target.name))));
          if (acc instanceof FactorAccumulator) acc.add(sampler, { signal: opts.signal });
          else await acc.add(sampler, engine, { signal: opts.signal });
          acc.addMoments(x);
        }
      };
      let samples = 0;
      let batches = 0;
      let session: Session | undefined;
      try {
        for (let p = 0; p < runs.length; p++) {
          const fetches = runs[p]!;
          if (ready && fetches === passes[0]) {
            session = ready;
            ready = undefined;
          } else session = await sessionFor(fetches);
          const it = data.batches();
          let count = 0;
          try {
            for (let pending = await it.next(); !pending.done; pending = await it.next()) {
              checkAbort(opts.signal);
              const batch = pending.value;
              const out = session ? await runSession(session, toOrtFeeds(batch.feeds), fetches, label) : {};
              checkAbort(opts.signal);
              for (const name of fetches) {
                const t = out[name];
                if (!t) throw new Error(`onnxruntime returned no value for exposed output ${name}`);
                if (active.has(name)) await consume(name, t, batch.indices.length);
                out[name] = undefined as never;
              }
              if (p === 0)
                for (const name of feedsWanted) {
                  const f = batch.feeds[name]!;
                  await consume(name, new ort.Tensor(f.type, f.data as never, f.dims), batch.indices.length);
                }
              const n = batch.indices.length;
              count += n;
              if (p === 0) {
                samples += n;
                batches++;
              }
              onProgress?.({
                pass: p,
                passes: runs.length,
                samplesDone: count,
                samplesTotal: total,
                fraction: total ? (p * total + count) / (runs.length * total) : undefined,
              });
            }
          } finally {
            await it.return?.(undefined).catch(() => undefined);
          }
          await session?.release();
          session = undefined;
        }
        // A pooled engine's products may still be running: H is read below.
        await engine.flush?.();
      } finally {
        if (session) await session.release().catch(() => undefined);
        // After an error too: nothing writes into the statistics once capture has returned.
        await engine.flush?.({ drop: true }).catch(() => undefined);
      }
      if (samples === 0) throw new InputError("The calibration data holds no samples.");
      const layers = new Map<string, AnyLayerCapture>();
      for (const target of targets) {
        const reason = failed.get(target.name);
        if (reason) {
          uncalibrated.push({ name: target.name, reason });
          continue;
        }
        const acc = accs.get(target.name);
        accs.delete(target.name);
        if (!acc || acc.samples === 0) {
          uncalibrated.push({ name: target.name, reason: "no samples reached it" });
          continue;
        }
        layers.set(target.name, { ...acc.finish(), consumers: target.consumers.map((c) => c.node) });
      }
      return done(layers, samples, batches, runs.length);
    };
    return { targets: plan.targets, uncalibrated: plan.uncalibrated, estimates, activationBytes, capture, close: release };
  } catch (e) {
    await release();
    throw e;
  }
}

/**
 * A weight's statistic as capture will keep it, from its activations' estimated dims (`shapes`) for a
 * batch of `items` samples: the form `choose` picks (as `accumulatorFor` does at the first activation)
 * and its bytes. Unknown dims give H in float64, an upper bound of both forms.
 */
export function estimateStatistic(
  target: CaptureTarget,
  shapes: ReadonlyMap<string, { type: string; dims: number[] | undefined }>,
  items: number,
  total: number | undefined,
  opts: Pick<CaptureOptions, "choose" | "gramPrecision">,
): StatisticEstimate {
  const gramValues = target.groups * target.cols * target.cols;
  const gramBytes = gramValues * (opts.gramPrecision === "float32" ? 4 : 8);
  const unknown: StatisticEstimate = { form: "gram", samples: 0, bytes: gramValues * 8, known: false };
  const consumer = target.consumers[0]!;
  const shape = shapes.get(consumer.activation);
  if (!shape?.dims || shape.dims.some((d) => !(d >= 0))) return unknown;
  let perBatch: number;
  try {
    perBatch = samplerFor(consumer, new Float32Array(0), shape.dims).samples;
  } catch {
    return unknown;
  }
  const all = total ?? items;
  const samples = items > 0 ? Math.ceil((perBatch / items) * all) * target.consumers.length : 0;
  if (opts.choose && total !== undefined && items > 0 && opts.choose({ name: target.name, groups: target.groups, cols: target.cols, samples }) === "factor")
    return { form: "factor", samples, bytes: target.groups * samples * target.cols * (shape.type === "float64" ? 8 : 4), known: true };
  return { form: "gram", samples, bytes: gramBytes, known: true };
}

export function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new CancelledError();
}

/** A shallow copy of the model whose main graph also outputs `names` (the original is untouched). */
export function withOutputs(model: ModelProto, names: readonly string[]): ModelProto {
  const g = model.graph!;
  const have = new Set(g.output.map((o) => o.name));
  const extra = names.filter((n) => !have.has(n)).map((name) => create(ValueInfoProtoSchema, { name }));
  const graph: GraphProto = { ...g, output: [...g.output, ...extra] };
  return { ...model, graph };
}

/**
 * A shallow copy of the model whose main graph outputs exactly `names`, with only the nodes they are
 * computed from and the initializers those read: onnxruntime runs every node of a graph whatever is
 * fetched, so a capture of early layers need not run the rest of the network. Graph inputs stay (the
 * feeds are the same) but for initializers listed as inputs that are dropped. A graph with subgraphs
 * (If, Loop, Scan: their bodies may read any outer value by name) is not cut: the copy only gains the
 * outputs, as `withOutputs`.
 */
export function cutToOutputs(model: ModelProto, names: readonly string[]): ModelProto {
  const g = model.graph!;
  if (g.node.some((n) => n.attribute.some((a) => a.g !== undefined || a.graphs.length > 0))) return withOutputs(model, names);
  const producer = new Map<string, number>();
  g.node.forEach((n, i) => {
    for (const o of n.output) if (o) producer.set(o, i);
  });
  const keep = new Set<number>();
  const read = new Set<string>();
  const todo = [...names];
  while (todo.length > 0) {
    const v = todo.pop()!;
    if (read.has(v)) continue;
    read.add(v);
    const i = producer.get(v);
    if (i === undefined || keep.has(i)) continue;
    keep.add(i);
    for (const x of g.node[i]!.input) if (x) todo.push(x);
  }
  const outputs = new Map(g.output.map((o) => [o.name, o]));
  // An initializer listed as a graph input (older models list them all) goes with it: left alone, the
  // input would have to be fed.
  const dropped = new Set(g.initializer.filter((t) => !read.has(t.name)).map((t) => t.name));
  const graph: GraphProto = {
    ...g,
    node: g.node.filter((_, i) => keep.has(i)),
    initializer: g.initializer.filter((t) => !dropped.has(t.name)),
    input: g.input.filter((i) => !dropped.has(i.name)),
    output: names.map((name) => outputs.get(name) ?? create(ValueInfoProtoSchema, { name })),
  };
  return { ...model, graph };
}

/** Where a model for a session finds its external tensors: read here (`readExternal`), or by onnxruntime from the files in `dir`. */
export interface ExternalSource {
  readExternal?: ExternalDataReader | undefined;
  /** The source model's folder (external locations are relative to it). */
  dir?: string | undefined;
}

/**
 * The model as a session takes it: with `dir`, its external tensors stay references that onnxruntime
 * reads from the files (createSession's `externalDataDir`: any size, nothing inlined here); without,
 * they are read inline (`inlineExternal`, up to 2 GB).
 */
export function sessionModel(model: ModelProto, src: ExternalSource): { model: ModelProto; externalDataDir?: string } {
  if (src.dir !== undefined && hasExternalTensors(model)) return { model, externalDataDir: src.dir };
  return { model: inlineExternal(model, src.readExternal) };
}

/**
 * The model with externally stored main-graph initializers read into memory (onnxruntime-node cannot
 * resolve external files for a model given as bytes). External tensors elsewhere are refused.
 */
export function inlineExternal(model: ModelProto, readExternal: ExternalDataReader | undefined): ModelProto {
  const g = model.graph;
  if (!g) return model;
  if (!hasExternalTensors(model)) return model;
  if (!readExternal) throw new InputError("The model keeps tensors in external files; open it with loadModel so they can be read.");
  const mainExternal = new Set(g.initializer.filter((t) => externalRef(t)));
  let elsewhere = false;
  walkTensors(model, (t) => {
    if (externalRef(t) && !mainExternal.has(t)) elsewhere = true;
  });
  if (elsewhere) throw new InputError("The model keeps tensors of Constant nodes or subgraphs in external files; capture cannot load it.");
  let bytes = 0;
  const initializer = g.initializer.map((t): TensorProto => {
    if (!mainExternal.has(t)) return t;
    const raw = rawBytes(t, readExternal)!;
    bytes += raw.length;
    return { ...t, rawData: raw as Uint8Array<ArrayBuffer>, dataLocation: TensorProto_DataLocation.DEFAULT, externalData: [] };
  });
  if (bytes > 2 ** 31 - 2 ** 26)
    throw new InputError("The model's tensors exceed 2 GB; onnxruntime cannot load it from memory for capture.");
  return { ...model, graph: { ...g, initializer } };
}

/** Estimated bytes of each output of `session` for `batch` (sizes that choose the passes). */
export function sessionOutputBytes(session: Session, batch: Batch): Map<string, number> {
  const feedDims: Record<string, number[]> = {};
  for (const [name, f] of Object.entries(batch.feeds)) feedDims[name] = f.dims;
  return estimateOutputBytes(
    session.inputNames.map((name, i) => ({ name, meta: session.inputMetadata[i] })),
    session.outputNames.map((name, i) => ({ name, meta: session.outputMetadata[i] })),
    feedDims,
    batch.indices.length,
  );
}

/** Splits activations, in order, into passes whose estimated bytes stay under `budget` (at least one each). */
export function splitPasses(names: readonly string[], sizes: ReadonlyMap<string, number>, budget: number): string[][] {
  const passes: string[][] = [];
  let cur: string[] = [];
  let bytes = 0;
  for (const n of names) {
    const b = sizes.get(n) ?? 0;
    if (cur.length > 0 && bytes + b > budget) {
      passes.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(n);
    bytes += b;
  }
  passes.push(cur);
  return passes;
}

export function resolveEngine(g: CaptureOptions["gram"], pool?: ParallelMap): GramEngine {
  if ((g === undefined || g === "ort") && pool && pool.threads > 1) return new PooledGram(pool, "ort");
  if (g === undefined || g === "ort") return new OrtGram();
  if (g === "js") return jsGram;
  return g;
}
