/**
 * The SSVQ panels: one per model (keyed by the source model's path), opened when a compression starts,
 * from the status bar, from the inspector of a `.ssvq.onnx` or for a `.ssvq.json` report, and restored
 * after a window reload (WebviewPanelSerializer, with the state the page keeps).
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import { Disposable } from "../dispose.js";
import type { JobRegistry, RunningJob } from "../jobRegistry.js";
import { PANEL_VIEW_TYPE, SsvqPanel, type PanelDeps, type PanelState } from "./ssvqPanel.js";

export class PanelManager extends Disposable {
  private readonly panels = new Map<string, SsvqPanel>();
  private readonly deps: PanelDeps;

  constructor(context: vscode.ExtensionContext, registry: JobRegistry) {
    super();
    this.deps = {
      registry,
      extensionUri: context.extensionUri,
      extensionPath: context.extensionPath,
      shapesFor: (model) => vscode.workspace.getConfiguration("ssvq", model).get<string[]>("shape") ?? [],
    };
    this.register(
      vscode.window.registerWebviewPanelSerializer(PANEL_VIEW_TYPE, {
        deserializeWebviewPanel: async (panel, state: unknown) => this.revive(panel, state),
      }),
    );
  }

  /** Shows the panel of a running job's model (creating it), following the job. */
  showJob(job: RunningJob, preserveFocus = false): void {
    const panel = this.panelFor(job.model.fsPath, preserveFocus);
    panel.attachJob(job);
  }

  /** Shows a report file in its model's panel. */
  async showReportFile(path: string, preserveFocus = false): Promise<void> {
    const { readReportFile } = await import("./reportFile.js");
    const shown = await readReportFile(path);
    const model = shown.report.source.path;
    const panel = this.panelFor(model, preserveFocus);
    const job = this.deps.registry.get(vscode.Uri.file(model));
    if (job) panel.attachJob(job);
    else panel.showReport(shown);
  }

  private panelFor(modelPath: string, preserveFocus: boolean): SsvqPanel {
    const existing = this.panels.get(modelPath);
    if (existing) {
      existing.reveal(preserveFocus);
      return existing;
    }
    const webviewPanel = vscode.window.createWebviewPanel(
      PANEL_VIEW_TYPE,
      `SSVQ: ${basename(modelPath)}`,
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus },
      { retainContextWhenHidden: false, enableFindWidget: true },
    );
    return this.track(new SsvqPanel(webviewPanel, modelPath, this.deps));
  }

  /** After a window reload: the page's saved state says which model and report it showed. */
  private revive(webviewPanel: vscode.WebviewPanel, raw: unknown): void {
    const state = raw as Partial<PanelState> | undefined;
    if (!state || typeof state.modelPath !== "string") {
      webviewPanel.dispose();
      return;
    }
    const old = this.panels.get(state.modelPath);
    if (old) {
      // The same model is already shown: keep one panel per model.
      webviewPanel.dispose();
      old.reveal(true);
      return;
    }
    const panel = this.track(new SsvqPanel(webviewPanel, state.modelPath, this.deps, typeof state.reportPath === "string" ? state.reportPath : null));
    const job = this.deps.registry.get(vscode.Uri.file(state.modelPath));
    if (job) panel.attachJob(job);
  }

  private track(panel: SsvqPanel): SsvqPanel {
    this.panels.set(panel.modelPath, panel);
    panel.onDidClose(() => {
      if (this.panels.get(panel.modelPath) === panel) this.panels.delete(panel.modelPath);
    });
    return panel;
  }

  override dispose(): void {
    for (const p of this.panels.values()) p.dispose();
    this.panels.clear();
    super.dispose();
  }
}
