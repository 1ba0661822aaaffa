/**
 * Compressing a model file: paths, refusal to overwrite the input or an existing output, the atomic
 * writes of the model and its report. Shared by the CLI and the background job.
 */
import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { defaultOpset } from "../core/onnx/proto.js";
import { checkModelStructure } from "../core/onnx/validate.js";
import { checkOrtLoads } from "./ort-load-check.js";
import { MIN_OPSET } from "../core/onnx/decode-graph.js";
import { compressModel, nearestVqConfig, selectWeights, withDenseWeights, type CompressRun } from "../core/compress.js";
import { qqStatistic, sequentialLossOn, sequentialTargetOn } from "../core/calib/sequential.js";
import { serialMap } from "../core/tasks.js";
import { declaredBytes, tensorToFloat32 } from "../core/onnx/tensor-data.js";
import { walkTensors } from "../core/onnx/walk.js";
import { externalRef } from "../core/onnx/external.js";
import type { ModelProto } from "../core/onnx/proto.js";
import { toRows } from "../core/ssvq/layout.js";
import { chooseStatisticForm, shareStatistic } from "../core/ssvq/stat-product.js";
import { captureSequential } from "./capture-sequential.js";
import { ORT_PRODUCT, registerOrtProduct } from "./ort-product.js";
import { planFor, prepareSearch, searchTarget, targetBitsPerWeight, budgetBasis, type PreparedSearch, type SearchTarget } from "./search.js";

/**
 * Relative damping of the sequential target's solve (of mean diag H_qq): on the fixtures 1e-2 gave the
 * best accuracy (tiny ViT SSVQ k16 d8: 85.6% at 1e-6, 86.1% at 1e-4, 86.3% at 1e-2), smaller values let
 * the target grow far from W on layers with about as many samples as columns.
 */
const SEQUENTIAL_DAMPING = 1e-2;
import { CancelledError, InputError } from "../core/errors.js";
import type { CompressConfig, Report } from "../core/report.js";
import { loadModel, type LoadedModel } from "./model-file.js";
import { perLayerFromReport, resolveParams, runSimulate, simulationJson, type SimulateValues } from "./simulate-model.js";
import { asUnwritable, writeTemp } from "./write-atomic.js";
import { DataSpool, dataPathFor, modelLimitFromEnv, recordOutput, stageModel } from "./write-external.js";
import { DEFAULT_MODEL_LIMIT } from "../core/onnx/external-out.js";
import { withModelRef } from "./model-ref.js";
import { defaultOutput, reportPathFor, samePath } from "./paths.js";
import { parsePreprocess, type RawPreprocess } from "../core/calib/preprocess.js";
import { openData } from "./calib-files.js";
import { openCapture, type CaptureRunner } from "./capture.js";
import { statisticWaves } from "./statistic-waves.js";
import { defaultMemoryBudget } from "./memory.js";
import { formatBytes } from "../core/onnx/tensor-data.js";
import { evaluateModels } from "./evaluate.js";
import { modelInputs } from "./ort.js";

export interface CompressFileOptions extends CompressRun {
  input: string;
  /** Default: `<input without .onnx>.ssvq.onnx` beside the input. */
  out?: string;
  force?: boolean;
  /** Also simulate the model on an accelerator (`--preset`, `--config`, `--shape`): the report's `simulation`. */
  simulate?: SimulateValues;
  /** Calibration and evaluation data. */
  data?: DataOptions;
  /** "vq": also compress with conventional VQ at the nearest size not larger, and report both. */
  compare?: "vq";
  /** The `ssvq compress` arguments of this run, for the report. */
  command?: string[];
  /**
   * Bytes the run may hold for calibration statistics and fine-tuning, the process included
   * (`--memory-budget`; default `defaultMemoryBudget()`): statistics are captured and fine-tuned in waves
   * of layers that fit. Never changes the result.
   */
  memoryBudget?: number;
  /** Write the output with its large tensors in `<out>.data` even when it fits in one file (`--external-data`). */
  externalData?: boolean;
}

