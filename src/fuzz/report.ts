/**
 * The report: every run as JSON, and a Markdown summary that groups findings by class, command and
 * first stderr line, each group with a minimal reproduction: its smallest case (shrunk to fewer
 * mutations when that still reproduces, a few runs at most) made again in the report folder with the
 * exact command line, and the fuzzer command that makes it again.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { materialise, type CaseSpec, type CommandName } from "./case.js";
import { FINDING_ORDER, PROGRESS_LINE, type Finding, type FindingClass } from "./classify.js";
import { generateCase } from "./generate.js";
import type { SeedModel } from "./models.js";
import { runCase, type PoolResult, type RunnerOptions, type RunRecord } from "./runner.js";
import type { MutatorClass } from "./case.js";

export interface Group {
  key: string;
  klass: FindingClass;
  command: CommandName;
  firstLine: string;
  detail: string;
  runs: number;
  cases: string[];
  repro?: Repro;
}

export interface Repro {
  caseId: string;
  /** The mutations applied, when fewer than drawn. */
  keep?: number[];
  klass: MutatorClass;
  seedModel: string;
  ops: string[];
  hostile?: string;
  dir: string;
  /** The CLI's arguments, run in `dir`. */
  args: string[];
  shrunk: boolean;
  stderr: string;
  exit: string;
}

export interface ReportMeta {
  seed: number;
  count: number;
  commands: readonly CommandName[];
  cliPath: string;
  timeoutMs: number;
  memoryCapBytes: number;
  jobs: number;
  startedAt: string;
  elapsedMs: number;
  stoppedByTime: boolean;
  classes?: readonly MutatorClass[];
  gitCommit?: string;
}

export interface FuzzReport {
  meta: ReportMeta;
  totals: {
    cases: number;
    runs: number;
    ok: number;
    runsWithFindings: number;
    findings: number;
    byClass: Record<string, number>;
    byCommand: Record<string, { runs: number; exit0: number; exit2: number; other: number; medianMs: number; p95Ms: number; maxMs: number; maxRssMb: number }>;
    byMutator: Record<string, { cases: number; runsWithFindings: number }>;
  };
  groups: Group[];
  runs: RunRecord[];
}

const quantile = (xs: number[], q: number): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

