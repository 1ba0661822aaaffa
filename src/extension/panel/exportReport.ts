/**
 * The panel's "Export report": the report as JSON, or the Markdown summary `ssvq report --markdown`
 * prints (the same function), written where the user chooses, through a temporary file and a rename.
 */
import * as vscode from "vscode";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Report } from "../../core/report.js";

export async function exportReport(report: Report, format: "json" | "markdown", near: string): Promise<string | undefined> {
  const stem = basename(near).replace(/\.json$/i, "").replace(/\.onnx$/i, "").replace(/\.ssvq$/i, "");
  const name = format === "json" ? `${stem}.ssvq.json` : `${stem}.ssvq.md`;
  const target = await vscode.window.showSaveDialog({
    title: format === "json" ? "Export the SSVQ report as JSON" : "Export the SSVQ report as Markdown",
    defaultUri: vscode.Uri.file(join(dirname(near), name)),
    filters: format === "json" ? { "SSVQ report": ["json"] } : { Markdown: ["md"] },
  });
  if (!target) return undefined;
  let text: string;
  if (format === "json") text = JSON.stringify(report, null, 2) + "\n";
  else {
    const { reportMarkdown } = await import("../../core/report-markdown.js");
    text = reportMarkdown(report);
  }
  const path = target.fsPath;
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}-${Date.now()}.tmp`);
  try {
    writeFileSync(temp, text);
    renameSync(temp, path);
  } catch (e) {
    rmSync(temp, { force: true });
    throw new Error(`cannot write ${path}: ${(e as Error).message}`);
  }
  return path;
}
