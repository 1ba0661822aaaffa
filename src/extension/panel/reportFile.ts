/** Reading a `.ssvq.json` report for the panel: checked to be a report, with its output and command line. */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Report } from "../../core/report.js";
import { shellQuote } from "../settings-table.js";
import type { ShownReport } from "./ssvqPanel.js";

export async function readReportFile(path: string): Promise<ShownReport> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new Error(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  let report: Report;
  try {
    report = JSON.parse(text) as Report;
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof report !== "object" || report === null || !Array.isArray(report.layers) || !report.config || !report.sizes || !report.source)
    throw new Error(`${path} is not an SSVQ compression report`);
  const outPath = report.output?.path && existsSync(report.output.path) ? report.output.path : null;
  const command = report.command ? `ssvq compress ${shellQuote(report.command)}` : "";
  return { report, reportPath: path, outPath, command };
}
