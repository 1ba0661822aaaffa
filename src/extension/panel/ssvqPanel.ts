/**
 * One model's SSVQ panel: a webview that follows the model's compression live (the job's events, batched
 * to at most ten messages a second, replayed in full to a panel that opens or reloads late) and shows
 * its report afterwards, or a report read from a `.ssvq.json`. Buttons in the page come back as typed
 * messages (src/webview-protocol.ts), validated here.
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import type { Report } from "../../core/report.js";
import type { JobOutcome } from "../../job/client.js";
import { isOutcome, type WorkerEvent } from "../../job/protocol.js";
import { parseFromWebview, type JobProgressView, type ToPanelMessage } from "../../webview-protocol.js";
import { Disposable } from "../dispose.js";
import type { JobRegistry, RunningJob } from "../jobRegistry.js";
import { ssvqLog } from "../log.js";
import { shellQuote } from "../settings-table.js";
import { webviewHtml, webviewOptions } from "../webviewHtml.js";
import { EventBatcher } from "./eventBatcher.js";
import { exportReport } from "./exportReport.js";

export const PANEL_VIEW_TYPE = "ssvq.panel";

/** What the page keeps with `setState` and the serializer gets back after a reload. */
export interface PanelState {
  modelPath: string;
  reportPath?: string | null;
}

export interface ShownReport {
  report: Report;
  reportPath: string | null;
  outPath: string | null;
  command: string;
}

export interface PanelDeps {
  registry: JobRegistry;
  extensionUri: vscode.Uri;
  extensionPath: string;
  /** The `ssvq.shape` setting of a model, for simulating it. */
  shapesFor(model: vscode.Uri): string[];
}

const progressView = (job: RunningJob): JobProgressView => ({
  text: job.progress.text(),
  stage: job.progress.stage,
  fraction: job.progress.overallFraction(),
  stages: job.progress.stages,
});

const commandOf = (args: readonly string[]): string => `ssvq compress ${shellQuote(args)}`;

export class SsvqPanel extends Disposable {
  private job: RunningJob | undefined;
  private jobSubscription: vscode.Disposable | undefined;
  private batcher: EventBatcher<WorkerEvent> | undefined;
  private shown: ShownReport | undefined;
  private ready = false;
  private readonly closed = this.register(new vscode.EventEmitter<void>());
  readonly onDidClose = this.closed.event;

  constructor(
    readonly panel: vscode.WebviewPanel,
    readonly modelPath: string,
    private readonly deps: PanelDeps,
    private pendingReportPath?: string | null,
  ) {
    super();
    panel.webview.options = webviewOptions(deps.extensionUri);
    panel.iconPath = vscode.Uri.joinPath(deps.extensionUri, "media", "icon.png");
    panel.title = `SSVQ: ${basename(modelPath)}`;
    panel.webview.html = webviewHtml(panel.webview, deps.extensionUri, "panel", `SSVQ: ${basename(modelPath)}`);
    this.register(panel.webview.onDidReceiveMessage((raw: unknown) => void this.onMessage(raw)));
    this.register(
      panel.onDidDispose(() => {
        this.closed.fire();
        this.dispose();
      }),
    );
  }

  /** Follows a job of this model from now on (it may have started before the panel opened). */
  attachJob(job: RunningJob): void {
    if (this.job === job) return;
    this.detachJob();
    this.job = job;
    this.shown = undefined;
    this.batcher = new EventBatcher<WorkerEvent>((events) => this.post({ type: "jobEvents", progress: progressView(job), events }));
    this.jobSubscription = this.deps.registry.onEvent(({ job: j, event }) => {
      if (j !== job) return;
      if (isOutcome(event)) return;
      this.batcher?.push(event);
    });
    void job.outcome.then((outcome) => this.jobEnded(job, outcome));
    if (this.ready) this.sendJobSnapshot();
  }

  showReport(shown: ShownReport): void {
    if (this.job) return; // a running compression of this model takes the panel; its report follows
    this.shown = shown;
    this.pendingReportPath = undefined;
    if (this.ready) this.sendReport();
  }

  reveal(preserveFocus: boolean): void {
    this.panel.reveal(undefined, preserveFocus);
  }

  private detachJob(): void {
    this.batcher?.flush();
    this.batcher?.dispose();
    this.batcher = undefined;
    this.jobSubscription?.dispose();
    this.jobSubscription = undefined;
    this.job = undefined;
  }

