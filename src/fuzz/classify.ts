/**
 * What the README promises, checked on one run: exit 0, or exit 2 with exactly one short, clean line on
 * stderr; no crash, signal, hang or runaway memory; nothing left behind; the input untouched; hostile
 * cases refused; no misleading message; and (an oracle) a model compress writes loads in onnxruntime.
 */
import type { CaseSpec, CommandName } from "./case.js";

export type FindingClass =
  | "crash-signal"
  | "exit-1"
  | "exit-other"
  | "timeout"
  | "memory-cap"
  | "process-left"
  | "stderr-lines"
  | "stderr-empty"
  | "stderr-overlong"
  | "stderr-cxx"
  | "stderr-control"
  | "file-left"
  | "input-changed"
  | "hostile-accepted"
  | "misleading-message"
  | "output-unloadable";

/** The order findings are listed in (most severe first). */
export const FINDING_ORDER: readonly FindingClass[] = [
  "crash-signal",
  "timeout",
  "memory-cap",
  "exit-1",
  "exit-other",
  "process-left",
  "input-changed",
  "file-left",
  "hostile-accepted",
  "output-unloadable",
  "stderr-lines",
  "stderr-empty",
  "stderr-overlong",
  "stderr-cxx",
  "stderr-control",
  "misleading-message",
];

export interface Finding {
  klass: FindingClass;
  detail: string;
  /** Group key: class, command and the normalised first stderr line (or what stands in for it). */
  key: string;
}

/** Progress the compress command prints on stderr when it is not a terminal (src/cli/progress.ts). */
export const PROGRESS_LINE = /^(stage: \S+$|  \[\d+\/\d+\] |(info|warning): )/;

export const MAX_LINE = 300;

/** C++ in a message: onnxruntime's own namespaces and signatures, source locations, its error prefix. */
const CXX = /\bonnxruntime::|\bstd::|\bOrt[A-Z]\w*\(|\w+::\w+\s*\(|\[ONNXRuntimeError\]|\.(cc|cpp|h):\d+|\bStatus Message:/;
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f]/;

export interface RunFacts {
  command: CommandName;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  memoryCapHit: boolean;
  leftProcesses: number;
  /** Non-progress stderr lines (the first 50), their count and the longest stderr line. */
  stderrLines: string[];
  stderrLineCount: number;
  stderrLongestLine: number;
  filesLeft: string[];
  inputChanged: string[];
  /** Compress exit 0: whether onnxruntime loads the written model (and, when not, the input). */
  ortOutput?: { loads: boolean; message: string };
  ortInput?: { loads: boolean; message: string };
}

/** A line made comparable across cases: case paths, quoted names, numbers and hex runs folded. */
export function normalise(line: string, root?: string): string {
  let s = line;
  if (root) s = s.split(root).join("<case>");
  s = s
    .replace(/\/tmp\/[^\s"')]+/g, "<tmp>")
    .replace(/"(?:[^"\\]|\\.)*"(\.\.\. \(\d+ characters\))?/g, '"…"')
    .replace(/\b[0-9a-f]{6,}\b/gi, "H")
    .replace(/\d+(\.\d+)?/g, "N")
    .replace(/\s+/g, " ")
    .trim();
  return s.length > 140 ? s.slice(0, 140) + "…" : s;
}

export function classify(f: RunFacts, spec: CaseSpec, root?: string): Finding[] {
  const out: Finding[] = [];
  const first = f.stderrLines[0] ?? "";
  const firstKey = first ? normalise(first, root) : `(no message) ${spec.klass}: ${normalise(spec.ops[spec.ops.length - 1] ?? "")}`;
  const add = (klass: FindingClass, detail: string, keyText = firstKey) => out.push({ klass, detail, key: `${klass}|${f.command}|${keyText}` });

  if (f.timedOut) add("timeout", "killed after the timeout");
  else if (f.memoryCapHit) add("memory-cap", "killed over the memory cap");
  else if (f.signal !== null) add("crash-signal", `killed by ${f.signal}`, `${f.signal} ${firstKey}`);
  else if (f.exitCode === 1) add("exit-1", "exit 1 (internal error)");
  else if (f.exitCode !== 0 && f.exitCode !== 2) add("exit-other", `exit ${f.exitCode}`, `exit ${f.exitCode} ${firstKey}`);

  if (f.leftProcesses > 0 && !f.timedOut && !f.memoryCapHit) add("process-left", `${f.leftProcesses} process(es) of its group still ran after it exited`);
  if (f.inputChanged.length > 0) add("input-changed", f.inputChanged.join(", "), normalise(f.inputChanged.join(", ")));
  if (f.filesLeft.length > 0) add("file-left", f.filesLeft.join(", "), normalise(f.filesLeft.join(", ")));

  if (f.exitCode === 2 && !f.timedOut && !f.memoryCapHit) {
    if (f.stderrLineCount === 0) add("stderr-empty", "exit 2 with nothing on stderr");
    if (f.stderrLineCount > 1) add("stderr-lines", `exit 2 with ${f.stderrLineCount} lines on stderr`, normalise(f.stderrLines.slice(0, 2).join(" // "), root));
  }
  if (f.exitCode === 2 || f.exitCode === 1) {
    if (f.stderrLongestLine > MAX_LINE) add("stderr-overlong", `a stderr line of ${f.stderrLongestLine} characters`);
    if (f.stderrLines.some((l) => CXX.test(l))) add("stderr-cxx", "C++ names or source locations in the message");
    if (f.stderrLines.some((l) => CONTROL.test(l))) add("stderr-control", "control characters (colours, escapes) in the message");
  }
  if (f.exitCode === 0 && spec.hostile) add("hostile-accepted", `exit 0 on a hostile case: ${spec.hostile}`, normalise(spec.hostile));
  if (f.exitCode === 2 && first) {
    for (const w of spec.wrongMessages)
      if (new RegExp(w.pattern, "i").test(first)) add("misleading-message", `the message matches /${w.pattern}/, but ${w.why}`, `${normalise(w.why)}: ${firstKey}`);
  }
  // A model onnxruntime's CPU build has no kernel for (an operator set too old, say) is compressed by the
  // ONNX rules with a warning that says so (src/io/ort-load-check.ts): its output not loading either is
  // what the user was told.
  const warnedNoKernel = f.ortInput && !f.ortInput.loads && /NOT_IMPLEMENTED|Could not find an implementation/i.test(f.ortInput.message ?? "");
  if (f.ortOutput && !f.ortOutput.loads && !warnedNoKernel) {
    const why = f.ortInput ? (f.ortInput.loads ? "the input loads" : "onnxruntime refuses the input too") : "";
    add("output-unloadable", `onnxruntime cannot load the written model (${why}): ${f.ortOutput.message}`, `${why}: ${ortKey(f.ortOutput.message)}`);
  }
  return out;
}

/** onnxruntime's load error, folded for grouping: no path, no node tuples or names, its gist only. */
export function ortKey(message: string): string {
  let s = message.replace(/^Load model from .*? failed:/, "").replace(/\/onnxruntime_src\/\S+:\d+ /g, "");
  const err = /, Error (.*)$/.exec(s);
  if (err) s = err[1]!;
  for (let i = 0; i < 5; i++) s = s.replace(/\([^()]*\)/g, "…");
  s = s.replace(/'[^']*'/g, "'…'").replace(/\b(attribute:|operator|for|Node|node|tensor|Initializer|initializer)\s+[^\s,]+/g, "$1 …");
  const n = normalise(s);
  return n.length > 90 ? n.slice(0, 90) + "…" : n;
}
