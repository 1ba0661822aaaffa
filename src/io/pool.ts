/**
 * A `ParallelMap` on worker threads. Workers start on demand (never more than `threads`), each runs one
 * task at a time from a first-in first-out queue shared by all runs, and load `pool-worker.js` from next to
 * this module: out/src/io/ when compiled by tsc, dist/ when bundled by esbuild (the worker is its own
 * entry point there). Idle workers do not keep the process alive; `close()` terminates them.
 *
 * Failures never hang a run: a task that throws rejects its run with an error of the same name and message
 * (the rest of that run is dropped); a worker that dies (crash, out of memory, failed to load) rejects the
 * run of the task it held and is replaced when more work comes.
 */
import { Worker } from "node:worker_threads";
import { InputError } from "../core/errors.js";
import type { ParallelMap } from "../core/parallel.js";
import type { TaskName } from "../core/tasks.js";
import type { PoolReply, PoolRequest } from "./pool-worker.js";

export interface ThreadPool extends ParallelMap {
  /** Terminates the workers; runs still pending reject. Later runs reject. */
  close(): Promise<void>;
}

interface Run {
  results: unknown[];
  remaining: number;
  failed: boolean;
  resolve(results: unknown[]): void;
  reject(error: Error): void;
}

interface Job {
  run: Run;
  index: number;
  request: PoolRequest;
  /** A broadcast's job runs on this worker only. */
  slot?: Slot;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

export function createThreadPool(threads: number): ThreadPool {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new InputError(`threads must be an integer >= 1, got ${threads}`);
  }
  const workerUrl = new URL("./pool-worker.js", import.meta.url);
  const queue: Job[] = [];
  const slots = new Set<Slot>();
  let closed = false;

  const fail = (run: Run, error: Error): void => {
    if (run.failed) return;
    run.failed = true;
    run.reject(error);
  };

  const finish = (slot: Slot): Job | undefined => {
    const job = slot.job;
    slot.job = undefined;
    slot.worker.unref();
    return job;
  };

  const retire = (slot: Slot, error: Error): void => {
    if (!slots.delete(slot)) return;
    const job = finish(slot);
    if (job) fail(job.run, error);
    pump();
  };

  const spawn = (): Slot => {
    const slot: Slot = { worker: new Worker(workerUrl, { name: "ssvq-pool" }), job: undefined };
    slot.worker.unref();
    slot.worker.on("message", (reply: PoolReply) => {
      const job = finish(slot);
      if (job && !job.run.failed) {
        if (reply.ok) {
          job.run.results[job.index] = reply.output;
          if (--job.run.remaining === 0) job.run.resolve(job.run.results);
        } else {
          const error = new Error(reply.message);
          error.name = reply.name;
          if (reply.stack) error.stack = reply.stack;
          fail(job.run, error);
        }
      }
      pump();
    });
    slot.worker.on("error", (error) => retire(slot, error));
    slot.worker.on("exit", (code) => retire(slot, new Error(`a pool worker stopped (exit code ${code})`)));
    slots.add(slot);
    return slot;
  };

  const post = (slot: Slot, job: Job): void => {
    try {
      slot.job = job;
      slot.worker.ref();
      // Throws when the input cannot be cloned (a function, a symbol, ...).
      slot.worker.postMessage(job.request);
    } catch (e) {
      if (slot.job === job) finish(slot);
      fail(job.run, e instanceof Error ? e : new Error(String(e)));
    }
  };

  /**
   * Hands queued jobs to idle workers, starting workers while fewer than `threads` run. A broadcast's job
   * waits for its own worker (or is done when that worker has stopped: what it would clear went with it).
   */
  const pump = (): void => {
    for (let i = 0; i < queue.length && !closed; ) {
      const job = queue[i]!;
      if (job.run.failed) {
        queue.splice(i, 1);
        continue;
      }
      if (job.slot) {
        if (!slots.has(job.slot)) {
          queue.splice(i, 1);
          if (--job.run.remaining === 0) job.run.resolve(job.run.results);
          continue;
        }
        if (job.slot.job) {
          i++;
          continue;
        }
        queue.splice(i, 1);
        post(job.slot, job);
        continue;
      }
      let slot: Slot | undefined;
      for (const s of slots) if (!s.job) slot = s;
      try {
        if (!slot && slots.size < threads) slot = spawn();
      } catch (e) {
        queue.splice(i, 1);
        fail(job.run, e instanceof Error ? e : new Error(String(e)));
        continue;
      }
      if (!slot) return;
      queue.splice(i, 1);
      post(slot, job);
    }
  };

  const enqueue = (task: TaskName, inputs: readonly unknown[], targets?: Slot[]): Promise<unknown[]> => {
    if (closed) return Promise.reject(new Error("the thread pool is closed"));
    if (inputs.length === 0) return Promise.resolve([]);
    return new Promise<unknown[]>((resolve, reject) => {
      const run: Run = { results: new Array(inputs.length), remaining: inputs.length, failed: false, resolve, reject };
      inputs.forEach((input, index) => queue.push({ run, index, request: { task, input }, ...(targets ? { slot: targets[index]! } : {}) }));
      pump();
    });
  };

  return {
    threads,
    run<I, O>(task: TaskName, inputs: readonly I[]): Promise<O[]> {
      return enqueue(task, inputs) as Promise<O[]>;
    },
    async broadcast<I>(task: TaskName, input: I): Promise<void> {
      const targets = [...slots];
      await enqueue(
        task,
        targets.map(() => input),
        targets,
      );
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      const error = new Error("the thread pool was closed");
      for (const job of queue.splice(0)) fail(job.run, error);
      const workers = [...slots];
      slots.clear();
      for (const slot of workers) if (slot.job) fail(slot.job.run, error);
      // Referenced again, so the event loop waits for the workers' exit (an idle worker is unreferenced,
      // and terminate() resolves on its exit event). A worker still starting up may hold no reference of
      // its own yet: a timer keeps the loop alive meanwhile, and a worker that never reports its exit is
      // given up on after a few seconds rather than hanging the caller.
      const keepAlive = setInterval(() => {}, 1000);
      try {
        await Promise.all(
          workers.map((slot) => {
            slot.worker.ref();
            return Promise.race([slot.worker.terminate(), new Promise((r) => setTimeout(r, 5000).unref())]);
          }),
        );
      } finally {
        clearInterval(keepAlive);
      }
    },
  };
}
