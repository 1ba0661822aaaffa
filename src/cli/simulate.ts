/**
 * `ssvq simulate MODEL|TOPOLOGY.csv`: per-layer latency of a model on an edge accelerator in FP16, INT8,
 * INT4, VQ and SSVQ (src/core/accel). An ONNX model is lowered to GEMMs with shapes measured by running it
 * once (src/io/shapes.ts); a SCALE-Sim topology CSV is read as SCALE-Sim reads it, with its `.cfg`.
 */
import { readFileSync, statSync } from "node:fs";
import { basename } from "node:path";
import { InputError } from "../core/errors.js";
import { checkKD } from "../core/accel/bits.js";
import type { GemmLayer } from "../core/accel/gemm.js";
import { lowerModel } from "../core/accel/lower.js";
import { applyOverrides, FORMATS, type AccelParams, type Format } from "../core/accel/params.js";
import { DEFAULT_PRESET, getPreset, presetNames } from "../core/accel/presets.js";
import { readScaleSimConfig, readScaleSimTopology } from "../core/accel/scalesim.js";
import { simulate, type Bound, type SimulateOptions, type SimulationResult } from "../core/accel/simulate.js";
import { loadModel } from "../io/model-file.js";
import { measureShapes, parseShapeSpecs } from "../io/shapes.js";
import type { CliContext, Command, OptionValues } from "./command.js";
import { int, table } from "./format.js";

export const DEFAULT_FORMATS: readonly Format[] = ["fp16", "int8", "int4", "vq", "ssvq"];
const SCALESIM_PRESET = "scalesim-32x32-ws";

function readText(path: string, what: string): string {
  try {
    if (statSync(path).isDirectory()) throw new InputError(`${path} is a folder, not ${what}`);
    return readFileSync(path, "utf8");
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`${path}: no such file (${what})`);
  }
}

export function parseFormats(text: string): Format[] {
  const list = text
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== "");
  if (list.length === 0) throw new InputError(`--formats needs at least one of ${FORMATS.join(", ")}`);
  for (const f of list)
    if (!(FORMATS as readonly string[]).includes(f))
      throw new InputError(`--formats: unknown format ${JSON.stringify(f)}; known: ${FORMATS.join(", ")}`);
  return [...new Set(list)] as Format[];
}

function parseCount(v: unknown, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const t = String(v).trim();
  if (!/^\d+$/.test(t)) throw new InputError(`--${name} must be a positive integer, not ${JSON.stringify(v)}`);
  return Number(t);
}

/** The accelerator: a `.cfg` or a preset, then `--config` overrides. */
export function resolveParams(values: OptionValues, topology: boolean): { preset: string; params: AccelParams; warnings: string[] } {
  const cfg = values["cfg"] as string | undefined;
  const presetName = values["preset"] as string | undefined;
  const warnings: string[] = [];
  if (cfg !== undefined && presetName !== undefined)
    throw new InputError("give either --cfg (a SCALE-Sim configuration) or --preset, not both");
  let preset: string;
  let params: AccelParams;
  if (cfg !== undefined) {
    const c = readScaleSimConfig(readText(cfg, "a SCALE-Sim .cfg file"), cfg);
    warnings.push(...c.warnings);
    params = c.params;
    preset = `scalesim-cfg:${c.runName || basename(cfg)}`;
  } else {
    preset = presetName ?? (topology ? SCALESIM_PRESET : DEFAULT_PRESET);
    params = getPreset(preset).params;
  }
  const config = values["config"] as string | undefined;
  if (config !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(readText(config, "a JSON configuration"));
    } catch (e) {
      if (e instanceof InputError) throw e;
      throw new InputError(`${config} is not valid JSON: ${(e as Error).message}`);
    }
    params = applyOverrides(params, json, config);
    preset = `${preset}+${basename(config)}`;
  }
  return { preset, params, warnings };
}

export interface SimulateRun {
  result: SimulationResult;
  warnings: string[];
  k: number;
  d: number;
}

/** What a caller can add to the command-line options: the per-layer figures of an actual compression. */
export interface SimulateExtras {
  perLayer?: SimulateOptions["perLayer"];
}

/** Everything `ssvq simulate` does short of printing. */
export async function runSimulate(values: OptionValues, path: string, extras: SimulateExtras = {}): Promise<SimulateRun> {
  const topology = /\.csv$/i.test(path);
  const shapes = (values["shape"] as string[] | undefined) ?? [];
  if (topology && shapes.length) throw new InputError("--shape applies to ONNX models; a topology CSV gives its own sizes");
  const { preset, params, warnings } = resolveParams(values, topology);
  const formats = parseFormats((values["formats"] as string | undefined) ?? DEFAULT_FORMATS.join(","));
  const k = parseCount(values["k"], "k", 16);
  const d = parseCount(values["d"], "d", 8);
  checkKD(k, d, "--");
  let layers: GemmLayer[];
  if (topology) {
    const t = readScaleSimTopology(readText(path, "a SCALE-Sim topology CSV"), path);
    warnings.push(...t.warnings);
    layers = t.layers;
  } else {
    const loaded = loadModel(path);
    const measured = await measureShapes(loaded.model, parseShapeSpecs(shapes), { readExternal: loaded.readExternal });
    const lowered = lowerModel(loaded.model, measured.dims);
    for (const s of lowered.skipped) warnings.push(`layer ${s.name} (${s.opType}) not simulated: ${s.reason}`);
    layers = lowered.layers;
    if (layers.length === 0) {
      const inBodies = lowered.skipped.filter((s) => s.reason.startsWith("inside the subgraph")).length;
      throw new InputError(
        `${path} has no Conv, ConvTranspose, Gemm or MatMul layer to simulate in its main graph` +
          (inBodies ? ` (${inBodies} are inside If/Loop/Scan bodies, whose shapes cannot be measured)` : ""),
      );
    }
  }
  const result = simulate(layers, params, { formats, k, d, preset, perLayer: extras.perLayer });
  return { result, warnings, k, d };
}

const BOUND_LETTER: Record<Bound, string> = { compute: "C", weights: "W", activations: "A", decode: "D" };

function formatSeconds(s: number): string {
  if (s >= 1) return `${s.toFixed(3)} s`;
  if (s >= 1e-3) return `${(s * 1e3).toFixed(3)} ms`;
  return `${(s * 1e6).toFixed(2)} µs`;
}

const formatBandwidth = (b: number): string => (b >= 1e9 ? `${+(b / 1e9).toFixed(3)} GB/s` : `${+(b / 1e6).toFixed(3)} MB/s`);
const kib = (b: number): string => (b % 1024 === 0 ? `${b / 1024}` : `${(b / 1024).toFixed(1)}`);

export function renderSimulation(run: SimulateRun): string {
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
export function simulationJson(r: SimulationResult): object {
  return { preset: r.preset, config: r.config, layers: r.layers, totals: r.totals, speedup: r.speedup };
}

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
    json: { type: "boolean" },
  },
  positionals: [1, 1],
  async run(values, [path], ctx: CliContext) {
    const run = await runSimulate(values, path!);
    for (const w of run.warnings) ctx.err(`ssvq simulate: ${w}`);
    ctx.out(values["json"] ? JSON.stringify(simulationJson(run.result), null, 2) : renderSimulation(run));
    return 0;
  },
};
