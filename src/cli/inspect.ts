import { statSync } from "node:fs";
import { formatBytes } from "../core/onnx/tensor-data.js";
import { summarizeModel, type ModelSummary } from "../core/onnx/summary.js";
import { loadModel } from "../io/model-file.js";
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
    "Options:",
    "  --json   print the summary as JSON",
  ].join("\n"),
  options: { json: { type: "boolean" } },
  positionals: [1, 1],
  async run(values, [path], ctx) {
    const loaded = loadModel(path!);
    const summary = summarizeModel(loaded.model);
    const fileBytes = statSync(loaded.path).size;
    if (values["json"]) {
      ctx.out(JSON.stringify({ path: loaded.path, fileBytes, externalFiles: loaded.externalFiles, ...summary }, null, 2));
      return 0;
    }
    ctx.out(renderSummary(path!, fileBytes, summary));
    return 0;
  },
};

export function renderSummary(path: string, fileBytes: number, s: ModelSummary): string {
  const io = (v: ModelSummary["inputs"][number]) => `${v.name} ${v.dtype} ${shape(v.shape)}`;
  const ops = Object.entries(s.opCounts).map(([k, v]) => `${k} ${v}`).join(", ");
  const types = Object.entries(s.parameters.byType).map(([k, v]) => `${k} ${int(v)}`).join(", ");
  const lines = [
    `model       ${path} (${formatBytes(fileBytes)})`,
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
