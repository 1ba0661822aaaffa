import { InputError } from "../core/errors.js";
import type { CompressConfig, Report } from "../core/report.js";
import { BITS_TABLE } from "../core/ssvq/bits.js";
import { MODES, type Mode } from "../core/ssvq/quantize.js";
import { formatBytes } from "../core/onnx/tensor-data.js";
import { resolve } from "node:path";
import type { JobSpec } from "../job/protocol.js";
import type { DataOptions } from "../io/compress-file.js";
import { parsePreprocess } from "../core/calib/preprocess.js";
import { resolveFinetuneOptions, type FinetuneOptions } from "../core/ssvq/finetune.js";
import { prepareCompress } from "../io/compress-file.js";
import { runJob } from "./run-job.js";
import type { Command, OptionValues } from "./command.js";
import { table } from "./format.js";
import { choiceOption, intOption, numberOption, threadsOption } from "./options.js";

export const DEFAULT_BITS = 2;
export const DEFAULT_KMEANS_ITERS = 25;

/** The compression settings from the command line (shared with later commands that compress). */
export function compressConfig(values: OptionValues): CompressConfig {
  const mode = choiceOption<Mode>(values, "mode", MODES, "ssvq");
  const bits = numberOption(values, "bits");
  const kGiven = values["k"] !== undefined;
  const dGiven = values["d"] !== undefined;
  let k = 0;
  let d = 0;
  if (mode === "ssvq" || mode === "vq") {
    if (bits !== undefined && (kGiven || dGiven)) throw new InputError("give either --bits or --k and --d, not both");
    if (kGiven !== dGiven) throw new InputError("--k and --d go together");
    if (kGiven) {
      k = intOption(values, "k", 16, 2, 65536);
      d = intOption(values, "d", 4, 1, 64);
    } else {
      const b = bits ?? DEFAULT_BITS;
      const pick = BITS_TABLE[mode][String(b)];
      if (!pick)
        throw new InputError(
          `--bits ${b} is not in the ${mode.toUpperCase()} table (${Object.keys(BITS_TABLE[mode]).join(", ")}); give --k and --d instead`,
        );
      ({ k, d } = pick);
    }
  } else if (kGiven || dGiven) throw new InputError(`--k and --d apply to --mode ssvq and vq, not ${mode}`);
  const layers = values["layers"];
  if (typeof layers === "string")
    try {
      new RegExp(layers);
    } catch (e) {
      throw new InputError(`--layers ${JSON.stringify(layers)} is not a valid regular expression: ${(e as Error).message}`);
    }
  const format = choiceOption(values, "format", ["ssvq", "dense"] as const, "ssvq");
  const finetune = finetuneChoice(values, mode);
  return {
    mode,
    k,
    d,
    ...(bits !== undefined && (mode === "ssvq" || mode === "vq") ? { bits } : {}),
    seed: intOption(values, "seed", 0, 0, 2 ** 32 - 1),
    kmeansIters: intOption(values, "kmeans-iters", DEFAULT_KMEANS_ITERS, 0, 10000),
    minWeights: intOption(values, "min-weights", 1024, 0),
    ...(typeof layers === "string" ? { layers } : {}),
    format,
    finetune,
    ...(finetune ? { finetuning: finetuneSettings(values) } : {}),
    ...(finetune && values["sequential"] ? { sequential: true } : {}),
  };
}

/** On by default for SSVQ and VQ when calibration data is given; --finetune forces it, --no-finetune stops it. */
function finetuneChoice(values: OptionValues, mode: Mode): boolean {
  if (values["finetune"] && values["no-finetune"]) throw new InputError("give --finetune or --no-finetune, not both");
  const vq = mode === "ssvq" || mode === "vq";
  if (values["finetune"] && !vq) throw new InputError(`--finetune applies to --mode ssvq and vq, not ${mode}`);
  for (const flag of FINETUNE_FLAGS)
    if (values[flag] !== undefined && (values["no-finetune"] || !vq))
      throw new InputError(`--${flag} applies to fine-tuning, which ${values["no-finetune"] ? "--no-finetune turns off" : `--mode ${mode} does not use`}`);
  if (values["fixed-signs"] && mode !== "ssvq") throw new InputError("--fixed-signs applies to --mode ssvq");
  const on = vq && !values["no-finetune"] && (values["finetune"] === true || values["calib"] !== undefined);
  const given = FINETUNE_FLAGS.find((flag) => values[flag] !== undefined);
  if (!on && given) throw new InputError(`--${given} applies to fine-tuning, which needs --calib (or --finetune, on random inputs)`);
  return on;
}

