/**
 * VS Code entry point: wires the commands, the status bar, the job registry, the inspector and the
 * panels (DESIGN.md section 6b). Activation loads no engine and no onnxruntime: compressing and inspecting run
 * in the background job process, and the argument parser is loaded on first use.
 */
import * as vscode from "vscode";
import { compressCommand } from "./commands/compress.js";
import { cancelCommand, showJobCommand } from "./commands/showJob.js";
import { openPanelCommand } from "./commands/openPanel.js";
import { PanelManager } from "./panel/panelManager.js";
import { targetModel } from "./commands/targetModel.js";
import { INSPECTOR_VIEW_TYPE, InspectorProvider } from "./inspector/inspectorProvider.js";
import { JobRegistry } from "./jobRegistry.js";
import { disposeLog, ssvqLog } from "./log.js";
import { JobStatusBar } from "./statusBar.js";

let registry: JobRegistry | undefined;

export function activate(context: vscode.ExtensionContext): void {
  registry = new JobRegistry(context.extensionPath);
  const jobs = registry;
  const panels = new PanelManager(context, jobs);
  const deps = { registry: jobs, panels, extensionPath: context.extensionPath };
  // A command that fails unexpectedly says so and logs the stack (VS Code would only log it).
  const command = (id: string, run: (arg: unknown) => unknown) =>
    vscode.commands.registerCommand(id, async (arg: unknown) => {
      try {
        return await run(arg);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        ssvqLog().error(`${id} failed: ${err.stack ?? err.message}`);
        const show = "Show Log";
        if ((await vscode.window.showErrorMessage(`SSVQ: ${err.message}`, show)) === show) ssvqLog().show(true);
      }
    });
  context.subscriptions.push(
    jobs,
    panels,
    new JobStatusBar(jobs),
    InspectorProvider.register(context, jobs),
    command("ssvq.compress", (arg) => compressCommand(deps, arg, { chooseSettings: false })),
    command("ssvq.compressWithSettings", (arg) => compressCommand(deps, arg, { chooseSettings: true })),
    command("ssvq.openInspector", async (arg) => {
      const model = await targetModel(arg, "inspect");
      if (model) await vscode.commands.executeCommand("vscode.openWith", model, INSPECTOR_VIEW_TYPE);
    }),
    command("ssvq.cancel", (arg) => cancelCommand(jobs, arg)),
    command("ssvq.showJob", (arg) => showJobCommand(jobs, panels, arg)),
    command("ssvq.openPanel", (arg) => openPanelCommand(jobs, panels, arg)),
    command("ssvq.showLog", () => ssvqLog().show()),
    { dispose: disposeLog },
  );
}

/** Ends running jobs (window closed, extension disabled or updated) and waits briefly for the workers to exit. */
export async function deactivate(): Promise<void> {
  await registry?.stopAll();
  registry = undefined;
}
