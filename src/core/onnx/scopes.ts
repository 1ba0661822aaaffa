/**
 * The names a model's graphs can read: per graph, every value with what produces it (an initializer,
 * a Constant node, another node, a graph input), looked up through the outer scopes of If/Loop/Scan
 * bodies. Shared by weight discovery and the read-back of compressed models.
 */
import { create, TensorProto_DataType as DT, TensorProtoSchema, type NodeProto, type TensorProto } from "./proto.js";
import type { GraphVisit } from "./walk.js";

export interface Scope {
  visit: GraphVisit;
  parent?: Scope;
  names: Map<string, Producer>;
}

export type Producer =
  | { kind: "initializer"; tensor: TensorProto; scope: Scope; /** Older exports list initializers in graph.input too. */ alsoGraphInput: boolean }
  | { kind: "constant"; tensor: TensorProto; node: NodeProto; scope: Scope }
  | { kind: "node"; node: NodeProto; scope: Scope }
  | { kind: "input"; scope: Scope };

/** A node of the default ONNX domain. */
export const isDefaultDomain = (n: NodeProto): boolean => n.domain === "" || n.domain === "ai.onnx";

/** The tensor a Constant node yields, in any of its attribute forms. */
export function constantValue(n: NodeProto): TensorProto | undefined {
  for (const a of n.attribute) {
    switch (a.name) {
      case "value":
        return a.t;
      case "value_int":
        return create(TensorProtoSchema, { dims: [], dataType: DT.INT64, int64Data: [a.i] });
      case "value_ints":
        return create(TensorProtoSchema, { dims: [BigInt(a.ints.length)], dataType: DT.INT64, int64Data: a.ints });
      case "value_float":
        return create(TensorProtoSchema, { dims: [], dataType: DT.FLOAT, floatData: [a.f] });
      case "value_floats":
        return create(TensorProtoSchema, { dims: [BigInt(a.floats.length)], dataType: DT.FLOAT, floatData: a.floats });
    }
  }
  return undefined;
}

/** One graph's scope; `parent` is the scope of the graph holding the node whose body this is. */
export function buildScope(visit: GraphVisit, parent: Scope | undefined): Scope {
  const scope: Scope = { visit, parent, names: new Map() };
  const g = visit.graph;
  const inputNames = new Set(g.input.map((i) => i.name));
  for (const i of g.input) scope.names.set(i.name, { kind: "input", scope });
  for (const t of g.initializer) scope.names.set(t.name, { kind: "initializer", tensor: t, scope, alsoGraphInput: inputNames.has(t.name) });
  for (const n of g.node) {
    const value = isDefaultDomain(n) && n.opType === "Constant" ? constantValue(n) : undefined;
    for (const o of n.output) {
      if (!o) continue;
      scope.names.set(o, value ? { kind: "constant", tensor: value, node: n, scope } : { kind: "node", node: n, scope });
    }
  }
  return scope;
}

/** What produces `name` as seen from `scope` (its own graph first, then the outer ones). */
export function lookup(scope: Scope | undefined, name: string): Producer | undefined {
  for (let s = scope; s; s = s.parent) {
    const p = s.names.get(name);
    if (p) return p;
  }
  return undefined;
}
