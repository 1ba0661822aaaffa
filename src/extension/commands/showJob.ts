/**
 * "Show SSVQ Compression" (the status-bar item's command) and "Cancel SSVQ Compression": for the model
 * given, the only running job, or one the user picks.
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import type { JobRegistry, RunningJob } from "../jobRegistry.js";
import { ssvqLog } from "../log.js";

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

/** Shows a running job: its log (the live panel takes this over once it exists). */
export function revealJob(_registry: JobRegistry, _model: vscode.Uri): void {
  ssvqLog().show(true);
}

export async function showJobCommand(registry: JobRegistry, arg: unknown): Promise<void> {
  const job = await pickJob(registry, arg, "show");
  if (!job) return void ssvqLog().show(true);
  revealJob(registry, job.model);
}

export async function cancelCommand(registry: JobRegistry, arg: unknown): Promise<void> {
  if (registry.all().length === 0) return void vscode.window.showInformationMessage("SSVQ: no compression is running.");
  const job = await pickJob(registry, arg, "cancel");
  if (!job) return;
  ssvqLog().info(`cancelling the compression of ${job.model.fsPath}`);
  job.cancel();
}
