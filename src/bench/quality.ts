/**
 * `ssvq bench quality`: accuracy and size of each method on the two Fashion-MNIST fixtures, without and
 * with fine-tuning (calibration images 0-511, evaluation 512-1999). Prints the figures as JSON on stdout
 * and the same as a Markdown table on stderr (the README carries it).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CompressConfig, Report } from "../core/report.js";
import { parsePreprocess } from "../core/calib/preprocess.js";
import { resolveFinetuneOptions } from "../core/ssvq/finetune.js";
import { openData } from "../io/calib-files.js";
import { compressFile } from "../io/compress-file.js";
import { evaluateModels } from "../io/evaluate.js";
import { loadModel } from "../io/model-file.js";
import { modelInputs } from "../io/ort.js";
import { createThreadPool } from "../io/pool.js";
import { fixturesDir } from "../cli/demo.js";
import { InputError } from "../core/errors.js";

interface Method {
  label: string;
  mode: CompressConfig["mode"];
  k: number;
  d: number;
  fixedSigns?: boolean;
  /** Fine-tuned only, with --sequential. */
  sequential?: boolean;
}

const METHODS: Method[] = [
  { label: "INT4 per channel", mode: "int4", k: 0, d: 0 },
  { label: "SSVQ k16 d4 (2 b/w)", mode: "ssvq", k: 16, d: 4 },
  { label: "SSVQ k16 d8 (1.5 b/w)", mode: "ssvq", k: 16, d: 8 },
  { label: "SSVQ k256 d8 (2 b/w)", mode: "ssvq", k: 256, d: 8 },
  { label: "VQ k256 d4 (2 b/w)", mode: "vq", k: 256, d: 4 },
  { label: "VQ k64 d4 (1.5 b/w)", mode: "vq", k: 64, d: 4 },
  { label: "SSVQ k16 d8 --fixed-signs", mode: "ssvq", k: 16, d: 8, fixedSigns: true },
  { label: "SSVQ k16 d4 --sequential", mode: "ssvq", k: 16, d: 4, sequential: true },
  { label: "SSVQ k16 d8 --sequential", mode: "ssvq", k: 16, d: 8, sequential: true },
];

/** Whole-model ratio targets of the searched rows (`--ratio`), SSVQ and VQ, fine-tuned. */
export const SEARCH_TARGETS: readonly number[] = [8, 12, 16];

export interface QualityRow {
  model: string;
  method: string;
  finetune: boolean;
  accuracy: number;
  /** ||y' - y|| / ||y|| of the logits against the FP32 model's. */
  outputError: number;
  bitsPerWeight: number;
  tensorRatio: number;
  diskRatio: number;
  seconds: number;
  /** A searched row whose target cannot be reached: why (the other figures are NaN). */
  note?: string;
}

