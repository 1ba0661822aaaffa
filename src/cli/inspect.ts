import type { CompressionReadback } from "../core/onnx/readback.js";
import { formatBytes } from "../core/onnx/tensor-data.js";
import type { ModelSummary } from "../core/onnx/summary.js";
import { inspectFile } from "../io/inspect-file.js";
import type { Command } from "./command.js";
import { int, shape, table } from "./format.js";

export const inspectCommand: Command = {
  name: "inspect",
  summary: "show a model's interface, operators, parameters and compressible weights",
  usage: "ssvq inspect MODEL [--json]",
  help: [
    "Prints the producer, IR version, opsets, inputs and outputs with shapes, node and parameter counts",
    "by operator type, and each weight SSVQ can compress: name, consumer, shape, dtype, where it lives",
    "(initializer, Constant node, subgraph, external file) and its row layout (rows x cols, the columns",
    "being the reduction dimension). Weights that are not compressed are listed with the reason.",
    "",
    "For a compressed model (<name>.ssvq.onnx) it also shows the SSVQ parameters and, per compressed",
    "layer, what the file stores, read back from its ssvq.* metadata and decode subgraphs (not from the",
    ".ssvq.json report): mode, k, d, bits/weight, stored bytes, the share of negative sign bits and the",
    "codewords used. --json adds the codebooks, usage histograms and stored tensors.",
    "",
    "Options:",
    "  --json   print the summary as JSON",
  ].join("\n"),
  options: { json: { type: "boolean" } },
  positionals: [1, 1],
  async run(values, [path], ctx) {
    const inspection = inspectFile(path!);
    if (values["json"]) {
      ctx.out(JSON.stringify(inspection, null, 2));
      return 0;
    }
    const text = [renderSummary(path!, inspection.fileBytes, inspection, inspection.externalFiles.length ? { files: inspection.externalFiles.length, bytes: inspection.externalBytes } : undefined)];
    if (inspection.compression) text.push("", renderCompression(inspection.compression));
    ctx.out(text.join("\n"));
    return 0;
  },
};

