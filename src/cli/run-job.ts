import { CancelledError, InputError } from "../core/errors.js";
import { startJob } from "../job/client.js";
import type { CompressJobSpec, WorkerEvent } from "../job/protocol.js";
import type { CliContext } from "./command.js";
import { progressPrinter } from "./progress.js";

export type JobResult = Extract<WorkerEvent, { type: "result" }>;

/** Runs a job in the background worker with progress on stderr; Ctrl-C (ctx.signal) cancels it. */
export async function runJob(spec: CompressJobSpec, ctx: CliContext): Promise<JobResult> {
  const progress = progressPrinter(ctx);
  const job = startJob(spec, { onEvent: (e) => progress.onEvent(e) });
  const cancel = () => job.cancel();
  ctx.signal.addEventListener("abort", cancel);
  try {
    const outcome = await job.outcome;
    if (outcome.type === "result") return outcome;
    if (outcome.type !== "error") throw new Error(`a compress job ended with ${outcome.type}`);
    if (outcome.kind === "cancelled") throw new CancelledError();
    if (outcome.kind === "input") throw new InputError(outcome.message);
    const err = new Error(outcome.message);
    if (outcome.detail) err.stack = `${outcome.message}\n${outcome.detail}`;
    throw err;
  } finally {
    ctx.signal.removeEventListener("abort", cancel);
    progress.done();
  }
}
