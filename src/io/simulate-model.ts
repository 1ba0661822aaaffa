/**
 * Simulating a model file or a SCALE-Sim topology on an accelerator (src/core/accel): reading the
 * accelerator's parameters, measuring the model's shapes, and the per-layer bits of an actual compression.
 * Shared by `ssvq simulate` and the `simulate` stage of a compression job.
 */
import { readFileSync, statSync } from "node:fs";
import { basename } from "node:path";
import { InputError } from "../core/errors.js";
import { checkKD } from "../core/accel/bits.js";
import type { GemmLayer } from "../core/accel/gemm.js";
import { lowerModel } from "../core/accel/lower.js";
import { applyOverrides, FORMATS, type AccelParams, type Format } from "../core/accel/params.js";
import { DEFAULT_PRESET, getPreset } from "../core/accel/presets.js";
import { readScaleSimConfig, readScaleSimTopology } from "../core/accel/scalesim.js";
import { simulate, type SimulateOptions, type SimulationResult } from "../core/accel/simulate.js";
import type { Report } from "../core/report.js";
import { perLayerFromReport } from "../core/accel/report-latency.js";

export { perLayerFromReport };
import type { ModelProto } from "../core/onnx/proto.js";
import { loadModel } from "./model-file.js";
import { measureShapes, parseShapeSpecs } from "./shapes.js";

/** The simulation options as the command line spells them (--preset, --cfg, --config, --shape, --formats, --k, --d). */
export type SimulateValues = Readonly<Record<string, unknown>>;

export const DEFAULT_FORMATS: readonly Format[] = ["fp16", "int8", "int4", "vq", "ssvq"];
export const SCALESIM_PRESET = "scalesim-32x32-ws";

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
export function resolveParams(values: SimulateValues, topology: boolean): { preset: string; params: AccelParams; warnings: string[] } {
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
  /** The GEMM layers simulated (shapes measured once; the report keeps them to re-simulate on other presets). */
  gemms: GemmLayer[];
  warnings: string[];
  k: number;
  d: number;
}

/** What a caller can add to the command-line options: the per-layer figures of an actual compression. */
export interface SimulateExtras {
  perLayer?: SimulateOptions["perLayer"];
  /** Take dynamic input dimensions not given by --shape as 1 (with a warning) instead of refusing. */
  dynamicAsOne?: boolean;
}

/** Everything `ssvq simulate` does short of printing. */
export async function runSimulate(values: SimulateValues, path: string, extras: SimulateExtras = {}): Promise<SimulateRun> {
  const topology = /\.csv$/i.test(path);
  const shapes = (values["shape"] as string[] | undefined) ?? [];
  if (topology && shapes.length) throw new InputError("--shape applies to ONNX models; a topology CSV gives its own sizes");
  const { preset, params, warnings } = resolveParams(values, topology);
  const formats = parseFormats((values["formats"] as string | undefined) ?? DEFAULT_FORMATS.join(","));
  const k = parseCount(values["k"], "k", 16);
  const d = parseCount(values["d"], "d", 8);
  checkKD(k, d, "--");
  let layers: GemmLayer[];
  let perLayer = extras.perLayer;
  if (topology) {
    const t = readScaleSimTopology(readText(path, "a SCALE-Sim topology CSV"), path);
    warnings.push(...t.warnings);
    layers = t.layers;
  } else {
    const loaded = loadModel(path);
    perLayer ??= perLayerFromMetadata(loaded.model);
    const measured = await measureShapes(loaded.model, parseShapeSpecs(shapes), { readExternal: loaded.readExternal, modelDir: loaded.dir, dynamicAsOne: extras.dynamicAsOne === true });
    warnings.push(...measured.assumed);
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
  const result = simulate(layers, params, { formats, k, d, preset, perLayer });
  return { result, gemms: layers, warnings, k, d };
}

/** `ssvq simulate --json` and the report's `simulation`; `gemms` are the shapes simulated, for re-simulating. */
export function simulationJson(r: SimulationResult, gemms?: readonly GemmLayer[]): object {
  return { preset: r.preset, config: r.config, layers: r.layers, totals: r.totals, speedup: r.speedup, ...(gemms ? { gemms } : {}) };
}


/** The per-layer bits a `.ssvq.onnx` records in its metadata (`ssvq.config`, `ssvq.layers`), if any. */
export function perLayerFromMetadata(model: ModelProto): SimulateOptions["perLayer"] {
  const meta = new Map(model.metadataProps.map((p) => [p.key, p.value]));
  const config = meta.get("ssvq.config");
  const layers = meta.get("ssvq.layers");
  if (!config || !layers) return undefined;
  try {
    const c = JSON.parse(config) as Report["config"];
    const ls = JSON.parse(layers) as { name: string; k?: number; d?: number; bitsPerWeight: number }[];
    return perLayerFromReport({ config: c, layers: ls.map((l) => ({ name: l.name, k: l.k, d: l.d, bits: { bitsPerWeight: l.bitsPerWeight } })) as Report["layers"] });
  } catch {
    throw new InputError("the model's ssvq.* metadata is damaged: it cannot tell the compressed layers' bits");
  }
}

/** Reads a compression report (`<name>.ssvq.json`). */
export function readReport(path: string): Report {
  let r: Report;
  try {
    r = JSON.parse(readText(path, "a compression report")) as Report;
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof r !== "object" || r === null || !Array.isArray(r.layers) || !r.config)
    throw new InputError(`${path} is not an ssvq compression report`);
  return r;
}
