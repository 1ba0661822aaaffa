/**
 * `ssvq simulate MODEL|TOPOLOGY.csv`: per-layer latency of a model on an edge accelerator in FP16, INT8,
 * INT4, VQ and SSVQ (src/core/accel). An ONNX model is lowered to GEMMs with shapes measured by running it
 * once (src/io/shapes.ts); a SCALE-Sim topology CSV is read as SCALE-Sim reads it, with its `.cfg`.
 */
import { FORMATS, type Format } from "../core/accel/params.js";
import { DEFAULT_PRESET, presetNames } from "../core/accel/presets.js";
import type { Bound } from "../core/accel/simulate.js";
import { resolve } from "node:path";
import { DEFAULT_FORMATS, readReport, SCALESIM_PRESET } from "../io/simulate-model.js";
import type { SimulationJson } from "../job/protocol.js";
import { runWorkerJob } from "./run-job.js";
import type { CliContext, Command } from "./command.js";
import { int, table } from "./format.js";

const BOUND_LETTER: Record<Bound, string> = { compute: "C", weights: "W", activations: "A", decode: "D" };

function formatSeconds(s: number): string {
  if (s >= 1) return `${s.toFixed(3)} s`;
  if (s >= 1e-3) return `${(s * 1e3).toFixed(3)} ms`;
  return `${(s * 1e6).toFixed(2)} µs`;
}

const formatBandwidth = (b: number): string => (b >= 1e9 ? `${+(b / 1e9).toFixed(3)} GB/s` : `${+(b / 1e6).toFixed(3)} MB/s`);
const kib = (b: number): string => (b % 1024 === 0 ? `${b / 1024}` : `${(b / 1024).toFixed(1)}`);

export function renderSimulation(run: { result: SimulationJson; k: number; d: number }): string {
  const { result: r, k, d } = run;
  const p = r.config;
  const formats = [...new Set(r.layers.map((l) => l.format))];
  const bus = p.bus === "calc" ? "bandwidth computed to never stall (SCALE-Sim CALC)" : `${formatBandwidth(p.dramBytesPerSecond)} ${p.bus === "shared" ? "shared bus" : "per buffer"}`;
  const lines = [
    `accelerator  ${r.preset}`,
    `             ${p.arrayRows} x ${p.arrayCols} array, ${p.dataflow}, ${+(p.clockHz / 1e6).toFixed(3)} MHz, SRAM ${kib(p.ifmapSramBytes)}/${kib(p.filterSramBytes)}/${kib(p.ofmapSramBytes)} KiB (in/weights/out), DRAM ${bus}`,
    `formats      ${formats.join(", ")}${formats.some((f) => f === "vq" || f === "ssvq") ? ` (vq/ssvq: k=${k}, d=${d}, ${p.decoders} decoders)` : ""}`,
    "",
  ];
  const byLayer = new Map<string, typeof r.layers>();
  for (const l of r.layers) {
    const key = `${l.name}\u0000${l.opType}`;
    byLayer.set(key, [...(byLayer.get(key) ?? []), l]);
  }
  const vqf = formats.includes("ssvq") ? "ssvq" : formats.includes("vq") ? "vq" : undefined;
  const ratioCol = vqf && formats.includes("int8") ? `${vqf}/int8` : undefined;
  const headers = ["layer", "op", "M", "K", "N", "groups", ...formats.map((f) => `${f} cycles`), ...(ratioCol ? [ratioCol] : [])];
  const rows = [...byLayer.values()].map((ls) => {
    const l0 = ls[0]!;
    const cell = (f: Format) => {
      const x = ls.find((l) => l.format === f)!;
      return `${int(x.latencyCycles)} ${BOUND_LETTER[x.bound]}`;
    };
    const ratio = ratioCol
      ? (ls.find((l) => l.format === "int8")!.latencyCycles / ls.find((l) => l.format === vqf)!.latencyCycles).toFixed(2) + "x"
      : undefined;
    return [l0.name, l0.opType, int(l0.M), int(l0.K), int(l0.N), l0.groups, ...formats.map(cell), ...(ratio ? [ratio] : [])];
  });
  lines.push(table(headers, rows, headers.map((_, i) => i >= 2)));
  lines.push("bound: C compute, W weights (DRAM), A activations (DRAM), D VQ decoders", "");
  const tHeaders = ["format", "latency cycles", "time", "compute", "decode", "DRAM weights", "DRAM in", "DRAM out", "vs int8", "vs fp16"];
  const tRows = formats.map((f) => {
    const t = r.totals[f]!;
    return [
      f,
      int(t.latencyCycles),
      formatSeconds(t.seconds),
      int(t.computeCycles),
      int(t.decodeCycles),
      int(t.dramBytes.weights),
      int(t.dramBytes.ifmap),
      int(t.dramBytes.ofmap),
      `${r.speedup.vsInt8[f]!.toFixed(2)}x`,
      `${r.speedup.vsFp16[f]!.toFixed(2)}x`,
    ];
  });
  lines.push(`Totals over ${byLayer.size} GEMM layers (element-wise, normalisation and softmax layers are not modelled):`);
  lines.push(table(tHeaders, tRows, tHeaders.map((_, i) => i >= 1)));
  return lines.join("\n");
}

