/**
 * "Open SSVQ Panel": for a `.ssvq.json` report, a compressed `.ssvq.onnx` (its report beside it) or a
 * model (its running compression, else the report of its last one), or a report picked from the workspace.
 */
import * as vscode from "vscode";
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { defaultOutput, reportPathFor } from "../../io/paths.js";
import type { JobRegistry } from "../jobRegistry.js";
import type { PanelManager } from "../panel/panelManager.js";
import { activeResource } from "./targetModel.js";

/** The report that belongs to a file: itself, the report beside a compressed model, or the model's last compression's. */
export function reportFor(path: string): string {
  if (/\.json$/i.test(path)) return path;
  if (/\.ssvq\.onnx$/i.test(path)) return reportPathFor(path);
  return reportPathFor(defaultOutput(path));
}

export async function openPanelCommand(registry: JobRegistry, panels: PanelManager, arg: unknown): Promise<void> {
  let uri = arg instanceof vscode.Uri ? arg : activeResource();
  if (uri && !/\.(onnx|json)$/i.test(uri.path)) uri = undefined;
  if (!uri) {
    const found = await vscode.workspace.findFiles("**/*.ssvq.json", "**/node_modules/**", 200);
    if (found.length === 0) return void vscode.window.showInformationMessage("SSVQ: no .ssvq.json report in this workspace; compress a model first.");
    const pick = await vscode.window.showQuickPick(
      found.sort((a, b) => a.fsPath.localeCompare(b.fsPath)).map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })),
      { title: "SSVQ: open which report?" },
    );
    if (!pick) return;
    uri = pick.uri;
  }
  const job = registry.get(uri);
  if (job) return panels.showJob(job);
  const report = reportFor(uri.fsPath);
  if (!existsSync(report)) {
    void vscode.window.showInformationMessage(`SSVQ: ${basename(uri.fsPath)} has no report beside it (${basename(report)}); the SSVQ Inspector shows what the file itself records.`);
    return;
  }
  await panels.showReportFile(report);
}
