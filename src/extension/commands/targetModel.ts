/**
 * Which model a command is about: the explorer's or editor title's resource, else the active editor's
 * (text or custom), else one the user picks from the workspace's `.onnx` files or a file dialog.
 */
import * as vscode from "vscode";

export const isOnnx = (uri: vscode.Uri): boolean => uri.scheme === "file" && /\.onnx$/i.test(uri.path);

/** The resource of the active editor tab, whatever editor shows it. */
export function activeResource(): vscode.Uri | undefined {
  const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
  if (input instanceof vscode.TabInputCustom || input instanceof vscode.TabInputText) return input.uri;
  return vscode.window.activeTextEditor?.document.uri;
}

export async function targetModel(arg: unknown, purpose: string): Promise<vscode.Uri | undefined> {
  if (arg instanceof vscode.Uri) {
    if (arg.scheme !== "file") {
      void vscode.window.showErrorMessage(`SSVQ works on model files on disk; ${arg.toString()} is not one.`);
      return undefined;
    }
    return arg;
  }
  const active = activeResource();
  if (active && isOnnx(active)) return active;
  const found = await vscode.workspace.findFiles("**/*.onnx", "**/node_modules/**", 200);
  const browse: vscode.QuickPickItem = { label: "$(folder-opened) Browse...", alwaysShow: true };
  const items: (vscode.QuickPickItem & { uri?: vscode.Uri })[] = [
    ...found
      .filter((u) => u.scheme === "file")
      .sort((a, b) => a.fsPath.localeCompare(b.fsPath))
      .map((uri) => ({ label: vscode.workspace.asRelativePath(uri), uri })),
    browse,
  ];
  const pick = await vscode.window.showQuickPick(items, { title: `SSVQ: the model to ${purpose}`, placeHolder: "An ONNX model" });
  if (!pick) return undefined;
  if (pick.uri) return pick.uri;
  const chosen = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { "ONNX models": ["onnx"] }, title: `SSVQ: the model to ${purpose}` });
  return chosen?.[0];
}
