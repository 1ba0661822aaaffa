/**
 * Running cases: each case gets a fresh folder, its three commands run one after the other (so that
 * one command's outputs never look like another's leftovers), cases run `jobs` at a time. Every run
 * is checked before and after (a snapshot of the case folder: files added, changed, removed), and a
 * model compress writes is loaded in onnxruntime in a separate process.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { diffSnapshots, materialise, OUT_PATH, OUT_REPORT, snapshot, type CaseSpec, type CommandName, type MutatorClass } from "./case.js";
import { classify, PROGRESS_LINE, type Finding } from "./classify.js";
import { generateCase } from "./generate.js";
import type { SeedModel } from "./models.js";
import { runProcess } from "./proc.js";

export interface RunnerOptions {
  /** The bundled CLI under test (dist/cli.js). */
  cliPath: string;
  /** out/src/fuzz/ort-check.js; no onnxruntime check of compress outputs when undefined. */
  ortCheckPath?: string;
  /** Case folders are made under it. */
  workDir: string;
  timeoutMs: number;
  memoryCapBytes: number;
  commands: readonly CommandName[];
}

export interface RunRecord {
  caseId: string;
  klass: MutatorClass;
  seedModel: string;
  ops: string[];
  hostile?: string;
  command: CommandName;
  /** The CLI's arguments; run in the case folder. */
  args: string[];
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  memoryCapHit: boolean;
  wallMs: number;
  peakRssKb: number;
  stderrHead: string;
  stderrLineCount: number;
  stderrProgressLines: number;
  stderrLongestLine: number;
  stdoutBytes: number;
  filesLeft: string[];
  inputChanged: string[];
  leftProcesses: number;
  ortOutput?: { loads: boolean; message: string };
  ortInput?: { loads: boolean; message: string };
  findings: Finding[];
}

function emptyDir(dir: string): void {
  if (!existsSync(dir)) return;
  for (const n of readdirSync(dir)) rmSync(join(dir, n), { recursive: true, force: true });
}

async function ortLoads(o: RunnerOptions, root: string, model: string): Promise<{ loads: boolean; message: string }> {
  // onnxruntime writes telemetry files (mat-debug-PID.log, .ses) to TMPDIR: keep them in the case.
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: join(root, "tmp") };
  const r = await runProcess(process.execPath, [o.ortCheckPath!, model], { cwd: root, env, timeoutMs: 60_000, memoryCapBytes: o.memoryCapBytes, keepStdout: 600 });
  if (r.exitCode === 0) return { loads: true, message: "" };
  if (r.exitCode === 3) return { loads: false, message: r.stdoutHead.split("\n")[0]!.trim() };
  return { loads: false, message: r.timedOut ? "onnxruntime hung loading it" : `onnxruntime crashed loading it (${r.signal ?? `exit ${r.exitCode}`})` };
}

/** Runs one command of a case whose folder is `root` (materialised), checks it and cleans its outputs. */
export async function runCommand(o: RunnerOptions, spec: CaseSpec, root: string, command: CommandName): Promise<RunRecord> {
  const before = snapshot(root);
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: join(root, "tmp") };
  delete env["FORCE_COLOR"];
  const args = spec.args[command];
  const r = await runProcess(process.execPath, [o.cliPath, ...args], {
    cwd: root,
    env,
    timeoutMs: o.timeoutMs,
    memoryCapBytes: o.memoryCapBytes,
    progress: PROGRESS_LINE,
  });
  const after = snapshot(root);
  const ok = command === "compress" && r.exitCode === 0;
  const diff = diffSnapshots(before, after, ok ? new Set([OUT_PATH, OUT_REPORT]) : new Set());
  const rec: RunRecord = {
    caseId: spec.id,
    klass: spec.klass,
    seedModel: spec.seedModel,
    ops: spec.ops,
    ...(spec.hostile ? { hostile: spec.hostile } : {}),
    command,
    args,
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    memoryCapHit: r.memoryCapHit,
    wallMs: r.wallMs,
    peakRssKb: r.peakRssKb,
    stderrHead: r.stderrHead,
    stderrLineCount: r.stderrLineCount,
    stderrProgressLines: r.stderrProgressLines,
    stderrLongestLine: r.stderrLongestLine,
    stdoutBytes: r.stdoutBytes,
    filesLeft: diff.added,
    inputChanged: [...diff.changed, ...diff.removed.map((x) => `${x} (removed)`)],
    leftProcesses: r.leftProcesses,
    findings: [],
  };
  if (ok && o.ortCheckPath && existsSync(join(root, OUT_PATH))) {
    rec.ortOutput = await ortLoads(o, root, OUT_PATH);
    if (!rec.ortOutput.loads) rec.ortInput = await ortLoads(o, root, spec.args.compress[1]!);
  }
  rec.findings = classify({ ...rec, stderrLines: r.stderrLines }, spec, root);
  emptyDir(join(root, "out"));
  emptyDir(join(root, "tmp"));
  return rec;
}

