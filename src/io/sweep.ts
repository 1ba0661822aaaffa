/**
 * `ssvq sweep` (issue 12): the accuracy (or, without labels, fidelity) against whole-model size frontier
 * of SSVQ and VQ, each with the per-layer search, and of INT8 and INT4, at a list of whole-model ratio
 * targets. The calibration statistics are captured once; each family's candidates are quantized once
 * (k-means per candidate) and their sensitivities measured once (VQ reuses SSVQ's), then every target is
 * an allocation from the same measurements, a compression that reuses the candidates' k-means results
 * and fine-tunes only the chosen points, and an evaluation.
 */
import { basename } from "node:path";
import { compressModel, selectWeights, type CompressRun } from "../core/compress.js";
import { CancelledError, InputError } from "../core/errors.js";
import { parsePreprocess, type RawPreprocess } from "../core/calib/preprocess.js";
import type { DataInfo } from "../core/calib/source.js";
import type { CompressConfig, Report } from "../core/report.js";
import type { ParallelMap } from "../core/parallel.js";
import type { Quantized } from "../core/ssvq/quantize.js";
import { serialMap } from "../core/tasks.js";
import { pointKey, type OperatingPoint } from "../core/alloc/candidates.js";
import { weightKey } from "../core/onnx/weights.js";
import { openData } from "./calib-files.js";
import { captureActivations } from "./capture.js";
import { formChooser, type DataSpec } from "./compress-file.js";
import { evaluateModels } from "./evaluate.js";
import { loadModel } from "./model-file.js";
import { ORT_PRODUCT, registerOrtProduct } from "./ort-product.js";
import { modelInputs } from "./ort.js";
import { budgetBasis, planFor, prepareSearch, targetBitsPerWeight, type PreparedSearch } from "./search.js";

export const SWEEP_METHODS = ["ssvq", "vq", "int8", "int4"] as const;
export type SweepMethod = (typeof SWEEP_METHODS)[number];
export const DEFAULT_TARGETS: readonly number[] = [4, 6, 8, 12, 16, 24];

/** Below this many weights over the selected layers, every candidate's k-means result is kept in memory for the targets to reuse. */
const CACHE_WEIGHTS = 4_000_000;

export interface SweepOptions {
  input: string;
  /** The compression settings every point shares (seed, k-means, fine-tuning); mode, k, d, ratio and bits are the sweep's. */
  config: CompressConfig;
  calib: DataSpec;
  eval: DataSpec & { labels?: string };
  preprocess?: RawPreprocess;
  batchSize?: number;
  targets: readonly number[];
  methods: readonly SweepMethod[];
  map?: ParallelMap;
  signal?: AbortSignal;
  onStage?: (text: string) => void;
}

export interface SweepPoint {
  method: SweepMethod;
  /** The whole-model ratio asked for (SSVQ and VQ). */
  target?: number;
  /** False when the target cannot be reached with the method's candidates; the other figures are then absent. */
  reached: boolean;
  reason?: string;
  tensorRatio?: number;
  diskRatio?: number;
  compressedTensorBytes?: number;
  bitsPerWeight?: number;
  /** Top-1 accuracy on the evaluation samples (with labels). */
  accuracy?: number;
  /** Fidelity to the original: relative error of the first output, cosine, top-1 agreement. */
  outputError?: number;
  cosine?: number;
  top1Agreement?: number;
  /** Whether the point's codebooks (and SSVQ's signs) were fine-tuned on the calibration samples. */
  finetuned: boolean;
  /** Per layer: the chosen point ("fp" = kept at full precision). */
  layers?: { name: string; mode: string; k: number; d: number; bitsPerWeight: number }[];
  seconds?: number;
}

export interface SweepResult {
  model: string;
  targets: number[];
  /** What the y axis is: "accuracy" with labels, else "top-1 agreement" or "1 - output error". */
  metric: "accuracy" | "top1Agreement" | "fidelity";
  original: { accuracy?: number; tensorBytes: number };
  calibration: Pick<DataInfo, "source" | "paths" | "range"> & { samples: number };
  evaluation: Pick<DataInfo, "source" | "paths" | "range"> & { samples: number; labels?: string };
  /** How the points were made: which were fine-tuned, on which data. */
  notes: string[];
  points: SweepPoint[];
  timings: Record<string, number>;
}

