/**
 * The names of the task functions a `ParallelMap` can run. A module of its own so that the algorithms
 * (which name their tasks), `parallel.ts` and the registry in `tasks.ts` (which imports the algorithms)
 * do not import each other in a circle.
 */
export const TASK_NAMES = ["kmeans.assign", "kmeans.sse", "kmeans.worst", "finetune.layer", "calib.gram"] as const;
/** The tasks of the statistic products (ssvq/stat-product.ts, ssvq/finetune.ts, calib/sequential.ts). */
export const PRODUCT_TASK_NAMES = ["stat.quadratic", "finetune.block", "stat.product", "sequential.solve", "sequential.expand", "stat.clearKernels"] as const;

export type TaskName = (typeof TASK_NAMES)[number] | (typeof PRODUCT_TASK_NAMES)[number];
