/**
 * Starts, follows and cancels a background job: a Node process running `job-worker.js`, with typed
 * messages over its IPC channel. A worker that crashes, runs out of memory or is killed becomes an error
 * outcome with its last stage, never a hang; a cancelled or failed job leaves no output file behind.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { dataPathFor, defaultOutput, reportPathFor } from "../io/paths.js";
import { isOutcome, type ClientMessage, type JobOutcome, type JobSpec, type WorkerEvent } from "./protocol.js";

export { isOutcome, type JobOutcome } from "./protocol.js";

export interface JobOptions {
  onEvent?: (e: WorkerEvent) => void;
  /** The worker script; default `job-worker.js` beside this module (dist/ or out/src/job/). */
  workerPath?: string;
  /** After a cancel, the worker is killed if it has not ended within this time. */
  cancelGraceMs?: number;
  /** Extra Node flags for the worker (for example a heap limit). */
  execArgv?: string[];
  /** An onnxruntime call on the model that has not ended after this long is stopped (default 10 minutes, or $SSVQ_ORT_STALL_SECONDS). */
  stallMs?: number;
}

/** The stages in which the worker runs onnxruntime on the model. */
const ORT_STAGES = new Set(["check", "capture", "evaluate", "compare", "simulate"]);
/**
 * Where a native crash is onnxruntime's: those stages, and the search (compress's "search", the sweep's
 * "search ssvq"...), which captures statistics and measures sensitivities with it.
 */
const runsOrt = (stage: string): boolean => ORT_STAGES.has(stage) || stage === "search" || stage.startsWith("search ");
/** Signals of a native crash (a bug or a hostile model in onnxruntime's C++), not of a kill. */
const NATIVE_CRASH = new Set<string>(["SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"]);
const DEFAULT_STALL_MS = 1000 * (Number(process.env["SSVQ_ORT_STALL_SECONDS"]) > 0 ? Number(process.env["SSVQ_ORT_STALL_SECONDS"]) : 600);

export interface Job {
  readonly pid: number | undefined;
  /** Settles when the worker has ended: the result, or the error (cancel and crash included). */
  readonly outcome: Promise<JobOutcome>;
  cancel(): void;
}

export function defaultWorkerPath(): string {
  return fileURLToPath(new URL("./job-worker.js", import.meta.url));
}

