/**
 * SCALE-Sim v2 inputs: its topology CSV (convolution or GEMM "M, N, K" form) and its `.cfg`, read the way
 * SCALE-Sim v2 reads them (scalesim/topology_utils.py, scalesim/scale_config.py), so that its figures can
 * be matched to the cycle.
 *
 * What matches SCALE-Sim and what is modelled (checked in test/accel.test.ts against
 * test/fixtures/scalesim, SCALE-Sim v2 runs on a 32x32 array):
 * - Exact: compute cycles. Ours are the closed forms of gemm.ts on SCALE-Sim's own layer dimensions
 *   (output size ceil((H - F + S) / S), no padding); they equal its COMPUTE_REPORT "Total Cycles" for the
 *   bandwidth-computed (CALC) runs of all three dataflows, where no stall is added.
 * - Exact: weight DRAM reads of the weight-stationary run. Every weight crosses the bus once, K x N words.
 * - Modelled, not held to SCALE-Sim: input and output DRAM traffic. Its counts there are artifacts of how
 *   it simulates, not of the hardware it describes:
 *   - WS writes the partial sums to DRAM once per fold of the reduction (ofmap writes = M x N x ceil(K/R)),
 *     where an accelerator keeps them in the output buffer;
 *   - its input reads count the im2col-expanded operand re-read per column fold in one bandwidth mode and
 *     something else in the other (the CALC and USER runs of the same layer disagree: 1,328,198 vs
 *     3,571,930 words for ResNet-18's first layer), where our inputs are the tensor read once when it fits;
 *   - with a fixed bandwidth it re-fetches weights larger than half the filter SRAM (65,540 filter reads
 *     for a 36,864-weight layer).
 *   So for the fixed-bandwidth run only the roofline is held to it: our per-buffer roofline over SCALE-Sim's
 *   own traffic counts lands within 3% of its total cycles (about 1% in fact).
 */
import { InputError } from "../errors.js";
import type { GemmLayer } from "./gemm.js";
import { DATAFLOWS, type AccelParams, type Dataflow } from "./params.js";
import { getPreset } from "./presets.js";

export interface TopologyRead {
  layers: GemmLayer[];
  /** The CSV's form: convolution rows, or SCALE-Sim's GEMM "M, N, K" rows (told apart by the header). */
  kind: "conv" | "gemm";
  warnings: string[];
}

const parseIntStrict = (text: string, what: string, where: string): number => {
  const t = text.trim();
  // Python's int() accepts an optional sign and underscores between digits; SCALE-Sim needs positive values.
  if (!/^[+-]?\d+(_\d+)*$/.test(t)) throw new InputError(`${where}: ${what} is ${JSON.stringify(t)}, not an integer`);
  const v = Number(t.replace(/_/g, ""));
  if (!Number.isSafeInteger(v) || v <= 0) throw new InputError(`${where}: ${what} must be a positive integer, not ${t}`);
  return v;
};

/**
 * Reads a SCALE-Sim topology CSV. As SCALE-Sim does: the first line is a header and is skipped, blank
 * lines are skipped, every row is split on commas and its last field dropped (rows end with a comma),
 * a row of 8 values uses the one stride for both directions, and a layer whose name contains "DP" is a
 * depthwise convolution run channel by channel (here: one layer of that many groups). The GEMM form
 * ("Layer name, M, N, K,") is recognised by its header; SCALE-Sim reads it as a 1 x K filter over an
 * M x K input.
 */
