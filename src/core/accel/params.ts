/**
 * The accelerator's parameters, their validation, and `--config FILE.json` overrides.
 *
 * The accelerator is an R x C systolic array (weight-, output- or input-stationary) with a clock, three
 * on-chip SRAM buffers (inputs, weights, outputs; each double-buffered, so half of each holds the tile in
 * use), one DRAM interface, and, for the VQ formats, weight decoders between the weight buffer and the
 * array (a codebook next to the array; one index yields d weights; SSVQ's sign is a negate that costs
 * nothing). See DESIGN.md section 3.
 */
import { InputError } from "../errors.js";

export const DATAFLOWS = ["ws", "os", "is"] as const;
export type Dataflow = (typeof DATAFLOWS)[number];

/**
 * How DRAM traffic turns into cycles.
 * - `shared`: one DRAM bus for all three buffers; cycles = all bytes / bandwidth (real devices).
 * - `per-buffer`: the input, weight and output buffers each have their own interface at the given
 *   bandwidth (SCALE-Sim's fixed-bandwidth "USER" mode); cycles = the slowest port.
 * - `calc`: SCALE-Sim's "CALC" mode: it computes the bandwidth each buffer needs to never stall, so DRAM
 *   never bounds a layer; bytes are still counted, cycles are 0.
 */
export const BUS_MODELS = ["shared", "per-buffer", "calc"] as const;
export type BusModel = (typeof BUS_MODELS)[number];

export const FORMATS = ["fp32", "fp16", "int8", "int4", "vq", "ssvq"] as const;
export type Format = (typeof FORMATS)[number];
/** Formats whose bits are a fixed width per weight. */
export const DENSE_FORMATS = ["fp32", "fp16", "int8", "int4"] as const;
export type DenseFormat = (typeof DENSE_FORMATS)[number];
export type VqFormat = "vq" | "ssvq";
export const isVqFormat = (f: Format): f is VqFormat => f === "vq" || f === "ssvq";

export interface AccelParams {
  /** Array rows (R) and columns (C): R x C multiply-accumulate units. */
  arrayRows: number;
  arrayCols: number;
  dataflow: Dataflow;
  /** Core clock in Hz: converts cycles to seconds and bandwidth to bytes per cycle. */
  clockHz: number;
  /** On-chip SRAM in bytes for the input feature map, the weights and the outputs (each double-buffered). */
  ifmapSramBytes: number;
  filterSramBytes: number;
  ofmapSramBytes: number;
  /** DRAM bandwidth in bytes per second: for `shared` the whole bus, for `per-buffer` each port. */
  dramBytesPerSecond: number;
  bus: BusModel;
  /** VQ/SSVQ weight decoders: each reads `codebookPorts` indices per cycle, each index yields d weights. */
  decoders: number;
  codebookPorts: number;
  /** Bits of one codebook entry (used when the bits come from (k, d) rather than from a compression). */
  codebookBits: number;
  /** Bytes of one activation (input and output feature maps) in every format: the datapath's width. */
  bytesPerActivation: number;
  /** Bits per weight of the dense formats. */
  bitsPerWeight: Record<DenseFormat, number>;
  /** int8/int4 only: bits of the quantization scale stored per output channel (0: none counted). */
  scaleBitsPerChannel: number;
}

type ScalarKey = Exclude<keyof AccelParams, "bitsPerWeight" | "dataflow" | "bus">;

interface KeySpec {
  kind: "int" | "positive" | "nonnegative";
  unit: string;
}

const NUMERIC: Record<ScalarKey, KeySpec> = {
  arrayRows: { kind: "int", unit: "rows" },
  arrayCols: { kind: "int", unit: "columns" },
  clockHz: { kind: "positive", unit: "Hz" },
  ifmapSramBytes: { kind: "int", unit: "bytes" },
  filterSramBytes: { kind: "int", unit: "bytes" },
  ofmapSramBytes: { kind: "int", unit: "bytes" },
  dramBytesPerSecond: { kind: "positive", unit: "bytes/s" },
  decoders: { kind: "int", unit: "decoders" },
  codebookPorts: { kind: "int", unit: "ports" },
  codebookBits: { kind: "positive", unit: "bits" },
  bytesPerActivation: { kind: "positive", unit: "bytes" },
  scaleBitsPerChannel: { kind: "nonnegative", unit: "bits" },
};

