/** `ssvq compress`: runs the compress job in the background worker and prints its report. */
import { prepareCompress } from "../io/compress-file.js";
import { compressCommandOptions, compressSpec } from "../job/compress-args.js";
import { runJob } from "./run-job.js";
import type { Command } from "./command.js";
import { renderReport } from "../core/report-text.js";

export const compressCommand: Command = {
  name: "compress",
  summary: "compress a model with SSVQ, VQ, INT4 or INT8 and write <name>.ssvq.onnx and its report",
  usage: "ssvq compress MODEL [options] [--out PATH] [--json]",
  help: [
    "Options:",
    "  --mode M           ssvq (default), vq, int4 or int8 (round-to-nearest per output channel)",
    "  --ratio R          whole-model target: tensors R times smaller; each layer gets its own operating",
    "                     point (SSVQ or VQ k and d, INT8, INT4, or full precision), searched on the",
    "                     calibration data (random inputs without --calib) to lose as little as possible",
    "  --bits B           the same search with an average of B bits per weight over the compressed",
    "                     layers, codebooks, signs and scales included (earlier builds: a (k, d) table)",
    "  --k K --d D        one codebook size and sub-vector length for every layer (default without",
    "                     --ratio or --bits: SSVQ k16 d4, VQ k256 d4)",
    "  --layers REGEX     compress only weights whose name or consumer node matches",
    "  --min-weights N    leave layers with fewer weights as they are (default 1024)",
    "  --seed N           seed of k-means++ (default 0); same model, options and seed: same bytes",
    "  --kmeans-iters N   Lloyd iterations at most (default 25)",
    "  --format F         ssvq (decode subgraphs, default) or dense (decoded weights, for runtimes",
    "                     that cannot fold constants)",
    "  --out PATH         output model (default: <model>.ssvq.onnx beside the input); the report goes",
    "                     to PATH without .onnx plus .json",
    "  --external-data    write the output's large tensors to <out>.data beside it (ONNX external",
    "                     data) even when it fits in one file; outputs over 2 GiB always are",
    "  --force            replace existing outputs",
    "  --dry-run          print the size estimate only",
    "  --threads N        worker threads for k-means and fine-tuning (default: the machine's cores, at most 8)",
    "  --memory-budget S  memory the run may use, e.g. 4G or 512M (default: half the machine's memory, at",
    "                     most 16G): calibration statistics are captured and fine-tuned in waves of layers",
    "                     that fit; a smaller budget is slower, never changes the result",
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
    "                     whole-model size is not larger (with --ratio/--bits: the same search at the",
    "                     same budget), on the same data, and report both side by side",
    "",
    "Accelerator simulation:",
    "  --preset NAME      also simulate the model on an accelerator (see ssvq simulate --help) with the",
    "                     compression's own bits per layer, against FP16, INT8 and INT4",
    "  --shape NAME=DIMS  input shape for the simulation (repeatable); --accel-config FILE.json overrides",
    "                     accelerator parameters",
  ].join("\n"),
  options: compressCommandOptions,
  positionals: [1, 1],
  async run(values, [input], ctx) {
    const dryRun = values["dry-run"] === true;
    const spec = compressSpec(values, input!);
    // Bad input fails here, in one line, before the background job starts.
    prepareCompress(spec);
    const result = await runJob(spec, ctx);
    if (values["json"]) ctx.out(JSON.stringify(result.report, null, 2));
    else ctx.out(renderReport(result.report, dryRun));
    const data = result.report.output?.data?.path;
    if (result.outPath) ctx.err(`wrote ${result.outPath}${data ? `, its external data ${data}` : ""} and ${result.reportPath}`);
    return 0;
  },
};
