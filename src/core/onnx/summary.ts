/** What `ssvq inspect` shows: a model's identity, interface, operators, parameters and weights. */
import { dtypeName } from "./dtype.js";
import type { ModelProto, ValueInfoProto } from "./proto.js";
import { declaredBytes, elementCount, tensorDims } from "./tensor-data.js";
import { walkNodes, walkTensors } from "./walk.js";
import { findWeights, type SkippedWeight, type WeightInfo } from "./weights.js";

export interface ValueSummary {
  name: string;
  dtype: string;
  /** Numbers for fixed dimensions, names for symbolic ones, null where unknown. */
  shape: (number | string | null)[] | null;
}

export interface WeightSummary {
  name: string;
  consumers: string[];
  opType: string;
  dims: number[];
  dtype: string;
  location: string;
  rows: number;
  cols: number;
  groups: number;
  elements: number;
}

export interface ModelSummary {
  producer: string;
  producerVersion: string;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  graphName: string;
  metadata: Record<string, string>;
  inputs: ValueSummary[];
  outputs: ValueSummary[];
  nodeCount: number;
  opCounts: Record<string, number>;
  functionCount: number;
  subgraphCount: number;
  parameters: { count: number; bytes: number; byType: Record<string, number> };
  weights: WeightSummary[];
  skipped: SkippedWeight[];
  compressibleElements: number;
}

function valueSummary(v: ValueInfoProto): ValueSummary {
  const tt = v.type?.value.case === "tensorType" ? v.type.value.value : undefined;
  if (!tt) return { name: v.name, dtype: v.type?.value.case ?? "unknown", shape: null };
  const shape = tt.shape
    ? tt.shape.dim.map((d) =>
        d.value.case === "dimValue" ? Number(d.value.value) : d.value.case === "dimParam" ? d.value.value : null,
      )
    : null;
  return { name: v.name, dtype: dtypeName(tt.elemType), shape };
}

export function weightLocation(w: WeightInfo): string {
  const where = w.graphPath ? `subgraph ${w.graphPath}` : "main graph";
  const store = w.storage === "constant" ? "Constant node" : "initializer";
  const ext = w.external ? `, external file ${w.external.location}` : "";
  return `${store} in ${where}${ext}`;
}

export function summarizeModel(model: ModelProto): ModelSummary {
  const g = model.graph!;
  const initNames = new Set(g.initializer.map((t) => t.name));
  const opCounts: Record<string, number> = {};
  let nodeCount = 0;
  const subgraphs = new Set<string>();
  walkNodes(model, (n, visit) => {
    const key = n.domain && n.domain !== "ai.onnx" ? `${n.domain}.${n.opType}` : n.opType;
    opCounts[key] = (opCounts[key] ?? 0) + 1;
    nodeCount++;
    if (visit.path) subgraphs.add(visit.path);
  });
  let count = 0;
  let bytes = 0;
  const byType: Record<string, number> = {};
  walkTensors(model, (t, place) => {
    if (place === "attribute") return;
    const n = elementCount(tensorDims(t));
    count += n;
    bytes += declaredBytes(t) ?? 0;
    const ty = dtypeName(t.dataType);
    byType[ty] = (byType[ty] ?? 0) + n;
  });
  const scan = findWeights(model);
  const weights = scan.weights.map(
    (w): WeightSummary => ({
      name: w.name,
      consumers: w.consumers.map((c) => (c.graphPath ? `${c.node} (in ${c.graphPath})` : c.node)),
      opType: w.consumers[0]!.opType,
      dims: w.dims,
      dtype: dtypeName(w.dtype),
      location: weightLocation(w),
      rows: w.layout.rows,
      cols: w.layout.cols,
      groups: w.layout.groups,
      elements: w.layout.rows * w.layout.cols,
    }),
  );
  return {
    producer: model.producerName,
    producerVersion: model.producerVersion,
    irVersion: Number(model.irVersion),
    opsets: model.opsetImport.map((o) => ({ domain: o.domain || "ai.onnx", version: Number(o.version) })),
    graphName: g.name,
    metadata: Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value])),
    inputs: g.input.filter((i) => !initNames.has(i.name)).map(valueSummary),
    outputs: g.output.map(valueSummary),
    nodeCount,
    opCounts: Object.fromEntries(Object.entries(opCounts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))),
    functionCount: model.functions.length,
    subgraphCount: subgraphs.size,
    parameters: { count, bytes, byType },
    weights,
    skipped: scan.skipped,
    compressibleElements: weights.reduce((a, w) => a + w.elements, 0),
  };
}
