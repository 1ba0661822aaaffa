/** Walking every graph of a model: the main graph, control-flow bodies, training graphs and functions. */
import type { GraphProto, ModelProto, NodeProto, TensorProto } from "./proto.js";

/** Where a graph sits: "" for the main graph, else a path such as "If_3.then_branch/Loop_1.body". */
export type GraphPath = string;

export interface GraphVisit {
  graph: GraphProto;
  path: GraphPath;
  /** The graph that contains the node owning this one (undefined for top-level graphs). */
  parent?: GraphVisit;
  /** The node whose attribute holds this graph. */
  owner?: NodeProto;
}

export const nodeLabel = (n: NodeProto, index: number): string => n.name || `${n.opType}_${index}`;

/** Visits the main graph and every subgraph below it, parents before children. */
export function walkGraphs(model: ModelProto, visit: (g: GraphVisit) => void): void {
  if (model.graph) walkGraph({ graph: model.graph, path: "" }, visit);
}

function walkGraph(g: GraphVisit, visit: (g: GraphVisit) => void): void {
  visit(g);
  // Paths must name one graph each: a label two nodes share (an unnamed "If_0" next to a node named
  // "If_0", or duplicate names) gets "#index" appended.
  const labels = g.graph.node.map((n, i) => nodeLabel(n, i));
  const seen = new Map<string, number>();
  for (const l of labels) seen.set(l, (seen.get(l) ?? 0) + 1);
  g.graph.node.forEach((node, i) => {
    const label = seen.get(labels[i]!)! > 1 ? `${labels[i]}#${i}` : labels[i]!;
    for (const a of node.attribute) {
      const sub = a.g ? [a.g] : a.graphs;
      sub.forEach((graph, j) => {
        const name = a.graphs.length > 1 ? `${a.name}[${j}]` : a.name;
        const path = `${g.path ? g.path + "/" : ""}${label}.${name}`;
        walkGraph({ graph, path, parent: g, owner: node }, visit);
      });
    }
  });
}

/** Every node of the model's graphs (not of local functions), with its graph. */
export function walkNodes(model: ModelProto, visit: (node: NodeProto, g: GraphVisit, index: number) => void): void {
  walkGraphs(model, (g) => g.graph.node.forEach((n, i) => visit(n, g, i)));
}

export type TensorPlace = "initializer" | "constant" | "attribute" | "sparse";

/** Every dense tensor the model carries, in its graphs, Constant nodes, node attributes and functions. */
export function walkTensors(
  model: ModelProto,
  visit: (t: TensorProto, place: TensorPlace, where: string) => void,
): void {
  const nodeTensors = (nodes: NodeProto[], prefix: string) =>
    nodes.forEach((n, i) => {
      for (const a of n.attribute) {
        const place: TensorPlace = n.opType === "Constant" && n.domain === "" ? "constant" : "attribute";
        const where = `${prefix}${nodeLabel(n, i)}.${a.name}`;
        if (a.t) visit(a.t, place, where);
        a.tensors.forEach((t) => visit(t, place, where));
        if (a.sparseTensor?.values) visit(a.sparseTensor.values, "sparse", where);
        if (a.sparseTensor?.indices) visit(a.sparseTensor.indices, "sparse", where);
      }
    });
  walkGraphs(model, ({ graph, path }) => {
    const prefix = path ? path + "/" : "";
    graph.initializer.forEach((t) => visit(t, "initializer", prefix + t.name));
    for (const s of graph.sparseInitializer) {
      if (s.values) visit(s.values, "sparse", prefix + s.values.name);
      if (s.indices) visit(s.indices, "sparse", prefix + s.values?.name + ".indices");
    }
    nodeTensors(graph.node, prefix);
  });
  for (const f of model.functions) nodeTensors(f.node, `function ${f.domain}.${f.name}/`);
}