export function startJob(spec: JobSpec, opts: JobOptions = {}): Job {
  // The worker's own temporary folder: onnxruntime leaves files in $TMPDIR when a model fails to load
  // (mat-debug-PID.log, .ses); they go with the folder when the worker has ended.
  const scratch = mkdtempSync(join(tmpdir(), "ssvq-job-"));
  const child: ChildProcess = fork(opts.workerPath ?? defaultWorkerPath(), [], {
    serialization: "advanced",
    stdio: ["ignore", "ignore", "pipe", "ipc"],
    execArgv: opts.execArgv ?? [],
    env: { ...process.env, TMPDIR: scratch, TMP: scratch, TEMP: scratch },
  });
  let lastStage = "starting";
  let outcome: JobOutcome | undefined;
  let cancelled = false;
  let stderrTail = "";
  // V8 prints "heap out of memory" first and a long stack after it: look at every chunk as it comes.
  let outOfMemory = false;
  child.stderr?.on("data", (d: Buffer) => {
    stderrTail = (stderrTail + d.toString("utf8")).slice(-4000);
    outOfMemory ||= /heap out of memory|Allocation failed|Last few GCs/i.test(stderrTail);
  });
  // An onnxruntime call that neither ends nor is followed by another for `stallMs` (a runaway session
  // creation or run on a hostile graph) is stopped, in any stage: the worker says when each call starts
  // and ends (io/ort-activity.ts), so k-means, which may rightly be silent for long, is never mistaken
  // for it. The worker is killed and the outcome says why.
  const stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
  let stalled = false;
  let stallTimer: ReturnType<typeof setTimeout> | undefined;
  let ortRunning = false;
  const watchStall = (running: boolean) => {
    ortRunning = running;
    if (stallTimer) clearTimeout(stallTimer);
    stallTimer = undefined;
    if (!running || child.exitCode !== null || child.signalCode !== null) return;
    stallTimer = setTimeout(() => {
      stalled = true;
      child.kill("SIGKILL");
    }, stallMs);
    stallTimer.unref();
  };
  child.once("exit", () => {
    if (stallTimer) clearTimeout(stallTimer);
  });
  const sendToWorker = (m: ClientMessage) => {
    if (child.connected) child.send(m);
  };

  const done = new Promise<JobOutcome>((resolve) => {
    let settled = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let disconnected = !child.connected;
    child.on("message", (e: WorkerEvent) => {
      if (e.type === "onnxruntime") return watchStall(e.running);
      if (e.type === "stage") lastStage = e.stage;
      if (isOutcome(e)) outcome = e;
      else opts.onEvent?.(e);
    });
    child.on("error", (err) => {
      outcome ??= { type: "error", kind: "internal", message: `the worker could not start: ${err.message}`, lastStage };
      // A process that never started emits no exit event.
      if (child.pid === undefined) settle(null, null);
    });
    // The outcome is decided once the process has exited and its IPC channel has closed, so that the
    // worker's last messages (sent just before it exits) have been read.
    child.on("exit", (code, signal) => {
      exit = { code, signal };
      if (disconnected) settle(code, signal);
    });
    child.on("disconnect", () => {
      disconnected = true;
      if (exit) settle(exit.code, exit.signal);
    });
    function settle(code: number | null, signal: NodeJS.Signals | null): void {
      if (settled) return;
      settled = true;
      if (!outcome || (cancelled && outcome.type === "error")) {
        // Ctrl-C in a terminal reaches the worker too (the same process group): the user cancelled.
        if (cancelled || signal === "SIGINT") outcome = { type: "error", kind: "cancelled", message: "cancelled", lastStage };
        else if (stalled) {
          outcome = {
            type: "error",
            kind: "input",
            message: `onnxruntime could not run this model: a call made no progress for ${Math.round(stallMs / 1000)} s during ${lastStage} and was stopped`,
            lastStage,
          };
        } else if (signal && NATIVE_CRASH.has(signal) && (ortRunning || runsOrt(lastStage)) && !outOfMemory) {
          // Only onnxruntime's native code can crash the worker this way while it runs a model.
          outcome = { type: "error", kind: "input", message: `onnxruntime could not run this model: it crashed (${signal}) during ${lastStage}`, lastStage };
        } else {
          const oom = outOfMemory;
          const how = signal ? `was killed (${signal})` : `exited with code ${code}`;
          outcome = {
            type: "error",
            kind: "internal",
            message: `the worker ${how} during ${lastStage}${oom ? ": it ran out of memory" : ""}`,
            detail: stderrTail.trim() || undefined,
            lastStage,
            exit: { code, signal, outOfMemory: oom },
          };
        }
      }
      if (outcome.type === "error") removePartialOutputs(spec, child.pid);
      rmSync(scratch, { recursive: true, force: true });
      opts.onEvent?.(outcome);
      resolve(outcome);
    }
  });
  sendToWorker({ type: "start", spec });

  return {
    pid: child.pid,
    outcome: done,
    cancel() {
      if (cancelled || child.exitCode !== null || child.signalCode !== null) return;
      cancelled = true;
      sendToWorker({ type: "cancel" });
      const timer = setTimeout(() => child.kill("SIGKILL"), opts.cancelGraceMs ?? 1000);
      timer.unref();
      child.once("exit", () => clearTimeout(timer));
    },
  };
}

/** Temporary files of a worker that ended early (see io/write-atomic.ts for their names). */
function removePartialOutputs(spec: JobSpec, pid: number | undefined): void {
  if (pid === undefined || spec.kind !== "compress") return;
  const out = spec.out ?? defaultOutput(spec.input);
  for (const target of [out, reportPathFor(out), dataPathFor(out)]) {
    const dir = dirname(target);
    const prefix = `.${basename(target)}.${pid}-`;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    // Files, and the folder an output over 2 GiB is evaluated from (io/model-ref.ts).
    for (const n of names) if (n.startsWith(prefix) && n.endsWith(".tmp")) rmSync(join(dir, n), { recursive: true, force: true });
  }
}
