#!/usr/bin/env node
/** The `ssvq` executable: wires the process (streams, Ctrl-C, exit status) to runCli. */
import type { CliContext } from "./command.js";
import { runCli } from "./cli.js";

const controller = new AbortController();
let interrupts = 0;
process.on("SIGINT", () => {
  // The first Ctrl-C cancels cleanly (the running command removes its partial output); a second one quits.
  if (++interrupts > 1) process.exit(130);
  controller.abort();
});
const write = (stream: NodeJS.WriteStream) => (t: string) => void stream.write(t.endsWith("\n") ? t : t + "\n");
const ctx: CliContext = {
  out: write(process.stdout),
  err: write(process.stderr),
  verbose: process.argv.includes("--verbose"),
  errIsTTY: process.stderr.isTTY === true,
  signal: controller.signal,
};
runCli(process.argv.slice(2), ctx).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`ssvq: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  },
);
