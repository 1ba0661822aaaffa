/**
 * One fuzz session, in process: seeds, cases, runs, report. `main.ts` is its command line; the smoke
 * test calls `runFuzz` directly.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { COMMANDS, type CommandName, type MutatorClass } from "./case.js";
import { loadSeeds, type SeedModel } from "./models.js";
import { buildReport, writeReport, type FuzzReport } from "./report.js";
import { runPool, type FuzzProgress } from "./runner.js";

/** The repository root: the nearest folder above this file with a package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("package.json not found above " + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

export interface FuzzOptions {
  seed: number;
  count: number;
  minutes?: number;
  outDir?: string;
  jobs?: number;
  commands?: readonly CommandName[];
  classes?: readonly MutatorClass[];
  timeoutMs?: number;
  memoryCapBytes?: number;
  /** The CLI under test (default dist/cli.js of this repository). */
  cliPath?: string;
  /** Re-runs per finding group to shrink its case (default 6; 0 off). */
  shrinkRuns?: number;
  /** Load compress outputs in onnxruntime (default on). */
  ortCheck?: boolean;
  onProgress?: (p: FuzzProgress) => void;
  log?: (line: string) => void;
}

export interface FuzzOutcome {
  report: FuzzReport;
  files: { json: string; markdown: string };
}

export const DEFAULTS = { timeoutMs: 60_000, memoryCapBytes: 4 * 2 ** 30, jobs: 2, shrinkRuns: 6 };

function gitCommit(root: string): string | undefined {
  const r = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" });
  if (r.status !== 0) return undefined;
  const dirty = spawnSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: root, encoding: "utf8" });
  return r.stdout.trim() + (dirty.stdout.trim() ? " (with uncommitted changes)" : "");
}

/** The seeds of a session; compressed seeds are made with the CLI under test in `workDir`. */
export function sessionSeeds(root: string, cliPath: string, workDir: string): SeedModel[] {
  return loadSeeds({ repoRoot: root, cliPath, workDir });
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzOutcome> {
  const root = repoRoot();
  const cliPath = resolve(o.cliPath ?? join(root, "dist", "cli.js"));
  if (!existsSync(cliPath)) throw new Error(`${cliPath} does not exist; run npm run build first`);
  const ortCheckPath = join(dirname(fileURLToPath(import.meta.url)), "ort-check.js");
  const outDir = resolve(o.outDir ?? join(root, ".tmp", "fuzz", `seed-${o.seed}`));
  const workDir = mkdtempSync(join(tmpdir(), "ssvq-fuzz-"));
  const startedAt = new Date().toISOString();
  try {
    const seeds = sessionSeeds(root, cliPath, workDir);
    o.log?.(`seeds: ${seeds.map((s) => `${s.name} (${s.bytes.length} B)`).join(", ")}`);
    const runner = {
      cliPath,
      ...(o.ortCheck === false ? {} : { ortCheckPath }),
      workDir: join(workDir, "cases"),
      timeoutMs: o.timeoutMs ?? DEFAULTS.timeoutMs,
      memoryCapBytes: o.memoryCapBytes ?? DEFAULTS.memoryCapBytes,
      commands: o.commands ?? COMMANDS,
    };
    const jobs = o.jobs ?? DEFAULTS.jobs;
    // The commit when the session starts (the CLI under test is built from it), not when it ends.
    const commit = gitCommit(dirname(dirname(cliPath)));
    const pool = await runPool(seeds, {
      ...runner,
      seed: o.seed,
      count: o.count,
      ...(o.minutes !== undefined ? { minutes: o.minutes } : {}),
      jobs,
      ...(o.classes ? { classes: o.classes } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    });
    const report = await buildReport(
      seeds,
      pool,
      {
        seed: o.seed,
        count: o.count,
        commands: runner.commands,
        cliPath,
        timeoutMs: runner.timeoutMs,
        memoryCapBytes: runner.memoryCapBytes,
        jobs,
        startedAt,
        elapsedMs: pool.elapsedMs,
        stoppedByTime: pool.stoppedByTime,
        ...(o.classes ? { classes: o.classes } : {}),
        ...(commit ? { gitCommit: commit } : {}),
      },
      { ...runner, seed: o.seed, ...(o.classes ? { classes: o.classes } : {}), outDir, shrinkRuns: o.shrinkRuns ?? DEFAULTS.shrinkRuns },
    );
    const files = writeReport(report, outDir);
    return { report, files };
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}
