/**
 * The structure rules of an ONNX graph that onnxruntime enforces when it loads a model, checked before a
 * compression writes anything, so that an output is only written when it can run: every value produced
 * once (no duplicate initializer or output names), every input defined (in the graph, or in an outer
 * scope for If/Loop/Scan bodies), no cycles, attributes of a known type carrying that type's value, and
 * graph outputs that exist. Linear in the model's size; the first problem is reported, by name.
 */
import { InputError, quoted } from "../errors.js";
import { AttributeProto_AttributeType as AT, type AttributeProto, type GraphProto, type ModelProto, type NodeProto } from "./proto.js";
import { nodeLabel, walkNodes } from "./walk.js";

const graphName = (path: string): string => (path ? `subgraph ${quoted(path, 60)}` : "the main graph");

/** Whether the attribute carries the value its type says (empty lists are allowed). */
function attributeProblem(a: AttributeProto): string | undefined {
  if (a.name === "") return "an attribute without a name";
  switch (a.type) {
    case AT.FLOAT:
    case AT.INT:
    case AT.STRING:
    case AT.FLOATS:
    case AT.INTS:
    case AT.STRINGS:
      return undefined;
    case AT.TENSOR:
      return a.t ? undefined : `attribute ${quoted(a.name)} is of type tensor but holds none`;
    case AT.GRAPH:
      return a.g ? undefined : `attribute ${quoted(a.name)} is of type graph but holds none`;
    case AT.SPARSE_TENSOR:
      return a.sparseTensor ? undefined : `attribute ${quoted(a.name)} is of type sparse tensor but holds none`;
    case AT.TYPE_PROTO:
      return a.tp ? undefined : `attribute ${quoted(a.name)} is of type type-proto but holds none`;
    case AT.TENSORS:
    case AT.GRAPHS:
    case AT.SPARSE_TENSORS:
    case AT.TYPE_PROTOS:
      return undefined;
    default:
      return a.refAttrName ? undefined : `attribute ${quoted(a.name)} has no valid type (${a.type})`;
  }
}

/** Subgraphs held by a node's attributes. */
function subgraphs(n: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of n.attribute) {
    if (a.g) out.push(a.g);
    out.push(...a.graphs);
  }
  return out;
}

/**
 * Checks one graph; `outer` holds the names its enclosing graphs define. Returns the names this graph
 * reads from outside itself (for the caller's dependency order).
 */
function checkGraph(g: GraphProto, path: string, outer: ReadonlySet<string>, depth: number): Set<string> {
  const where = graphName(path);
  const fail = (what: string): never => {
    throw new InputError(`the model is not valid ONNX: ${what} in ${where}; onnxruntime would refuse it`);
  };
  const defined = new Set<string>();
  const define = (name: string, what: string) => {
    if (name === "") return;
    if (defined.has(name)) fail(`${what} ${quoted(name)} is defined twice`);
    defined.add(name);
  };
  const inits = new Set<string>();
  for (const t of g.initializer) {
    if (inits.has(t.name)) fail(`the initializer name ${quoted(t.name)} is used twice`);
    inits.add(t.name);
  }
  for (const i of g.input) define(i.name, "the input");
  for (const t of g.initializer) if (!defined.has(t.name)) define(t.name, "the initializer");
  const producer = new Map<string, number>();
  g.node.forEach((n, index) => {
    for (const o of n.output) {
      define(o, "the value");
      if (o) producer.set(o, index);
    }
  });
  const free = new Set<string>();
  const visible = (name: string) => defined.has(name) || outer.has(name);
  // Each node's dependencies within this graph: its inputs and the outer names its bodies read.
  const deps: number[][] = g.node.map(() => []);
  g.node.forEach((n, index) => {
    const names = new Set<string>();
    const seenAttrs = new Set<string>();
    for (const a of n.attribute) {
      const problem = attributeProblem(a);
      if (problem) fail(`node ${quoted(nodeLabel(n, index), 60)} has ${problem.startsWith("an ") ? problem : `an ${problem}`}`);
      if (seenAttrs.has(a.name)) fail(`node ${quoted(nodeLabel(n, index), 60)} has the attribute ${quoted(a.name)} twice`);
      seenAttrs.add(a.name);
    }
    for (const i of n.input) {
      if (i === "") continue;
      if (!visible(i)) fail(`node ${quoted(nodeLabel(n, index), 60)} reads ${quoted(i)}, which nothing defines`);
      names.add(i);
    }
    const inner = subgraphs(n);
    if (inner.length) {
      if (depth > 64) fail("subgraphs are nested more than 64 deep");
      const scope = new Set([...outer, ...defined]);
      for (const [k, sub] of inner.entries()) for (const name of checkGraph(sub, `${path}/${nodeLabel(n, index)}#${k}`, scope, depth + 1)) names.add(name);
    }
    for (const name of names) {
      const p = producer.get(name);
      if (p !== undefined) deps[index]!.push(p);
      else if (!defined.has(name)) free.add(name);
    }
  });
  for (const o of g.output) if (o.name !== "" && !visible(o.name)) fail(`the graph output ${quoted(o.name)} is not computed`);
  // Kahn's algorithm: whatever cannot be ordered is on a cycle.
  const waiting = deps.map((d) => d.length);
  const users: number[][] = g.node.map(() => []);
  deps.forEach((d, i) => d.forEach((p) => users[p]!.push(i)));
  const ready = waiting.flatMap((w, i) => (w === 0 ? [i] : []));
  let ordered = 0;
  while (ready.length) {
    const i = ready.pop()!;
    ordered++;
    for (const u of users[i]!) if (--waiting[u]! === 0) ready.push(u);
  }
  if (ordered < g.node.length) {
    const stuck = waiting.findIndex((w) => w > 0);
    fail(`node ${quoted(nodeLabel(g.node[stuck]!, stuck), 60)} is on a cycle (its inputs depend on its own outputs)`);
  }
  return free;
}

/** Throws an InputError naming the first structure problem onnxruntime would refuse the model for. */
export function checkModelStructure(model: ModelProto): void {
  if (!model.graph) throw new InputError("the model has no graph");
  checkGraph(model.graph, "", new Set(), 0);
  checkDomains(model);
}

/** Every operator's domain is imported by the model (the ONNX rule; "ai.onnx" is the default domain's other name). */
function checkDomains(model: ModelProto): void {
  const imported = new Set(model.opsetImport.map((o) => (o.domain === "ai.onnx" ? "" : o.domain)));
  // A call of a model-local function names the function's domain (onnxruntime decides on those).
  for (const f of model.functions) imported.add(f.domain);
  walkNodes(model, (n, g, i) => {
    const domain = n.domain === "ai.onnx" ? "" : n.domain;
    if (!imported.has(domain))
      throw new InputError(
        `node ${quoted(nodeLabel(n, i))}${g.path ? ` in ${quoted(g.path)}` : ""} is a ${quoted(n.opType, 60)} of domain ${quoted(domain || "ai.onnx", 60)}, which the model does not import (no opset for it)`,
      );
  });
}