/** The `--json` document: the shape issue 6 gives (plus groups, opType, bits and the latency terms per layer). */
export const simulateCommand: Command = {
  name: "simulate",
  summary: "simulate per-layer latency on an edge accelerator in FP16, INT8, INT4, VQ and SSVQ",
  usage:
    "ssvq simulate MODEL|TOPOLOGY.csv [--cfg FILE.cfg] [--preset NAME] [--config FILE.json] [--shape NAME=DIMS]... [--formats LIST] [--k K --d D] [--json]",
  help: [
    "Lowers each Conv, ConvTranspose, Gemm and MatMul of an ONNX model (or each row of a SCALE-Sim v2",
    "topology CSV) to GEMMs and models their latency on a systolic-array accelerator: compute cycles",
    "(SCALE-Sim's closed forms), DRAM bytes by operand, VQ decoders, latency = prologue + max(compute,",
    "DRAM, decode), and what bounds each layer. Prints a per-layer table and totals with the speedup of",
    "each format over INT8 and FP16.",
    "",
    "Options:",
    `  --preset NAME      accelerator: ${presetNames().join(", ")}`,
    `                     (default ${DEFAULT_PRESET}; ${SCALESIM_PRESET} for a topology CSV)`,
    "  --cfg FILE.cfg     a SCALE-Sim v2 configuration instead of a preset",
    "  --config FILE.json override parameters, e.g. {\"dramBytesPerSecond\": 6.4e9, \"dataflow\": \"ws\"}",
    "  --shape NAME=DIMS  shape of a model input with dynamic dimensions, e.g. input=1,3,224,224 (repeatable)",
    `  --formats LIST     comma-separated, of ${FORMATS.join(", ")} (default ${DEFAULT_FORMATS.join(",")})`,
    "  --k K --d D        VQ/SSVQ codebook size and sub-vector length (default 16 and 8: 1.5 bits/weight SSVQ)",
    "  --report FILE      take the VQ/SSVQ bits of each layer from a compression report (<name>.ssvq.json),",
    "                     VQ's from its --compare vq run, and (k, d) for the rest from the report;",
    "                     a .ssvq.onnx model gives them by itself (its ssvq.* metadata)",
    "  --json             print the results as JSON",
  ].join("\n"),
  options: {
    cfg: { type: "string" },
    preset: { type: "string" },
    config: { type: "string" },
    shape: { type: "string", multiple: true },
    formats: { type: "string" },
    k: { type: "string" },
    d: { type: "string" },
    report: { type: "string" },
    json: { type: "boolean" },
  },
  positionals: [1, 1],
  async run(values, [path], ctx: CliContext) {
    const report = typeof values["report"] === "string" ? readReport(values["report"]) : undefined;
    // onnxruntime measures the shapes in the background worker: a model that crashes it cannot take the CLI down.
    const options: Record<string, string | string[]> = {};
    for (const k of ["cfg", "preset", "config", "formats", "k", "d"] as const)
      if (typeof values[k] === "string") options[k] = k === "cfg" || k === "config" ? resolve(values[k] as string) : (values[k] as string);
    if (Array.isArray(values["shape"])) options["shape"] = values["shape"] as string[];
    const outcome = await runWorkerJob(
      { kind: "simulate", input: resolve(path!), options, ...(report ? { report: { config: report.config, layers: report.layers, ...(report.comparison ? { comparison: report.comparison } : {}) } } : {}) },
      { ...ctx, errIsTTY: false, err: () => {} },
    );
    if (outcome.type !== "simulation") throw new Error(`a simulate job ended with ${outcome.type}`);
    for (const w of outcome.warnings) ctx.err(`ssvq simulate: ${w}`);
    ctx.out(values["json"] ? JSON.stringify(outcome.simulation, null, 2) : renderSimulation({ result: outcome.simulation, k: outcome.k, d: outcome.d }));
    return 0;
  },
};
