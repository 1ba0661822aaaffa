/**
 * The memory budget of a compression (`--memory-budget`, `ssvq.memoryBudget`): its default from the
 * machine, and what the process already holds, from which the bytes left for calibration statistics and
 * fine-tuning follow (src/io/statistic-waves.ts).
 */
import { totalmem } from "node:os";

/** The default budget never exceeds this (a larger one only ever spares a few capture passes). */
export const MAX_DEFAULT_BUDGET = 16 * 2 ** 30;

/**
 * The machine's memory for this process: the total, or the container's limit (cgroup) when that is
 * lower.
 */
export function machineMemory(): number {
  const total = totalmem();
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 && limit < total ? limit : total;
}

/** The default budget: half of the machine's memory, at most MAX_DEFAULT_BUDGET. */
export function defaultMemoryBudget(): number {
  return Math.min(MAX_DEFAULT_BUDGET, Math.floor(machineMemory() / 2));
}

/** The process's resident memory now, in bytes. */
export function residentBytes(): number {
  return process.memoryUsage.rss();
}
