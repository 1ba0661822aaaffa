/**
 * `ssvq report REPORT.json [--markdown | --json]`: a compression report (`<name>.ssvq.json`) printed again:
 * by default as the text `ssvq compress` printed, with --markdown as the Markdown document the panel's
 * "Export report as Markdown" writes (the same function, src/core/report-markdown.ts), with --json as the
 * report itself, checked and normalised.
 */
import { InputError } from "../core/errors.js";
import { SCHEMA_VERSION, type Report } from "../core/report.js";
import { reportMarkdown } from "../core/report-markdown.js";
import { renderReport } from "../core/report-text.js";
import { readReport } from "../io/simulate-model.js";
import type { Command } from "./command.js";

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);
const isNumber = (x: unknown): boolean => typeof x === "number" || x === null; // JSON writes NaN and Infinity as null

/**
 * What is wrong with a parsed report, in a few words, or undefined when every field the renderers read is
 * there with its type (beyond `readReport`'s check of `layers` and `config`).
 */
export function reportProblem(r: unknown): string | undefined {
  if (!isObject(r)) return "not a JSON object";
  if (typeof r["schemaVersion"] !== "number") return "no schemaVersion";
  if (r["schemaVersion"] > SCHEMA_VERSION) return `report schema ${r["schemaVersion"]}, newer than this ssvq reads (${SCHEMA_VERSION})`;
  const source = r["source"];
  if (!isObject(source) || typeof source["path"] !== "string") return "no source.path";
  const config = r["config"];
  if (!isObject(config) || typeof config["mode"] !== "string") return "no config.mode";
  const sizes = r["sizes"];
  if (!isObject(sizes)) return "no sizes";
  for (const k of ["originalTensorBytes", "compressedTensorBytes", "tensorRatio", "sourceFileBytes", "theoreticalFileBytes", "outputFileBytes", "diskRatio", "compressedLayers", "compressedWeights", "bitsPerWeight"])
    if (!isNumber(sizes[k])) return `no sizes.${k}`;
  if (!Array.isArray(r["layers"])) return "no layers";
  for (const [i, l] of (r["layers"] as unknown[]).entries()) {
    if (!isObject(l) || typeof l["name"] !== "string") return `layers[${i}] has no name`;
    const bits = l["bits"];
    if (!isObject(bits) || !isNumber(bits["weights"]) || !isNumber(bits["bitsPerWeight"])) return `layer ${l["name"]} has no bits`;
  }
  for (const k of ["kept", "warnings"]) if (r[k] !== undefined && !Array.isArray(r[k])) return `${k} is not a list`;
  if (r["timings"] !== undefined && !isObject(r["timings"])) return "timings is not an object";
  return undefined;
}

/** Reads, checks and normalises a report: the lists and maps the schema requires default to empty. */
export function loadReport(path: string): Report {
  const r = readReport(path);
  const problem = reportProblem(r);
  if (problem) throw new InputError(`${path} is not an ssvq compression report (${problem})`);
  return { ...r, kept: r.kept ?? [], timings: r.timings ?? {}, warnings: r.warnings ?? [] };
}

export const reportCommand: Command = {
  name: "report",
  summary: "print a compression report (<name>.ssvq.json) as text, Markdown or JSON",
  usage: "ssvq report REPORT.json [--markdown | --json]",
  help: [
    "Prints the run report that ssvq compress (or the extension) wrote beside the compressed model.",
    "",
    "Options:",
    "  (none)        the per-layer table and whole-model lines that ssvq compress printed",
    "  --markdown    a Markdown document: overview (sizes and their breakdown, calibration, evaluation,",
    "                time per stage), SSVQ vs VQ, layers, sign freezing, simulated latency, weights kept",
    "                as they were, warnings; the document the panel's \"Export report as Markdown\" writes",
    "  --json        the report itself, checked and re-indented",
    "",
    "In CI, e.g.: ssvq report model.ssvq.json --markdown >> \"$GITHUB_STEP_SUMMARY\"",
  ].join("\n"),
  options: {
    markdown: { type: "boolean" },
    json: { type: "boolean" },
  },
  positionals: [1, 1],
  async run(values, [path], ctx) {
    if (values["markdown"] && values["json"]) throw new InputError("give --markdown or --json, not both");
    const report = loadReport(path!);
    if (values["json"]) ctx.out(JSON.stringify(report, null, 2));
    // The document ends with a newline; ctx.out adds none to text that has one, so stdout is exactly it.
    else if (values["markdown"]) ctx.out(reportMarkdown(report));
    else ctx.out(renderReport(report, report.output === null));
    return 0;
  },
};
