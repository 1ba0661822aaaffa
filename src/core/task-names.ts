/**
 * The names of the task functions a `ParallelMap` can run. A module of its own so that the algorithms
 * (which name their tasks), `parallel.ts` and the registry in `tasks.ts` (which imports the algorithms)
 * do not import each other in a circle.
 */
export const TASK_NAMES = ["kmeans.assign", "kmeans.sse", "kmeans.worst", "finetune.layer"] as const;

export type TaskName = (typeof TASK_NAMES)[number];
