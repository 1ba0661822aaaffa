/** The accelerator simulator (DESIGN.md section 3): pure TypeScript, no dependencies. */
export { checkKD, vqWeightBits, weightEncoding, type LayerBits, type PerLayerBits, type WeightEncoding } from "./bits.js";
export { gemmComputeCycles, layerComputeCycles, type GemmLayer } from "./gemm.js";
export { constantValues, lowerModel, valuesToMeasure, type LoweredModel, type SkippedLayer } from "./lower.js";
export {
  applyOverrides,
  BUS_MODELS,
  DATAFLOWS,
  FORMATS,
  PARAM_KEYS,
  validateParams,
  type AccelParams,
  type BusModel,
  type Dataflow,
  type Format,
} from "./params.js";
export { DEFAULT_PRESET, getPreset, presetNames, PRESETS, type Preset } from "./presets.js";
export { parseIni, readScaleSimConfig, readScaleSimTopology, type ScaleSimConfig, type TopologyRead } from "./scalesim.js";
export {
  dramTraffic,
  roofline,
  simulate,
  simulateLayer,
  type Bound,
  type DramBytes,
  type FormatTotals,
  type LayerResult,
  type SimulateOptions,
  type SimulationResult,
} from "./simulate.js";
