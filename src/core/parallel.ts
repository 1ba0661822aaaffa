/**
 * The "map over tasks" that core receives from its caller.
 *
 * Core never starts threads itself. It cuts its work into tasks, each a call of a pure function from the
 * registry in `tasks.ts` on a plain object (numbers, strings, typed arrays), and hands the list to a
 * `ParallelMap`: `serialMap` (in `tasks.ts`, next to the registry it calls) runs them in this thread,
 * `createThreadPool` (`src/io/pool.ts`) on worker threads.
 *
 * Rules that keep every result bit-identical whichever map runs the tasks and however many threads it has:
 *  - a task depends only on its input (no shared mutable state besides the arrays described next);
 *  - the caller cuts work into chunks with `chunkRanges`, whose boundaries depend on the problem size only,
 *    never on `threads`, and reduces the outputs in input order;
 *  - inputs are copied to the worker (structured clone), except arrays backed by a `SharedArrayBuffer`,
 *    which are shared: big read-only arrays (the points of k-means) go there so they are not copied per
 *    task, and a task may write its results into a shared array, each task into its own disjoint range.
 *    Writes into any other input array are lost under a thread pool: never rely on them;
 *  - a task may also report progress through a shared array that it alone writes and the caller only
 *    reads while the task runs (the fine-tuning check record, `createCheckRecord` in ssvq/finetune.ts):
 *    it publishes an entry by an Atomics store of the count after writing the entry, the caller loads the
 *    count with Atomics first; what the caller reads there must never change a result;
 *  - outputs are moved back (their non-shared buffers are transferred, not copied).
 */
import type { TaskName } from "./task-names.js";

export interface ParallelMap {
  /** How many tasks may run at the same time (1 for `serialMap`). */
  readonly threads: number;
  /** Runs `task` on every input; the outputs come back in input order. Rejects with the first task error. */
  run<I, O>(task: TaskName, inputs: readonly I[]): Promise<O[]>;
  /**
   * Runs `task` once on every thread that has started, each with `input` (for what threads keep between
   * tasks: the product kernels' caches). Called while no run is pending.
   */
  broadcast?<I>(task: TaskName, input: I): Promise<void>;
}

/** [start, end) ranges of at most `size` items covering [0, count), in order. */
export function chunkRanges(count: number, size: number): Array<[start: number, end: number]> {
  const out: Array<[number, number]> = [];
  for (let start = 0; start < count; start += size) out.push([start, Math.min(count, start + size)]);
  return out;
}

interface TypedArrayOf<T> {
  new (buffer: SharedArrayBuffer): T;
  readonly BYTES_PER_ELEMENT: number;
}

/** A zero-filled typed array backed by a SharedArrayBuffer, so thread pools share it instead of copying. */
export function sharedArray<T>(type: TypedArrayOf<T>, length: number): T {
  return new type(new SharedArrayBuffer(length * type.BYTES_PER_ELEMENT));
}
