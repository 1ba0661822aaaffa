/** Reading the `ssvq.*` settings for a model (its folder's scope) and turning them into `ssvq compress` arguments. */
import * as vscode from "vscode";
import { SETTINGS, settingsToArgs, type CompressArgs, type SettingValues } from "./settings-table.js";

/** The settings that apply to a model, as the user set them (a value equal to the default counts as unset). */
export function settingValues(model: vscode.Uri): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration("ssvq", model);
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const v = config.get<unknown>(s.key);
    if (v !== undefined) out[s.key] = v;
  }
  return out;
}

/** The workspace folders, the one holding the model first (`${workspaceFolder}` means that one). */
export function foldersFor(model: vscode.Uri): { name: string; path: string }[] {
  const own = vscode.workspace.getWorkspaceFolder(model);
  const all = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === "file");
  const ordered = own ? [own, ...all.filter((f) => f !== own)] : all;
  return ordered.map((f) => ({ name: f.name, path: f.uri.fsPath }));
}

/** The arguments for compressing `model` with the settings, overridden by `overrides` (the quick picks' answers). */
export function compressArgsFor(model: vscode.Uri, overrides: SettingValues = {}): CompressArgs {
  return settingsToArgs({ ...settingValues(model), ...overrides }, { model: model.fsPath, workspaceFolders: foldersFor(model) });
}