const FINETUNE_FLAGS = ["sequential", "iters", "lr-codebook", "lr-sign", "freeze-every", "freeze-threshold", "freeze-momentum", "no-freeze", "fixed-signs", "reassign"] as const;

function finetuneSettings(values: OptionValues): FinetuneOptions {
  const positive = (name: string): number | undefined => {
    const v = numberOption(values, name);
    if (v !== undefined && !(v > 0)) throw new InputError(`--${name} must be a number > 0, not ${v}`);
    return v;
  };
  const iters = values["iters"] === undefined ? undefined : intOption(values, "iters", 0, 1, 1_000_000);
  let thresholds: [number, number] | undefined;
  if (typeof values["freeze-threshold"] === "string") {
    const parts = values["freeze-threshold"].split(",").map((x) => Number(x.trim()));
    if (parts.length !== 2 || parts.some((x) => !Number.isFinite(x) || x < 0 || x > 1))
      throw new InputError(`--freeze-threshold takes FROM,TO between 0 and 1, e.g. 0.3,0.1, not ${JSON.stringify(values["freeze-threshold"])}`);
    thresholds = [parts[0]!, parts[1]!];
  }
  const momentum = numberOption(values, "freeze-momentum");
  if (momentum !== undefined && !(momentum >= 0 && momentum < 1)) throw new InputError(`--freeze-momentum must be in [0, 1), not ${momentum}`);
  if (values["no-freeze"] && (thresholds || momentum !== undefined || values["freeze-every"] !== undefined))
    throw new InputError("--no-freeze turns freezing off: drop the other --freeze-* options");
  return resolveFinetuneOptions({
    ...(iters !== undefined ? { iters } : {}),
    ...(positive("lr-codebook") !== undefined ? { lrCodebook: positive("lr-codebook") } : {}),
    ...(positive("lr-sign") !== undefined ? { lrSign: positive("lr-sign") } : {}),
    freeze: values["no-freeze"]
      ? null
      : {
          ...(values["freeze-every"] !== undefined ? { every: intOption(values, "freeze-every", 1, 1) } : {}),
          ...(thresholds ? { thresholdFrom: thresholds[0], thresholdTo: thresholds[1] } : {}),
          ...(momentum !== undefined ? { momentum } : {}),
        },
    fixedSigns: values["fixed-signs"] === true,
    reassign: values["reassign"] === true,
  });
}

/** --calib/--eval and preprocessing, as the job takes them; undefined when none is given. */
export function dataOptions(values: OptionValues): DataOptions | undefined {
  const str = (k: string) => (typeof values[k] === "string" ? (values[k] as string) : undefined);
  const count = (k: string) => (values[k] === undefined ? undefined : intOption(values, k, 0, 1));
  const calibPath = str("calib");
  const evalPath = str("eval");
  for (const [flag, needs] of [
    ["calib-range", "calib"],
    ["calib-count", "calib"],
    ["eval-range", "eval"],
    ["eval-count", "eval"],
    ["labels", "eval"],
  ] as const)
    if (values[flag] !== undefined && values[needs] === undefined) throw new InputError(`--${flag} needs --${needs}`);
  if (calibPath === undefined && evalPath === undefined) return undefined;
  const abs = (p: string | undefined) => (p === undefined ? undefined : resolve(p));
  const preprocess = { scale: str("scale"), mean: str("mean"), std: str("std"), size: str("size"), layout: str("layout") };
  parsePreprocess(preprocess);
  const batch = values["batch"] === undefined ? undefined : intOption(values, "batch", 32, 1);
  return {
    ...(calibPath !== undefined ? { calib: { path: abs(calibPath), range: str("calib-range"), count: count("calib-count") } } : {}),
    ...(evalPath !== undefined
      ? { eval: { path: abs(evalPath), range: str("eval-range"), count: count("eval-count"), labels: abs(str("labels")) } }
      : {}),
    preprocess,
    ...(batch !== undefined ? { batchSize: batch } : {}),
  };
}

