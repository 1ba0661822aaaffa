import { InputError } from "../core/errors.js";
import type { Command } from "./command.js";
import { measureDecode, runIoBench, writeMatMulChain } from "../bench/io.js";
import { parseShapes, runKmeansBench, type KmeansCompare } from "../bench/kmeans.js";
import { runSimulateBench } from "../bench/simulate.js";
import { runCaptureBench } from "../bench/capture.js";
import { runQualityBench } from "../bench/quality.js";
import { runSweepBench } from "../bench/sweep.js";
import { runFinetuneKernelBench } from "../bench/finetune.js";
import { isPipelineModel, measurePipeline, parsePipelineChild, PIPELINE_MODELS, runPipelineBench } from "../bench/pipeline.js";
import { runInspectBench } from "../bench/inspect.js";
import { runPanelBench } from "../bench/panel.js";
import { LAYERS_MODES, measureLayers, runLayersBench } from "../bench/layers.js";
import { measureLoad, runLoadBench, writeMatMulStack } from "../bench/load.js";
import { runLargeBench } from "../bench/large.js";

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
  usage: "ssvq bench io|kmeans|simulate|capture|quality|sweep|finetune|pipeline|inspect|panel|layers|load|large [options]",
  help: [
    "Benchmarks:",
    "  io       decode a generated model of --mb megabytes (default 100) in a fresh process: time, peak RSS,",
    "           and the ArrayBuffer memory the decode added (tensor bytes are not copied)",
    "  kmeans   --n 500000 --d 4 --k 256 --iters 10 --seed 1 --threads 2: Lloyd k-means on seeded standard",
    "           normal float32 points, k starting centroids drawn from the points; the fast k-means against a",
    "           plain single-threaded JavaScript loop on the same data and start (same SSE to 1e-6).",
    "           --shapes table|NxDxK,...: several shapes (table: d 4 and 8 x k 16, 64, 256, 4096, n 500k/250k);",
    "           --compare sklearn: against scikit-learn's Lloyd KMeans on the same float32 points and start, in",
    "           the same run (--python PATH, default /usr/bin/python3; --repeat N timed runs, best kept;",
    "           --sklearn-threads N: OMP/OpenBLAS/MKL threads of scikit-learn, default all; --no-float64 skips",
    "           its untimed float64 reference fit); wall-clock and CPU seconds (every thread) for both sides;",
    "           --compare none: the engine alone",
    "  simulate the accelerator simulator on a generated 100-layer model",
    "  quality  accuracy, output error, bits and ratios of INT4, SSVQ and VQ on both Fashion-MNIST fixtures,",
    "           without and with fine-tuning, and SSVQ and VQ searched per layer at --ratio 8, 12, 16;",
    "           JSON on stdout, a Markdown table on stderr",
    "  sweep    a 6-target ssvq sweep (4x..24x) on LeNet-5 and the tiny ViT against one plain compression",
    "           (SSVQ k16 d4, fine-tuned, evaluated) of the same model: seconds, by stage",
    "  finetune the product G = 2 (W_hat - W) H: plain loop, blocked kernel, WebAssembly and onnxruntime",
    "           in one run (GFLOP/s), and with X itself ((E X) X^T / n)",
    "  pipeline whole compressions with fine-tuning (SSVQ k16 d4), each in a fresh process: (a) issue 11's",
    "           1.2M-parameter CNN (Gemm 128 x 9216) on 512 images, (b) the generated 3M-parameter CNN, (c)",
    "           LeNet-5 and the tiny ViT, (d) a 100 MB ISNet-like conv network at 512 x 512 on 4 images under",
    "           --memory-budget 2G, also without calibration (--models cnn1m,cnn3m,lenet,tinyvit,segment):",
    "           seconds per stage, peak RSS, the waves, CPU seconds",
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
    "  layers   many small layers: chains of 1,000, 3,000 and 10,000 MatMul layers of 32 x 32 (--sizes),",
    "           compress --no-finetune as SSVQ k16 d4 and INT8 (--modes ssvq,int8), each in a fresh process:",
    "           seconds, seconds per 1,000 layers, stage times, peak RSS; the time per layer of the largest",
    "           model over the smallest's (about 1 when the pipeline is linear in the model's size)",
    "  load     loading compressed models in onnxruntime at its default settings: a stack of --layers 8 MatMul",
    "           layers of --width 4096 float32 weights in external data (--layers 40: the 2.7 GB model) and the",
    "           bundled fixtures (--no-fixtures skips them), each compressed --no-finetune as SSVQ k16 d4 and",
    "           INT8; every model loaded in a fresh process: peak RSS, load seconds, the median of --runs 20",
    "           inferences, and their ratios to the original's",
    "  large    a model over 2 GB: a stack of --layers 45 MatMul layers of --width 4096 float32 weights in",
    "           external data (3.0 GB) inspected, compressed --no-finetune as SSVQ k16 d4, INT8 and INT8",
    "           --format dense (an output over 2 GB, written with external data), each a fresh ssvq process",
    "           under /usr/bin/time (peak RSS, seconds); each output loaded in onnxruntime in a fresh process",
    "           (--runs 3 inferences); peak RSS against 2 x the largest layer + 1 GiB. --dir DIR: where the",
    "           files go (default the system's temporary folder); --keep: leave them there",
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
    "layers-child": { type: "string" },
    "load-child": { type: "string" },
    width: { type: "string" },
    "no-fixtures": { type: "boolean" },
    dir: { type: "string" },
    keep: { type: "boolean" },
    sizes: { type: "string" },
    modes: { type: "string" },
    models: { type: "string" },
    runs: { type: "string" },
    screenshots: { type: "string" },
    shapes: { type: "string" },
    compare: { type: "string" },
    python: { type: "string" },
    repeat: { type: "string" },
    "sklearn-threads": { type: "string" },
    "no-float64": { type: "boolean" },
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
        const compare = values["compare"] ?? "plain";
        if (compare !== "plain" && compare !== "sklearn" && compare !== "none") {
          throw new InputError(`--compare takes plain, sklearn or none, not ${JSON.stringify(compare)}`);
        }
        const shapes =
          typeof values["shapes"] === "string"
            ? parseShapes(values["shapes"])
            : [{ n: num(values["n"], "n", 500000), d: num(values["d"], "d", 4), k: num(values["k"], "k", 256) }];
        const result = await runKmeansBench({
          shapes,
          iters: num(values["iters"], "iters", 10),
          seed: num(values["seed"], "seed", 1),
          threads: num(values["threads"], "threads", 2),
          compare: compare as KmeansCompare,
          repeat: num(values["repeat"], "repeat", compare === "sklearn" ? 3 : 1),
          ...(typeof values["python"] === "string" ? { python: values["python"] } : {}),
          ...(values["sklearn-threads"] !== undefined ? { sklearnThreads: num(values["sklearn-threads"], "sklearn-threads", 1) } : {}),
          ...(values["no-float64"] === true ? { noFloat64: true } : {}),
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
      case "sweep": {
        const rows = await runSweepBench({
          threads: num(values["threads"], "threads", 2),
          ...(values["iters"] !== undefined ? { iters: num(values["iters"], "iters", 500) } : {}),
        });
        ctx.out(JSON.stringify({ bench: "sweep", rows }));
        return 0;
      }
      case "finetune": {
        const kernels = await runFinetuneKernelBench({ log: (line) => ctx.err(line) });
        ctx.out(JSON.stringify({ bench: "finetune", kernels }));
        return 0;
      }
      case "pipeline": {
        const threads = num(values["threads"], "threads", 2);
        if (values["pipeline-child"] !== undefined) {
          const child = parsePipelineChild(values["pipeline-child"]);
          if (!child) throw new InputError(`--pipeline-child takes a model of ${PIPELINE_MODELS.join(", ")}, optionally with :without`);
          ctx.out(JSON.stringify(await measurePipeline(child.model, threads, child.run)));
          return 0;
        }
        const models = typeof values["models"] === "string" ? values["models"].split(",") : PIPELINE_MODELS;
        for (const m of models) if (!isPipelineModel(m)) throw new InputError(`--models takes ${PIPELINE_MODELS.join(", ")}, not ${JSON.stringify(m)}`);
        const pipelines = runPipelineBench(models.filter(isPipelineModel), threads, (line) => ctx.err(line));
        ctx.out(JSON.stringify({ bench: "pipeline", threads, pipelines }));
        return 0;
      }
      case "layers": {
        const threads = num(values["threads"], "threads", 2);
        const child = values["layers-child"];
        if (typeof child === "string") {
          const [n, mode] = child.split(":");
          ctx.out(JSON.stringify(await measureLayers(num(n, "layers-child", 1000), mode ?? "ssvq", threads)));
          return 0;
        }
        const sizes = typeof values["sizes"] === "string" ? values["sizes"].split(",").map((x) => num(x, "sizes", 1000)) : [1000, 3000, 10000];
        const modes = typeof values["modes"] === "string" ? values["modes"].split(",") : LAYERS_MODES;
        for (const m of modes) if (!LAYERS_MODES.includes(m)) throw new InputError(`--modes takes ${LAYERS_MODES.join(", ")}, not ${JSON.stringify(m)}`);
        ctx.out(JSON.stringify(runLayersBench({ sizes, modes, threads, log: (l) => ctx.err(l) })));
        return 0;
      }
      case "load": {
        const child = values["load-child"];
        if (typeof child === "string") {
          const job = JSON.parse(child) as { generate?: string; layers?: number; width?: number; measure?: string; runs?: number };
          if (job.generate) writeMatMulStack(job.generate, job.layers ?? 8, job.width ?? 4096);
          else ctx.out(JSON.stringify(await measureLoad(job.measure!, job.runs ?? 20)));
          return 0;
        }
        const result = runLoadBench({
          layers: num(values["layers"], "layers", 8),
          width: num(values["width"], "width", 4096),
          runs: num(values["runs"], "runs", 20),
          fixtures: !values["no-fixtures"],
          log: (line) => ctx.err(line),
        });
        ctx.out(JSON.stringify(result));
        return 0;
      }
      case "large": {
        const result = runLargeBench({
          layers: num(values["layers"], "layers", 45),
          width: num(values["width"], "width", 4096),
          runs: num(values["runs"], "runs", 3),
          ...(typeof values["dir"] === "string" ? { dir: values["dir"] } : {}),
          keep: values["keep"] === true,
          log: (line) => ctx.err(line),
        });
        ctx.out(JSON.stringify(result));
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