/**
 * The precision calibration keeps H in. Fine-tuning needs float64: with H rounded to float32 (the products
 * still in float64) `npm run bench -- quality` moved SSVQ's fine-tuned accuracy by up to 0.6 points
 * (tiny ViT k16 d4 84.74% -> 84.14%, LeNet-5 k16 d4 90.73% -> 90.32%; the learned signs follow the
 * smallest change), against the 0.1 point allowed. A run without fine-tuning only measures output errors
 * with H, which float32 gives to about 1e-7: there it halves the statistics' memory.
 */
export const gramPrecision = (config: CompressConfig): "float32" | "float64" => (config.finetune ? "float64" : "float32");

/** One data source as the command line gives it; no path means random inputs shaped from the model. */
export interface DataSpec {
  path?: string;
  range?: string;
  count?: number;
  seed?: number;
}

export interface DataOptions {
  /** Calibration: capture each layer's statistic H (random inputs, with a warning, when no path). */
  calib?: DataSpec;
  /** Evaluation of the original against the compressed model. */
  eval?: DataSpec & { labels?: string };
  preprocess?: RawPreprocess;
  batchSize?: number;
}

export interface CompressFileResult {
  report: Report;
  /** Undefined for a dry run. */
  outPath?: string;
  reportPath?: string;
}

export { defaultOutput, reportPathFor };

/**
 * Checks everything that can be checked before the work starts: the model reads, the outputs may be
 * written, and something matches the selection. Returns the opened model.
 */
export function prepareCompress(o: CompressFileOptions): { loaded: LoadedModel; outPath: string; reportPath: string } {
  const loaded = loadModel(o.input);
  const outPath = resolve(o.out ?? defaultOutput(o.input));
  const reportPath = reportPathFor(outPath);
  if (!/\.onnx$/i.test(outPath)) throw new InputError(`the output ${o.out} must end in .onnx`);
  // The data file an output over 2 GiB (or --external-data) writes beside the model is an output too.
  const outputs = [outPath, reportPath, dataPathFor(outPath)];
  for (const p of outputs) {
    if (samePath(p, loaded.path)) throw new InputError(`the output ${p} is the input model itself; the input is never written`);
    for (const ext of loaded.externalFiles)
      if (samePath(p, join(loaded.dir, ext))) throw new InputError(`the output ${p} is the model's external data file ${ext}`);
  }
  if (!o.dryRun && !o.force)
    for (const p of outputs)
      if (existsSync(p)) throw new InputError(`${p} exists; pass --force to replace it`);
  if (!o.dryRun) {
    const dir = dirname(outPath);
    if (!existsSync(dir)) throw new InputError(`the output folder ${dir} does not exist`);
    if (!statSync(dir).isDirectory()) throw new InputError(`the output folder ${dir} is not a folder`);
    for (const p of outputs) if (existsSync(p) && statSync(p).isDirectory()) throw new InputError(`${p} is a folder`);
  }
  // A model onnxruntime would refuse is refused here, so an output is only written when it can run.
  checkModelStructure(loaded.model);
  const opset = defaultOpset(loaded.model) ?? 0;
  if (!o.dryRun && o.config.format === "ssvq" && opset < MIN_OPSET)
    throw new InputError(
      `the model's opset ${opset} is too old for the decode subgraph (it needs opset ${MIN_OPSET} or later); use --format dense`,
    );
  selectWeights(loaded.model, o.config);
  if (o.simulate) resolveParams(o.simulate, false);
  if (o.config.sequential && !o.config.finetune) throw new InputError("--sequential is a way of fine-tuning: it needs --calib (or --finetune)");
  if (searchTarget(o.config) && o.dryRun)
    throw new InputError(`--${o.config.ratio !== undefined ? "ratio" : "bits"} searches each layer's operating point with k-means on every candidate; --dry-run estimates a fixed --k and --d only`);
  if (searchTarget(o.config) && o.config.sequential)
    throw new InputError(`--${o.config.ratio !== undefined ? "ratio" : "bits"} with --sequential is not supported: the search measures layers on the original network; give --k and --d with --sequential`);
  if (o.compare === "vq" && o.config.mode !== "ssvq") throw new InputError(`--compare vq compares an SSVQ compression with VQ; it does not apply to --mode ${o.config.mode}`);
  return { loaded, outPath, reportPath };
}

