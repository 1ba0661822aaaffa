/** A compression in the log channel: stages, each layer, warnings, and the outcome with the CLI's own table. */
import type * as vscode from "vscode";
import type { JobOutcome } from "../../job/client.js";
import type { WorkerEvent } from "../../job/protocol.js";
import { renderReport } from "../../core/report-text.js";
import type { RunningJob } from "../jobRegistry.js";

export function logEvent(log: vscode.LogOutputChannel, e: WorkerEvent): void {
  switch (e.type) {
    case "stage":
      log.info(`stage ${e.stage}`);
      break;
    case "progress":
      if (e.layer) log.info(`  ${e.stage} [${e.layer.index + 1}/${e.layer.count}] ${e.layer.name}`);
      break;
    case "log":
      if (e.level === "error") log.error(e.text);
      else if (e.level === "warning") log.warn(e.text);
      else log.info(e.text);
      break;
    case "wave":
      if (e.count > 1) log.info(`wave ${e.index + 1}/${e.count} (${e.layers} layers): capture, quantize, fine-tune`);
      break;
    case "layerDone":
      log.info(`  layer ${e.stats.index + 1}/${e.stats.count} ${e.stats.name}: ${e.stats.bitsPerWeight.toFixed(3)} bits/weight, weight error ${(100 * e.stats.weightError).toFixed(2)}%`);
      break;
    default:
      break;
  }
}

export function logOutcome(log: vscode.LogOutputChannel, job: RunningJob, outcome: JobOutcome): void {
  const seconds = ((Date.now() - job.startedAt) / 1000).toFixed(1);
  if (outcome.type === "result") {
    for (const line of renderReport(outcome.report, false).split("\n")) log.info(line);
    log.info(`wrote ${outcome.outPath} and ${outcome.reportPath} in ${seconds} s`);
  } else if (outcome.type === "error") {
    if (outcome.kind === "cancelled") log.info(`cancelled during ${outcome.lastStage} after ${seconds} s; nothing was written`);
    else if (outcome.kind === "input") log.error(outcome.message);
    else {
      log.error(`failed during ${outcome.lastStage}: ${outcome.message}`);
      if (outcome.detail) log.error(outcome.detail);
    }
  }
}
