/**
 * `ssvq bench large`: a model over 2 GB end to end. A stack of --layers 45 MatMul layers of 4096 x 4096
 * float32 weights in external data (3.0 GB, `writeMatMulStack`) is inspected and compressed with
 * --no-finetune as SSVQ k16 d4, INT8 and INT8 --format dense (decoded weights: an output as large as the
 * source, which must be written with external data), each as a fresh `ssvq` process under /usr/bin/time
 * (peak RSS of the command and its background worker, which it waits for). Each output is then loaded in
 * onnxruntime in a fresh process (peak RSS and seconds of creating a session, as `bench load` measures),
 * against the original. The peak RSS of each step is compared with the target of issue 14: twice the
 * largest layer plus 1 GiB.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../core/report.js";
import type { LoadMeasure } from "./load.js";

const TIME = "/usr/bin/time";

export interface LargeStep {
  step: string;
  args: string[];
  seconds: number;
  peakRssBytes: number;
  /** peakRssBytes <= 2 x the largest layer + 1 GiB. */
  meetsTarget: boolean;
}

export interface LargeOutput extends LargeStep {
  modelFileBytes: number;
  /** The external data file's bytes (0 when the output is one file). */
  dataFileBytes: number;
  /** What the report says of the data file. */
  reportData: NonNullable<Report["output"]>["data"] | null;
  /** meetsTarget: the load peaks at no more than LOAD_TARGET_RATIO x the original's. */
  load: LoadMeasure & { loadPeakRatio: number; meetsTarget: boolean };
}

/** Issue 14's load target: a compressed model loads within 1.5x the original's peak RSS. */
export const LOAD_TARGET_RATIO = 1.5;

const fileSize = (p: string): number => (existsSync(p) ? statSync(p).size : 0);

export function runLargeBench(o: { layers: number; width: number; runs: number; dir?: string; keep?: boolean; log?: (line: string) => void }): Record<string, unknown> {
  if (!existsSync(TIME)) throw new Error(`${TIME} (GNU time) is needed to measure each process's peak RSS`);
  const cli = process.argv[1]!;
  // --dir may name a folder to be made (the 3 GB source and the outputs go in a fresh folder inside it).
  if (o.dir !== undefined) mkdirSync(o.dir, { recursive: true });
  const dir = mkdtempSync(join(o.dir ?? tmpdir(), "ssvq-bench-large-"));
  const largestLayerBytes = o.width * o.width * 4;
  const targetPeakBytes = 2 * largestLayerBytes + 2 ** 30;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  /** Runs `ssvq ARGS` under GNU time: stdout, seconds and peak RSS (the largest of the process and the children it waited for). */
  const timed = (args: string[], what: string): { stdout: string; seconds: number; peakRssBytes: number } => {
    const timeFile = join(dir, "time.txt");
    const r = spawnSync(TIME, ["-o", timeFile, "-f", "%M %e", process.execPath, cli, ...args], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}): ${String(r.stderr).trim().split("\n").slice(-3).join(" / ")}`);
    const [kb, seconds] = readFileSync(timeFile, "utf8").trim().split("\n").at(-1)!.split(" ").map(Number);
    return { stdout: String(r.stdout), seconds: seconds!, peakRssBytes: kb! * 1024 };
  };
  const loadChild = (path: string): LoadMeasure =>
    JSON.parse(timed(["bench", "load", "--load-child", JSON.stringify({ measure: path, runs: o.runs })], `loading ${path} in onnxruntime`).stdout) as LoadMeasure;
  try {
    const stack = join(dir, "stack.onnx");
    const gen = timed(["bench", "load", "--load-child", JSON.stringify({ generate: stack, layers: o.layers, width: o.width })], "generating the stack");
    const source = { modelFileBytes: fileSize(stack), dataFileBytes: fileSize(`${stack}.data`), generateSeconds: gen.seconds };
    o.log?.(`source: ${o.layers} x ${o.width}x${o.width} float32, ${mib(source.modelFileBytes + source.dataFileBytes)} (data file ${mib(source.dataFileBytes)}); target peak ${mib(targetPeakBytes)}`);

    const step = (name: string, args: string[]): LargeStep & { stdout: string } => {
      const r = timed(args, name);
      o.log?.(`${name}: ${r.seconds.toFixed(1)} s, peak RSS ${mib(r.peakRssBytes)}${r.peakRssBytes <= targetPeakBytes ? "" : " (over the target)"}`);
      return { step: name, args, seconds: r.seconds, peakRssBytes: r.peakRssBytes, meetsTarget: r.peakRssBytes <= targetPeakBytes, stdout: r.stdout };
    };
    const { stdout: _inspected, ...inspect } = step("inspect", ["inspect", stack, "--json"]);

    const original = loadChild(stack);
    o.log?.(`original in onnxruntime: load peak ${mib(original.loadPeakBytes)}, ${original.loadSeconds.toFixed(1)} s`);
    const outputs: LargeOutput[] = [];
    const runs: [string, string[]][] = [
      ["ssvq k16 d4", ["--mode", "ssvq", "--k", "16", "--d", "4"]],
      ["int8", ["--mode", "int8"]],
      ["int8 dense", ["--mode", "int8", "--format", "dense"]],
    ];
    for (const [name, extra] of runs) {
      const out = join(dir, `stack.${name.replace(/\s+/g, "-")}.onnx`);
      const { stdout, ...s } = step(`compress ${name}`, ["compress", stack, "--out", out, "--force", "--no-finetune", "--json", ...extra]);
      const report = JSON.parse(stdout) as Report;
      const load = loadChild(out);
      const row: LargeOutput = {
        ...s,
        modelFileBytes: fileSize(out),
        dataFileBytes: fileSize(`${out}.data`),
        reportData: report.output?.data ?? null,
        load: { ...load, loadPeakRatio: load.loadPeakBytes / original.loadPeakBytes, meetsTarget: load.loadPeakBytes <= LOAD_TARGET_RATIO * original.loadPeakBytes },
      };
      outputs.push(row);
      o.log?.(
        `  output ${mib(row.modelFileBytes)} + data ${mib(row.dataFileBytes)}; onnxruntime load peak ${mib(load.loadPeakBytes)} (${row.load.loadPeakRatio.toFixed(2)}x the original's), ${load.loadSeconds.toFixed(1)} s; output sum ${load.outputSum.toPrecision(6)} (original ${original.outputSum.toPrecision(6)})`,
      );
      if (!o.keep) for (const p of [out, `${out}.data`, out.replace(/\.onnx$/, ".json")]) rmSync(p, { force: true });
    }
    return {
      bench: "large",
      layers: o.layers,
      width: o.width,
      source,
      largestLayerBytes,
      targetPeakBytes,
      inspect,
      original: { load: original },
      outputs,
      ...(o.keep ? { dir } : {}),
    };
  } finally {
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  }
}