/**
 * Each layer's statistic form (`chooseStatisticForm`): H, or X itself when that is cheaper for the products
 * the run will compute with it (fine-tuning's iterations and the output errors after k-means and after
 * fine-tuning).
 */
export function formChooser(weights: readonly { name: string; layout: { rows: number } }[], config: CompressConfig): (q: { name: string; groups: number; cols: number; samples: number }) => "gram" | "factor" {
  const rows = new Map(weights.map((w) => [w.name, w.layout.rows]));
  const iters = config.finetune && (config.mode === "ssvq" || config.mode === "vq") ? (config.finetuning?.iters ?? 500) + 3 : 0;
  return (q) => chooseStatisticForm(rows.get(q.name) ?? q.cols, q.cols, q.groups, q.samples, iters + 4);
}

export async function compressFile(o: CompressFileOptions): Promise<CompressFileResult> {
  const { loaded, outPath, reportPath } = prepareCompress(o);
  // onnxruntime must accept the model, or the output could not run either.
  o.onProgress?.({ kind: "stage", stage: "check" });
  const checkStart = performance.now();
  const loadCheck = await checkOrtLoads(loaded.model, loaded.readExternal, "the model");
  const checkSeconds = (performance.now() - checkStart) / 1000;
  const checkCancel = () => {
    if (o.signal?.aborted) throw new CancelledError();
  };
  // Fine-tuning needs calibration statistics: without --calib, random inputs shaped from the model (with a warning).
  const target = searchTarget(o.config);
  // The search (--ratio, --bits) measures errors and sensitivities on calibration data likewise.
  const calibSpec = o.data?.calib ?? (o.config.finetune || target ? {} : undefined);
  const inputs = calibSpec || o.data?.eval ? modelInputs(loaded.model) : [];
  const preprocess = parsePreprocess(o.data?.preprocess ?? {});
  const open = (spec: DataSpec & { labels?: string }, role: "calib" | "eval") =>
    openData(inputs, {
      ...(spec.path !== undefined ? { path: spec.path } : {}),
      ...(spec.range !== undefined ? { range: spec.range } : {}),
      ...(spec.count !== undefined ? { count: spec.count } : {}),
      ...(spec.seed !== undefined ? { seed: spec.seed } : {}),
      ...(spec.labels !== undefined ? { labels: spec.labels } : {}),
      role,
      preprocess,
      ...(o.data?.batchSize !== undefined ? { batchSize: o.data.batchSize } : {}),
    });
  const fraction = (stage: string) => (p: { fraction: number | undefined }) => {
    if (p.fraction !== undefined) o.onProgress?.({ kind: "fraction", stage, fraction: p.fraction });
  };

  // onnxruntime's MatMul is the fastest product engine (`npm run bench -- finetune`); the pool's threads
  // register it themselves, this one for a serial map.
  registerOrtProduct();
  const productEngine = o.productEngine ?? ORT_PRODUCT;
  const map = o.map ?? serialMap;
  let calibration: Report["calibration"];
  let waves: CompressRun["waves"];
  let runner: CaptureRunner | undefined;
  let prepareSeconds = 0;
  let captureMuted = false;
  const warnings: string[] = [];
  let sequentialStats: CompressRun["sequentialStats"];
  let calibrationSamples = (): number | undefined => undefined;
  if (calibSpec && !o.dryRun && o.config.sequential) {
    // Statistics come layer by layer during fine-tuning, on the network compressed so far.
    const data = await open(calibSpec, "calib");
    const uncalibrated: { name: string; reason: string }[] = [];
    let samples = 0;
    const choose = formChooser(selectWeights(loaded.model, o.config).selected, o.config);
    sequentialStats = async (w, compressedSoFar) => {
      const prefix = withDenseWeights(loaded.bytes, loaded.path, compressedSoFar);
      const cap = await captureSequential(loaded.model, prefix, [w], data, {
        signal: o.signal,
        readExternal: loaded.readExternal,
        modelDir: loaded.dir,
        readExternalPrefix: loaded.readExternal,
        label: loaded.path,
        choose,
        // Layer by layer: the pool idles while one is captured.
        pool: map,
      });
      samples = cap.samples;
      uncalibrated.push(...cap.uncalibrated);
      const l = cap.layers.get(w.name);
      if (!l) return undefined;
      const rows = toRows(tensorToFloat32(w.tensor, loaded.readExternal), w.layout);
      // The stacked statistic of [x_fp; x_q] (H or the columns): the target, the losses and H_qq (or X_q)
      // for fine-tuning, every product on the map.
      const stacked = shareStatistic(l.stacked);
      const { target } = await sequentialTargetOn(map, rows, w.layout.rows, stacked, { damping: SEQUENTIAL_DAMPING, engine: productEngine });
      const outputError = async (wHat: Float32Array) => (await sequentialLossOn(map, rows, wHat, w.layout.rows, stacked, productEngine)).relativeError;
      return { stat: shareStatistic(qqStatistic(stacked)), target, outputError };
    };
    calibration = { data: data.info, samples: 0, uncalibrated };
    calibrationSamples = () => samples;
  } else if (calibSpec && !o.dryRun) {
    // Preparing capture (the passes, the estimates) counts as capture in the timings; its stage comes with
    // the waves, so meanwhile the status says what comes next in the stage order (not "check", done).
    o.onProgress?.({ kind: "stage", stage: target ? "search" : "read" });
    const t0 = performance.now();
    const data = await open(calibSpec, "calib");
    const { selected } = selectWeights(loaded.model, o.config);
    runner = await openCapture(loaded.model, selected, data, {
      signal: o.signal,
      readExternal: loaded.readExternal,
      modelDir: loaded.dir,
      label: loaded.path,
      choose: formChooser(selected, o.config),
      gramPrecision: gramPrecision(o.config),
      // The pool idles while a wave is captured: the Gram products run there (the same bytes).
      pool: map,
    });
    prepareSeconds = (performance.now() - t0) / 1000;
    try {
      const setup = statisticWaves(runner, selected, {
        budgetBytes: o.memoryBudget ?? defaultMemoryBudget(),
        threads: map.threads,
        modelBytes: 2 * loaded.bytes.length + externalDataBytes(loaded.model),
        // The search and the compression (and --compare vq's) use the same statistics: kept when one wave holds them.
        reuse: o.compare === "vq" || target !== undefined,
        // The search's own captures are part of its stage, which reports its own fractions.
        onProgress: (fraction) => {
          if (!captureMuted) o.onProgress?.({ kind: "fraction", stage: "capture", fraction });
        },
      });
      waves = setup.waves;
      calibration = {
        data: data.info,
        samples: 0,
        uncalibrated: setup.uncalibrated,
        memory: {
          budgetBytes: setup.budgetBytes,
          availableBytes: Math.max(0, setup.availableBytes),
          statisticsBytes: setup.statisticsBytes,
          precision: gramPrecision(o.config),
          waves: setup.plan.waves.map((w) => w.length),
          threads: setup.plan.threads,
        },
      };
      calibrationSamples = setup.samples;
      for (const l of setup.plan.oversized)
        warnings.push(
          `memory budget: layer ${l.name} needs about ${formatBytes(l.bytes)} on its own, more than the ${formatBytes(Math.max(0, setup.availableBytes))} of --memory-budget ${formatBytes(setup.budgetBytes)} left for statistics; it was captured and fine-tuned alone, on one thread`,
        );
      checkCancel();
    } catch (e) {
      await runner.close();
      throw e;
    }
  }
  try {
    // --ratio / --bits: each layer's candidates are measured on the statistics (wave by wave under the
    // memory budget), then one allocation gives the plan the compression follows.
    let searched: { prepared: PreparedSearch; plan: ReturnType<typeof planFor>; seconds: number } | undefined;
    if (target && calibSpec && !o.dryRun) {
      o.onProgress?.({ kind: "stage", stage: "search" });
      captureMuted = true;
      const t0 = performance.now();
      const { selected } = selectWeights(loaded.model, o.config);
      const prepared = await prepareSearch({
        loaded,
        selected,
        ...(waves ? { waves } : {}),
        config: o.config,
        family: o.config.mode as "ssvq" | "vq",
        loosest: target,
        referenceBitsPerWeight: targetBitsPerWeight(target, budgetBasis(loaded, selected)),
        data: await open(calibSpec, "calib"),
        map,
        engine: productEngine,
        ...(o.signal ? { signal: o.signal } : {}),
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      });
      searched = { prepared, plan: planFor(prepared, target), seconds: (performance.now() - t0) / 1000 };
      captureMuted = false;
      checkCancel();
    }
    return await finishCompress(o, loaded, outPath, reportPath, {
      loadCheck,
      checkSeconds,
      calibration,
      calibrationSamples,
      prepareSeconds,
      open,
      fraction,
      run: { ...o, waves, sequentialStats, productEngine, ...(searched ? { plan: searched.plan.plan } : {}) },
      warnings,
      muteCapture: () => void (captureMuted = true),
      ...(searched && target ? { searched: { ...searched, target } } : {}),
    });
  } finally {
    await runner?.close();
  }
}