  private async jobEnded(job: RunningJob, outcome: JobOutcome): Promise<void> {
    if (this.job !== job) return;
    // The last events, then the outcome, still at most ten messages a second.
    await this.batcher?.drain();
    if (this.job !== job) return;
    const command = commandOf(job.args);
    this.detachJob();
    if (outcome.type === "result") {
      this.shown = { report: outcome.report, reportPath: outcome.reportPath ?? null, outPath: outcome.outPath ?? null, command };
      if (this.ready) this.sendReport();
    } else if (outcome.type === "error") {
      this.post({ type: "jobFailed", kind: outcome.kind, message: outcome.message });
    }
  }

  private post(m: ToPanelMessage): void {
    if (this.isDisposed) return;
    void this.panel.webview.postMessage(m);
  }

  private sendJobSnapshot(): void {
    const job = this.job!;
    this.batcher?.dispose();
    this.batcher = new EventBatcher<WorkerEvent>((events) => this.post({ type: "jobEvents", progress: progressView(job), events }));
    this.post({ type: "jobStarted", model: this.modelPath, command: commandOf(job.args), progress: progressView(job), events: [...job.progress.events] });
    this.batcher.markSent();
  }

  private sendReport(): void {
    const s = this.shown!;
    void (async () => {
      const { initialPreset, presetInfos } = await import("./latency.js");
      this.post({ type: "report", report: s.report, reportPath: s.reportPath, outPath: s.outPath, command: s.command, presets: presetInfos(), preset: initialPreset(s.report) });
    })();
  }

  private async onMessage(raw: unknown): Promise<void> {
    const m = parseFromWebview(raw);
    if (!m) return;
    const s = this.shown;
    try {
      switch (m.type) {
        case "panelReady":
          this.ready = true;
          if (this.job) this.sendJobSnapshot();
          else if (s) this.sendReport();
          else if (this.pendingReportPath) await this.loadReport(this.pendingReportPath);
          else this.post({ type: "reportFailed", message: "No compression of this model to show: compress it, or open its .ssvq.json report." });
          break;
        case "selectPreset": {
          if (!s) return;
          this.post({ type: "latencyPending", preset: m.preset });
          const { latencyFor } = await import("./latency.js");
          try {
            const r = await latencyFor(s.report, m.preset, { extensionPath: this.deps.extensionPath, shape: this.deps.shapesFor(vscode.Uri.file(this.modelPath)) });
            if (this.shown === s) this.post({ type: "latency", preset: m.preset, simulation: r.simulation, warnings: r.warnings });
          } catch (e) {
            this.post({ type: "latencyFailed", preset: m.preset, message: (e as Error).message });
          }
          break;
        }
        case "exportReport": {
          if (!s) return;
          const written = await exportReport(s.report, m.format, s.reportPath ?? s.outPath ?? this.modelPath);
          if (written) void vscode.window.showInformationMessage(`SSVQ: exported the report to ${written}`);
          break;
        }
        case "openOutput":
          if (s?.outPath) await vscode.commands.executeCommand("vscode.openWith", vscode.Uri.file(s.outPath), "ssvq.inspector");
          break;
        case "openInspector":
          await vscode.commands.executeCommand("vscode.openWith", vscode.Uri.file(s?.outPath ?? this.modelPath), "ssvq.inspector");
          break;
        case "revealOutput":
          if (s?.outPath) await vscode.commands.executeCommand("revealInExplorer", vscode.Uri.file(s.outPath));
          break;
        case "copyCommand": {
          const command = this.job ? commandOf(this.job.args) : s?.command;
          if (!command) return;
          await vscode.env.clipboard.writeText(command);
          void vscode.window.showInformationMessage("SSVQ: copied the command line");
          break;
        }
        case "compressAgain":
          await vscode.commands.executeCommand("ssvq.compressWithSettings", vscode.Uri.file(this.modelPath));
          break;
        case "cancelJob":
          this.job?.cancel();
          break;
        default:
          break;
      }
    } catch (e) {
      ssvqLog().error(`panel: ${m.type} failed: ${(e as Error).stack ?? e}`);
      void vscode.window.showErrorMessage(`SSVQ: ${(e as Error).message}`);
    }
  }

  /** Reads a report from disk for this panel (after a window reload, or from a `.ssvq.json`). */
  private async loadReport(path: string): Promise<void> {
    const { readReportFile } = await import("./reportFile.js");
    try {
      this.showReport(await readReportFile(path));
    } catch (e) {
      this.post({ type: "reportFailed", message: (e as Error).message });
    }
  }

  override dispose(): void {
    this.detachJob();
    super.dispose();
  }
}
