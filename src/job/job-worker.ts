/**
 * The background worker process: receives one `start` message, runs the job, streams events, exits.
 * A `cancel` message aborts the run; the client kills the process if it does not end promptly.
 */
import { isCancelledError, isInputError } from "../core/errors.js";
import type { ProgressEvent } from "../core/compress.js";
import { compressFile } from "../io/compress-file.js";
import { inspectFile } from "../io/inspect-file.js";
import { runSimulate, simulationJson } from "../io/simulate-model.js";
import { perLayerFromReport, reportKD } from "../core/accel/report-latency.js";
import { evaluateFile } from "../io/evaluate-file.js";
import { createThreadPool } from "../io/pool.js";
import { setOrtActivityListener } from "../io/ort-activity.js";
import { runSweep } from "../io/sweep.js";
import type { ClientMessage, CompressJobSpec, JobSpec, SimulationJson, SweepJobSpec, WorkerEvent } from "./protocol.js";

const controller = new AbortController();
let lastStage = "starting";
let started = false;

function send(e: WorkerEvent): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(e, undefined, {}, () => resolve());
  });
}

// The client's watchdog hears each onnxruntime call start and end (before the call can hold the event loop).
setOrtActivityListener((running) => send({ type: "onnxruntime", running }));

async function run(spec: JobSpec): Promise<void> {
  if (spec.kind === "inspect") {
    lastStage = "inspect";
    await send({ type: "inspection", inspection: inspectFile(spec.input) });
    return;
  }
  if (spec.kind === "simulate") {
    lastStage = "simulate";
    await send({ type: "stage", stage: "simulate" });
    const o = spec.options;
    const kd = spec.report && o["k"] === undefined && o["d"] === undefined ? reportKD(spec.report) : undefined;
    const values = { ...o, ...(kd ? { k: String(kd.k), d: String(kd.d) } : {}) };
    const run = await runSimulate(values, spec.input, {
      ...(spec.report ? { perLayer: perLayerFromReport(spec.report) } : {}),
      dynamicAsOne: spec.dynamicAsOne === true,
    });
    await send({ type: "simulation", simulation: simulationJson(run.result, run.gemms) as SimulationJson, warnings: run.warnings, k: run.k, d: run.d });
    return;
  }
  if (spec.kind === "evaluate") {
    lastStage = "evaluate";
    await send({ type: "stage", stage: "evaluate" });
    const { report, warnings } = await evaluateFile(spec, controller.signal);
    await send({ type: "evaluation", report, warnings });
    return;
  }
  if (spec.kind === "sweep") {
    await sweep(spec);
    return;
  }
  await compress(spec);
}

async function sweep(spec: SweepJobSpec): Promise<void> {
  const { kind: _kind, threads, ...options } = spec;
  const pool = createThreadPool(threads);
  try {
    const result = await runSweep({
      ...options,
      map: pool,
      signal: controller.signal,
      onStage: (stage) => {
        lastStage = stage;
        void send({ type: "stage", stage });
      },
    });
    await send({ type: "sweep", result });
  } finally {
    await pool.close();
  }
}

async function compress(spec: CompressJobSpec): Promise<void> {
  const pool = createThreadPool(spec.threads);
  try {
    const onProgress = (e: ProgressEvent) => {
      if (e.kind === "stage") {
        lastStage = e.stage;
        void send({ type: "stage", stage: e.stage });
      } else if (e.kind === "fraction") void send({ type: "progress", stage: e.stage, fraction: e.fraction });
      else if (e.kind === "wave") void send({ type: "wave", index: e.index, count: e.count, layers: e.layers });
      else if (e.kind === "freezeCheck") {
        const { kind: _kind, ...check } = e;
        void send({ type: "freezeCheck", ...check });
      }
      else
        void send({
          type: "progress",
          stage: lastStage,
          // Quantizing announces a layer as it starts, fine-tuning as it ends.
          fraction: (e.index + (lastStage === "quantize" ? 0 : 1)) / e.count,
          layer: { index: e.index, count: e.count, name: e.name, rows: e.rows, cols: e.cols, ...(e.bytes ? { bytes: e.bytes } : {}) },
        });
    };
    const result = await compressFile({
      input: spec.input,
      out: spec.out,
      force: spec.force,
      dryRun: spec.dryRun,
      ...(spec.externalData ? { externalData: true } : {}),
      config: spec.config,
      simulate: spec.simulate,
      data: spec.data,
      compare: spec.compare,
      command: spec.command,
      ...(spec.memoryBudget !== undefined ? { memoryBudget: spec.memoryBudget } : {}),
      map: pool,
      signal: controller.signal,
      onProgress,
    });
    result.report.layers.forEach((l, index, all) =>
      void send({ type: "layerDone", stats: { index, count: all.length, name: l.name, weightError: l.weightError, bitsPerWeight: l.bits.bitsPerWeight } }),
    );
    await send({ type: "result", report: result.report, outPath: result.outPath, reportPath: result.reportPath });
  } finally {
    await pool.close();
  }
}

process.on("message", (m: ClientMessage) => {
  if (m.type === "cancel") {
    controller.abort();
    return;
  }
  if (m.type !== "start" || started) return;
  started = true;
  run(m.spec).then(
    () => process.exit(0),
    async (e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      const kind = isCancelledError(err) ? "cancelled" : isInputError(err) ? "input" : "internal";
      await send({ type: "error", kind, message: err.message, detail: err.stack, lastStage });
      process.exit(kind === "internal" ? 1 : 0);
    },
  );
});
process.on("disconnect", () => {
  // The client is gone: nobody wants the result.
  controller.abort();
  setTimeout(() => process.exit(0), 100).unref();
});
