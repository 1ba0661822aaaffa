/**
 * One model open in the SSVQ Inspector: its summary, read in the background job process (never on the
 * extension host's thread), cached for every view of it and read again when the file changes.
 */
import * as vscode from "vscode";
import { statSync } from "node:fs";
import { join } from "node:path";
import { startJob, type Job } from "../../job/client.js";
import type { ToInspectorMessage } from "../../webview-protocol.js";
import { Disposable } from "../dispose.js";

export type InspectionResult = Extract<ToInspectorMessage, { type: "inspection" | "inspectionFailed" }>;

export class InspectorDocument extends Disposable implements vscode.CustomDocument {
  private current: Promise<InspectionResult> | undefined;
  private job: Job | undefined;
  private readonly changed = this.register(new vscode.EventEmitter<void>());
  /** The file changed on disk: views should read it again. */
  readonly onDidChangeFile = this.changed.event;

  constructor(
    readonly uri: vscode.Uri,
    private readonly extensionPath: string,
  ) {
    super();
    const dir = vscode.Uri.joinPath(uri, "..");
    const name = uri.path.slice(uri.path.lastIndexOf("/") + 1);
    const watcher = this.register(vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(dir, name)));
    const reread = () => {
      this.current = undefined;
      this.changed.fire();
    };
    this.register(watcher.onDidChange(reread));
    this.register(watcher.onDidCreate(reread));
    this.register(watcher.onDidDelete(reread));
  }

  fileBytes(): number | null {
    try {
      return statSync(this.uri.fsPath).size;
    } catch {
      return null;
    }
  }

  /** The summary (or the error), from the cache or a fresh read; `startedAt` is when the view asked. */
  inspection(startedAt: number): Promise<InspectionResult> {
    this.current ??= this.read(startedAt);
    return this.current;
  }

  private async read(startedAt: number): Promise<InspectionResult> {
    this.job?.cancel();
    const job = startJob({ kind: "inspect", input: this.uri.fsPath }, { workerPath: join(this.extensionPath, "dist", "job-worker.js") });
    this.job = job;
    const outcome = await job.outcome;
    if (this.job === job) this.job = undefined;
    if (outcome.type === "inspection") return { type: "inspection", inspection: outcome.inspection, elapsedMs: Date.now() - startedAt };
    if (outcome.type === "error")
      return { type: "inspectionFailed", kind: outcome.kind === "input" ? "input" : "internal", message: outcome.kind === "cancelled" ? "reading was cancelled" : outcome.message };
    return { type: "inspectionFailed", kind: "internal", message: "the background job returned no summary" };
  }

  override dispose(): void {
    this.job?.cancel();
    super.dispose();
  }
}
