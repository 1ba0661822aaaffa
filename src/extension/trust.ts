/**
 * Workspace trust: in Restricted Mode the inspector works, but compressing (which runs onnxruntime on
 * the model and reads the data files the settings name) asks for trust first and does nothing without it.
 */
import * as vscode from "vscode";

export async function ensureTrusted(action: string): Promise<boolean> {
  if (vscode.workspace.isTrusted) return true;
  const manage = "Manage Workspace Trust";
  const answer = await vscode.window.showWarningMessage(
    `SSVQ: ${action} needs a trusted workspace`,
    {
      modal: true,
      detail:
        "Compressing runs onnxruntime on the model and reads the calibration and evaluation files that the ssvq.* settings name. " +
        "Trust this folder to compress; the SSVQ Inspector works in Restricted Mode too.",
    },
    manage,
  );
  if (answer === manage) await vscode.commands.executeCommand("workbench.trust.manage");
  return vscode.workspace.isTrusted;
}
