/**
 * "Show SSVQ Compression" (the status-bar item's command: the job's panel) and "Cancel SSVQ Compression":
 * for the model given, the only running job, or one the user picks.
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import type { JobRegistry, RunningJob } from "../jobRegistry.js";
import { ssvqLog } from "../log.js";
import type { PanelManager } from "../panel/panelManager.js";

async function pickJob(registry: JobRegistry, arg: unknown, verb: string): Promise<RunningJob | undefined> {
  if (arg instanceof vscode.Uri) return registry.get(arg);
  const jobs = registry.all();
  if (jobs.length <= 1) return jobs[0];
  const pick = await vscode.window.showQuickPick(
    jobs.map((job) => ({ label: basename(job.model.fsPath), description: job.progress.text(), detail: job.model.fsPath, job })),
    { title: `SSVQ: ${verb} which compression?` },
  );
  return pick?.job;
}

/** Shows a running job in its model's panel. */
export async function showJobCommand(registry: JobRegistry, panels: PanelManager, arg: unknown): Promise<void> {
  const job = await pickJob(registry, arg, "show");
  if (!job) return void ssvqLog().show(true);
  panels.showJob(job);
}

export async function cancelCommand(registry: JobRegistry, arg: unknown): Promise<void> {
  if (registry.all().length === 0) return void vscode.window.showInformationMessage("SSVQ: no compression is running.");
  const job = await pickJob(registry, arg, "cancel");
  if (!job) return;
  ssvqLog().info(`cancelling the compression of ${job.model.fsPath}`);
  job.cancel();
}
