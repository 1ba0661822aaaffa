/**
 * The questions of "Compress with SSVQ (Choose Settings)...": method and size (bits or k and d),
 * calibration data, evaluation data and labels, accelerator preset. Each starts from the current
 * setting; the answers apply to this run only (they override the `ssvq.*` settings).
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import { DEFAULT_POINT } from "../../job/compress-args.js";
import { PRESETS } from "../../core/accel/presets.js";
import { settingValues } from "../settings.js";
import { resolveSettingPath, type SettingValues } from "../settings-table.js";
import { foldersFor } from "../settings.js";

type Item<T> = vscode.QuickPickItem & { value: T };

const CANCELLED = Symbol("cancelled");

async function pick<T>(title: string, step: number, items: Item<T>[], placeHolder: string): Promise<T | typeof CANCELLED> {
  const chosen = await vscode.window.showQuickPick(items, { title: `${title} (${step}/4)`, placeHolder, ignoreFocusOut: true });
  return chosen ? chosen.value : CANCELLED;
}

const current = (yes: boolean): string => (yes ? "current setting" : "");

export async function chooseSettings(model: vscode.Uri): Promise<SettingValues | undefined> {
  const now = settingValues(model);
  const title = `SSVQ: compress ${basename(model.fsPath)}`;
  const answers: Record<string, unknown> = {};

  // 1. Method and size.
  type Method = { mode: string; ratio?: number | null; bits?: number | null; k?: number | null; d?: number | null; custom?: boolean };
  const mode = String(now["mode"] ?? "ssvq");
  const ratio = now["ratio"] == null ? undefined : Number(now["ratio"]);
  const kd = now["k"] != null && now["d"] != null;
  const methods: Item<Method>[] = [];
  for (const m of ["ssvq", "vq"] as const) {
    const { k, d } = DEFAULT_POINT[m];
    methods.push({
      label: `${m.toUpperCase()} k=${k} d=${d}`,
      description: "one fixed point for every layer",
      detail: current(mode === m && !kd && ratio === undefined && now["bits"] == null) || undefined,
      value: { mode: m, ratio: null, bits: null, k: null, d: null },
    });
    for (const r of [8, 12, 16, 24])
      methods.push({
        label: `${m.toUpperCase()}, whole model about ${r}x smaller`,
        description: "each layer its own k and d (or INT8, INT4), searched on the calibration data",
        detail: current(mode === m && !kd && ratio === r) || undefined,
        value: { mode: m, ratio: r, bits: null, k: null, d: null },
      });
    methods.push({ label: `${m.toUpperCase()} with a chosen k and d...`, description: kd && mode === m ? `k=${now["k"]} d=${now["d"]}` : "", value: { mode: m, custom: true } });
  }
  methods.push(
    { label: "INT8", description: "round to nearest, one scale per output channel", detail: current(mode === "int8") || undefined, value: { mode: "int8" } },
    { label: "INT4", description: "round to nearest, one scale per output channel", detail: current(mode === "int4") || undefined, value: { mode: "int4" } },
  );
  const method = await pick(title, 1, methods, "Method and size (a whole-model target lets each layer pay for the codebook it can afford)");
  if (method === CANCELLED) return undefined;
  answers["mode"] = method.mode;
  if (method.ratio !== undefined) Object.assign(answers, { ratio: method.ratio, bits: method.bits, k: null, d: null });
  if (method.custom) {
    Object.assign(answers, { ratio: null, bits: null });
    const k = await askInt(title, "Codebook size k (2 to 65536)", now["k"] ?? 16, 2, 65536);
    if (k === undefined) return undefined;
    const d = await askInt(title, "Sub-vector length d (1 to 64)", now["d"] ?? 4, 1, 64);
    if (d === undefined) return undefined;
    Object.assign(answers, { k, d });
  }

  // 2. Calibration data.
  const calib = await dataSource(model, title, 2, "calibration", String(now["calib"] ?? ""), "Calibration samples: layers are fine-tuned and their output errors measured on them");
  if (calib === CANCELLED) return undefined;
  Object.assign(answers, calib);

  // 3. Evaluation data and labels.
  const evaluation = await dataSource(model, title, 3, "evaluation", String(now["eval"] ?? ""), "Evaluation samples: the compressed model is compared with the original on them");
  if (evaluation === CANCELLED) return undefined;
  Object.assign(answers, evaluation);
  if (answers["eval"]) {
    const labelsNow = String(now["labels"] ?? "");
    const labels = await pick<string | null>(title, 3, [
      { label: "No labels", description: "fidelity to the original only", value: "" },
      ...(labelsNow ? [{ label: `Labels: ${labelsNow}`, description: "current setting", value: labelsNow }] : []),
      { label: "$(file) Choose a labels file...", description: "integer .npy [N] or text, one per line", value: null },
    ], "Labels of the evaluation samples: adds accuracy");
    if (labels === CANCELLED) return undefined;
    if (labels === null) {
      const f = await vscode.window.showOpenDialog({ title: "Labels of the evaluation samples", canSelectMany: false, defaultUri: folderOf(model) });
      if (!f?.[0]) return undefined;
      answers["labels"] = f[0].fsPath;
    } else answers["labels"] = labels;
  } else answers["labels"] = "";

  // 4. Accelerator preset.
  const presetNow = String(now["preset"] ?? "");
  const preset = await pick<string>(title, 4, [
    { label: "No simulation", detail: current(presetNow === "") || undefined, value: "" },
    ...PRESETS.map((p) => ({ label: p.name, description: p.description, detail: current(presetNow === p.name) || undefined, value: p.name })),
  ], "Simulate the compressed model on an edge accelerator");
  if (preset === CANCELLED) return undefined;
  answers["preset"] = preset;
  return answers;
}

const folderOf = (model: vscode.Uri): vscode.Uri => vscode.Uri.joinPath(model, "..");

async function askInt(title: string, prompt: string, value: unknown, min: number, max: number): Promise<number | undefined> {
  const text = await vscode.window.showInputBox({
    title,
    prompt,
    value: String(value),
    ignoreFocusOut: true,
    validateInput: (t) => (/^\d+$/.test(t.trim()) && Number(t) >= min && Number(t) <= max ? undefined : `a whole number from ${min} to ${max}`),
  });
  return text === undefined ? undefined : Number(text.trim());
}

/** A data source: none, the current setting, or a file or folder; then its range. */
async function dataSource(
  model: vscode.Uri,
  title: string,
  step: number,
  role: "calibration" | "evaluation",
  setting: string,
  placeHolder: string,
): Promise<SettingValues | typeof CANCELLED> {
  const key = role === "calibration" ? "calib" : "eval";
  const rangeKey = role === "calibration" ? "calibRange" : "evalRange";
  let shown = setting;
  try {
    if (setting) shown = resolveSettingPath(setting, { model: model.fsPath, workspaceFolders: foldersFor(model) });
  } catch {
    // Shown as written; the run reports the problem.
  }
  const source = await pick<string | "file" | "folder">(title, step, [
    { label: role === "calibration" ? "No calibration data" : "No evaluation", description: role === "calibration" ? "k-means only, no fine-tuning" : "", value: "" },
    ...(setting ? [{ label: `$(check) ${vscode.workspace.asRelativePath(shown)}`, description: "current setting", value: setting }] : []),
    { label: "$(file) Choose a file...", description: ".npy batch", value: "file" },
    { label: "$(folder) Choose a folder...", description: "one sample per file (.npy, .pb, .png, .jpg) or test_data_set_*", value: "folder" },
  ], placeHolder);
  if (source === CANCELLED) return CANCELLED;
  if (source === "") return { [key]: "" };
  let path = source;
  if (source === "file" || source === "folder") {
    const f = await vscode.window.showOpenDialog({
      title: `SSVQ: ${role} samples`,
      canSelectFiles: source === "file",
      canSelectFolders: source === "folder",
      canSelectMany: false,
      defaultUri: folderOf(model),
    });
    if (!f?.[0]) return CANCELLED;
    path = f[0].fsPath;
  }
  const rangeNow = String(settingValues(model)[rangeKey] ?? "");
  const range = await vscode.window.showInputBox({
    title,
    prompt: `Which ${role} samples: A:B takes samples A to B-1; empty takes all`,
    value: rangeNow,
    ignoreFocusOut: true,
    validateInput: (t) => (t.trim() === "" || /^\d*:\d*$/.test(t.trim()) ? undefined : "A:B, for example 0:512"),
  });
  if (range === undefined) return CANCELLED;
  return { [key]: path, [rangeKey]: range.trim() };
}
