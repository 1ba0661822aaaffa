/** The model's summary, as `ssvq inspect` gives it: identity, interface, operators, weights and those left alone. */
import type { ModelInspection } from "../../src/io/inspect-file.js";
import { dataTable, facts, h } from "../shared/dom.js";
import { bytes, int, shape } from "../shared/format.js";

type Weight = ModelInspection["weights"][number];
type Skipped = ModelInspection["skipped"][number];
type Value = ModelInspection["inputs"][number];

function section(id: string, title: string, ...body: (Node | null)[]): HTMLElement {
  return h("section", { id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), ...body);
}

export function summarySections(i: ModelInspection): HTMLElement[] {
  const ownMetadata = Object.entries(i.metadata).filter(([k]) => !k.startsWith("ssvq."));
  const types = Object.entries(i.parameters.byType).map(([t, n]) => `${t} ${int(n)}`).join(", ");
  const model = section(
    "model",
    "Model",
    facts(
      [
        ["File", `${i.path} (${bytes(i.fileBytes)})`],
        ["Producer", `${i.producer || "(none)"} ${i.producerVersion}`.trim()],
        ["IR version", String(i.irVersion)],
        ["Opsets", i.opsets.map((o) => `${o.domain} ${o.version}`).join(", ")],
        ["Graph", i.graphName || "(unnamed)"],
        ["Nodes", `${int(i.nodeCount)}${i.subgraphCount ? ` (${i.subgraphCount} subgraphs)` : ""}${i.functionCount ? `, ${i.functionCount} functions` : ""}`],
        ["Parameters", h("span", { id: "parameter-count", "data-value": i.parameters.count }, `${int(i.parameters.count)} (${types || "none"}), ${bytes(i.parameters.bytes)}`)],
        ...(i.externalFiles.length ? ([["External data", `${i.externalFiles.join(", ")} (${bytes(i.externalBytes)})`]] as [string, string][]) : []),
        ...ownMetadata.map(([k, v]) => [`metadata ${k}`, v] as [string, string]),
      ],
      { id: "model-facts" },
    ),
  );
  const io = section(
    "interface",
    "Inputs and outputs",
    dataTable<Value & { role: string }>(
      "Inputs and outputs",
      [
        { header: "", cell: (v) => v.role },
        { header: "name", cell: (v) => v.name },
        { header: "type", cell: (v) => v.dtype },
        { header: "shape", cell: (v) => shape(v.shape) },
      ],
      [...i.inputs.map((v) => ({ ...v, role: "input" })), ...i.outputs.map((v) => ({ ...v, role: "output" }))],
      { id: "interface-table" },
    ),
  );
  const ops = section(
    "operators",
    `Operators (${Object.keys(i.opCounts).length} types, ${int(i.nodeCount)} nodes)`,
    dataTable<[string, number]>(
      "Operators",
      [
        { header: "operator", cell: ([op]) => op },
        { header: "nodes", cell: ([, n]) => int(n), numeric: true, value: ([, n]) => n },
      ],
      Object.entries(i.opCounts),
      { id: "ops-table", class: "data compact" },
    ),
  );
  const weights = section(
    "weights",
    `Compressible weights: ${i.weights.length}, ${int(i.compressibleElements)} elements`,
    i.weights.length
      ? dataTable<Weight>(
          "Compressible weights",
          [
            { header: "weight", cell: (w) => w.name },
            { header: "used by", cell: (w) => `${w.opType} ${w.consumers.join(", ")}` },
            { header: "shape", cell: (w) => shape(w.dims) },
            { header: "dtype", cell: (w) => w.dtype },
            { header: "rows x cols", cell: (w) => `${w.rows} x ${w.cols}`, numeric: true, value: (w) => `${w.rows}x${w.cols}` },
            { header: "groups", cell: (w) => w.groups, numeric: true, value: (w) => w.groups },
            { header: "elements", cell: (w) => int(w.elements), numeric: true, value: (w) => w.elements },
            { header: "where", cell: (w) => w.location },
          ],
          i.weights,
          { id: "weights-table" },
        )
      : h("p", {}, i.compression ? "None left: the compressed weights are decode subgraphs now (below)." : "None: this model has no constant Conv, ConvTranspose, Gemm or MatMul weights."),
  );
  const skipped = i.skipped.length
    ? section(
        "skipped",
        `Not compressed: ${i.skipped.length}`,
        dataTable<Skipped>(
          "Weights not compressed",
          [
            { header: "weight", cell: (w) => w.name },
            { header: "used by", cell: (w) => `${w.opType} ${w.consumer}` },
            { header: "shape", cell: (w) => shape(w.dims) },
            { header: "dtype", cell: (w) => w.dtype },
            { header: "reason", cell: (w) => w.reason },
          ],
          i.skipped,
          { id: "skipped-table" },
        ),
      )
    : null;
  return [model, io, ops, weights, ...(skipped ? [skipped] : [])];
}