export const dataOptionSpecs = {
  calib: { type: "string" },
  "calib-range": { type: "string" },
  "calib-count": { type: "string" },
  eval: { type: "string" },
  "eval-range": { type: "string" },
  "eval-count": { type: "string" },
  labels: { type: "string" },
  scale: { type: "string" },
  mean: { type: "string" },
  std: { type: "string" },
  size: { type: "string" },
  layout: { type: "string" },
  batch: { type: "string" },
} as const;

export const compressOptions = {
  mode: { type: "string" },
  bits: { type: "string" },
  k: { type: "string" },
  d: { type: "string" },
  layers: { type: "string" },
  "min-weights": { type: "string" },
  "no-finetune": { type: "boolean" },
  finetune: { type: "boolean" },
  iters: { type: "string" },
  "lr-codebook": { type: "string" },
  "lr-sign": { type: "string" },
  "freeze-every": { type: "string" },
  "freeze-threshold": { type: "string" },
  "freeze-momentum": { type: "string" },
  "no-freeze": { type: "boolean" },
  "fixed-signs": { type: "boolean" },
  reassign: { type: "boolean" },
  sequential: { type: "boolean" },
  seed: { type: "string" },
  "kmeans-iters": { type: "string" },
  format: { type: "string" },
  threads: { type: "string" },
} as const;

export const compressCommand: Command = {
  name: "compress",
  summary: "compress a model with SSVQ, VQ, INT4 or INT8 and write <name>.ssvq.onnx and its report",
  usage: "ssvq compress MODEL [options] [--out PATH] [--json]",
  help: [
    "Options:",
    "  --mode M           ssvq (default), vq, int4 or int8 (round-to-nearest per output channel)",
    "  --bits B           pick (k, d) from the table in the README (default 2: SSVQ k16 d4, VQ k256 d4)",
    "  --k K --d D        codebook size and sub-vector length instead of --bits",
    "  --layers REGEX     compress only weights whose name or consumer node matches",
    "  --min-weights N    leave layers with fewer weights as they are (default 1024)",
    "  --seed N           seed of k-means++ (default 0); same model, options and seed: same bytes",
    "  --kmeans-iters N   Lloyd iterations at most (default 25)",
    "  --format F         ssvq (decode subgraphs, default) or dense (decoded weights, for runtimes",
    "                     that cannot fold constants)",
    "  --out PATH         output model (default: <model>.ssvq.onnx beside the input); the report goes",
    "                     to PATH without .onnx plus .json",
    "  --force            replace existing outputs",
    "  --dry-run          print the size estimate only",
    "  --threads N        worker threads for k-means and fine-tuning (default: the machine's cores, at most 8)",
    "  --json             print the report as JSON",
    "",
    "Data (a .npy batch, a folder of .npy/.pb/.png/.jpg samples, or a model-zoo test_data_set_* folder):",
    "  --calib PATH       calibration samples: layers are fine-tuned and their output errors measured on them",
    "  --calib-range A:B  samples A to B-1 (default all); --calib-count N takes a seeded subset of N",
    "  --eval PATH        evaluation samples: the original and the compressed model are compared on them",
    "  --eval-range A:B   likewise; --eval-count N; --labels FILE (integer .npy or text) adds accuracy",
    "  --scale S          multiply values (1/255 for 0-255 pixels); --mean M, --std S per channel after it",
    "  --size HxW         resize images; --layout nchw|nhwc the model input's layout; --batch N per run",
    "",
    "Fine-tuning (SSVQ and VQ; on by default with --calib): each layer's codebook, and SSVQ's signs, are",
    "trained against the layer's own output on the calibration data, with progressive sign freezing:",
    "  --no-finetune      k-means only;  --finetune  fine-tune even without --calib (random inputs)",
    "  --iters N          Adam iterations per layer (default 500)",
    "  --lr-codebook X    codebook learning rate, relative to the layer's weight RMS (default 0.01)",
    "  --lr-sign X        latent-sign learning rate, likewise (default 0.01)",
    "  --freeze-every F   check and freeze every F iterations (default iters / 20)",
    "  --freeze-threshold FROM,TO   flip-EMA threshold, cosine-decaying (default 0.3,0.1)",
    "  --freeze-momentum M          momentum of the flip EMA (default 0.9);  --no-freeze  no freezing",
    "  --fixed-signs      keep SSVQ's signs at sign(W) and train the codebook only (the paper's ablation)",
    "  --reassign         re-assign each sub-vector once after training",
    "  --sequential       fine-tune layer by layer in graph order on the inputs of the network compressed",
    "                     so far, towards the original network's output (slower: one capture per layer)",
    "  --compare vq       also compress with conventional VQ at the nearest operating point whose",
    "                     whole-model size is not larger, on the same data, and report both side by side",
    "",
    "Accelerator simulation:",
    "  --preset NAME      also simulate the model on an accelerator (see ssvq simulate --help) with the",
    "                     compression's own bits per layer, against FP16, INT8 and INT4",
    "  --shape NAME=DIMS  input shape for the simulation (repeatable); --accel-config FILE.json overrides",
    "                     accelerator parameters",
  ].join("\n"),
  options: {
    ...compressOptions,
    ...dataOptionSpecs,
    out: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
    "dry-run": { type: "boolean" },
    preset: { type: "string" },
    compare: { type: "string" },
    "accel-config": { type: "string" },
    shape: { type: "string", multiple: true },
  },
  positionals: [1, 1],
  async run(values, [input], ctx) {
    const dryRun = values["dry-run"] === true;
    const spec: JobSpec = {
      kind: "compress",
      input: resolve(input!),
      out: typeof values["out"] === "string" ? resolve(values["out"]) : undefined,
      force: values["force"] === true,
      dryRun,
      config: compressConfig(values),
      threads: threadsOption(values),
      ...(dataOptions(values) ? { data: dataOptions(values) } : {}),
      ...(values["compare"] !== undefined ? { compare: choiceOption(values, "compare", ["vq"] as const, "vq") } : {}),
      ...(values["preset"] !== undefined || values["shape"] !== undefined || values["accel-config"] !== undefined
        ? {
            simulate: {
              ...(typeof values["preset"] === "string" ? { preset: values["preset"] } : {}),
              ...(typeof values["accel-config"] === "string" ? { config: resolve(values["accel-config"]) } : {}),
              ...(Array.isArray(values["shape"]) ? { shape: values["shape"] as string[] } : {}),
            },
          }
        : {}),
    };
    // Bad input fails here, in one line, before the background job starts.
    prepareCompress(spec);
    const result = await runJob(spec, ctx);
    if (values["json"]) ctx.out(JSON.stringify(result.report, null, 2));
    else ctx.out(renderReport(result.report, dryRun));
    if (result.outPath) ctx.err(`wrote ${result.outPath} and ${result.reportPath}`);
    return 0;
  },
};

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

