import { spawnSync, type SpawnSyncOptions } from "node:child_process";
import { readdirSync } from "node:fs";
import { cliPath } from "./paths.js";

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the bundled `ssvq` as a user would. */
export function ssvq(args: string[], opts: SpawnSyncOptions = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: "utf8", timeout: 600_000, ...opts });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Every file name under a folder, sorted, to check a command wrote nothing. */
export function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true }).map(String).sort();
}
