/**
 * `ssvq demo` (`npm run demo`): compresses the bundled Fashion-MNIST LeNet-5 with SSVQ, conventional VQ
 * and INT4 through the background job, runs each in onnxruntime on the bundled test images (an evaluate
 * job, like `ssvq eval`: onnxruntime never runs in the CLI's own process), and prints sizes, ratios and
 * accuracy. Everything it writes goes to a temporary folder (or --out DIR).
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { InputError } from "../core/errors.js";
import { formatBytes } from "../core/onnx/tensor-data.js";
import type { CompressConfig } from "../core/report.js";
import type { EvaluationReport } from "../core/calib/eval-metrics.js";
import { loadModel } from "../io/model-file.js";
import type { CliContext, Command } from "./command.js";
import { table } from "./format.js";
import { threadsOption } from "../job/option-values.js";
import { runJob, runWorkerJob } from "./run-job.js";

/** The repository's test fixtures, found from dist/ or out/src/cli/. */
export function fixturesDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, "test", "fixtures");
    if (existsSync(join(candidate, "fashion_lenet5.onnx"))) return candidate;
    dir = dirname(dir);
  }
  throw new InputError("the demo's bundled model (test/fixtures/fashion_lenet5.onnx) is not here; run the demo from a clone of the repository");
}

const METHODS: { label: string; config: Partial<CompressConfig> }[] = [
  { label: "SSVQ k16 d4 (2 b/w)", config: { mode: "ssvq", k: 16, d: 4 } },
  { label: "SSVQ k16 d4 + fine-tuning", config: { mode: "ssvq", k: 16, d: 4, finetune: true } },
  { label: "SSVQ k16 d8 (1.5 b/w)", config: { mode: "ssvq", k: 16, d: 8 } },
  { label: "SSVQ k16 d8 + fine-tuning", config: { mode: "ssvq", k: 16, d: 8, finetune: true } },
  { label: "VQ k256 d4 (2 b/w)", config: { mode: "vq", k: 256, d: 4 } },
  { label: "INT4 per channel", config: { mode: "int4", k: 0, d: 0 } },
];

export const demoCommand: Command = {
  name: "demo",
  summary: "compress a bundled real model with SSVQ, VQ and INT4 and compare size and accuracy",
  usage: "ssvq demo [--out DIR] [--threads N]",
  help: [
    "Compresses the bundled Fashion-MNIST LeNet-5 (61,706 parameters) with SSVQ (with and without",
    "fine-tuning on test images 0-511), VQ and INT4, evaluates each result in onnxruntime on the bundled",
    "test images 512-1999, and prints",
    "sizes, ratios, accuracy and agreement with the original model's top-1 class.",
    "",
    "Options:",
    "  --out DIR     keep the compressed models and reports there (default: a temporary folder, removed)",
    "  --threads N   worker threads for k-means",
  ].join("\n"),
  options: { out: { type: "string" }, threads: { type: "string" } },
  positionals: [0, 0],
  async run(values, _positionals, ctx) {
    const fixtures = fixturesDir();
    const keep = typeof values["out"] === "string";
    const dir = keep ? resolve(values["out"] as string) : mkdtempSync(join(tmpdir(), "ssvq-demo-"));
    try {
      mkdirSync(dir, { recursive: true });
      const model = join(dir, "fashion_lenet5.onnx");
      copyFileSync(join(fixtures, "fashion_lenet5.onnx"), model);
      const base = await evaluate(fixtures, model, undefined, ctx);
      const rows: string[][] = [
        ["FP32 original", "32.000", formatBytes(loadModel(model).bytes.length), "1.00x", "1.00x", pct(base.accuracy!.original.accuracy), "100.00%", "-"],
      ];
      for (const m of METHODS) {
        const out = join(dir, `fashion_lenet5.${m.config.mode}-k${m.config.k}-d${m.config.d}${m.config.finetune ? "-tuned" : ""}.onnx`);
        const config: CompressConfig = { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: false, ...m.config };
        ctx.err(`compressing with ${m.label}`);
        const t0 = performance.now();
        const { report } = await runJob(
          {
            kind: "compress",
            input: model,
            out,
            force: true,
            config,
            threads: threadsOption(values),
            ...(config.finetune ? { data: { calib: { path: join(fixtures, "fashion_test2000_x_u8.npy"), range: "0:512" }, preprocess: { scale: "1/255" } } } : {}),
          },
          ctx,
        );
        const seconds = (performance.now() - t0) / 1000;
        const ev = await evaluate(fixtures, model, out, ctx);
        const s = report.sizes;
        rows.push([
          m.label,
          s.bitsPerWeight.toFixed(3),
          formatBytes(s.outputFileBytes),
          `${s.tensorRatio.toFixed(2)}x`,
          `${s.diskRatio.toFixed(2)}x`,
          pct(ev.accuracy!.compressed!.accuracy),
          pct(ev.outputs[0]!.top1Agreement ?? NaN),
          seconds.toFixed(2),
        ]);
      }
      ctx.out(
        [
          `SSVQ demo: Fashion-MNIST LeNet-5, evaluated on ${base.samples} test images (512-1999); fine-tuning calibrates on images 0-511`,
          "",
          table(
            ["method", "bits/weight", "file", "tensors", "on disk", "accuracy", "agreement", "seconds"],
            rows,
            [false, true, true, true, true, true, true, true],
          ),
          "",
          "bits/weight: over the compressed layers (indices, sign bits and codebook; layers under 1,024",
          "weights stay FP32). tensors: all tensor bytes before/after; on disk: file sizes, graph included.",
          "agreement: test images whose top-1 class equals the original model's.",
          keep ? `models and reports in ${dir}` : "",
        ]
          .join("\n")
          .trimEnd(),
      );
      return 0;
    } finally {
      if (!keep) rmSync(dir, { recursive: true, force: true });
    }
  },
};

/** The model (and a compressed one beside it) on the bundled test images 512-1999, in the background worker as `ssvq eval` runs it. */
async function evaluate(fixtures: string, model: string, compare: string | undefined, ctx: CliContext): Promise<EvaluationReport> {
  const outcome = await runWorkerJob(
    {
      kind: "evaluate",
      model,
      ...(compare !== undefined ? { compare } : {}),
      data: { path: join(fixtures, "fashion_test2000_x_u8.npy"), range: "512:2000", labels: join(fixtures, "fashion_test2000_y_u8.npy") },
      preprocess: { scale: "1/255" },
      batchSize: 256,
    },
    // Its stage lines would only repeat "evaluate"; the demo says what it compresses.
    { ...ctx, errIsTTY: false, err: () => {} },
  );
  if (outcome.type !== "evaluation") throw new Error(`an evaluate job ended with ${outcome.type}`);
  return outcome.report;
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