export function readScaleSimTopology(text: string, fileName = "the topology"): TopologyRead {
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? "").split(",").map((s) => s.trim().toLowerCase());
  const kind: TopologyRead["kind"] = header[1] === "m" && header[2] === "n" && header[3] === "k" ? "gemm" : "conv";
  const warnings: string[] = [];
  const layers: GemmLayer[] = [];
  for (let i = 1; i < lines.length; i++) {
    const row = lines[i]!.trim();
    if (row === "") continue;
    const where = `${fileName} line ${i + 1}`;
    const fields = row.split(",");
    const last = fields.pop()!;
    if (last.trim() !== "")
      warnings.push(
        `${where} does not end with a comma: SCALE-Sim drops the last field of every row, so its value ${JSON.stringify(last.trim())} is ignored`,
      );
    const name = (fields[0] ?? "").trim();
    const values = fields.slice(1);
    if (kind === "gemm") {
      if (values.length < 3) throw new InputError(`${where}: a GEMM row needs a name, M, N and K followed by a comma`);
      const [M, N, K] = [
        parseIntStrict(values[0]!, "M", where),
        parseIntStrict(values[1]!, "N", where),
        parseIntStrict(values[2]!, "K", where),
      ];
      layers.push({ name, opType: "scalesim-gemm", M, K, N, groups: 1, constantWeights: true, ifmapElements: M * K, ofmapElements: M * N });
      continue;
    }
    if (values.length < 7)
      throw new InputError(
        `${where}: a convolution row needs a name, IFMAP height and width, filter height and width, channels, filters and stride, followed by a comma (found ${values.length} values)`,
      );
    const names = ["IFMAP height", "IFMAP width", "filter height", "filter width", "channels", "filters", "stride height", "stride width"];
    const v = values.slice(0, 8).map((x, j) => parseIntStrict(x, names[j]!, where));
    const [ih, iw, fh, fw, ch, nf, sh] = v as [number, number, number, number, number, number, number];
    const sw = v[7] ?? sh;
    if (fh > ih) throw new InputError(`${where}: the filter height ${fh} is larger than the IFMAP height ${ih}`);
    if (fw > iw) throw new InputError(`${where}: the filter width ${fw} is larger than the IFMAP width ${iw}`);
    // SCALE-Sim's output size: ceil((H - F + S) / S), no padding (one more than ONNX when S does not divide H - F).
    const oh = Math.ceil((ih - fh + sh) / sh);
    const ow = Math.ceil((iw - fw + sw) / sw);
    const depthwise = name.includes("DP");
    const groups = depthwise ? ch : 1;
    const perGroupCh = depthwise ? 1 : ch;
    layers.push({
      name,
      opType: depthwise ? "scalesim-dw" : "scalesim-conv",
      M: oh * ow,
      K: fh * fw * perGroupCh,
      N: nf,
      groups,
      constantWeights: true,
      ifmapElements: ih * iw * ch,
      ofmapElements: oh * ow * nf * groups,
    });
  }
  if (layers.length === 0) throw new InputError(`${fileName} holds no layers (its first line is the header)`);
  return { layers, kind, warnings };
}

/** An INI file as Python's configparser reads it: section -> lower-cased key -> value. */
export function parseIni(text: string, fileName = "the configuration"): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  let lastKey: string | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const where = `${fileName} line ${i + 1}`;
    if (/^\s*([#;]|$)/.test(raw)) {
      lastKey = undefined;
      return;
    }
    if (/^\s/.test(raw) && current && lastKey !== undefined) {
      // A continuation line: configparser appends it to the previous value.
      current.set(lastKey, `${current.get(lastKey)}\n${raw.trim()}`);
      return;
    }
    const sec = /^\s*\[([^\]]+)\]\s*$/.exec(raw);
    if (sec) {
      const name = sec[1]!;
      if (sections.has(name)) throw new InputError(`${where}: section [${name}] appears twice`);
      current = new Map();
      sections.set(name, current);
      lastKey = undefined;
      return;
    }
    const kv = /^\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$/.exec(raw);
    if (!kv) throw new InputError(`${where}: expected "key = value" or "[section]", found ${JSON.stringify(raw.trim())}`);
    if (!current) throw new InputError(`${where}: ${JSON.stringify(kv[1])} comes before any [section]`);
    const key = kv[1]!.toLowerCase();
    if (current.has(key)) throw new InputError(`${where}: ${kv[1]} is set twice in its section`);
    current.set(key, kv[2]!);
    lastKey = key;
  });
  return sections;
}