/** Makes the case's folder, runs the commands, removes the folder. */
export async function runCase(o: RunnerOptions, spec: CaseSpec, commands: readonly CommandName[] = o.commands): Promise<RunRecord[]> {
  mkdirSync(o.workDir, { recursive: true });
  const root = mkdtempSync(join(o.workDir, `case-${spec.index}-`));
  try {
    await materialise(spec, root);
    const out: RunRecord[] = [];
    for (const c of commands) out.push(await runCommand(o, spec, root, c));
    return out;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export interface FuzzProgress {
  runs: number;
  cases: number;
  findings: number;
  elapsedMs: number;
  byClass: Record<string, number>;
}

export interface PoolOptions extends RunnerOptions {
  seed: number;
  count: number;
  /** Stop starting cases after this long. */
  minutes?: number;
  jobs: number;
  classes?: readonly MutatorClass[];
  /** Called after each 100 runs (and at the end). */
  onProgress?: (p: FuzzProgress) => void;
}

export interface PoolResult {
  runs: RunRecord[];
  cases: CaseSpec[];
  elapsedMs: number;
  stoppedByTime: boolean;
}

/** Generates and runs cases 0..count-1, `jobs` at a time; runs come back in case order. */
export async function runPool(seeds: readonly SeedModel[], o: PoolOptions): Promise<PoolResult> {
  const started = Date.now();
  const deadline = o.minutes !== undefined ? started + o.minutes * 60_000 : Infinity;
  const byCase = new Map<number, RunRecord[]>();
  const specs = new Map<number, CaseSpec>();
  let next = 0;
  let runs = 0;
  let findings = 0;
  let reported = 0;
  let stoppedByTime = false;
  const byClass: Record<string, number> = {};
  const progress = (force = false) => {
    if (!o.onProgress) return;
    if (force || Math.floor(runs / 100) > Math.floor(reported / 100)) {
      reported = runs;
      o.onProgress({ runs, cases: byCase.size, findings, elapsedMs: Date.now() - started, byClass: { ...byClass } });
    }
  };
  const worker = async () => {
    for (;;) {
      if (next >= o.count) return;
      if (Date.now() > deadline) {
        stoppedByTime = true;
        return;
      }
      const index = next++;
      const spec = generateCase(seeds, o.seed, index, { classes: o.classes });
      // The file contents are not kept (a case is made again from its id when needed).
      specs.set(index, { ...spec, files: [] });
      const recs = await runCase(o, spec);
      byCase.set(index, recs);
      for (const r of recs) {
        runs++;
        findings += r.findings.length;
        for (const f of r.findings) byClass[f.klass] = (byClass[f.klass] ?? 0) + 1;
        progress();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.jobs) }, worker));
  progress(true);
  const indices = [...byCase.keys()].sort((a, b) => a - b);
  return {
    runs: indices.flatMap((i) => byCase.get(i)!),
    cases: indices.map((i) => specs.get(i)!),
    elapsedMs: Date.now() - started,
    stoppedByTime,
  };
}

