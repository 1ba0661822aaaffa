/**
 * Activation capture for the sequential variant of fine-tuning (DESIGN.md section 1; issue 5 item 1,
 * `--sequential`): the ORIGINAL model and a model whose earlier layers are already compressed run on
 * the same calibration batches, each with input 0 of every node that consumes a compressible weight
 * exposed as an extra graph output (on in-memory copies, as capture.ts does), and per weight three
 * statistics are accumulated in float64 with the same sample matrices (im2col for Conv, ...):
 *
 *     H_qq = X_q X_q^T / n    (X_q: the layer's input in the compressed-prefix model)
 *     H_fq = X_fp X_q^T / n   (cross statistic)
 *     H_ff = X_fp X_fp^T / n  (X_fp: its input in the original model; the H of captureActivations)
 *
 * One Gram accumulation of the stacked samples [x_fp; x_q] (2 cols features) gives all three blocks at the
 * cost of computing them apart, through the same engines as capture.ts (onnxruntime's float64 GEMM or
 * the TypeScript kernel); see src/core/calib/sequential.ts for what to do with them (the effective target
 * W' and the sequential output error).
 *
 * Which prefix: a layer's statistics depend only on the layers before it, and they should be computed
 * with those layers as they will finally be, i.e. already fine-tuned: call this once per stage, with
 * `weights` limited to the next layer(s) and a prefix model holding the fine-tuned earlier layers (dense
 * weights are simplest: `format: "dense"`). One capture with every layer compressed by k-means alone is
 * cheaper but wrong: each layer then compensates for k-means errors of its prefix that fine-tuning
 * removes afterwards. Measured on the fixtures (SSVQ, 300 iterations, calibration 0-511, accuracy on
 * 512-1999): fashion_tinyvit k16 d8, per-layer fine-tuning 84.2%, sequential with a fine-tuned prefix
 * per layer 85.6% (damping 1e-6) to 86.3% (1e-2), one capture with a k-means prefix 61-63%;
 * fashion_lenet5 k16 d4: 90.3%, 90.1%, 88.8-89.3% (FP32 90.5%).
 *
 * Memory: one batch at a time; per pass both models' exposed activations of one batch are held (twice
 * capture.ts's estimate), split into several passes when that exceeds `maxActivationBytes`; the stacked
 * statistic (4 cols^2 per group) is held per weight until the end, then split into the three results
 * one weight at a time. With `choose` (as capture.ts), a weight may keep the stacked columns [x_fp; x_q]
 * instead (2 cols x samples per group, when that is cheaper), and the result is the stacked statistic in
 * either form (`SequentialStackedCapture`), which src/core/calib/sequential.ts's `sequentialTargetOn` and
 * `sequentialLossOn` take as it is.
 *
 * Weights read inside If/Loop/Scan bodies are uncalibrated (planCapture), as are those whose
 * activation is missing from the compressed model or has another shape there.
 */
import { InputError } from "../core/errors.js";
import { planCapture, samplerFor, type CaptureConsumer, type CaptureTarget } from "../core/calib/capture-plan.js";
import { splitStacked, stackedSampler } from "../core/calib/sequential.js";
import type { Batch } from "../core/calib/source.js";
import { FactorAccumulator, GramAccumulator } from "../core/calib/stats.js";
import type { LayerStatistic } from "../core/ssvq/stat-product.js";
import type { ExternalDataReader } from "../core/onnx/external.js";
import { decodeModel, encodeModel, type ModelProto } from "../core/onnx/proto.js";
import type { WeightInfo } from "../core/onnx/weights.js";
import {
  accumulatorFor,
  checkAbort,
  cutToOutputs,
  DEFAULT_MAX_ACTIVATION_BYTES,
  sessionModel,
  OrtGram,
  resolveEngine,
  sessionOutputBytes,
  splitPasses,
  type CaptureData,
  type CaptureResult,
  type CaptureOptions,
  type CaptureProgress,
  type LayerCapture,
} from "./capture.js";
import { createSession, ort, runSession, tensorValues, type Session } from "./ort.js";

export interface SequentialCaptureOptions extends CaptureOptions {
  /** Reads external tensor data of the compressed-prefix model (`readExternal` is the original's). */
  readExternalPrefix?: ExternalDataReader;
  /** Names the compressed-prefix model in messages (default "the compressed model"). */
  labelPrefix?: string;
}

