/**
 * Accelerator presets. Each parameter is stated with where it comes from; "assumption" marks a figure no
 * public source fixes (the VQ decoders are hypothetical hardware on every preset). `--config FILE.json`
 * overrides any of them.
 *
 * Mapping real NPUs onto a systolic array: the closed forms model an R x C array. For the Ethos-U
 * presets the array is output-stationary with R = the 2 x 2 output pixels of one Ethos-U micro-block and
 * C = the rest of the MACs (Vela, ethos-u-vela/ethosu/vela/architecture_features.py: MACs per core =
 * ofm_ublock 2x2x8 x dot-product width 8). With one output pixel (a batch-1 linear layer) only one of the
 * four rows works, which is also what the real engine does: 1/4 of its MACs on a vector-matrix product.
 */
import { InputError } from "../errors.js";
import type { AccelParams } from "./params.js";

const KiB = 1024;

export interface Preset {
  name: string;
  description: string;
  params: AccelParams;
}

/** The bits of the dense formats: by definition of the format. */
const STANDARD_BITS = { fp32: 32, fp16: 16, int8: 8, int4: 4 };

export const PRESETS: readonly Preset[] = [
  {
    name: "scalesim-32x32-ws",
    description: "SCALE-Sim v2's 32x32 weight-stationary array, 64 KB per SRAM, 10 words/cycle per buffer",
    params: {
      // ArrayHeight/ArrayWidth 32: SCALE-Sim v2 configs/scale.cfg and ../shared/fixtures/scalesim/*/scale.cfg.
      arrayRows: 32,
      arrayCols: 32,
      // Dataflow ws: the fixtures' ws32_calc and ws32_user_bw10 runs.
      dataflow: "ws",
      // SCALE-Sim counts cycles and has no clock: 1 GHz (nominal) makes 10 words/cycle = 10 GB/s.
      clockHz: 1e9,
      // IfmapSramSzkB/FilterSramSzkB/OfmapSramSzkB 64: SCALE-Sim sizes its buffers as kB x 1024 one-byte words.
      ifmapSramBytes: 64 * KiB,
      filterSramBytes: 64 * KiB,
      ofmapSramBytes: 64 * KiB,
      // Bandwidth 10 words/cycle (fixture ws32_user_bw10), one-byte words, at the nominal 1 GHz.
      dramBytesPerSecond: 10e9,
      // InterfaceBandwidth USER: each buffer reads or writes DRAM through its own port at that bandwidth.
      bus: "per-buffer",
      // Assumption (SCALE-Sim has no decoders): C/4 decoders keep up with the array for d >= 4.
      decoders: 8,
      codebookPorts: 1,
      // Assumption: FP16 codebook entries.
      codebookBits: 16,
      // SCALE-Sim moves one-byte words.
      bytesPerActivation: 1,
      bitsPerWeight: STANDARD_BITS,
      // SCALE-Sim moves no quantization scales.
      scaleBitsPerChannel: 0,
    },
  },
  {
    name: "ethos-u65-512",
    description: "Ethos-U65-class NPU: 512 MACs (4x128 output-stationary), 1 GHz, 12.8 GB/s LPDDR4, shared bus",
    params: {
      // 512 MACs: Arm Ethos-U65-512 (Vela Ethos_U65_512: 2 cores x 256 MACs, ofm micro-block 2x2x8,
      // dot-product width 8). As an array: 4 rows (the 2x2 output pixels) x 128 columns.
      arrayRows: 4,
      arrayCols: 128,
      // Ethos-U accumulates each output in place while the reduction streams through: output-stationary.
      dataflow: "os",
      // 1 GHz: Vela vela.ini System_Config.Ethos_U65_High_End core_clock=1e9.
      clockHz: 1e9,
      // 384 KiB on-chip SRAM: Vela vela.ini Memory_Mode.Dedicated_Sram_384KB (arena_cache_size=393216),
      // split evenly between inputs, weights and outputs (assumption).
      ifmapSramBytes: 128 * KiB,
      filterSramBytes: 128 * KiB,
      ofmapSramBytes: 128 * KiB,
      // 12.8 GB/s: one 32-bit LPDDR4-3200 channel (3200 MT/s x 4 bytes), as issue 6 specifies. Vela's own
      // Ethos_U65_High_End system assumes 3.75 GB/s DRAM; override with --config to see that case.
      dramBytesPerSecond: 12.8e9,
      // Weights and spilled activations share the one DRAM interface (Ethos-U65's AXI1 port).
      bus: "shared",
      // Assumption: 32 decoders = C/4, enough to feed 128 columns at d >= 4.
      decoders: 32,
      codebookPorts: 1,
      // Assumption: FP16 codebook entries.
      codebookBits: 16,
      // Ethos-U runs int8 activations.
      bytesPerActivation: 1,
      bitsPerWeight: STANDARD_BITS,
      // ONNX QDQ per-channel quantization: one FP32 scale per output channel.
      scaleBitsPerChannel: 32,
    },
  },
  {
    name: "ethos-u55-256",
    description: "Ethos-U55-class microcontroller NPU: 256 MACs (4x64 output-stationary), 500 MHz, 4 GB/s",
    params: {
      // 256 MACs: Arm Ethos-U55-256 (Vela Ethos_U55_256: 1 core, ofm micro-block 2x2x8, dot-product 8).
      arrayRows: 4,
      arrayCols: 64,
      dataflow: "os",
      // 500 MHz: Vela vela.ini System_Config.Ethos_U55_High_End_Embedded core_clock=500e6.
      clockHz: 500e6,
      // Assumption: 64 KiB per buffer of the microcontroller's SRAM (Ethos-U55's own SHRAM is 48 KiB).
      ifmapSramBytes: 64 * KiB,
      filterSramBytes: 64 * KiB,
      ofmapSramBytes: 64 * KiB,
      // 4 GB/s: Vela vela.ini Ethos_U55_High_End_Embedded ("SRAM (4 GB/s)": 64-bit AXI at 500 MHz).
      dramBytesPerSecond: 4e9,
      bus: "shared",
      // Assumption: C/4 decoders.
      decoders: 16,
      codebookPorts: 1,
      codebookBits: 16,
      bytesPerActivation: 1,
      bitsPerWeight: STANDARD_BITS,
      scaleBitsPerChannel: 32,
    },
  },
  {
    name: "nvdla-large",
    description: "NVDLA-large-class NPU: 2048 MACs (64x32 weight-stationary), 1 GHz, 25.6 GB/s, 512 KiB buffer",
    params: {
      // 2048 INT8 MACs: NVDLA nv_full (nvdla/hw README: 2048 8-bit MACs); hwarch "Large NVDLA
      // Implementation Example": Atomic-C 64 (reduction, the rows) x Atomic-K 16 FP16 kernels, doubled
      // for INT8 (32 columns).
      arrayRows: 64,
      arrayCols: 32,
      // NVDLA's CMAC holds a kernel atom while a stripe of input pixels streams through: weight-stationary.
      dataflow: "ws",
      // Assumption: 1 GHz.
      clockHz: 1e9,
      // Convolution buffer 32 KiB x 16 banks = 512 KiB (hwarch large example), split between data and
      // weights; outputs go through CACC's assembly buffer (assumption: 64 KiB).
      ifmapSramBytes: 256 * KiB,
      filterSramBytes: 256 * KiB,
      ofmapSramBytes: 64 * KiB,
      // Assumption: 25.6 GB/s, a 64-bit LPDDR4X-3200 interface.
      dramBytesPerSecond: 25.6e9,
      // NVDLA's primary memory interface (DBBIF); the optional second bus is not modelled.
      bus: "shared",
      // Assumption: 8 decoders = C/4.
      decoders: 8,
      codebookPorts: 1,
      codebookBits: 16,
      bytesPerActivation: 1,
      bitsPerWeight: STANDARD_BITS,
      scaleBitsPerChannel: 32,
    },
  },
];

export const DEFAULT_PRESET = "ethos-u65-512";
export const presetNames = (): string[] => PRESETS.map((p) => p.name);

/** A copy of a preset's parameters; an unknown name is an InputError listing the known ones. */
export function getPreset(name: string): Preset {
  const p = PRESETS.find((x) => x.name === name);
  if (!p) throw new InputError(`unknown preset ${JSON.stringify(name)}; known presets: ${presetNames().join(", ")}`);
  return { ...p, params: { ...p.params, bitsPerWeight: { ...p.params.bitsPerWeight } } };
}
