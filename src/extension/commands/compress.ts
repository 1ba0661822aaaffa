/**
 * "Compress with SSVQ" and "Compress with SSVQ (Choose Settings)...": settings (or quick-pick answers)
 * -> the `ssvq compress` arguments -> the background job, with a cancellable progress notification, the
 * log, and a notification of the outcome. One job per model; an existing output is replaced only after
 * the user confirms.
 */
import * as vscode from "vscode";
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import type { JobOutcome } from "../../job/client.js";
import type { CompressJobSpec } from "../../job/protocol.js";
import { dataPathFor, defaultOutput, reportPathFor } from "../../io/paths.js";
import { shellQuote, SettingError, withSettingNames, type SettingValues } from "../settings-table.js";
import { compressArgsFor } from "../settings.js";
import { ssvqLog } from "../log.js";
import type { JobRegistry, RunningJob } from "../jobRegistry.js";
import { ensureTrusted } from "../trust.js";
import { targetModel } from "./targetModel.js";
import { logEvent, logOutcome } from "./jobLog.js";
import type { PanelManager } from "../panel/panelManager.js";

export interface CompressDeps {
  registry: JobRegistry;
  panels: PanelManager;
  extensionPath: string;
}

export async function compressCommand(deps: CompressDeps, arg: unknown, options: { chooseSettings: boolean }): Promise<void> {
  const model = await targetModel(arg, "compress");
  if (!model) return;
  if (!(await ensureTrusted(`compressing ${basename(model.fsPath)}`))) return;
  const running = deps.registry.get(model);
  if (running) {
    const show = "Show Progress";
    const cancel = "Cancel It";
    const a = await vscode.window.showInformationMessage(
      `SSVQ is already compressing ${basename(model.fsPath)} (${running.progress.text()}); one compression per model at a time.`,
      show,
      cancel,
    );
    if (a === show) deps.panels.showJob(running);
    if (a === cancel) running.cancel();
    return;
  }
  let overrides: SettingValues = {};
  if (options.chooseSettings) {
    const { chooseSettings } = await import("./chooseSettings.js");
    const answers = await chooseSettings(model);
    if (!answers) return;
    overrides = answers;
  }
  let args: string[];
  let ignored: string[];
  try {
    ({ args, ignored } = compressArgsFor(model, overrides));
  } catch (e) {
    if (e instanceof SettingError) return void vscode.window.showErrorMessage(`SSVQ: ${e.message}`);
    throw e;
  }
  const out = defaultOutput(model.fsPath);
  const existing = [out, reportPathFor(out), dataPathFor(out)].filter((p) => existsSync(p));
  if (existing.length) {
    const replace = "Replace";
    const a = await vscode.window.showWarningMessage(
      `${existing.map((p) => basename(p)).join(", ").replace(/, ([^,]*)$/, " and $1")} already ${existing.length > 1 ? "exist" : "exists"}. Replace ${existing.length > 1 ? "them" : "it"}?`,
      { modal: true, detail: "The new compression is written to a temporary file first; the existing files are replaced only when it succeeds." },
      replace,
    );
    if (a !== replace) return;
    args = [...args, "--force"];
  }
  // Parsed by the command line's own code (loaded on first use, to keep activation light).
  const { parseCompressArgs } = await import("../../job/compress-args.js");
  let spec: CompressJobSpec;
  try {
    spec = parseCompressArgs(args);
  } catch (e) {
    return void vscode.window.showErrorMessage(`SSVQ: ${withSettingNames((e as Error).message)}`);
  }
  // A second request may have started a job while this one asked its questions.
  if (deps.registry.get(model)) return void vscode.window.showInformationMessage(`SSVQ is already compressing ${basename(model.fsPath)}.`);
  const log = ssvqLog();
  const cli = join(deps.extensionPath, "dist", "cli.js");
  log.info(`compress ${model.fsPath}`);
  log.info(`command line: ssvq compress ${shellQuote(args)}`);
  log.info(`  (this extension's copy of ssvq: node ${shellQuote([cli])} compress ...; ${spec.threads} threads)`);
  for (const i of ignored) log.info(`setting not used: ${i}`);
  const job = deps.registry.start(model, args, spec);
  // The panel follows the run; the editor keeps the focus.
  deps.panels.showJob(job, true);
  const events = deps.registry.onEvent(({ job: j, event }) => {
    if (j === job) logEvent(log, event);
  });
  void followInNotification(job);
  const outcome = await job.outcome;
  events.dispose();
  logOutcome(log, job, outcome);
  await announce(job, outcome);
}

/** The cancellable progress notification: the stage, its percentage and the run's progress. */
function followInNotification(job: RunningJob): Thenable<void> {
  return vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `SSVQ: compressing ${basename(job.model.fsPath)}`, cancellable: true },
    async (progress, token) => {
      token.onCancellationRequested(() => job.cancel());
      let reported = 0;
      const timer = setInterval(() => {
        const overall = Math.floor(100 * job.progress.overallFraction());
        progress.report({ message: job.progress.text(), increment: Math.max(0, overall - reported) });
        reported = Math.max(reported, overall);
      }, 200);
      try {
        await job.outcome;
      } finally {
        clearInterval(timer);
      }
    },
  );
}

async function announce(job: RunningJob, outcome: JobOutcome): Promise<void> {
  const name = basename(job.model.fsPath);
  if (outcome.type === "result") {
    const r = outcome.report;
    const s = r.sizes;
    const acc = r.evaluation?.accuracy;
    const accuracy = acc?.compressed ? `, accuracy ${pct(acc.original.accuracy)} → ${pct(acc.compressed.accuracy)}` : "";
    const fidelity = !acc && r.evaluation?.outputs[0]?.top1Agreement !== undefined ? `, top-1 agreement ${pct(r.evaluation.outputs[0].top1Agreement)}` : "";
    const open = "Open Inspector";
    const reveal = "Reveal in Explorer";
    const a = await vscode.window.showInformationMessage(
      `SSVQ: compressed ${name} ${s.diskRatio.toFixed(1)}x on disk (tensors ${s.tensorRatio.toFixed(1)}x)${accuracy}${fidelity}.`,
      open,
      reveal,
    );
    const written = outcome.outPath ? vscode.Uri.file(outcome.outPath) : undefined;
    if (a === open && written) await vscode.commands.executeCommand("vscode.openWith", written, "ssvq.inspector");
    if (a === reveal && written) await vscode.commands.executeCommand("revealInExplorer", written);
    return;
  }
  if (outcome.type !== "error") return;
  if (outcome.kind === "cancelled") return;
  if (outcome.kind === "input") {
    void vscode.window.showErrorMessage(`SSVQ: ${withSettingNames(outcome.message)}`);
    return;
  }
  const show = "Show Log";
  const a = await vscode.window.showErrorMessage(`SSVQ: compressing ${name} failed: ${outcome.message}`, show);
  if (a === show) ssvqLog().show(true);
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