export async function runSweep(o: SweepOptions): Promise<SweepResult> {
  const t00 = performance.now();
  const timings: Record<string, number> = {};
  const check = () => {
    if (o.signal?.aborted) throw new CancelledError();
  };
  if (o.targets.length === 0) throw new InputError("--targets needs at least one ratio");
  for (const t of o.targets) if (!(t > 1)) throw new InputError(`--targets: every ratio must be above 1, not ${t}`);
  const loaded = loadModel(o.input);
  const { selected } = selectWeights(loaded.model, o.config);
  registerOrtProduct();
  const engine = ORT_PRODUCT;
  const map = o.map ?? serialMap;
  const inputs = modelInputs(loaded.model);
  const preprocess = parsePreprocess(o.preprocess ?? {});
  const open = (spec: DataSpec & { labels?: string }, role: "calib" | "eval") =>
    openData(inputs, {
      ...(spec.path !== undefined ? { path: spec.path } : {}),
      ...(spec.range !== undefined ? { range: spec.range } : {}),
      ...(spec.count !== undefined ? { count: spec.count } : {}),
      ...(spec.seed !== undefined ? { seed: spec.seed } : {}),
      ...(spec.labels !== undefined ? { labels: spec.labels } : {}),
      role,
      preprocess,
      ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
    });
  const time = async <T>(stage: string, f: () => Promise<T>): Promise<T> => {
    o.onStage?.(stage);
    const t0 = performance.now();
    const r = await f();
    timings[stage] = (timings[stage] ?? 0) + (performance.now() - t0) / 1000;
    check();
    return r;
  };

  const calib = await open(o.calib, "calib");
  const evalData = await open(o.eval, "eval");
  const config: CompressConfig = { ...o.config, k: 0, d: 0 };
  delete config.ratio;
  delete config.bits;
  const cap = await time("capture", () =>
    captureActivations(loaded.model, selected, calib, {
      ...(o.signal ? { signal: o.signal } : {}),
      readExternal: loaded.readExternal,
      modelDir: loaded.dir,
      label: loaded.path,
      choose: formChooser(selected, { ...config, mode: "ssvq" }),
      pool: map,
    }),
  );
  const stats: CompressRun["stats"] = cap.layers;
  const base = await time("evaluate", () => evaluateModels(loaded.path, undefined, evalData, o.signal ? { signal: o.signal } : {}));
  const basis = budgetBasis(loaded, selected);
  const cache = basis.selectedWeights <= CACHE_WEIGHTS ? new Map<string, Quantized>() : undefined;
  const sorted = [...o.targets].sort((a, b) => a - b);
  const middle = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const points: SweepPoint[] = [];
  let ssvqSearch: PreparedSearch | undefined;

  const compress = (stage: string, run: Omit<CompressRun, "config">, c: CompressConfig) =>
    time(stage, () => compressModel({ bytes: loaded.bytes, path: loaded.path, readExternal: loaded.readExternal }, { ...run, config: c, stats, map, productEngine: engine, keepQuantized: true, ...(o.signal ? { signal: o.signal } : {}) }));
  /** Compresses (`c.finetune` off: the quantizations come tuned from `run.quantCache`) and evaluates one point. */
  const evaluateRun = async (method: SweepMethod, target: number | undefined, run: Omit<CompressRun, "config">, c: CompressConfig, finetuned: boolean, extraSeconds = 0): Promise<SweepPoint> => {
    const t0 = performance.now();
    const r = await compress("compress", run, c);
    const ev = await time("evaluate", () =>
      evaluateModels(loaded.path, r.model, evalData, { names: { original: basename(loaded.path), compressed: `${method}${target ? ` ${target}x` : ""}` }, ...(o.signal ? { signal: o.signal } : {}) }),
    );
    return pointOf(method, target, r.report, ev, finetuned, extraSeconds + (performance.now() - t0) / 1000);
  };

  for (const method of o.methods) {
    if (method === "int8" || method === "int4") {
      const { finetuning: _f, sequential: _s, ...plain } = config;
      points.push(await evaluateRun(method, undefined, {}, { ...plain, mode: method, finetune: false }, false));
      continue;
    }
    const family = method;
    const c: CompressConfig = {
      ...config,
      mode: family,
      ...(config.finetuning ? { finetuning: { ...config.finetuning, fixedSigns: family === "ssvq" ? config.finetuning.fixedSigns : false } } : {}),
    };
    let prepared: PreparedSearch;
    try {
      prepared = await time(`search ${family}`, () =>
        prepareSearch({
          loaded,
          selected,
          stats,
          config: c,
          family,
          loosest: { ratio: sorted[0]! },
          referenceBitsPerWeight: safeBpw(middle, basis),
          ...(ssvqSearch ? { sensitivity: ssvqSearch.sensitivity } : { data: calib }),
          ...(cache ? { cache } : {}),
          map,
          engine,
          ...(o.signal ? { signal: o.signal } : {}),
        }),
      );
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      for (const target of o.targets) points.push({ method, target, reached: false, reason: e.message, finetuned: false });
      continue;
    }
    if (family === "ssvq") ssvqSearch = prepared;
    const plans = o.targets.map((target) => {
      try {
        return { target, plan: planFor(prepared, { ratio: target }).plan };
      } catch (e) {
        if (!(e instanceof InputError)) throw e;
        return { target, reason: e.message };
      }
    });
    // Fine-tuning depends on the layer and its point alone: each (layer, point) that some target chose
    // is fine-tuned once, in rounds (round r: each layer's r-th distinct point, the others left out),
    // and every target then takes its layers' tuned quantizations.
    let tuned: Map<string, Quantized> | undefined;
    let tuneSeconds = 0;
    if (c.finetune) {
      const t0 = performance.now();
      tuned = new Map();
      const distinct = new Map<string, OperatingPoint[]>();
      for (const p of plans)
        for (const [key, point] of p.plan ?? []) {
          if (point.mode === "fp") continue;
          const list = distinct.get(key) ?? [];
          if (!list.some((x) => pointKey(x) === pointKey(point))) list.push(point);
          distinct.set(key, list);
        }
      const rounds = Math.max(0, ...[...distinct.values()].map((l) => l.length));
      for (let round = 0; round < rounds; round++) {
        const plan = new Map<string, OperatingPoint>();
        for (const w of selected) plan.set(weightKey(w), distinct.get(weightKey(w))?.[round] ?? { mode: "fp", k: 0, d: 0 });
        const r = await compress(`finetune ${family}`, { plan, ...(cache ? { quantCache: cache } : {}) }, c);
        for (const [key, q] of r.quantized) tuned.set(key, q);
      }
      tuneSeconds = (performance.now() - t0) / 1000;
    }
    const reached = plans.filter((p) => p.plan).length;
    for (const p of plans) {
      if (!p.plan) {
        points.push({ method, target: p.target, reached: false, reason: p.reason!, finetuned: false });
        continue;
      }
      const quantCache = tuned ?? cache;
      points.push(
        await evaluateRun(method, p.target, { plan: p.plan, ...(quantCache ? { quantCache } : {}) }, { ...c, finetune: false }, c.finetune, reached ? tuneSeconds / reached : 0),
      );
    }
  }
  timings["total"] = (performance.now() - t00) / 1000;
  const labels = o.eval.labels;
  const metric = labels ? "accuracy" : points.some((p) => p.top1Agreement !== undefined) ? "top1Agreement" : "fidelity";
  const range = (i: DataInfo) => ({ source: i.source, paths: i.paths, range: i.range });
  return {
    model: loaded.path,
    targets: [...o.targets],
    metric,
    original: { ...(base.accuracy ? { accuracy: base.accuracy.original.accuracy } : {}), tensorBytes: basis.originalTensorBytes },
    calibration: { ...range(calib.info), samples: cap.samples },
    evaluation: { ...range(evalData.info), samples: base.samples, ...(labels ? { labels } : {}) },
    notes: [
      `SSVQ and VQ: each layer's point searched for the target (--ratio), ${config.finetune ? `then fine-tuned ${config.finetuning?.iters ?? 500} iterations per layer on calibration samples ${calib.info.range[0]}:${calib.info.range[1]}` : "k-means only (no fine-tuning)"}`,
      "INT8 and INT4: round to nearest with one scale per output channel, every layer; no fine-tuning",
      `evaluated on samples ${evalData.info.range[0]}:${evalData.info.range[1]}${labels ? " with labels" : " against the original model's outputs"}`,
    ],
    points,
    timings,
  };
}

