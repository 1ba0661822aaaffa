/** Runs a background job for a command: progress on stderr, Ctrl-C cancels, failures become the CLI's errors. */
import { CancelledError, InputError } from "../core/errors.js";
import { startJob, type JobOutcome } from "../job/client.js";
import type { CompressJobSpec, JobSpec, WorkerEvent } from "../job/protocol.js";
import type { CliContext } from "./command.js";
import { progressPrinter } from "./progress.js";

export type JobResult = Extract<WorkerEvent, { type: "result" }>;
type Success = Exclude<JobOutcome, { type: "error" }>;

/** Runs any job in the background worker; resolves with its outcome, throws its failure as the CLI reports it. */
export async function runWorkerJob(spec: JobSpec, ctx: CliContext): Promise<Success> {
  if (ctx.signal.aborted) throw new CancelledError();
  const progress = progressPrinter(ctx, spec);
  const job = startJob(spec, { onEvent: (e) => progress.onEvent(e) });
  const cancel = () => job.cancel();
  ctx.signal.addEventListener("abort", cancel);
  try {
    const outcome = await job.outcome;
    if (outcome.type !== "error") return outcome;
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

/** A compress job: its result. */
export async function runJob(spec: CompressJobSpec, ctx: CliContext): Promise<JobResult> {
  const outcome = await runWorkerJob(spec, ctx);
  if (outcome.type !== "result") throw new Error(`a compress job ended with ${outcome.type}`);
  return outcome;
}