/** After the statistics are set up (and the search, if any, is done): compress, evaluate, compare, simulate, write. */
async function finishCompress(
  o: CompressFileOptions,
  loaded: LoadedModel,
  outPath: string,
  reportPath: string,
  c: {
    loadCheck: { warning?: string };
    checkSeconds: number;
    calibration: Report["calibration"];
    calibrationSamples: () => number | undefined;
    prepareSeconds: number;
    open: (spec: DataSpec & { labels?: string }, role: "calib" | "eval") => ReturnType<typeof openData>;
    fraction: (stage: string) => (p: { fraction: number | undefined }) => void;
    run: CompressRun;
    warnings: string[];
    /** Statistics captured again by --compare vq are part of its stage: no "capture" fractions from then on. */
    muteCapture: () => void;
    searched?: { prepared: PreparedSearch; plan: ReturnType<typeof planFor>; seconds: number; target: SearchTarget };
  },
): Promise<CompressFileResult> {
  // A dense output over the protobuf limit goes to its data file as each layer is done (not held whole).
  const limit = modelLimitFromEnv() ?? DEFAULT_MODEL_LIMIT;
  const spool =
    o.config.format === "dense" && !o.config.sequential && !o.dryRun && (o.externalData === true || loaded.bytes.length + externalDataBytes(loaded.model) > limit)
      ? new DataSpool(dataPathFor(outPath))
      : undefined;
  try {
    return await compressAndWrite(o, loaded, outPath, reportPath, c, spool);
  } catch (e) {
    spool?.discard();
    throw e;
  }
}

