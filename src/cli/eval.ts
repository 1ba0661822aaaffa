import { InputError } from "../core/errors.js";
import { dataOptionSpecs } from "../job/compress-args.js";
import { pickOptions } from "../job/option-values.js";
import { parsePreprocess } from "../core/calib/preprocess.js";
import type { EvaluationReport } from "../core/calib/eval-metrics.js";
import type { Command, OptionValues } from "./command.js";
import { runWorkerJob } from "./run-job.js";
import { int, shape, table } from "./format.js";

const str = (v: OptionValues[string]): string | undefined => (typeof v === "string" ? v : undefined);

function positiveInt(v: OptionValues[string], flag: string): number | undefined {
  const s = str(v);
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!/^\s*\d+\s*$/.test(s) || !Number.isSafeInteger(n) || n <= 0) throw new InputError(`${flag} must be a positive integer, not ${JSON.stringify(s)}`);
  return n;
}

export const evalCommand: Command = {
  name: "eval",
  summary: "measure a model's accuracy on data, and a compressed model's fidelity to it",
  usage:
    "ssvq eval MODEL --eval PATH [--eval-range A:B] [--eval-count N] [--labels FILE] [--compare OTHER.onnx] " +
    "[--scale S] [--mean M] [--std S] [--size HxW] [--layout nchw|nhwc] [--batch N] [--json]",
  help: [
    "Runs MODEL with onnxruntime on the evaluation samples. With --labels, prints its top-1 accuracy.",
    "With --compare, runs OTHER.onnx (usually MODEL compressed) on the same samples and prints, per output,",
    "the relative error ||y'-y||/||y||, the cosine similarity, the largest absolute difference and, for",
    "[batch, classes] outputs, the top-1 agreement; with labels, the accuracy of both models.",
    "",
    "Data:",
    "  --eval PATH         a .npy batch (first axis = samples), a folder of .npy/.pb/.png/.jpg samples,",
    "                      or a model-zoo test_data_set_* folder",
    "  --eval-range A:B    use samples A (inclusive) to B (exclusive)",
    "  --eval-count N      a seeded subset of N samples of the range",
    "  --labels FILE       integer labels (.npy [N] or text, one per line), indexed like the data",
    "  --scale S           multiply values (1/255 for 0-255 pixels); --mean, --std per channel after it",
    "  --size HxW          resize images; --layout nchw|nhwc: the model input's layout",
    "  --batch N           samples per run (default 32)",
    "",
    "Output:",
    "  --json              print the evaluation report as JSON",
  ].join("\n"),
  options: {
    ...pickOptions(dataOptionSpecs, ["eval", "eval-range", "eval-count", "labels", "scale", "mean", "std", "size", "layout", "batch"]),
    compare: { type: "string" },
    json: { type: "boolean" },
  },
  positionals: [1, 1],
  async run(values, [modelPath], ctx) {
    const evalPath = str(values["eval"]);
    if (evalPath === undefined) throw new InputError("--eval PATH is required: the samples to evaluate on");
    const rawPreprocess = { scale: str(values["scale"]), mean: str(values["mean"]), std: str(values["std"]), size: str(values["size"]), layout: str(values["layout"]) };
    // Bad options fail here, before the worker starts.
    parsePreprocess(rawPreprocess);
    const batchSize = positiveInt(values["batch"], "--batch");
    const count = positiveInt(values["eval-count"], "--eval-count");
    const comparePath = str(values["compare"]);
    const range = str(values["eval-range"]);
    const labels = str(values["labels"]);
    // onnxruntime runs in the background worker: a model that crashes it cannot take the CLI down.
    const outcome = await runWorkerJob(
      {
        kind: "evaluate",
        model: modelPath!,
        ...(comparePath !== undefined ? { compare: comparePath } : {}),
        data: { path: evalPath, ...(range !== undefined ? { range } : {}), ...(count !== undefined ? { count } : {}), ...(labels !== undefined ? { labels } : {}) },
        preprocess: rawPreprocess,
        ...(batchSize !== undefined ? { batchSize } : {}),
      },
      { ...ctx, errIsTTY: false, err: () => {} },
    );
    if (outcome.type !== "evaluation") throw new Error(`an evaluate job ended with ${outcome.type}`);
    const report = outcome.report;
    if (values["json"]) for (const w of outcome.warnings) ctx.err(`warning: ${w}`);
    if (values["json"]) ctx.out(JSON.stringify(report, null, 2));
    else ctx.out(renderEvaluation(report));
    return 0;
  },
};

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
const sci = (x: number): string => {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a >= 1e-3 && a < 1e5 ? x.toPrecision(4) : x.toExponential(3);
};

/** The evaluation report as the readable text `ssvq eval` prints. */
export function renderEvaluation(r: EvaluationReport): string {
  const d = r.data;
  const lines = [`model       ${r.models.original}`];
  if (r.models.compressed) lines.push(`compared    ${r.models.compressed}`);
  if (d)
    lines.push(
      `data        ${d.paths.join(", ") || d.source}, samples ${d.range[0]}:${d.range[1]} (${int(r.samples)} used${
        d.indices.length !== d.range[1] - d.range[0] ? `, seed ${d.seed}` : ""
      })`,
    );
  else lines.push(`data        ${int(r.samples)} samples`);
  if (r.accuracy) {
    const a = r.accuracy;
    const acc = (m: { correct: number; accuracy: number }) => `${pct(m.accuracy)} (${int(m.correct)}/${int(a.labelled)})`;
    lines.push(`accuracy    ${acc(a.original)}  top-1 on "${a.output}"${d?.labels ? `, labels ${d.labels}` : ""}`);
    if (a.compressed) {
      const delta = a.compressed.accuracy - a.original.accuracy;
      lines.push(`            ${acc(a.compressed)}  compared model (${delta >= 0 ? "+" : ""}${(100 * delta).toFixed(2)} points)`);
    }
  }
  if (r.outputs.length > 0) {
    lines.push("");
    lines.push(
      table(
        ["output", "shape", "rel. error", "cosine", "max |diff|", "top-1 agreement"],
        r.outputs.map((o) => [
          o.name,
          shape(["N", ...o.sampleDims].map(String)),
          sci(o.relError),
          o.cosine.toFixed(6),
          sci(o.maxAbsError),
          o.top1Agreement !== undefined ? pct(o.top1Agreement) : "-",
        ]),
        [false, false, true, true, true, true],
      ),
    );
  }
  if (!r.accuracy && r.outputs.length === 0) lines.push("measured    nothing beyond running the model: give --labels for accuracy, --compare for fidelity");
  for (const s of r.skipped) lines.push(`not compared: ${s.name} (${s.reason})`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  lines.push(`time        ${r.seconds.toFixed(2)} s`);
  return lines.join("\n");
}