/** One weight's statistics. `H` (of LayerCapture) is H_qq, so this fits where a LayerCapture does. */
export interface SequentialLayerCapture extends LayerCapture {
  /** X_q X_q^T / n, `groups` blocks [cols, cols] (the same array as `H`). */
  Hqq: Float64Array;
  /** X_fp X_q^T / n, `groups` blocks [cols, cols] (not symmetric). */
  Hfq: Float64Array;
  /** X_fp X_fp^T / n, `groups` blocks [cols, cols]. */
  Hff: Float64Array;
  /** Sum over groups of tr(H_ff). (`trace` is that of H_qq.) */
  traceFf: number;
  /** Mean of x^2 over the original model's raw input activation(s). (`meanSquare` is the compressed one's.) */
  meanSquareFp: number;
}

export interface SequentialCaptureResult<L = SequentialLayerCapture> extends Omit<CaptureResult, "layers"> {
  /** Per weight name, in the order of the weights given. */
  layers: Map<string, L>;
}

/** One weight's stacked statistic (with `choose`): of [x_fp; x_q], 2 cols features, H or the columns. */
export interface SequentialStackedCapture {
  stacked: LayerStatistic;
  groups: number;
  /** The weight's columns (the stacked statistic has twice as many). */
  cols: number;
  samples: number;
  /** Sum over groups of tr(H_qq) and of tr(H_ff). */
  trace: number;
  traceFf: number;
  meanSquare: number;
  meanSquareFp: number;
  consumers: string[];
}

/** Where a model gets an activation from: the batch's feeds or an exposed output. */
interface ModelValues {
  fed: Set<string>;
  produced: Set<string>;
}

function modelValues(model: ModelProto): ModelValues {
  const g = model.graph;
  const fed = new Set<string>();
  const produced = new Set<string>();
  if (!g) return { fed, produced };
  const inits = new Set(g.initializer.map((t) => t.name));
  for (const i of g.input) if (!inits.has(i.name)) fed.add(i.name);
  for (const n of g.node) for (const o of n.output) if (o) produced.add(o);
  return { fed, produced };
}

const feedTensor = (batch: Batch, name: string): ort.Tensor => {
  const f = batch.feeds[name];
  if (!f) throw new InputError(`The calibration data has no value for the model input "${name}".`);
  return new ort.Tensor(f.type, f.data as never, f.dims);
};

/** The batch's feeds the session takes (a compressed model may not list every input of the original). */
function feedsFor(session: Session, batch: Batch): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) if (batch.feeds[name]) out[name] = feedTensor(batch, name);
  return out;
}

/**
 * Captures H_qq, H_fq and H_ff of `weights` (from `findWeights(original)`) on `data`, X_fp from
 * `original` and X_q from `compressedPrefix` (a ModelProto or its bytes: the same graph with some
 * weights compressed, densely or as decode subgraphs; the activations are found by name).
 * Throws CancelledError when `signal` fires, InputError when a model or the data cannot run.
 */