/** Every key a configuration may set, in the order they are printed. */
export const PARAM_KEYS: readonly (keyof AccelParams)[] = [
  "arrayRows",
  "arrayCols",
  "dataflow",
  "clockHz",
  "ifmapSramBytes",
  "filterSramBytes",
  "ofmapSramBytes",
  "dramBytesPerSecond",
  "bus",
  "decoders",
  "codebookPorts",
  "codebookBits",
  "bytesPerActivation",
  "bitsPerWeight",
  "scaleBitsPerChannel",
];

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));

function checkNumber(key: string, v: unknown, spec: KeySpec, where: string): number {
  const ok =
    typeof v === "number" &&
    Number.isFinite(v) &&
    (spec.kind === "nonnegative" ? v >= 0 : v > 0) &&
    (spec.kind !== "int" || Number.isSafeInteger(v));
  if (!ok) {
    const what =
      spec.kind === "int" ? "a positive integer" : spec.kind === "positive" ? "a positive number" : "a number >= 0";
    throw new InputError(`${where}${key} must be ${what} (${spec.unit}), not ${show(v)}`);
  }
  return v as number;
}

/** Throws an InputError naming the first invalid parameter; returns the parameters unchanged. */
export function validateParams(p: AccelParams, where = ""): AccelParams {
  for (const [key, spec] of Object.entries(NUMERIC) as [ScalarKey, KeySpec][]) checkNumber(key, p[key], spec, where);
  if (!(DATAFLOWS as readonly unknown[]).includes(p.dataflow))
    throw new InputError(`${where}dataflow must be one of ${DATAFLOWS.join(", ")}, not ${show(p.dataflow)}`);
  if (!(BUS_MODELS as readonly unknown[]).includes(p.bus))
    throw new InputError(`${where}bus must be one of ${BUS_MODELS.join(", ")}, not ${show(p.bus)}`);
  if (typeof p.bitsPerWeight !== "object" || p.bitsPerWeight === null)
    throw new InputError(`${where}bitsPerWeight must be an object with ${DENSE_FORMATS.join(", ")}`);
  for (const f of DENSE_FORMATS)
    checkNumber(`bitsPerWeight.${f}`, p.bitsPerWeight[f], { kind: "positive", unit: "bits" }, where);
  return p;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Applies a `--config FILE.json` object on top of `base`: any subset of the parameter keys; for
 * `bitsPerWeight`, any subset of its formats. Unknown keys and bad values are InputErrors naming `source`.
 */
export function applyOverrides(base: AccelParams, overrides: unknown, source = "the configuration"): AccelParams {
  const where = `${source}: `;
  if (!isPlainObject(overrides)) throw new InputError(`${source} must hold a JSON object of accelerator parameters`);
  const out: AccelParams = { ...base, bitsPerWeight: { ...base.bitsPerWeight } };
  for (const [key, value] of Object.entries(overrides)) {
    if (!(PARAM_KEYS as readonly string[]).includes(key))
      throw new InputError(`${where}unknown parameter ${JSON.stringify(key)}; known: ${PARAM_KEYS.join(", ")}`);
    if (key === "bitsPerWeight") {
      if (!isPlainObject(value))
        throw new InputError(`${where}bitsPerWeight must be an object such as {"int8": 8}, not ${show(value)}`);
      for (const [f, bits] of Object.entries(value)) {
        if (!(DENSE_FORMATS as readonly string[]).includes(f))
          throw new InputError(
            `${where}bitsPerWeight has unknown format ${JSON.stringify(f)}; known: ${DENSE_FORMATS.join(", ")} (vq and ssvq bits come from k and d or from a compression)`,
          );
        out.bitsPerWeight[f as DenseFormat] = bits as number;
      }
      continue;
    }
    (out as unknown as Record<string, unknown>)[key] = value;
  }
  return validateParams(out, where);
}

/** DRAM bytes one clock cycle moves (per port for `per-buffer`). */
export const bytesPerCycle = (p: AccelParams): number => p.dramBytesPerSecond / p.clockHz;
