import { spawn, spawnSync, type ChildProcess, type SpawnOptions, type SpawnSyncOptions } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { cliPath } from "./paths.js";

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the bundled `ssvq` as a user would. */
export function ssvq(args: string[], opts: SpawnSyncOptions = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: "utf8", timeout: 600_000, maxBuffer: 256 * 2 ** 20, ...opts });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Every file name under a folder, sorted, to check a command wrote nothing. */
export function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true }).map(String).sort();
}

export interface RunningCli {
  child: ChildProcess;
  /** Resolves once stderr so far matches `pattern`. */
  stderrMatches(pattern: RegExp): Promise<void>;
  /** Resolves when the process has exited. */
  done: Promise<CliResult>;
}

/** Starts the bundled `ssvq` without waiting, to act on it while it runs (cancel it, kill its worker). */
export function startSsvq(args: string[], opts: SpawnOptions = {}): RunningCli {
  const child = spawn(process.execPath, [cliPath, ...args], { ...opts, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const waiting: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout!.on("data", (d: Buffer) => void (stdout += d.toString("utf8")));
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString("utf8");
    for (const w of waiting.splice(0)) {
      if (w.pattern.test(stderr)) w.resolve();
      else waiting.push(w);
    }
  });
  const done = new Promise<CliResult>((resolve) => child.on("close", (status) => resolve({ status, stdout, stderr })));
  return {
    child,
    stderrMatches: (pattern) =>
      new Promise((resolve, reject) => {
        if (pattern.test(stderr)) return resolve();
        waiting.push({ pattern, resolve });
        void done.then((r) => reject(new Error(`ssvq ended (exit ${r.status}) before stderr matched ${pattern}:\n${r.stderr}`)));
      }),
    done,
  };
}

/** The processes `pid` started (Linux: /proc), such as the CLI's background worker. */
export function childPids(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
}
