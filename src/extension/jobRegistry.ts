/**
 * The compressions running in this window: one per model, each a background job (src/job/client.ts)
 * with its progress and event history. It sets the `ssvq.running` and `ssvq.runningModels` context keys
 * for menus, and ends every job when the extension is deactivated (no orphan processes).
 */
import * as vscode from "vscode";
import { join } from "node:path";
import { startJob, type Job, type JobOutcome } from "../job/client.js";
import type { CompressJobSpec, WorkerEvent } from "../job/protocol.js";
import { Disposable } from "./dispose.js";
import { JobProgress } from "../job/job-progress.js";

export interface RunningJob {
  readonly model: vscode.Uri;
  /** The `ssvq compress` arguments the job runs, paths absolute. */
  readonly args: readonly string[];
  readonly spec: CompressJobSpec;
  readonly progress: JobProgress;
  readonly startedAt: number;
  readonly outcome: Promise<JobOutcome>;
  readonly pid: number | undefined;
  cancel(): void;
}

export class JobRegistry extends Disposable {
  private readonly jobs = new Map<string, RunningJob>();
  private readonly changed = this.register(new vscode.EventEmitter<RunningJob>());
  /** A job started, progressed or ended. */
  readonly onDidChange = this.changed.event;
  private readonly events = this.register(new vscode.EventEmitter<{ job: RunningJob; event: WorkerEvent }>());
  /** Every worker event of every job, outcome included. */
  readonly onEvent = this.events.event;

  constructor(private readonly extensionPath: string) {
    super();
  }

  get(model: vscode.Uri): RunningJob | undefined {
    return this.jobs.get(model.fsPath);
  }

  all(): RunningJob[] {
    return [...this.jobs.values()];
  }

  /** Starts the job; the caller has checked that no job runs for this model. */
  start(model: vscode.Uri, args: readonly string[], spec: CompressJobSpec): RunningJob {
    if (this.jobs.has(model.fsPath)) throw new Error(`a compression of ${model.fsPath} is already running`);
    const progress = new JobProgress(spec);
    let entry: RunningJob | undefined;
    const job: Job = startJob(spec, {
      workerPath: join(this.extensionPath, "dist", "job-worker.js"),
      onEvent: (e) => {
        progress.add(e);
        if (!entry) return;
        this.events.fire({ job: entry, event: e });
        this.changed.fire(entry);
      },
    });
    entry = {
      model,
      args,
      spec,
      progress,
      startedAt: Date.now(),
      outcome: job.outcome,
      pid: job.pid,
      cancel: () => job.cancel(),
    };
    const self = entry;
    this.jobs.set(model.fsPath, self);
    this.updateContext();
    this.changed.fire(self);
    void job.outcome.then(() => {
      if (this.jobs.get(model.fsPath) === self) this.jobs.delete(model.fsPath);
      this.updateContext();
      this.changed.fire(self);
    });
    return self;
  }

  /**
   * Cancels every job and waits (at most `timeoutMs`) for the workers to end: on deactivation, so
   * that closing the window or disabling the extension leaves no process behind.
   */
  async stopAll(timeoutMs = 2000): Promise<void> {
    const outcomes = this.all().map((j) => {
      j.cancel();
      return j.outcome;
    });
    if (outcomes.length === 0) return;
    await Promise.race([Promise.all(outcomes), new Promise((r) => setTimeout(r, timeoutMs))]);
  }

  private updateContext(): void {
    const models = [...this.jobs.keys()];
    void vscode.commands.executeCommand("setContext", "ssvq.running", models.length > 0);
    void vscode.commands.executeCommand("setContext", "ssvq.runningModels", models);
  }

  override dispose(): void {
    for (const j of this.jobs.values()) j.cancel();
    super.dispose();
  }
}
