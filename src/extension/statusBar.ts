/**
 * The status-bar item of running compressions: "$(sync~spin) SSVQ: finetune 3/12 conv2 45%" for the
 * most recently started job (and how many others run). Clicking it shows that job (command
 * `ssvq.showJob`). Hidden when nothing runs.
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import { Disposable } from "./dispose.js";
import type { JobRegistry } from "./jobRegistry.js";

export class JobStatusBar extends Disposable {
  private readonly item = this.register(vscode.window.createStatusBarItem("ssvq.job", vscode.StatusBarAlignment.Left, 50));
  private pending: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly registry: JobRegistry) {
    super();
    this.item.name = "SSVQ Compression";
    this.register(registry.onDidChange(() => this.schedule()));
    this.update();
  }

  /** At most ten updates a second, however fast the events come. */
  private schedule(): void {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.update();
    }, 100);
  }

  private update(): void {
    const jobs = this.registry.all();
    const job = jobs.reduce<(typeof jobs)[number] | undefined>((a, j) => (!a || j.startedAt > a.startedAt ? j : a), undefined);
    if (!job) {
      this.item.hide();
      return;
    }
    const others = jobs.length > 1 ? ` (+${jobs.length - 1})` : "";
    this.item.text = `$(sync~spin) SSVQ: ${job.progress.text()}${others}`;
    const tip = new vscode.MarkdownString(undefined, true);
    tip.appendMarkdown(`**Compressing ${basename(job.model.fsPath)}**\n\n`);
    tip.appendText(`${job.progress.text()}, ${Math.floor(100 * job.progress.overallFraction())}% of the run\n`);
    for (const j of jobs) if (j !== job) tip.appendText(`\nalso ${basename(j.model.fsPath)}: ${j.progress.text()}`);
    tip.appendMarkdown("\n\nClick to show its progress; cancel with *SSVQ: Cancel SSVQ Compression*.");
    this.item.tooltip = tip;
    this.item.command = { command: "ssvq.showJob", title: "Show SSVQ Compression", arguments: [job.model] };
    this.item.accessibilityInformation = { label: `SSVQ compression of ${basename(job.model.fsPath)}: ${job.progress.text()}`, role: "button" };
    this.item.show();
  }

  override dispose(): void {
    if (this.pending) clearTimeout(this.pending);
    super.dispose();
  }
}