export async function runQualityBench(o: { threads: number; iters?: number }): Promise<{ rows: QualityRow[]; markdown: string }> {
  const fixtures = fixturesDir();
  const images = join(fixtures, "fashion_test2000_x_u8.npy");
  const labels = join(fixtures, "fashion_test2000_y_u8.npy");
  const preprocess = { scale: "1/255" };
  const pool = createThreadPool(o.threads);
  const dir = mkdtempSync(join(tmpdir(), "ssvq-bench-quality-"));
  const rows: QualityRow[] = [];
  try {
    for (const name of ["fashion_lenet5", "fashion_tinyvit"]) {
      const model = join(fixtures, `${name}.onnx`);
      const evalData = () =>
        openData(modelInputs(loadModel(model).model), {
          path: images,
          range: "512:2000",
          labels,
          role: "eval",
          preprocess: parsePreprocess(preprocess),
          batchSize: 256,
        });
      const base = await evaluateModels(model, undefined, await evalData());
      rows.push({ model: name, method: "FP32", finetune: false, accuracy: base.accuracy!.original.accuracy, outputError: 0, bitsPerWeight: 32, tensorRatio: 1, diskRatio: 1, seconds: 0 });
      for (const m of METHODS)
        for (const finetune of m.mode === "int4" ? [false] : [false, true]) {
          const config: CompressConfig = {
            mode: m.mode,
            k: m.k,
            d: m.d,
            seed: 0,
            kmeansIters: 25,
            minWeights: 1024,
            format: "ssvq",
            finetune,
            ...(finetune ? { finetuning: resolveFinetuneOptions({ fixedSigns: m.fixedSigns ?? false, ...(o.iters ? { iters: o.iters } : {}) }) } : {}),
            ...(m.sequential ? { sequential: true } : {}),
          };
          // Without fine-tuning, fixed signs and the sequential variant are plain SSVQ.
          if ((m.fixedSigns || m.sequential) && !finetune) continue;
          const t0 = performance.now();
          const { report } = await compressFile({
            input: model,
            out: join(dir, `${name}.onnx`),
            force: true,
            config,
            map: pool,
            data: {
              ...(finetune ? { calib: { path: images, range: "0:512" } } : {}),
              eval: { path: images, range: "512:2000", labels },
              preprocess,
              batchSize: 256,
            },
          });
          rows.push(row(name, m.label, finetune, report, (performance.now() - t0) / 1000));
        }
      for (const ratio of SEARCH_TARGETS)
        for (const mode of ["ssvq", "vq"] as const) {
          const label = `${mode.toUpperCase()} searched --ratio ${ratio}`;
          const config: CompressConfig = {
            mode,
            k: 0,
            d: 0,
            ratio,
            seed: 0,
            kmeansIters: 25,
            minWeights: 1024,
            format: "ssvq",
            finetune: true,
            finetuning: resolveFinetuneOptions({ fixedSigns: false, ...(o.iters ? { iters: o.iters } : {}) }),
          };
          const t0 = performance.now();
          try {
            const { report } = await compressFile({
              input: model,
              out: join(dir, `${name}.onnx`),
              force: true,
              config,
              map: pool,
              data: { calib: { path: images, range: "0:512" }, eval: { path: images, range: "512:2000", labels }, preprocess, batchSize: 256 },
            });
            rows.push(row(name, label, true, report, (performance.now() - t0) / 1000));
          } catch (e) {
            if (!(e instanceof InputError)) throw e;
            rows.push({ model: name, method: label, finetune: true, accuracy: NaN, outputError: NaN, bitsPerWeight: NaN, tensorRatio: NaN, diskRatio: NaN, seconds: NaN, note: e.message });
          }
        }
    }
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { rows, markdown: markdown(rows) };
}

function row(model: string, method: string, finetune: boolean, r: Report, seconds: number): QualityRow {
  const ev = r.evaluation!;
  return {
    model,
    method,
    finetune,
    accuracy: ev.accuracy!.compressed!.accuracy,
    outputError: ev.outputs[0]!.relError,
    bitsPerWeight: r.sizes.bitsPerWeight,
    tensorRatio: r.sizes.tensorRatio,
    diskRatio: r.sizes.diskRatio,
    seconds,
  };
}

function markdown(rows: QualityRow[]): string {
  const lines = [
    "| model | method | fine-tuned | accuracy | output error | bits/weight | tensor ratio | on-disk ratio | seconds |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of rows)
    if (r.note) lines.push(`| ${r.model} | ${r.method} | yes | not reached: ${r.note.replace(/^--ratio \d+ cannot be reached with \w+: /, "")} | | | | | |`);
    else
    lines.push(
      `| ${r.model} | ${r.method} | ${r.method === "FP32" ? "" : r.finetune ? "yes" : "no"} | ${(100 * r.accuracy).toFixed(2)}% | ` +
        `${r.method === "FP32" ? "" : `${(100 * r.outputError).toFixed(1)}%`} | ${r.bitsPerWeight.toFixed(2)} | ${r.tensorRatio.toFixed(2)}x | ` +
        `${r.diskRatio.toFixed(2)}x | ${r.method === "FP32" ? "" : r.seconds.toFixed(1)} |`,
    );
  return lines.join("\n");
}