export function renderReport(r: Report, dryRun: boolean): string {
  const c = r.config;
  const method = c.mode === "ssvq" || c.mode === "vq" ? `${c.mode.toUpperCase()} k=${c.k} d=${c.d}` : c.mode.toUpperCase();
  const tuned = r.layers.some((l) => l.finetune);
  const rows = r.layers.map((l) => [
    l.name,
    l.opType,
    `${l.rows} x ${l.cols}`,
    l.bits.weights.toLocaleString("en-US"),
    l.bits.bitsPerWeight.toFixed(3),
    dryRun ? "-" : pct(l.weightError),
    ...(r.calibration ? [l.outputError === undefined ? "uncalibrated" : l.finetune ? `${pct(l.finetune.errorBefore)} -> ${pct(l.outputError)}` : pct(l.outputError)] : []),
    ...(tuned ? [l.finetune && l.mode === "ssvq" ? `${pct(l.finetune.signsChangedFraction)} / ${pct(l.finetune.frozenFraction)}` : "-"] : []),
  ]);
  const s = r.sizes;
  const lines = [
    `${dryRun ? "Estimate for" : "Compressed"} ${r.source.path} with ${method}, seed ${c.seed}${c.format === "dense" ? ", dense output" : ""}` +
      (c.finetune && c.finetuning
        ? `, fine-tuned ${c.sequential ? "sequentially, " : ""}${c.finetuning.iters} iterations${c.finetuning.fixedSigns ? " (fixed signs)" : c.finetuning.freeze ? " with sign freezing" : ""}`
        : ""),
    "",
    table(
      [
        "layer",
        "op",
        "rows x cols",
        "weights",
        "bits/weight",
        "weight error",
        ...(r.calibration ? [tuned ? "output error (k-means -> tuned)" : "output error"] : []),
        ...(tuned ? ["signs flipped / frozen"] : []),
      ],
      rows,
      [false, false, true, true, true, true, true, true],
    ),
    "",
    `compressed ${s.compressedLayers} layers, ${s.compressedWeights.toLocaleString("en-US")} weights at ${s.bitsPerWeight.toFixed(3)} bits/weight`,
    `tensors     ${formatBytes(s.originalTensorBytes)} -> ${formatBytes(Math.round(s.compressedTensorBytes))}  (${s.tensorRatio.toFixed(2)}x, tensor-only)`,
    dryRun
      ? `file        ${formatBytes(s.sourceFileBytes)} -> about ${formatBytes(Math.round(s.theoreticalFileBytes))}  (${s.diskRatio.toFixed(2)}x)`
      : `file        ${formatBytes(s.sourceFileBytes)} -> ${formatBytes(s.outputFileBytes)} on disk  (${s.diskRatio.toFixed(2)}x; theoretical ${formatBytes(Math.round(s.theoreticalFileBytes))})`,
  ];
  if (r.calibration) {
    const cal = r.calibration;
    lines.push(`calibration ${cal.data.paths.join(", ") || "random inputs"}, ${cal.samples} samples${cal.uncalibrated.length ? `; ${cal.uncalibrated.length} layers uncalibrated (inside If/Loop/Scan bodies)` : ""}`);
  }
  if (r.evaluation) {
    const ev = r.evaluation;
    const o = ev.outputs[0];
    const acc = ev.accuracy;
    lines.push(
      `evaluation  ${ev.samples} samples` +
        (acc ? `: accuracy ${pct(acc.original.accuracy)} -> ${pct(acc.compressed!.accuracy)}` : "") +
        (o ? `; output "${o.name}": relative error ${pct(o.relError)}, cosine ${o.cosine.toFixed(4)}` : "") +
        (o?.top1Agreement !== undefined ? `, top-1 agreement ${pct(o.top1Agreement)}` : ""),
    );
  }
  if (r.comparison) {
    const v = r.comparison.vq;
    const meanOut = (ls: Report["layers"]) => {
      const e = ls.filter((l) => l.outputError !== undefined).map((l) => l.outputError!);
      return e.length ? `, mean layer output error ${pct(e.reduce((a, b) => a + b, 0) / e.length)}` : "";
    };
    const evalText = (e: Report["evaluation"]) =>
      e ? `, model output error ${pct(e.outputs[0]!.relError)}${e.accuracy?.compressed ? `, accuracy ${pct(e.accuracy.compressed.accuracy)}` : ""}` : "";
    lines.push(
      `compare     SSVQ k=${c.k} d=${c.d}: tensors ${formatBytes(Math.round(s.compressedTensorBytes))}${meanOut(r.layers)}${evalText(r.evaluation)}`,
      `            VQ   k=${v.config.k} d=${v.config.d}: tensors ${formatBytes(Math.round(v.sizes.compressedTensorBytes))}${meanOut(v.layers)}${evalText(v.evaluation)}`,
    );
  }
  if (r.simulation) {
    const sim = r.simulation;
    const mode = c.mode;
    const t = (f: string) => sim.totals[f]?.seconds ?? NaN;
    const ms = (x: number) => `${(x * 1e3).toFixed(3)} ms`;
    lines.push(
      `simulated   ${sim.preset}: ${mode.toUpperCase()} ${ms(t(mode))}, INT8 ${ms(t("int8"))}, FP16 ${ms(t("fp16"))}` +
        ` (${(sim.speedup.vsInt8[mode] ?? NaN).toFixed(2)}x vs INT8; GEMM layers only)`,
    );
  }
  if (r.kept.length) lines.push(`kept as is  ${r.kept.length} weights: ${summarizeKept(r)}`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join("\n");
}

function summarizeKept(r: Report): string {
  const byReason = new Map<string, number>();
  for (const k of r.kept) {
    const reason = k.reason.replace(/^\d+ weights, fewer than/, "fewer than");
    byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
  }
  return [...byReason].map(([why, n]) => `${n} ${why}`).join("; ");
}

