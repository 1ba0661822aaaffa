/**
 * Job progress on stderr: a redrawn bar on a terminal, one line per stage and layer otherwise. A compress
 * job's long runs also say the bytes quantized and the expected time (`JobProgress`).
 */
import { formatDuration, JobProgress } from "../job/job-progress.js";
import type { JobSpec, WorkerEvent } from "../job/protocol.js";
import type { CliContext } from "./command.js";

export function progressPrinter(ctx: CliContext, spec?: JobSpec, now?: () => number): { onEvent(e: WorkerEvent): void; done(): void } {
  const run = spec?.kind === "compress" ? new JobProgress(spec, now) : undefined;
  /** ", 1.20 GiB of 3.00 GiB, about 4 min left" once a run is long enough to have them. */
  const extra = () => {
    const parts = [run?.bytesText(), run?.remainingSeconds() !== undefined ? `about ${formatDuration(run.remainingSeconds()!)} left` : undefined].filter((x) => x);
    return parts.length ? ` (${parts.join(", ")})` : "";
  };
  let drawn = false;
  const draw = (text: string) => {
    process.stderr.write(`\r\x1b[2K${text.slice(0, (process.stderr.columns || 100) - 1)}`);
    drawn = true;
  };
  return {
    onEvent(e) {
      run?.add(e);
      if (ctx.errIsTTY) {
        if (e.type === "stage") draw(`${e.stage}...`);
        else if (e.type === "progress") {
          const width = 24;
          const filled = Math.round(e.fraction * width);
          const what = e.layer ? `${e.layer.index + 1}/${e.layer.count} ${e.layer.name}` : `${Math.round(100 * e.fraction)}%`;
          draw(`[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${e.stage} ${what}${extra()}`);
        } else if (e.type === "log") {
          if (drawn) process.stderr.write("\r\x1b[2K");
          drawn = false;
          ctx.err(`${e.level}: ${e.text}`);
        }
        return;
      }
      // The load check is part of reading the model: a model refused there gets its one line alone.
      if (e.type === "stage") {
        if (e.stage !== "check") ctx.err(`stage: ${e.stage}`);
      }
      else if (e.type === "progress" && e.layer) ctx.err(`  [${e.layer.index + 1}/${e.layer.count}] ${e.layer.name}${extra()}`);
      else if (e.type === "wave" && e.count > 1) ctx.err(`wave ${e.index + 1}/${e.count}: ${e.layers} layers`);
      else if (e.type === "log") ctx.err(`${e.level}: ${e.text}`);
    },
    done() {
      if (drawn) process.stderr.write("\r\x1b[2K");
      drawn = false;
    },
  };
}
