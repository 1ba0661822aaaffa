import { InputError } from "../core/errors.js";
import type { Command } from "./command.js";
import { measureDecode, runIoBench, writeMatMulChain } from "../bench/io.js";
import { runKmeansBench } from "../bench/kmeans.js";
import { runSimulateBench } from "../bench/simulate.js";
import { runCaptureBench } from "../bench/capture.js";
import { runQualityBench } from "../bench/quality.js";
import { runFinetuneKernelBench } from "../bench/finetune.js";
import { measurePipeline, runPipelineBench } from "../bench/pipeline.js";
import { runInspectBench } from "../bench/inspect.js";
import { runPanelBench } from "../bench/panel.js";

const num = (v: unknown, name: string, dflt: number): number => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InputError(`--${name} must be a positive number, not ${JSON.stringify(v)}`);
  return n;
};

/** Benchmarks print one JSON object on stdout; figures, not pass/fail (these machines are shared). */
export const benchCommand: Command = {
  name: "bench",
  summary: "measure speed and memory; prints JSON figures",
  usage: "ssvq bench io|kmeans|simulate|capture|quality|finetune|inspect|panel [options]",
  help: [
    "Benchmarks:",
    "  io       decode a generated model of --mb megabytes (default 100) in a fresh process: time, peak RSS,",
    "           and the ArrayBuffer memory the decode added (tensor bytes are not copied)",
    "  kmeans   --n 500000 --d 4 --k 256 --iters 10 --seed 1 --threads 2: Lloyd k-means on seeded standard",
    "           normal float32 points, k starting centroids drawn from the points; the fast k-means against a",
    "           plain single-threaded JavaScript loop on the same data and start (same SSE to 1e-6)",
    "  simulate the accelerator simulator on a generated 100-layer model",
    "  quality  accuracy, output error, bits and ratios of INT4, SSVQ and VQ on both Fashion-MNIST fixtures,",
    "           without and with fine-tuning; JSON on stdout, a Markdown table on stderr",
    "  finetune the product G = 2 (W_hat - W) H: plain loop, blocked kernel, WebAssembly and onnxruntime",
    "           in one run (GFLOP/s); then whole compressions with fine-tuning at the defaults in fresh",
    "           processes: LeNet-5 on 512 images and a generated 3M-parameter CNN (--models lenet,cnn3m;",
    "           --no-kernels skips the kernels): seconds per stage and peak RSS",
    "  capture  activation capture (H = X X^T / n per layer) on a generated 3M-parameter CNN with 512",
    "           samples, in a fresh process: seconds, peak RSS, and the time from cancel to stop",
    "  inspect  the SSVQ Inspector's summary of a generated model of --mb megabytes (default 100): the",
    "           inspect job from request to summary message (--runs 5), and the extension's activation in",
    "           a fresh process with a stand-in vscode module (time, modules loaded: no onnxruntime)",
    "  panel    the SSVQ panel's page in headless Chromium (/usr/bin/chromium, playwright-core): a real",
    "           report of a generated 200-layer model posted into it, each tab drawn (in-page ms); then a",
    "           real job's 10,000 freezeCheck events forwarded through the extension's EventBatcher",
    "           (messages, the busiest second, checks shown before the report against those sent);",
    "           --screenshots DIR saves the views as PNG",
  ].join("\n"),
  options: {
    mb: { type: "string" },
    n: { type: "string" },
    d: { type: "string" },
    k: { type: "string" },
    iters: { type: "string" },
    seed: { type: "string" },
    threads: { type: "string" },
    measure: { type: "string" },
    generate: { type: "string" },
    layers: { type: "string" },
    "pipeline-child": { type: "string" },
    models: { type: "string" },
    runs: { type: "string" },
    "no-kernels": { type: "boolean" },
    screenshots: { type: "string" },
  },
  positionals: [1, 1],
  async run(values, [which], ctx) {
    switch (which) {
      case "io": {
        const measure = values["measure"];
        if (typeof values["generate"] === "string") {
          writeMatMulChain(values["generate"], num(values["layers"], "layers", 1));
          return 0;
        }
        const result = typeof measure === "string" ? measureDecode(measure) : await runIoBench({ megabytes: num(values["mb"], "mb", 100) });
        ctx.out(JSON.stringify(result));
        return 0;
      }
      case "kmeans": {
        const result = await runKmeansBench({
          n: num(values["n"], "n", 500000),
          d: num(values["d"], "d", 4),
          k: num(values["k"], "k", 256),
          iters: num(values["iters"], "iters", 10),
          seed: num(values["seed"], "seed", 1),
          threads: num(values["threads"], "threads", 2),
        });
        ctx.out(JSON.stringify(result));
        return 0;
      }
      case "quality": {
        const { rows, markdown } = await runQualityBench({
          threads: num(values["threads"], "threads", 2),
          ...(values["iters"] !== undefined ? { iters: num(values["iters"], "iters", 500) } : {}),
        });
        ctx.err(markdown);
        ctx.out(JSON.stringify({ bench: "quality", rows }));
        return 0;
      }
      case "finetune": {
        const threads = num(values["threads"], "threads", 2);
        const child = values["pipeline-child"];
        if (child === "lenet" || child === "cnn3m") {
          ctx.out(JSON.stringify(await measurePipeline(child, threads)));
          return 0;
        }
        const models = typeof values["models"] === "string" ? values["models"].split(",") : ["lenet", "cnn3m"];
        for (const m of models) if (m !== "lenet" && m !== "cnn3m") throw new InputError(`--models takes lenet and cnn3m, not ${JSON.stringify(m)}`);
        const kernels = values["no-kernels"] ? undefined : await runFinetuneKernelBench({ log: (line) => ctx.err(line) });
        const pipelines = runPipelineBench(models as ("lenet" | "cnn3m")[], threads);
        for (const p of pipelines)
          ctx.err(
            `${p.model}: ${p.seconds.toFixed(1)} s (${Object.entries(p.stages).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ")}), ` +
              `peak RSS ${(p.peakRssBytes / 2 ** 20).toFixed(0)} MiB, output error ${(100 * p.outputErrorBefore).toFixed(1)}% -> ${(100 * p.outputErrorAfter).toFixed(1)}%`,
          );
        ctx.out(JSON.stringify({ bench: "finetune", kernels, pipelines }));
        return 0;
      }
      case "capture":
        ctx.out(JSON.stringify(await runCaptureBench()));
        return 0;
      case "inspect":
        ctx.out(JSON.stringify(await runInspectBench({ megabytes: num(values["mb"], "mb", 100), runs: num(values["runs"], "runs", 5) })));
        return 0;
      case "simulate":
        ctx.out(JSON.stringify(await runSimulateBench()));
        return 0;
      case "panel":
        ctx.out(
          JSON.stringify(
            await runPanelBench({
              renderLayers: 200,
              renderIters: 60,
              streamLayers: 20,
              streamChecks: 500,
              ...(values["threads"] !== undefined ? { threads: num(values["threads"], "threads", 2) } : {}),
              ...(typeof values["screenshots"] === "string" ? { screenshots: values["screenshots"] } : {}),
              log: (line) => ctx.err(line),
              signal: ctx.signal,
            }),
          ),
        );
        return 0;
    }
    throw new InputError(`unknown benchmark ${JSON.stringify(which)}; see 'ssvq bench --help'`);
  },
};
