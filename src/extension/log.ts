/** The "SSVQ" log channel: every job's command line, stages, layers, warnings and outcome. */
import * as vscode from "vscode";

let channel: vscode.LogOutputChannel | undefined;

export function ssvqLog(): vscode.LogOutputChannel {
  channel ??= vscode.window.createOutputChannel("SSVQ", { log: true });
  return channel;
}

export function disposeLog(): void {
  channel?.dispose();
  channel = undefined;
}
