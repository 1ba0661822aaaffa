/**
 * The `ssvq` command line. Results go to stdout, diagnostics to stderr. Exit status: 0 success,
 * 2 bad input (one clear line on stderr), 1 internal error, 130 cancelled.
 */
import { parseArgs } from "node:util";
import { isCancelledError, isInputError } from "../core/errors.js";
import type { CliContext, Command } from "./command.js";
import { inspectCommand } from "./inspect.js";
import { benchCommand } from "./bench.js";
import { compressCommand } from "./compress.js";
import { simulateCommand } from "./simulate.js";
import { demoCommand } from "./demo.js";
import { evalCommand } from "./eval.js";
import { reportCommand } from "./report.js";
import { sweepCommand } from "./sweep.js";
import { VERSION } from "../version.js";

const COMMANDS: Command[] = [compressCommand, sweepCommand, evalCommand, inspectCommand, simulateCommand, reportCommand, demoCommand, benchCommand];

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    `ssvq ${VERSION}: compress ONNX models with Sign-Splitting Vector Quantization (SSVQ)`,
    "",
    "Usage: ssvq COMMAND [options]",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Options:",
    "  --help        show help (also: ssvq COMMAND --help)",
    "  --version     print the version",
    "  --verbose     show stack traces of errors",
    "",
    "Exit status: 0 success, 1 internal error, 2 bad input, 130 cancelled.",
  ].join("\n");
}

function commandHelp(c: Command): string {
  return `Usage: ${c.usage}\n\n${c.summary}\n\n${c.help}`.trimEnd();
}

export async function runCli(argv: string[], ctx: CliContext): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    ctx.out(topic ? commandHelp(topic) : mainHelp());
    return 0;
  }
  if (name === "--version" || name === "-V") {
    ctx.out(VERSION);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    ctx.err(`ssvq: unknown command ${JSON.stringify(name)}; see 'ssvq --help'`);
    return 2;
  }
  let values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: { ...cmd.options, help: { type: "boolean", short: "h" }, verbose: { type: "boolean" } },
      allowPositionals: true,
      strict: true,
    }));
  } catch (e) {
    const first = (e as Error).message.split("\n")[0]!.replace(/\. To specify a positional.*$/s, "");
    ctx.err(`ssvq ${cmd.name}: ${first}; see 'ssvq ${cmd.name} --help'`);
    return 2;
  }
  if (values["help"]) {
    ctx.out(commandHelp(cmd));
    return 0;
  }
  const verbose = ctx.verbose || values["verbose"] === true;
  const [min, max] = cmd.positionals;
  if (positionals.length < min || positionals.length > max) {
    ctx.err(`ssvq ${cmd.name}: expected ${min === max ? min : `${min} to ${max}`} argument${max === 1 ? "" : "s"}; usage: ${cmd.usage}`);
    return 2;
  }
  try {
    return (await cmd.run(values, positionals, { ...ctx, verbose })) ?? 0;
  } catch (e) {
    if (isCancelledError(e)) {
      ctx.err(`ssvq ${cmd.name}: cancelled`);
      return 130;
    }
    if (isInputError(e)) {
      ctx.err(`ssvq ${cmd.name}: ${e.message}`);
      if (verbose && e.stack) ctx.err(e.stack);
      return 2;
    }
    const err = e as Error;
    ctx.err(`ssvq ${cmd.name}: internal error: ${err?.message ?? String(e)}`);
    ctx.err(verbose && err?.stack ? err.stack : "(run again with --verbose for details)");
    return 1;
  }
}