export function captureSequential(
  original: ModelProto,
  compressedPrefix: ModelProto | Uint8Array,
  weights: readonly WeightInfo[],
  data: CaptureData,
  opts?: SequentialCaptureOptions & { choose?: undefined },
): Promise<SequentialCaptureResult>;
export function captureSequential(
  original: ModelProto,
  compressedPrefix: ModelProto | Uint8Array,
  weights: readonly WeightInfo[],
  data: CaptureData,
  opts: SequentialCaptureOptions,
): Promise<SequentialCaptureResult<SequentialStackedCapture>>;
export async function captureSequential(
  original: ModelProto,
  compressedPrefix: ModelProto | Uint8Array,
  weights: readonly WeightInfo[],
  data: CaptureData,
  opts: SequentialCaptureOptions = {},
): Promise<SequentialCaptureResult<SequentialLayerCapture | SequentialStackedCapture>> {
  const t0 = performance.now();
  const labelFp = opts.label ?? "the model";
  const labelQ = opts.labelPrefix ?? "the compressed model";
  const prefix = compressedPrefix instanceof Uint8Array ? decodeModel(compressedPrefix, labelQ) : compressedPrefix;
  const plan = planCapture(original, weights);
  const uncalibrated = [...plan.uncalibrated];
  const engine = resolveEngine(opts.gram, opts.pool);
  const done = (
    layers: Map<string, SequentialLayerCapture | SequentialStackedCapture>,
    samples: number,
    batches: number,
    passes: number,
  ): SequentialCaptureResult<SequentialLayerCapture | SequentialStackedCapture> => ({
    layers,
    uncalibrated,
    samples,
    batches,
    passes,
    gram: engine.name,
    seconds: (performance.now() - t0) / 1000,
  });
  try {
    const vFp = modelValues(original);
    const vQ = modelValues(prefix);
    const targets: CaptureTarget[] = [];
    for (const t of plan.targets) {
      const missing = t.consumers.find((c) => !vQ.fed.has(c.activation) && !vQ.produced.has(c.activation));
      if (missing)
        uncalibrated.push({
          name: t.name,
          reason: `${labelQ} has no value "${missing.activation}" (the input of ${missing.opType} ${missing.node} in ${labelFp})`,
        });
      else targets.push(t);
    }
    if (targets.length === 0) return done(new Map(), 0, 0, 0);
    const activations: string[] = [];
    for (const t of targets) for (const c of t.consumers) if (!activations.includes(c.activation)) activations.push(c.activation);
    // Activations fed in both models are read from the feeds (in the first pass); the others are exposed
    // in whichever model computes them.
    const fedBoth = activations.filter((a) => vFp.fed.has(a) && vQ.fed.has(a));
    const exposed = activations.filter((a) => !fedBoth.includes(a));
    const baseFp = sessionModel(original, { readExternal: opts.readExternal, dir: opts.modelDir });
    const baseQ = sessionModel(prefix, { readExternal: opts.readExternalPrefix, dir: opts.modelDir });
    const external = (b: typeof baseFp) => (b.externalDataDir !== undefined ? { externalDataDir: b.externalDataDir } : {});

    const readers = new Map<string, { target: CaptureTarget; consumer: CaptureConsumer }[]>();
    for (const target of targets)
      for (const consumer of target.consumers) {
        const list = readers.get(consumer.activation) ?? [];
        list.push({ target, consumer });
        readers.set(consumer.activation, list);
      }
    const accs = new Map<string, GramAccumulator | FactorAccumulator>();
    const moments = new Map(targets.map((t) => [t.name, { fp: 0, q: 0, elements: 0 }]));
    const failed = new Map<string, string>();
    const total = data.info?.indices.length;

    const consume = async (name: string, tFp: ort.Tensor, tQ: ort.Tensor, items: number) => {
      const xf = tensorValues(tFp);
      const xq = tensorValues(tQ);
      const dFp = tFp.dims.map(Number);
      const dQ = tQ.dims.map(Number);
      for (const { target, consumer } of readers.get(name) ?? []) {
        if (failed.has(target.name)) continue;
        const where = `${consumer.opType} ${consumer.node}`;
        const isFloat = (x: unknown, t: ort.Tensor) => (x instanceof Float32Array || x instanceof Float64Array) && t.type.startsWith("float");
        if (!isFloat(xf, tFp) || !isFloat(xq, tQ)) {
          failed.set(target.name, `the input of ${where} is ${tFp.type} in ${labelFp} and ${tQ.type} in ${labelQ}, not float tensors`);
          continue;
        }
        if (dFp.length !== dQ.length || dFp.some((d, i) => d !== dQ[i])) {
          failed.set(target.name, `the input of ${where} has shape [${dFp.join(", ")}] in ${labelFp} but [${dQ.join(", ")}] in ${labelQ}`);
          continue;
        }
        let sampler;
        try {
          const sf = samplerFor(consumer, xf as Float32Array | Float64Array, dFp);
          const sq = samplerFor(consumer, xq as Float32Array | Float64Array, dQ);
          if (sf.groups !== target.groups || sf.cols !== target.cols)
            throw new InputError(
              `the input of ${where} has shape [${dFp.join(", ")}], giving ${sf.groups} x ${sf.cols} columns where the weight needs ${target.groups} x ${target.cols}`,
            );
          sampler = stackedSampler(sf, sq);
        } catch (e) {
          if (!(e instanceof InputError)) throw e;
          failed.set(target.name, e.message);
          continue;
        }
        let acc = accs.get(target.name);
        if (!acc) {
          // The decision sees the weight's own columns; the stacked statistic has twice as many.
          const wide = xf instanceof Float64Array || xq instanceof Float64Array ? new Float64Array(0) : new Float32Array(0);
          accs.set(target.name, (acc = accumulatorFor(target, sampler, items, total, wide, opts.choose, 2 * target.cols)));
        }
        if (acc instanceof FactorAccumulator) acc.add(sampler, { signal: opts.signal });
        else await acc.add(sampler, engine, { signal: opts.signal });
        const m = moments.get(target.name)!;
        for (let i = 0; i < xf!.length; i++) m.fp += xf![i]! * xf![i]!;
        for (let i = 0; i < xq!.length; i++) m.q += xq![i]! * xq![i]!;
        m.elements += xf!.length;
      }
    };

    const iterator = data.batches();
    const first = await iterator.next();
    if (first.done) throw new InputError("The calibration data holds no samples.");
    checkAbort(opts.signal);
    const fetchFp = (names: readonly string[]) => names.filter((a) => !vFp.fed.has(a));
    const fetchQ = (names: readonly string[]) => names.filter((a) => !vQ.fed.has(a));
    const open = async (names: readonly string[]) => {
      const fp = fetchFp(names);
      const q = fetchQ(names);
      const sFp = fp.length ? await createSession(encodeModel(cutToOutputs(baseFp.model, fp)), { label: `${labelFp} (with exposed activations)`, ...external(baseFp) }) : undefined;
      try {
        const sQ = q.length ? await createSession(encodeModel(cutToOutputs(baseQ.model, q)), { label: `${labelQ} (with exposed activations)`, ...external(baseQ) }) : undefined;
        return { fp, q, sFp, sQ };
      } catch (e) {
        await sFp?.release().catch(() => undefined);
        throw e;
      }
    };
    type Open = Awaited<ReturnType<typeof open>>;
    const close = async (s: Open | undefined) => {
      await s?.sFp?.release().catch(() => undefined);
      await s?.sQ?.release().catch(() => undefined);
    };

    let sessions: Open | undefined;
    try {
      let passes: string[][] = [exposed];
      if (exposed.length > 0) {
        sessions = await open(exposed);
        const sizes = new Map<string, number>();
        for (const s of [sessions.sFp, sessions.sQ])
          if (s) for (const [name, b] of sessionOutputBytes(s, first.value)) if (exposed.includes(name)) sizes.set(name, (sizes.get(name) ?? 0) + b);
        // An activation one model is fed with still occupies the batch once on that side.
        for (const a of exposed) if (vFp.fed.has(a) || vQ.fed.has(a)) sizes.set(a, 2 * (sizes.get(a) ?? 0));
        passes = splitPasses(exposed, sizes, opts.maxActivationBytes ?? DEFAULT_MAX_ACTIVATION_BYTES);
        if (passes.length > 1) {
          await close(sessions);
          sessions = undefined;
        }
      }
      let samples = 0;
      let batches = 0;
      for (let p = 0; p < passes.length; p++) {
        const names = passes[p]!;
        if (!sessions && names.length > 0) sessions = await open(names);
        const it = p === 0 ? iterator : data.batches();
        let pending: IteratorResult<Batch> = p === 0 ? first : await it.next();
        let n = 0;
        while (!pending.done) {
          checkAbort(opts.signal);
          const batch = pending.value;
          const outFp: Record<string, ort.Tensor> = sessions?.sFp ? await runSession(sessions.sFp, feedsFor(sessions.sFp, batch), sessions.fp, labelFp) : {};
          checkAbort(opts.signal);
          const outQ: Record<string, ort.Tensor> = sessions?.sQ ? await runSession(sessions.sQ, feedsFor(sessions.sQ, batch), sessions.q, labelQ) : {};
          checkAbort(opts.signal);
          const value = (out: Record<string, ort.Tensor>, fed: Set<string>, name: string, label: string): ort.Tensor => {
            if (fed.has(name)) return feedTensor(batch, name);
            const t = out[name];
            if (!t) throw new Error(`onnxruntime returned no value for exposed output ${name} of ${label}`);
            return t;
          };
          for (const name of names) {
            await consume(name, value(outFp, vFp.fed, name, labelFp), value(outQ, vQ.fed, name, labelQ), batch.indices.length);
            outFp[name] = undefined as never;
            outQ[name] = undefined as never;
          }
          if (p === 0) for (const name of fedBoth) await consume(name, feedTensor(batch, name), feedTensor(batch, name), batch.indices.length);
          const k = batch.indices.length;
          n += k;
          if (p === 0) {
            samples += k;
            batches++;
          }
          opts.onProgress?.({
            pass: p,
            passes: passes.length,
            samplesDone: n,
            samplesTotal: total,
            fraction: total ? (p * total + n) / (passes.length * total) : undefined,
          } satisfies CaptureProgress);
          pending = await it.next();
        }
        await close(sessions);
        sessions = undefined;
      }
      // A pooled engine's products may still be running: the statistics are read below.
      await engine.flush?.();

      const layers = new Map<string, SequentialLayerCapture | SequentialStackedCapture>();
      for (const target of targets) {
        const acc = accs.get(target.name);
        accs.delete(target.name);
        const reason = failed.get(target.name);
        if (reason) {
          uncalibrated.push({ name: target.name, reason });
          continue;
        }
        if (!acc || acc.samples === 0) {
          uncalibrated.push({ name: target.name, reason: "no samples reached it" });
          continue;
        }
        const m = moments.get(target.name)!;
        if (opts.choose) {
          const st = acc.finish();
          const stat: LayerStatistic =
            st.kind === "factor"
              ? { kind: "factor", X: st.X, r: st.r, n: st.n, groups: st.groups, cols: st.cols }
              : { kind: "gram", H: st.H, groups: st.groups, cols: st.cols };
          const [traceFf, trace] = stackedTraces(stat, target.cols);
          layers.set(target.name, {
            stacked: stat,
            groups: target.groups,
            cols: target.cols,
            samples: st.samples,
            trace,
            traceFf,
            meanSquare: m.elements > 0 ? m.q / m.elements : 0,
            meanSquareFp: m.elements > 0 ? m.fp / m.elements : 0,
            consumers: target.consumers.map((x) => x.node),
          });
          continue;
        }
        if (acc instanceof FactorAccumulator) throw new Error("a factor statistic without choose");
        const stacked = acc.finish();
        const { hff, hfq, hqq } = splitStacked(stacked.H, target.groups, target.cols);
        const c = target.cols;
        let trace = 0;
        let traceFf = 0;
        for (let g = 0; g < target.groups; g++)
          for (let i = 0; i < c; i++) {
            trace += hqq[g * c * c + i * c + i]!;
            traceFf += hff[g * c * c + i * c + i]!;
          }
        layers.set(target.name, {
          H: hqq,
          Hqq: hqq,
          Hfq: hfq,
          Hff: hff,
          groups: target.groups,
          cols: c,
          samples: stacked.samples,
          trace,
          traceFf,
          meanSquare: m.elements > 0 ? m.q / m.elements : 0,
          meanSquareFp: m.elements > 0 ? m.fp / m.elements : 0,
          consumers: target.consumers.map((x) => x.node),
        });
      }
      return done(layers, samples, batches, passes.length);
    } finally {
      await close(sessions);
      await iterator.return?.(undefined).catch(() => undefined);
    }
  } finally {
    // After an error too: nothing writes into the statistics once capture has returned.
    await engine.flush?.({ drop: true }).catch(() => undefined);
    if ("release" in engine && typeof engine.release === "function") await (engine as OrtGram).release();
  }
}

/** Sum over groups of tr(H_ff) and of tr(H_qq) of a stacked statistic (2 cols features). */
function stackedTraces(stat: LayerStatistic, cols: number): [number, number] {
  const c2 = 2 * cols;
  let ff = 0;
  let qq = 0;
  if (stat.kind === "factor") {
    const { X, r, n, groups } = stat;
    for (let j = 0; j < groups * r; j++)
      for (let k = 0; k < c2; k++) {
        const v = X[j * c2 + k]!;
        if (k < cols) ff += v * v;
        else qq += v * v;
      }
    return [ff / n, qq / n];
  }
  for (let g = 0; g < stat.groups; g++)
    for (let i = 0; i < c2; i++) {
      const v = stat.H[g * c2 * c2 + i * c2 + i]!;
      if (i < cols) ff += v;
      else qq += v;
    }
  return [ff, qq];
}
