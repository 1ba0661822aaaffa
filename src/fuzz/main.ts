#!/usr/bin/env node
/**
 * `npm run fuzz -- --seed S --count N [--minutes M] [--out DIR] [--jobs 2] [--commands inspect,compress,simulate]`
 * Fuzzes the bundled `ssvq` CLI (dist/cli.js) and writes fuzz-report.json and fuzz-report.md to DIR.
 * Exit 0 when no run broke a rule, 1 when some did, 2 on bad options.
 * `--replay SEED:INDEX [--keep I,J] --out DIR` makes one case's folder again and prints its commands.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { COMMANDS, materialise, MUTATOR_CLASSES, type CommandName, type MutatorClass } from "./case.js";
import { DEFAULTS, repoRoot, runFuzz, sessionSeeds } from "./fuzz.js";
import { generateCase } from "./generate.js";
import { shQuote } from "./report.js";

const USAGE =
  "usage: npm run fuzz -- --seed S --count N [--minutes M] [--out DIR] [--jobs 2] [--commands inspect,compress,simulate]\n" +
  "         [--classes control,blind,structure,external,bomb] [--timeout SECONDS] [--mem-mb MB] [--cli PATH] [--shrink-runs N] [--no-ort-check]\n" +
  "       npm run fuzz -- --replay SEED:INDEX [--keep I,J] [--classes ...] --out DIR";

function fail(msg: string): never {
  process.stderr.write(`fuzz: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function int(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v)) fail(`--${name} must be a whole number`);
  return Number(v);
}

function list<T extends string>(v: string | undefined, all: readonly T[], name: string): T[] | undefined {
  if (v === undefined) return undefined;
  const items = v.split(",").map((s) => s.trim()).filter(Boolean);
  for (const x of items) if (!all.includes(x as T)) fail(`--${name}: ${JSON.stringify(x)} is not one of ${all.join(", ")}`);
  return items as T[];
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        seed: { type: "string" },
        count: { type: "string" },
        minutes: { type: "string" },
        out: { type: "string" },
        jobs: { type: "string" },
        commands: { type: "string" },
        classes: { type: "string" },
        timeout: { type: "string" },
        "mem-mb": { type: "string" },
        cli: { type: "string" },
        "shrink-runs": { type: "string" },
        "no-ort-check": { type: "boolean" },
        replay: { type: "string" },
        keep: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (e) {
    fail((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const classes = list<MutatorClass>(values.classes, MUTATOR_CLASSES, "classes");
  const root = repoRoot();
  const cliPath = resolve(values.cli ?? join(root, "dist", "cli.js"));

  if (values.replay !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(values.replay);
    if (!m) fail("--replay takes SEED:INDEX");
    if (!values.out) fail("--replay needs --out DIR (an empty or new folder)");
    const out = resolve(values.out);
    mkdirSync(out, { recursive: true });
    if (readdirSync(out).length > 0) fail(`${out} is not empty`);
    const work = mkdtempSync(join(tmpdir(), "ssvq-fuzz-replay-"));
    try {
      const seeds = sessionSeeds(root, cliPath, work);
      const keep = values.keep !== undefined ? values.keep.split(",").map((x) => int(x, "keep", 0)) : undefined;
      const spec = generateCase(seeds, Number(m[1]), Number(m[2]), { ...(classes ? { classes } : {}), ...(keep ? { keep } : {}) });
      await materialise(spec, out);
      process.stdout.write(`case ${spec.id}: ${spec.klass} on ${spec.seedModel}: ${spec.ops.join("; ")}${spec.hostile ? ` (must be refused: ${spec.hostile})` : ""}\n`);
      for (const c of COMMANDS) process.stdout.write(`cd ${shQuote(out)} && node ${shQuote(cliPath)} ${spec.args[c].map(shQuote).join(" ")}\n`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    return 0;
  }

  if (values.seed === undefined || values.count === undefined) fail("--seed and --count are required");
  const seed = int(values.seed, "seed", 0);
  const count = int(values.count, "count", 0);
  const minutes = values.minutes !== undefined ? Number(values.minutes) : undefined;
  if (minutes !== undefined && !(minutes > 0)) fail("--minutes must be a positive number");
  const commands = list<CommandName>(values.commands, COMMANDS, "commands");
  const started = Date.now();
  const { report, files } = await runFuzz({
    seed,
    count,
    ...(minutes !== undefined ? { minutes } : {}),
    ...(values.out ? { outDir: values.out } : {}),
    jobs: int(values.jobs, "jobs", DEFAULTS.jobs),
    ...(commands ? { commands } : {}),
    ...(classes ? { classes } : {}),
    timeoutMs: int(values.timeout, "timeout", DEFAULTS.timeoutMs / 1000) * 1000,
    memoryCapBytes: int(values["mem-mb"], "mem-mb", DEFAULTS.memoryCapBytes / 2 ** 20) * 2 ** 20,
    cliPath,
    shrinkRuns: int(values["shrink-runs"], "shrink-runs", DEFAULTS.shrinkRuns),
    ortCheck: values["no-ort-check"] !== true,
    log: (l) => process.stderr.write(`fuzz: ${l}\n`),
    onProgress: (p) => {
      const classes = Object.entries(p.byClass)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ");
      process.stderr.write(`fuzz: ${p.runs} runs, ${p.cases} cases, ${(p.elapsedMs / 1000).toFixed(0)} s: ${p.findings} findings${classes ? ` (${classes})` : ""}\n`);
    },
  });
  const t = report.totals;
  process.stderr.write(
    `fuzz: done in ${((Date.now() - started) / 1000).toFixed(0)} s: ${t.cases} cases, ${t.runs} runs, ${t.ok} ok, ${t.runsWithFindings} with findings in ${report.groups.length} groups\n` +
      report.groups.map((g, i) => `  ${i + 1}. ${g.klass} ${g.command} x${g.runs}: ${g.firstLine.slice(0, 120) || g.detail.slice(0, 120)}\n`).join("") +
      `fuzz: report ${files.markdown} and ${files.json}\n`,
  );
  return t.runsWithFindings === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`fuzz: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 2;
  },
);
