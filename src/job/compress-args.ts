/**
 * The compress job spec from `ssvq compress` arguments: the option specs, their parsing and checks with
 * one-line errors. Shared by the command line and the extension, which turns its `ssvq.*` settings into
 * the same arguments, so that the command line it logs gives the same bytes.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { InputError } from "../core/errors.js";
import type { CompressConfig } from "../core/report.js";
import { MODES, type Mode } from "../core/ssvq/quantize.js";
import { parsePreprocess } from "../core/calib/preprocess.js";
import { resolveFinetuneOptions, type FinetuneOptions } from "../core/ssvq/finetune.js";
import type { DataOptions } from "../io/compress-file.js";
import type { CompressJobSpec } from "./protocol.js";
import { choiceOption, intOption, numberOption, sizeOption, threadsOption, type OptionValues } from "./option-values.js";

/** The fixed operating point without --k/--d, --bits or --ratio (README: 2 bits per weight before codebooks). */
export const DEFAULT_POINT = { ssvq: { k: 16, d: 4 }, vq: { k: 256, d: 4 } } as const;
export const DEFAULT_KMEANS_ITERS = 25;

/** The compression settings from the command line (shared with later commands that compress). */
export function compressConfig(values: OptionValues): CompressConfig {
  const mode = choiceOption<Mode>(values, "mode", MODES, "ssvq");
  const bits = numberOption(values, "bits");
  const ratio = numberOption(values, "ratio");
  const kGiven = values["k"] !== undefined;
  const dGiven = values["d"] !== undefined;
  let k = 0;
  let d = 0;
  if (mode === "ssvq" || mode === "vq") {
    if (bits !== undefined && ratio !== undefined) throw new InputError("give either --ratio or --bits, not both");
    const target = ratio !== undefined ? "--ratio" : bits !== undefined ? "--bits" : undefined;
    if (target && (kGiven || dGiven)) throw new InputError(`give either ${target} (each layer's own k and d) or --k and --d (one for every layer), not both`);
    if (kGiven !== dGiven) throw new InputError("--k and --d go together");
    if (bits !== undefined && !(bits > 0 && bits < 32)) throw new InputError(`--bits must be a number of bits per weight above 0 and below 32, not ${bits}`);
    if (ratio !== undefined && !(ratio > 1)) throw new InputError(`--ratio must be a whole-model ratio above 1, not ${ratio}`);
    if (kGiven) {
      k = intOption(values, "k", 16, 2, 65536);
      d = intOption(values, "d", 4, 1, 64);
    } else if (!target) ({ k, d } = DEFAULT_POINT[mode]);
  } else if (kGiven || dGiven) throw new InputError(`--k and --d apply to --mode ssvq and vq, not ${mode}`);
  else if (bits !== undefined || ratio !== undefined)
    throw new InputError(`--${ratio !== undefined ? "ratio" : "bits"} searches SSVQ or VQ operating points; it does not apply to --mode ${mode}`);
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
    ...(bits !== undefined ? { bits } : {}),
    ...(ratio !== undefined ? { ratio } : {}),
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
  ratio: { type: "string" },
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
  "memory-budget": { type: "string" },
} as const;

/** Every option of `ssvq compress`. */
export const compressCommandOptions = {
  ...compressOptions,
  ...dataOptionSpecs,
  out: { type: "string" },
  "external-data": { type: "boolean" },
  force: { type: "boolean" },
  json: { type: "boolean" },
  "dry-run": { type: "boolean" },
  preset: { type: "string" },
  compare: { type: "string" },
  "accel-config": { type: "string" },
  shape: { type: "string", multiple: true },
} as const;

/** Options whose values are paths (made absolute in the command a report records). */
const PATH_OPTIONS = new Set(["calib", "eval", "labels", "out", "accel-config"]);
/** Options that are choices of one run, not of the result: left out of the recorded command. */
const RUN_ONLY_OPTIONS = new Set(["force", "json", "dry-run", "threads", "memory-budget"]);

/**
 * The arguments after `ssvq compress` that reproduce a run, in a canonical order with absolute paths:
 * what the report records (`command`), so a report from anywhere gives its command line back.
 */
export function canonicalArgs(values: OptionValues, input: string): string[] {
  const out = [resolve(input)];
  for (const name of Object.keys(compressCommandOptions)) {
    const v = values[name];
    if (v === undefined || RUN_ONLY_OPTIONS.has(name)) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one === false) continue;
      if (one === true) out.push(`--${name}`);
      else out.push(`--${name}`, PATH_OPTIONS.has(name) ? resolve(String(one)) : String(one));
    }
  }
  return out;
}

/** The job that `ssvq compress INPUT` with these option values runs; relative paths from the working directory. */
export function compressSpec(values: OptionValues, input: string): CompressJobSpec {
  const dryRun = values["dry-run"] === true;
  return {
    kind: "compress",
    command: canonicalArgs(values, input),
    input: resolve(input),
    out: typeof values["out"] === "string" ? resolve(values["out"]) : undefined,
    force: values["force"] === true,
    dryRun,
    ...(values["external-data"] === true ? { externalData: true } : {}),
    config: compressConfig(values),
    threads: threadsOption(values),
    ...(sizeOption(values, "memory-budget") !== undefined ? { memoryBudget: sizeOption(values, "memory-budget") } : {}),
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
}

/**
 * Parses `compress` arguments (without the command name: `MODEL --k 16 ...`) as the command line does,
 * into the job spec. Throws InputError with the same one-line messages.
 */
export function parseCompressArgs(args: readonly string[]): CompressJobSpec {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: compressCommandOptions, allowPositionals: true, strict: true });
  } catch (e) {
    throw new InputError((e as Error).message.split("\n")[0]!.replace(/\. To specify a positional.*$/s, ""));
  }
  if (parsed.positionals.length !== 1) throw new InputError(`expected one model, not ${parsed.positionals.length}`);
  return compressSpec(parsed.values as OptionValues, parsed.positionals[0]!);
}