export const shQuote = (s: string): string => (/^[\w./=,:+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function exitText(r: RunRecord): string {
  if (r.timedOut) return "timeout (killed)";
  if (r.memoryCapHit) return "memory cap (killed)";
  if (r.signal) return `signal ${r.signal}`;
  return `exit ${r.exitCode}`;
}

export interface ReportOptions extends RunnerOptions {
  seed: number;
  classes?: readonly MutatorClass[];
  outDir: string;
  /** Re-runs allowed per group to shrink its case (0: no shrinking). */
  shrinkRuns: number;
}

/** Tries cases with fewer mutations; returns the smallest that still gives a finding with the same key. */
async function shrink(seeds: readonly SeedModel[], o: ReportOptions, spec: CaseSpec, command: CommandName, key: string): Promise<{ spec: CaseSpec; run: RunRecord } | undefined> {
  if (spec.opCount <= 1 || (spec.klass !== "blind" && spec.klass !== "structure")) return undefined;
  let budget = o.shrinkRuns;
  let current = [...Array(spec.opCount).keys()];
  let best: { spec: CaseSpec; run: RunRecord } | undefined;
  while (current.length > 1 && budget > 0) {
    const half = Math.ceil(current.length / 2);
    const candidates = [...current.map((i) => [i]), current.slice(0, half), current.slice(half)].filter((c) => c.length < current.length);
    let improved = false;
    for (const keep of candidates) {
      if (budget-- <= 0) break;
      const s = generateCase(seeds, spec.seed, spec.index, { classes: o.classes, keep });
      const [run] = await runCase(o, s, [command]);
      if (run && run.findings.some((f) => f.key === key)) {
        best = { spec: s, run };
        current = keep;
        improved = true;
        break;
      }
    }
    if (!improved) break;
  }
  return best;
}

export async function buildReport(seeds: readonly SeedModel[], pool: PoolResult, meta: ReportMeta, o: ReportOptions): Promise<FuzzReport> {
  const groups = new Map<string, { findings: Finding[]; runs: RunRecord[] }>();
  for (const r of pool.runs)
    for (const f of r.findings) {
      const g = groups.get(f.key) ?? { findings: [], runs: [] };
      g.findings.push(f);
      g.runs.push(r);
      groups.set(f.key, g);
    }
  const specById = new Map(pool.cases.map((c) => [c.id, c]));
  const ordered = [...groups.entries()].sort(([ka, a], [kb, b]) => {
    const ca = FINDING_ORDER.indexOf(a.findings[0]!.klass);
    const cb = FINDING_ORDER.indexOf(b.findings[0]!.klass);
    return ca - cb || b.runs.length - a.runs.length || ka.localeCompare(kb);
  });
  const out: Group[] = [];
  rmSync(join(o.outDir, "repro"), { recursive: true, force: true });
  let n = 0;
  for (const [key, g] of ordered) {
    n++;
    const f0 = g.findings[0]!;
    const command = key.split("|")[1] as CommandName;
    // The smallest case of the group: fewest bytes, then fewest mutations.
    const best = [...g.runs].sort((a, b) => {
      const sa = specById.get(a.caseId)!;
      const sb = specById.get(b.caseId)!;
      return sa.size - sb.size || sa.ops.length - sb.ops.length;
    })[0]!;
    const bestSpec = specById.get(best.caseId)!;
    let spec = generateCase(seeds, bestSpec.seed, bestSpec.index, { classes: o.classes });
    let run = best;
    let shrunk = false;
    if (o.shrinkRuns > 0 && f0.klass !== "timeout" && f0.klass !== "memory-cap") {
      const s = await shrink(seeds, o, spec, command, key);
      if (s) {
        spec = s.spec;
        run = s.run;
        shrunk = true;
      }
    }
    const dir = join(o.outDir, "repro", `${String(n).padStart(2, "0")}-${f0.klass}-${command}`);
    mkdirSync(dir, { recursive: true });
    await materialise(spec, dir);
    const args = spec.args[command];
    writeFileSync(
      join(dir, "repro.sh"),
      [
        "#!/bin/sh",
        `# ${f0.klass} in ${command}: ${key.split("|").slice(2).join("|")}`,
        `# case ${spec.id}${spec.kept ? ` (mutations ${spec.kept.join(",")} of ${spec.opCount})` : ""}, ${spec.klass} on ${spec.seedModel}: ${spec.ops.join("; ").replace(/\n/g, " ")}`,
        `cd "$(dirname "$0")" && exec node ${shQuote(o.cliPath)} ${args.map(shQuote).join(" ")}`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    writeFileSync(join(dir, "case.json"), JSON.stringify({ ...spec, files: spec.files.map((f) => ({ path: f.path, kind: f.kind })) }, null, 2));
    out.push({
      key,
      klass: f0.klass,
      command,
      firstLine: best.exitCode === 0 ? "" : (best.stderrHead.split("\n").find((l) => l.trim() !== "" && !PROGRESS_LINE.test(l)) ?? "").slice(0, 400),
      detail: f0.detail,
      runs: g.runs.length,
      cases: [...new Set(g.runs.map((r) => r.caseId))],
      repro: {
        caseId: spec.id,
        ...(spec.kept ? { keep: spec.kept } : {}),
        klass: spec.klass,
        seedModel: spec.seedModel,
        ops: spec.ops,
        ...(spec.hostile ? { hostile: spec.hostile } : {}),
        dir,
        args,
        shrunk,
        stderr: run.stderrHead.slice(0, 600),
        exit: exitText(run),
      },
    });
  }

  const byCommand: FuzzReport["totals"]["byCommand"] = {};
  for (const c of meta.commands) {
    const rs = pool.runs.filter((r) => r.command === c);
    const times = rs.map((r) => r.wallMs);
    byCommand[c] = {
      runs: rs.length,
      exit0: rs.filter((r) => r.exitCode === 0).length,
      exit2: rs.filter((r) => r.exitCode === 2).length,
      other: rs.filter((r) => r.exitCode !== 0 && r.exitCode !== 2).length,
      medianMs: quantile(times, 0.5),
      p95Ms: quantile(times, 0.95),
      maxMs: Math.max(0, ...times),
      maxRssMb: Math.round(Math.max(0, ...rs.map((r) => r.peakRssKb)) / 1024),
    };
  }
  const byClass: Record<string, number> = {};
  for (const r of pool.runs) for (const f of r.findings) byClass[f.klass] = (byClass[f.klass] ?? 0) + 1;
  const byMutator: FuzzReport["totals"]["byMutator"] = {};
  for (const c of pool.cases) {
    const m = (byMutator[c.klass] ??= { cases: 0, runsWithFindings: 0 });
    m.cases++;
  }
  for (const r of pool.runs) if (r.findings.length > 0) byMutator[r.klass]!.runsWithFindings++;
  const runsWithFindings = pool.runs.filter((r) => r.findings.length > 0).length;
  return {
    meta,
    totals: {
      cases: pool.cases.length,
      runs: pool.runs.length,
      ok: pool.runs.length - runsWithFindings,
      runsWithFindings,
      findings: pool.runs.reduce((s, r) => s + r.findings.length, 0),
      byClass,
      byCommand,
      byMutator,
    },
    groups: out,
    runs: pool.runs,
  };
}

const CLASS_MEANING: Record<FindingClass, string> = {
  "crash-signal": "killed by a signal (a native crash)",
  timeout: "did not end within the timeout (a hang)",
  "memory-cap": "the process group's memory passed the cap",
  "exit-1": "exit 1: an internal error",
  "exit-other": "an exit status other than 0, 1 and 2",
  "process-left": "a process of the command still ran after it exited",
  "input-changed": "a file of the case (the model, its data, files outside) changed",
  "file-left": "a file left behind (a failed run, or more than the outputs)",
  "hostile-accepted": "exit 0 on a case its mutator knows must be refused",
  "output-unloadable": "compress exit 0, but onnxruntime cannot load the model written",
  "stderr-lines": "exit 2 with more than one line on stderr",
  "stderr-empty": "exit 2 with nothing on stderr",
  "stderr-overlong": `a stderr line over 300 characters`,
  "stderr-cxx": "C++ names or source locations in a message",
  "stderr-control": "control characters (colours, escapes) in a message",
  "misleading-message": "a refusal whose reason is wrong for the case (e.g. a valid model called damaged)",
};

const code = (s: string): string => "`" + s.replace(/`/g, "'").replace(/\n/g, "\\n").replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`) + "`";

export function renderMarkdown(rep: FuzzReport, outDir: string): string {
  const m = rep.meta;
  const t = rep.totals;
  const lines: string[] = [
    `# ssvq fuzz report: seed ${m.seed}`,
    "",
    `${t.cases} cases, ${t.runs} runs (${m.commands.join(", ")}) in ${(m.elapsedMs / 60000).toFixed(1)} min with ${m.jobs} jobs` +
      `${m.stoppedByTime ? " (stopped by --minutes)" : ""}; CLI ${code(m.cliPath)}${m.gitCommit ? ` at ${m.gitCommit}` : ""}; ` +
      `timeout ${m.timeoutMs / 1000} s, memory cap ${Math.round(m.memoryCapBytes / 2 ** 20)} MiB.`,
    "",
    `**${t.runsWithFindings === 0 ? "No findings" : `${t.runsWithFindings} runs with findings in ${rep.groups.length} groups`}.** ` +
      `${t.ok} of ${t.runs} runs met every rule (exit 0, or exit 2 with one clean line; no crash, hang, leftover, change to the input, hostile case accepted, unloadable output).`,
    "",
    "| command | runs | exit 0 | exit 2 | other | median | p95 | max | peak RSS |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...Object.entries(t.byCommand).map(([c, s]) => `| ${c} | ${s.runs} | ${s.exit0} | ${s.exit2} | ${s.other} | ${s.medianMs} ms | ${s.p95Ms} ms | ${s.maxMs} ms | ${s.maxRssMb} MB |`),
    "",
    "| mutator | cases | runs with findings |",
    "| --- | ---: | ---: |",
    ...Object.entries(t.byMutator).map(([k, v]) => `| ${k} | ${v.cases} | ${v.runsWithFindings} |`),
    "",
  ];
  if (rep.groups.length > 0) {
    lines.push("| finding | meaning | runs |", "| --- | --- | ---: |");
    for (const k of FINDING_ORDER) if (t.byClass[k]) lines.push(`| ${k} | ${CLASS_MEANING[k]} | ${t.byClass[k]} |`);
    lines.push("", "## Groups", "");
  }
  rep.groups.forEach((g, i) => {
    const r = g.repro!;
    const dir = relative(outDir, r.dir);
    lines.push(`### ${i + 1}. ${g.klass} in \`${g.command}\`: ${g.runs} run(s), ${g.cases.length} case(s)`, "");
    lines.push(`- ${g.detail.replace(/\n/g, " ").slice(0, 300)}`);
    if (g.firstLine) lines.push(`- stderr: ${code(g.firstLine.slice(0, 300))}`);
    lines.push(`- cases: ${g.cases.slice(0, 12).join(", ")}${g.cases.length > 12 ? `, ... (${g.cases.length})` : ""}`);
    lines.push(
      `- reproduction: case ${r.caseId}${r.keep ? ` shrunk to mutation(s) ${r.keep.join(",")}` : ""}, ${r.klass} on ${r.seedModel}: ${r.ops.map((x) => x.replace(/\n/g, " ").slice(0, 160)).join("; ")}${r.hostile ? ` (must be refused: ${r.hostile})` : ""}; it gave ${r.exit}`,
      "",
      "```sh",
      `sh ${dir}/repro.sh`,
      `# = cd ${dir} && node ${m.cliPath} ${r.args.map(shQuote).join(" ").slice(0, 400)}`,
      `# make the case again: npm run fuzz -- --replay ${r.caseId}${r.keep ? ` --keep ${r.keep.join(",")}` : ""} --out DIR`,
      "```",
      "",
    );
  });
  return lines.join("\n");
}

export function writeReport(rep: FuzzReport, outDir: string): { json: string; markdown: string } {
  mkdirSync(outDir, { recursive: true });
  const json = join(outDir, "fuzz-report.json");
  const markdown = join(outDir, "fuzz-report.md");
  writeFileSync(json, JSON.stringify(rep, null, 1));
  writeFileSync(markdown, renderMarkdown(rep, outDir));
  return { json, markdown };
}
