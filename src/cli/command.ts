import type { ParseArgsConfig } from "node:util";
import type { OptionValues } from "../job/option-values.js";

/** What a command may touch: its output streams and how it was called. */
export interface CliContext {
  /** Results: tables or JSON. */
  out(text: string): void;
  /** Diagnostics and progress. */
  err(text: string): void;
  verbose: boolean;
  /** stderr is a terminal: progress may redraw one line. */
  errIsTTY: boolean;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
}

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;
export type { OptionValues } from "../job/option-values.js";

export interface Command {
  name: string;
  /** One line for `ssvq --help`. */
  summary: string;
  /** Full help text for `ssvq NAME --help`, after the usage line. */
  usage: string;
  help: string;
  options: OptionSpec;
  /** Positional arguments: minimum and maximum count. */
  positionals: [min: number, max: number];
  /** Returns the exit status (0 when omitted). */
  run(values: OptionValues, positionals: string[], ctx: CliContext): Promise<number | void>;
}
