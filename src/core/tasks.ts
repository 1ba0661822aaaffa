/**
 * The registry of task functions a `ParallelMap` can run (see `parallel.ts` for the rules they follow).
 * A task is a pure function of one plain object (numbers, strings, typed arrays) returning another.
 * To add one: export the function next to its algorithm, add its name to `task-names.ts` and a line here; the thread pool's worker
 * loads this module, so every registered task is available on every thread.
 */
import type { ParallelMap } from "./parallel.js";
import type { TaskName } from "./task-names.js";
import { kmeansAssignTask, kmeansSseTask, kmeansWorstTask } from "./ssvq/kmeans.js";
import { finetuneBlockTask, finetuneLayerTask } from "./ssvq/finetune.js";
import { clearKernelsTask, productTask, quadraticTask } from "./ssvq/stat-product.js";
import { sequentialExpandTask, sequentialSolveTask } from "./calib/sequential.js";
import { gramTask } from "./calib/gram-pool.js";

export const tasks = {
  "kmeans.assign": kmeansAssignTask,
  "kmeans.sse": kmeansSseTask,
  "kmeans.worst": kmeansWorstTask,
  "finetune.layer": finetuneLayerTask,
  "stat.quadratic": quadraticTask,
  "finetune.block": finetuneBlockTask,
  "stat.product": productTask,
  "sequential.solve": sequentialSolveTask,
  "sequential.expand": sequentialExpandTask,
  "stat.clearKernels": clearKernelsTask,
  "calib.gram": gramTask,
} satisfies Record<TaskName, (input: never) => unknown>;

export type { TaskName };

/** Runs one task by name; throws for a name that is not registered. */
export function runTask(name: string, input: unknown): unknown {
  if (!Object.hasOwn(tasks, name)) throw new Error(`unknown task "${name}"`);
  return (tasks[name as TaskName] as (input: unknown) => unknown)(input);
}

/** Runs the tasks one after another in the calling thread (awaiting those that return a promise). */
export const serialMap: ParallelMap = {
  threads: 1,
  async run<I, O>(task: TaskName, inputs: readonly I[]): Promise<O[]> {
    const out: O[] = [];
    for (const input of inputs) out.push((await runTask(task, input)) as O);
    return out;
  },
  async broadcast<I>(task: TaskName, input: I): Promise<void> {
    await runTask(task, input);
  },
};