async function compressAndWrite(
  o: CompressFileOptions,
  loaded: LoadedModel,
  outPath: string,
  reportPath: string,
  c: Parameters<typeof finishCompress>[4],
  spool: DataSpool | undefined,
): Promise<CompressFileResult> {
  const { loadCheck, checkSeconds, calibration, calibrationSamples, open, fraction, run, searched } = c;
  const checkCancel = () => {
    if (o.signal?.aborted) throw new CancelledError();
  };
  const result = await compressModel({ bytes: loaded.bytes, path: loaded.path, readExternal: loaded.readExternal }, { ...run, ...(spool ? { denseSink: spool } : {}) });
  // The statistics kept for the search (one wave) serve --compare vq too; otherwise they go now.
  if (o.compare !== "vq" || o.dryRun) run.waves?.release?.();
  // --compare vq's own compression reports nothing of its stages: the run is in its "compare" stage.
  const { onProgress: _progress, ...quiet } = run;
  result.report.warnings.push(...c.warnings);
  if (searched) {
    result.report.search = searched.plan.search;
    result.report.timings = { search: searched.seconds, ...result.report.timings };
  }
  if (loadCheck.warning) result.report.warnings.push(loadCheck.warning);
  result.report.timings = { check: checkSeconds, ...result.report.timings };
  if (calibration) {
    calibration.samples = calibrationSamples() ?? calibration.samples;
    result.report.calibration = calibration;
    const { capture = 0, ...rest } = result.report.timings;
    result.report.timings = { capture: capture + c.prepareSeconds, ...rest };
    result.report.warnings.push(...calibration.data.warnings.map((w) => `calibration: ${w}`));
  }
  checkCancel();
  if (o.data?.eval && !o.dryRun) {
    o.onProgress?.({ kind: "stage", stage: "evaluate" });
    const t0 = performance.now();
    const data = await open(o.data.eval, "eval");
    // The original by path, so that onnxruntime finds its external data.
    const ev = await withModelRef(outPath, result.model, result.proto, spool, (compressed) =>
      evaluateModels(loaded.path, compressed, data, {
        names: { original: basename(loaded.path), compressed: basename(outPath) },
        signal: o.signal,
        onProgress: fraction("evaluate"),
      }),
    );
    result.report.evaluation = ev;
    result.report.warnings.push(...ev.warnings.map((w) => `evaluation: ${w}`));
    result.report.timings["evaluate"] = (performance.now() - t0) / 1000;
  }
  /** Compresses the model once more as conventional VQ (not written), evaluated as the output is. */
  const compareWith = async (config: CompressConfig, name: string, plan?: CompressRun["plan"]) => {
    const vq = await compressModel(
      { bytes: loaded.bytes, path: loaded.path, readExternal: loaded.readExternal },
      { ...quiet, config, ...(plan ? { plan } : {}), dryRun: false },
    );
    checkCancel();
    let evaluation: Report["evaluation"];
    if (o.data?.eval)
      evaluation = await withModelRef(outPath, vq.model, vq.proto, undefined, async (compressed) =>
        evaluateModels(loaded.path, compressed, await open(o.data!.eval!, "eval"), {
          names: { original: basename(loaded.path), compressed: name },
          signal: o.signal,
          onProgress: fraction("compare"),
        }),
      );
    return { config, layers: vq.report.layers, sizes: vq.report.sizes, evaluation, timings: vq.report.timings };
  };
  if (o.compare === "vq" && !o.dryRun) {
    o.onProgress?.({ kind: "stage", stage: "compare" });
    c.muteCapture();
    const t0 = performance.now();
    const s = result.report.sizes;
    const pick = searched ? undefined : nearestVqConfig(loaded.model, o.config, s.compressedTensorBytes, s.originalTensorBytes);
    if (searched) {
      // The same search for conventional VQ at the same budget, with the same layers' sensitivities.
      const { selected } = selectWeights(loaded.model, o.config);
      const config: CompressConfig = { ...o.config, mode: "vq", ...(o.config.finetuning ? { finetuning: { ...o.config.finetuning, fixedSigns: false } } : {}) };
      let vqPlan: ReturnType<typeof planFor> | undefined;
      try {
        const prepared = await prepareSearch({
          loaded,
          selected,
          ...(run.waves ? { waves: run.waves } : {}),
          config,
          family: "vq",
          loosest: searched.target,
          referenceBitsPerWeight: 0,
          sensitivity: searched.prepared.sensitivity,
          ...(run.map ? { map: run.map } : {}),
          ...(run.productEngine !== undefined ? { engine: run.productEngine } : {}),
          ...(o.signal ? { signal: o.signal } : {}),
        });
        vqPlan = planFor(prepared, searched.target);
      } catch (e) {
        if (!(e instanceof InputError)) throw e;
        result.report.warnings.push(`--compare vq: ${e.message}`);
      }
      if (vqPlan) result.report.comparison = { vq: { ...(await compareWith(config, "VQ (searched)", vqPlan.plan)), search: vqPlan.search } };
    } else if (!pick) result.report.warnings.push("--compare vq: no VQ operating point is as small as this SSVQ compression");
    else {
      const { bits: _bits, ...rest } = o.config;
      const config: CompressConfig = {
        ...rest,
        mode: "vq",
        k: pick.k,
        d: pick.d,
        ...(o.config.finetuning ? { finetuning: { ...o.config.finetuning, fixedSigns: false } } : {}),
      };
      result.report.comparison = { vq: await compareWith(config, `VQ k=${pick.k} d=${pick.d}`) };
    }
    run.waves?.release?.();
    result.report.timings["compare"] = (performance.now() - t0) / 1000;
    checkCancel();
  }
  if (o.simulate) {
    o.onProgress?.({ kind: "stage", stage: "simulate" });
    const t0 = performance.now();
    const mode = o.config.mode;
    const formats = [...new Set(["fp16", "int8", "int4", mode])].join(",");
    const values = { ...o.simulate, formats, ...((mode === "ssvq" || mode === "vq") && o.config.k >= 2 ? { k: String(o.config.k), d: String(o.config.d) } : {}) };
    const sim = await runSimulate(values, loaded.path, { perLayer: perLayerFromReport(result.report) });
    result.report.simulation = simulationJson(sim.result, sim.gemms) as Report["simulation"];
    result.report.warnings.push(...sim.warnings.map((w) => `simulate: ${w}`));
    result.report.timings["simulate"] = (performance.now() - t0) / 1000;
  }
  if (o.command) result.report.command = o.command;
  if (o.dryRun) return { report: result.report };
  // Every file (the model, its data file when it has one, the report) is written to a temporary name
  // first; only then, after a last cancel check, renamed.
  const temps: string[] = [];
  try {
    const staged = stageModel(outPath, result.proto, { ...(result.encoded ? { encoded: result.encoded } : {}), externalData: o.externalData === true, ...(spool ? { spool } : {}) });
    temps.push(...staged.renames.map(([tmp]) => tmp));
    recordOutput(result.report, outPath, o.config.format, staged);
    const report = writeTemp(reportPath, JSON.stringify(result.report, null, 2) + "\n");
    temps.push(report);
    checkCancel();
    for (const [tmp, final] of staged.renames) renameSync(tmp, final);
    renameSync(report, reportPath);
    // A data file of an earlier output (replaced with --force) would mislead beside a single-file one.
    if (!staged.data) rmSync(dataPathFor(outPath), { force: true });
  } catch (e) {
    for (const t of temps) rmSync(t, { force: true });
    throw asUnwritable(e, outPath);
  }
  return { report: result.report, outPath, reportPath };
}

/** The bytes a model keeps in external data files (what onnxruntime reads into a session). */
function externalDataBytes(model: ModelProto): number {
  let bytes = 0;
  walkTensors(model, (t) => {
    if (externalRef(t)) bytes += declaredBytes(t) ?? 0;
  });
  return bytes;
}