/** Bits per weight a ratio means, or 2 when the ratio cannot be reached (the sensitivity's perturbation only). */
function safeBpw(ratio: number, basis: ReturnType<typeof budgetBasis>): number {
  try {
    return targetBitsPerWeight({ ratio }, basis);
  } catch {
    return 2;
  }
}

function pointOf(method: SweepMethod, target: number | undefined, r: Report, ev: Awaited<ReturnType<typeof evaluateModels>>, finetuned: boolean, seconds: number): SweepPoint {
  const out = ev.outputs[0];
  const layers = r.layers.map((l) => ({ name: l.name, mode: l.mode as string, k: l.k ?? 0, d: l.d ?? 0, bitsPerWeight: l.bits.bitsPerWeight }));
  for (const k of r.kept) if (/full precision/.test(k.reason)) layers.push({ name: k.name, mode: "fp", k: 0, d: 0, bitsPerWeight: NaN });
  return {
    method,
    ...(target !== undefined ? { target } : {}),
    reached: true,
    tensorRatio: r.sizes.tensorRatio,
    diskRatio: r.sizes.diskRatio,
    compressedTensorBytes: r.sizes.compressedTensorBytes,
    bitsPerWeight: r.sizes.bitsPerWeight,
    ...(ev.accuracy?.compressed ? { accuracy: ev.accuracy.compressed.accuracy } : {}),
    ...(out ? { outputError: out.relError, cosine: out.cosine } : {}),
    ...(out?.top1Agreement !== undefined ? { top1Agreement: out.top1Agreement } : {}),
    finetuned,
    layers,
    seconds,
  };
}

/** The y value of a point for the result's metric. */
export function metricValue(p: SweepPoint, metric: SweepResult["metric"]): number | undefined {
  if (metric === "accuracy") return p.accuracy;
  if (metric === "top1Agreement") return p.top1Agreement;
  return p.outputError === undefined ? undefined : 1 - p.outputError;
}
