/**
 * What the SSVQ end-to-end tests share: the vsix as users get it, a workspace with the fixtures, and
 * reading tables out of the webviews (each cell's exact `data-value`, or its text).
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Frame } from "playwright-core";
import { fixture, repoRoot } from "../helpers/paths.js";

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `npm run package` into `path`, as a user builds the vsix. */
export function packageVsix(path: string): string {
  const r = spawnSync("npm", ["run", "package", "--silent", "--", "--out", path], { cwd: repoRoot, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run package failed:\n${r.stdout}\n${r.stderr}`);
  return path;
}

/** A folder with fixture files and `.vscode/settings.json`. */
export function makeWorkspace(dir: string, files: readonly string[], settings: Record<string, unknown>): string {
  mkdirSync(join(dir, ".vscode"), { recursive: true });
  for (const f of files) copyFileSync(fixture(f), join(dir, f));
  writeFileSync(join(dir, ".vscode", "settings.json"), JSON.stringify(settings, null, 2));
  return dir;
}

/** Page elements as this code reads them (the tests compile without the DOM's types). */
interface Cell {
  dataset: Record<string, string | undefined>;
  innerText: string;
}
interface Row {
  children: ArrayLike<Cell>;
}

/** Every row of a table's body: each cell's exact value (data-value) or its text. */
export function tableRows(frame: Frame, table: string): Promise<string[][]> {
  return frame.locator(`${table} tbody tr`).evaluateAll((rows) =>
    rows.map((r) => Array.from((r as unknown as Row).children).map((c) => c.dataset["value"] ?? c.innerText.trim())),
  );
}

/** One column of a table's body. */
export async function tableColumn(frame: Frame, table: string, column: number): Promise<string[]> {
  return (await tableRows(frame, table)).map((r) => r[column] ?? "");
}