export interface ScaleSimConfig {
  runName: string;
  /** CALC: SCALE-Sim computes the bandwidth that never stalls; USER: the given words/cycle per buffer. */
  bandwidthMode: "CALC" | "USER";
  params: AccelParams;
  warnings: string[];
}

/**
 * Reads a SCALE-Sim v2 `.cfg`. Keys are case-insensitive, `=` or `:` separate them from values, as in
 * configparser. Array size, SRAM sizes (kB of one-byte words), dataflow, bandwidth mode and (in USER mode)
 * Bandwidth in words per cycle are taken; offsets and SRAM layout options do not affect the figures we
 * compute. Other parameters (the clock, which SCALE-Sim does not have, and decoders) come from the
 * `scalesim-32x32-ws` preset.
 */
export function readScaleSimConfig(text: string, fileName = "the configuration"): ScaleSimConfig {
  const ini = parseIni(text, fileName);
  const get = (section: string, key: string, required = true): string | undefined => {
    const v = ini.get(section)?.get(key.toLowerCase());
    if (v === undefined && required) throw new InputError(`${fileName} has no ${key} in its [${section}] section`);
    return v;
  };
  const int = (section: string, key: string): number => parseIntStrict(get(section, key)!, key, fileName);
  const warnings: string[] = [];
  const runName = get("general", "run_name", false) ?? "";
  const mode = get("run_presets", "InterfaceBandwidth")!.trim();
  if (mode !== "USER" && mode !== "CALC")
    throw new InputError(`${fileName}: InterfaceBandwidth must be USER or CALC, not ${JSON.stringify(mode)}`);
  const arch = "architecture_presets";
  const dataflow = get(arch, "Dataflow")!.trim();
  if (!(DATAFLOWS as readonly string[]).includes(dataflow))
    throw new InputError(`${fileName}: Dataflow must be one of ${DATAFLOWS.join(", ")}, not ${JSON.stringify(dataflow)}`);
  const banksText = get(arch, "MemoryBanks", false);
  const banks = banksText === undefined ? 1 : parseIntStrict(banksText, "MemoryBanks", fileName);
  if (banks !== 1) throw new InputError(`${fileName}: MemoryBanks ${banks}: multi-bank memory maps are not supported (use 1)`);
  const sparsity = get("sparsity", "SparsitySupport", false);
  if (sparsity !== undefined && sparsity.trim().toLowerCase() === "true")
    warnings.push(`${fileName} enables sparsity, which this simulator does not model; layers are simulated dense`);
  const base = getPreset("scalesim-32x32-ws").params;
  const params: AccelParams = {
    ...base,
    arrayRows: int(arch, "ArrayHeight"),
    arrayCols: int(arch, "ArrayWidth"),
    dataflow: dataflow as Dataflow,
    ifmapSramBytes: int(arch, "IfmapSramSzkB") * 1024,
    filterSramBytes: int(arch, "FilterSramSzkB") * 1024,
    ofmapSramBytes: int(arch, "OfmapSramSzkB") * 1024,
    bus: mode === "USER" ? "per-buffer" : "calc",
  };
  const bw = get(arch, "Bandwidth", mode === "USER");
  if (bw !== undefined) {
    const list = bw.split(",").map((x) => parseIntStrict(x, "Bandwidth", fileName));
    if (mode === "USER" && list.length !== banks)
      throw new InputError(`${fileName}: Bandwidth lists ${list.length} values for ${banks} memory bank(s)`);
    // One-byte words per cycle at the preset's nominal clock.
    params.dramBytesPerSecond = list[0]! * params.clockHz;
  }
  return { runName, bandwidthMode: mode, params, warnings };
}
