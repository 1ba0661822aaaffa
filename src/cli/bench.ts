import { InputError } from "../core/errors.js";
import type { Command } from "./command.js";
import { measureDecode, runIoBench, writeMatMulChain } from "./bench-io.js";

const num = (v: unknown, name: string, dflt: number): number => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InputError(`--${name} must be a positive number, not ${JSON.stringify(v)}`);
  return n;
};

/** Benchmarks print one JSON object on stdout; figures, not pass/fail (these machines are shared). */
export const benchCommand: Command = {
  name: "bench",
  summary: "measure speed and memory; prints JSON figures",
  usage: "ssvq bench io [--mb N]",
  help: [
    "Benchmarks:",
    "  io       decode a generated model of --mb megabytes (default 100) in a fresh process: time, peak RSS,",
    "           and the ArrayBuffer memory the decode added (tensor bytes are not copied)",
  ].join("\n"),
  options: {
    mb: { type: "string" },
    measure: { type: "string" },
    generate: { type: "string" },
    layers: { type: "string" },
  },
  positionals: [1, 1],
  async run(values, [which], ctx) {
    switch (which) {
      case "io": {
        const measure = values["measure"];
        if (typeof values["generate"] === "string") {
          writeMatMulChain(values["generate"], num(values["layers"], "layers", 1));
          return 0;
        }
        const result = typeof measure === "string" ? measureDecode(measure) : await runIoBench({ megabytes: num(values["mb"], "mb", 100) });
        ctx.out(JSON.stringify(result));
        return 0;
      }
    }
    throw new InputError(`unknown benchmark ${JSON.stringify(which)}; see 'ssvq bench --help'`);
  },
};