export function renderSummary(path: string, fileBytes: number, s: ModelSummary, external?: { files: number; bytes: number }): string {
  const data = external ? ` + ${formatBytes(external.bytes)} of external data in ${external.files} file${external.files === 1 ? "" : "s"}` : "";
  const io = (v: ModelSummary["inputs"][number]) => `${v.name} ${v.dtype} ${shape(v.shape)}`;
  const ops = Object.entries(s.opCounts).map(([k, v]) => `${k} ${v}`).join(", ");
  const types = Object.entries(s.parameters.byType).map(([k, v]) => `${k} ${int(v)}`).join(", ");
  const lines = [
    `model       ${path} (${formatBytes(fileBytes)}${data})`,
    `producer    ${s.producer || "(none)"} ${s.producerVersion}`.trimEnd(),
    `IR version  ${s.irVersion}; opsets ${s.opsets.map((o) => `${o.domain} ${o.version}`).join(", ")}`,
    ...s.inputs.map((v, i) => `${i === 0 ? "inputs     " : "           "} ${io(v)}`),
    ...s.outputs.map((v, i) => `${i === 0 ? "outputs    " : "           "} ${io(v)}`),
    `nodes       ${int(s.nodeCount)}${s.subgraphCount ? ` (${s.subgraphCount} subgraphs)` : ""}: ${ops}`,
    `parameters  ${int(s.parameters.count)} (${types || "none"}), ${formatBytes(s.parameters.bytes)}`,
  ];
  if (s.functionCount) lines.push(`functions   ${s.functionCount}`);
  lines.push("");
  lines.push(`Compressible weights: ${s.weights.length}, ${int(s.compressibleElements)} elements`);
  if (s.weights.length)
    lines.push(
      table(
        ["weight", "used by", "shape", "dtype", "rows x cols", "groups", "where"],
        s.weights.map((w) => [
          w.name,
          `${w.opType} ${w.consumers.join(", ")}`,
          shape(w.dims),
          w.dtype,
          `${w.rows} x ${w.cols}`,
          w.groups,
          w.location,
        ]),
      ),
    );
  if (s.skipped.length) {
    lines.push("", `Not compressed: ${s.skipped.length}`);
    lines.push(
      table(
        ["weight", "used by", "shape", "dtype", "reason"],
        s.skipped.map((w) => [w.name, `${w.opType} ${w.consumer}`, shape(w.dims), w.dtype, w.reason]),
      ),
    );
  }
  return lines.join("\n");
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

/** The compressed model's parameters and per-layer table, as read back from the file. */
export function renderCompression(c: CompressionReadback): string {
  const cfg = c.config ?? {};
  const vq = cfg.mode === "ssvq" || cfg.mode === "vq";
  const target = typeof cfg["ratio"] === "number" ? `${cfg["ratio"]}x` : typeof cfg["bits"] === "number" ? `${cfg["bits"]} bits/weight` : undefined;
  const method =
    cfg.mode === undefined
      ? "unknown mode"
      : vq && target
        ? `${cfg.mode.toUpperCase()} with each layer's own point (searched for ${target})`
        : vq
          ? `${cfg.mode.toUpperCase()} k=${cfg.k ?? "?"} d=${cfg.d ?? "?"}`
          : cfg.mode.toUpperCase();
  const params = [
    method,
    ...(cfg.seed !== undefined ? [`seed ${cfg.seed}`] : []),
    ...(vq && cfg.kmeansIters !== undefined ? [`${cfg.kmeansIters} k-means iterations at most`] : []),
    ...(cfg.format !== undefined ? [`format ${cfg.format}`] : []),
    ...(cfg.finetune !== undefined ? [cfg.finetune ? "fine-tuned" : "not fine-tuned"] : []),
  ];
  const t = c.totals;
  const lines = [
    `SSVQ compression (written by ssvq ${c.version ?? "of unknown version"}; read back from the file)`,
    `parameters  ${params.join(", ")}`,
    `stored      ${t.compressedLayers} layers, ${int(t.compressedWeights)} weights` +
      (t.storedBytes ? ` in ${formatBytes(t.storedBytes)}` : "") +
      (t.bitsPerWeight !== undefined ? ` at ${t.bitsPerWeight.toFixed(3)} bits/weight` : "") +
      (t.lookupTables.length ? `; shared lookup tables ${formatBytes(t.lookupTableBytes)}` : ""),
  ];
  if (c.layers.length) {
    const rows = c.layers.map((l) => {
      const bits = l.bits
        ? l.bits.bitsPerWeight.toFixed(3) + (l.bits.metadataBitsPerWeight !== undefined && !l.bits.matchesMetadata ? ` (metadata ${l.bits.metadataBitsPerWeight.toFixed(3)})` : "")
        : l.metadata?.bitsPerWeight !== undefined
          ? `${l.metadata.bitsPerWeight.toFixed(3)} (metadata)`
          : "-";
      const stored = l.stored === "subgraph" ? (l.bytes ? formatBytes(l.bytes.total) : "unreadable") : l.stored;
      return [
        l.graphPath ? `${l.name} (in ${l.graphPath})` : l.name,
        l.opType ?? "-",
        l.mode ?? "?",
        l.k ?? "-",
        l.d ?? "-",
        bits,
        stored,
        l.signs ? pct(l.signs.fraction) : "-",
        l.usage && l.k !== undefined ? `${l.k - (l.unusedCodewords?.length ?? 0)} of ${l.k}` : "-",
      ];
    });
    lines.push(
      "",
      table(["layer", "op", "mode", "k", "d", "bits/weight", "stored", "negative signs", "codewords used"], rows, [false, false, false, true, true, true, true, true, true]),
    );
  }
  const problems = [...c.problems, ...c.layers.filter((l) => l.problem).map((l) => `${l.name}: ${l.problem}`)];
  if (problems.length) lines.push("", `Problems: ${problems.length}`, ...problems.map((p) => `  ${p}`));
  return lines.join("\n");
}
