/**
 * `ssvq sweep`: the accuracy (or fidelity) against whole-model size frontier of SSVQ, VQ, INT8 and INT4.
 * The sweep runs in the background worker (onnxruntime never runs in the CLI's own process); this
 * command checks the options, prints the table and writes the JSON and SVG once every point is done.
 */
import { existsSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { CancelledError, InputError } from "../core/errors.js";
import { sweepSvg, sweepTable } from "../core/sweep-chart.js";
import { DEFAULT_TARGETS, SWEEP_METHODS, type SweepMethod, type SweepResult } from "../io/sweep.js";
import { writeAll } from "../io/write-atomic.js";
import { compressConfig, compressOptions, dataOptions, dataOptionSpecs } from "../job/compress-args.js";
import { pickOptions, threadsOption } from "../job/option-values.js";
import type { Command, CliContext, OptionValues } from "./command.js";
import { runWorkerJob } from "./run-job.js";

function listOf(values: OptionValues, name: string): string[] | undefined {
  const v = values[name];
  return typeof v === "string" ? v.split(",").map((x) => x.trim()).filter((x) => x !== "") : undefined;
}

/** Refuses an output that exists (without --force), is a folder, or whose folder is missing, before the sweep starts. */
function checkOutput(path: string, force: boolean): void {
  if (existsSync(path) && !force) throw new InputError(`${path} exists; pass --force to replace it`);
  if (existsSync(path) && statSync(path).isDirectory()) throw new InputError(`${path} is a folder`);
  const dir = dirname(path);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new InputError(`the output folder ${dir} does not exist`);
}

export const sweepCommand: Command = {
  name: "sweep",
  summary: "accuracy against whole-model size for SSVQ and VQ (each layer searched), INT8 and INT4",
  usage: "ssvq sweep MODEL --calib PATH --eval PATH [--labels FILE] [--targets 4,6,8,12,16,24] [--svg FILE] [--out FILE.json] [--json]",
  help: [
    "For every target whole-model ratio, SSVQ and VQ each get their per-layer search (as ssvq compress",
    "--ratio R), are fine-tuned on the calibration samples and evaluated; INT8 and INT4 are one point each.",
    "The calibration statistics are captured once, each candidate is k-means'd once and reused by every",
    "target, and only the chosen points are fine-tuned. Prints a table; --json prints the JSON instead.",
    "",
    "  --targets LIST     whole-model tensor ratios (default 4,6,8,12,16,24)",
    "  --methods LIST     any of ssvq,vq,int8,int4 (default all)",
    "  --svg FILE         draw the frontier (accuracy with --labels, else top-1 agreement or fidelity)",
    "  --out FILE         write the JSON to FILE;  --force  replace FILE or the SVG",
    "  --calib PATH, --calib-range A:B, --eval PATH, --eval-range A:B, --labels FILE, --scale S, ...",
    "                     the data options of ssvq compress (both --calib and --eval are required)",
    "  --seed, --kmeans-iters, --min-weights, --layers, --iters, --lr-*, --freeze-*, --no-finetune,",
    "  --threads          as for ssvq compress",
  ].join("\n"),
  options: {
    ...pickOptions(compressOptions, [
      "layers",
      "min-weights",
      "no-finetune",
      "iters",
      "lr-codebook",
      "lr-sign",
      "freeze-every",
      "freeze-threshold",
      "freeze-momentum",
      "no-freeze",
      "reassign",
      "seed",
      "kmeans-iters",
      "threads",
    ]),
    ...dataOptionSpecs,
    targets: { type: "string" },
    methods: { type: "string" },
    svg: { type: "string" },
    out: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  },
  positionals: [1, 1],
  async run(values, [model], ctx) {
    const data = dataOptions(values);
    if (!data?.calib?.path) throw new InputError("--calib PATH is required: the search and fine-tuning run on calibration samples");
    if (!data.eval?.path) throw new InputError("--eval PATH is required: every point is evaluated on it");
    const targets = (listOf(values, "targets") ?? DEFAULT_TARGETS.map(String)).map((t) => {
      const n = Number(t);
      if (!Number.isFinite(n) || !(n > 1)) throw new InputError(`--targets takes ratios above 1, like 4,8,16, not ${JSON.stringify(t)}`);
      return n;
    });
    const methods = (listOf(values, "methods") ?? [...SWEEP_METHODS]).map((m) => {
      if (!SWEEP_METHODS.includes(m as SweepMethod)) throw new InputError(`--methods takes ${SWEEP_METHODS.join(", ")}, not ${JSON.stringify(m)}`);
      return m as SweepMethod;
    });
    const config = compressConfig({ ...values, mode: "ssvq" });
    const svg = typeof values["svg"] === "string" ? resolve(values["svg"]) : undefined;
    const out = typeof values["out"] === "string" ? resolve(values["out"]) : undefined;
    const force = values["force"] === true;
    for (const p of [out, svg]) if (p) checkOutput(p, force);
    const outcome = await runWorkerJob(
      {
        kind: "sweep",
        input: model!,
        config,
        calib: data.calib,
        eval: data.eval,
        ...(data.preprocess ? { preprocess: data.preprocess } : {}),
        ...(data.batchSize !== undefined ? { batchSize: data.batchSize } : {}),
        targets,
        methods,
        threads: threadsOption(values),
      },
      ctx,
    );
    if (outcome.type !== "sweep") throw new Error(`a sweep job ended with ${outcome.type}`);
    const result = outcome.result;
    const json = JSON.stringify(result, null, 2) + "\n";
    writeOutputs(out, json, svg, result, ctx);
    ctx.out(values["json"] ? json.trimEnd() : sweepTable(result));
    for (const p of [out, svg]) if (p) ctx.err(`wrote ${p}`);
    return 0;
  },
};

/** The JSON and the SVG, both or neither; a Ctrl-C that came while they were being written leaves neither. */
function writeOutputs(out: string | undefined, json: string, svg: string | undefined, result: SweepResult, ctx: CliContext): void {
  const files = [...(out ? [{ path: out, data: json }] : []), ...(svg ? [{ path: svg, data: sweepSvg(result) }] : [])];
  writeAll(files, () => {
    if (ctx.signal.aborted) throw new CancelledError();
  });
}
