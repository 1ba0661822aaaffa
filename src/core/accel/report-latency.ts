/**
 * A compression's simulated latency on any accelerator preset, from its report alone: the GEMM shapes a
 * simulation measured once (`gemms` of its JSON) and the per-layer bits of the compression, so that the
 * panel can switch presets without running the model or the compression again. `ssvq simulate --report`
 * uses the same figures, so both print the same numbers.
 */
import type { Report } from "../report.js";
import type { PerLayerBits } from "./bits.js";
import type { GemmLayer } from "./gemm.js";
import type { Format, VqFormat } from "./params.js";
import { getPreset } from "./presets.js";
import { simulate, type SimulateOptions, type SimulationResult } from "./simulate.js";

/** The formats the latency view compares. */
export const LATENCY_FORMATS: readonly Format[] = ["fp16", "int8", "int4", "vq", "ssvq"];

type BitsSource = Pick<Report, "config" | "layers">;

function layerBits(r: BitsSource): PerLayerBits {
  return Object.fromEntries(r.layers.filter((l) => l.k !== undefined && l.d !== undefined).map((l) => [l.name, { bitsPerWeight: l.bits.bitsPerWeight, k: l.k!, d: l.d! }]));
}

/**
 * Per-layer bits of an actual SSVQ or VQ compression, from its report: its own mode's, and VQ's from
 * `comparison.vq` when the job compared the two.
 */
export function perLayerFromReport(r: BitsSource & Partial<Pick<Report, "comparison">>): SimulateOptions["perLayer"] {
  const out: Partial<Record<VqFormat, PerLayerBits>> = {};
  const mode = r.config.mode;
  if (mode === "ssvq" || mode === "vq") out[mode] = layerBits(r);
  const vq = r.comparison?.vq;
  if (vq && out.vq === undefined) out.vq = layerBits(vq);
  return Object.keys(out).length ? out : undefined;
}

/**
 * (k, d) for the VQ and SSVQ formats of layers without per-layer figures: the compression's own (k, d)
 * for an SSVQ or VQ report, the simulator's default (16, 8) otherwise.
 */
export function reportKD(r: BitsSource): { k: number; d: number } {
  const c = r.config;
  return (c.mode === "ssvq" || c.mode === "vq") && c.k >= 2 && c.d >= 1 ? { k: c.k, d: c.d } : { k: 16, d: 8 };
}

/** The report's compression simulated on a preset, in every latency format, over `gemms`. */
export function simulateReport(r: BitsSource & Partial<Pick<Report, "comparison">>, gemms: readonly GemmLayer[], preset: string, formats: readonly Format[] = LATENCY_FORMATS): SimulationResult {
  const { k, d } = reportKD(r);
  const perLayer = perLayerFromReport(r);
  return simulate(gemms, getPreset(preset).params, { formats, k, d, preset, ...(perLayer ? { perLayer } : {}) });
}

/** The GEMM shapes a simulation JSON carries (`gemms`), or undefined for one written before they were kept. */
export function gemmsOf(simulation: unknown): GemmLayer[] | undefined {
  const g = (simulation as { gemms?: unknown } | undefined)?.gemms;
  return Array.isArray(g) ? (g as GemmLayer[]) : undefined;
}
