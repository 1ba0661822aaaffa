/** Runs a background job for a command: progress on stderr, Ctrl-C cancels, failures become the CLI's errors. */
import { CancelledError, InputError } from "../core/errors.js";
import { startJob, type JobOutcome } from "../job/client.js";
import type { CompressJobSpec, JobSpec, WorkerEvent } from "../job/protocol.js";
import type { CliContext } from "./command.js";
import { progressPrinter } from "./progress.js";

export type JobResult = Extract<WorkerEvent, { type: "result" }>;
type Success = Exclude<JobOutcome, { type: "error" }>;
type Failure = Extract<JobOutcome, { type: "error" }>;

/** Signals that stop a process from outside: a user, a supervisor, the kernel's out-of-memory killer. */
const KILL_SIGNALS = new Set(["SIGKILL", "SIGTERM", "SIGHUP", "SIGQUIT"]);

/**
 * A worker that was killed from outside or ran out of memory: not a bug of ours, and not worth a stack
 * trace; the command says it in one line (exit 2), as for a native crash in onnxruntime.
 */
function killedOrOutOfMemory(outcome: Failure): boolean {
  return outcome.exit !== undefined && (outcome.exit.outOfMemory || (outcome.exit.signal !== null && KILL_SIGNALS.has(outcome.exit.signal)));
}

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
    if (outcome.kind === "input" || killedOrOutOfMemory(outcome)) throw new InputError(outcome.message);
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
