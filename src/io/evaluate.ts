/**
 * Evaluation: the original model (and optionally a compressed one) on evaluation batches through
 * onnxruntime. Per output, the compressed model's fidelity to the original (relative error, cosine
 * similarity, top-1 agreement for [batch, classes] outputs); with labels, each model's top-1 accuracy.
 * Returns the JSON-ready `EvaluationReport` (src/core/calib/eval-metrics.ts) the run report embeds.
 * Memory: one batch of each model's outputs at a time.
 */
import { CancelledError, InputError } from "../core/errors.js";
import {
  AccuracyAccumulator,
  FidelityAccumulator,
  hasClassAxis,
  type EvaluationReport,
} from "../core/calib/eval-metrics.js";
import type { Batch, DataInfo } from "../core/calib/source.js";
import { createSession, runSession, tensorValues, toOrtFeeds, type Session } from "./ort.js";

export type { EvaluationReport };

/** A model as bytes, or as a file path (lets onnxruntime read external data next to it). */
export type ModelRef = Uint8Array | string;

export interface EvalData {
  batches(): AsyncGenerator<Batch>;
  info?: DataInfo;
}

export interface EvaluateProgress {
  samplesDone: number;
  samplesTotal: number | undefined;
  fraction: number | undefined;
}

export interface EvaluateOptions {
  /** Names for the report and messages (default "original" / "compressed", or the paths). */
  names?: { original?: string; compressed?: string };
  /** The output compared with labels (default: the first [batch, classes] output). */
  labelOutput?: string;
  signal?: AbortSignal;
  onProgress?: (p: EvaluateProgress) => void;
}

/**
 * Runs `original` (and `compressed`, when given) on every batch of `data`. Throws InputError when a model
 * cannot load or run, when the two models' outputs differ, or when labels are given but no output has a
 * class axis; CancelledError when `signal` fires.
 */
export async function evaluateModels(
  original: ModelRef,
  compressed: ModelRef | undefined,
  data: EvalData,
  opts: EvaluateOptions = {},
): Promise<EvaluationReport> {
  const t0 = performance.now();
  const names = {
    original: opts.names?.original ?? (typeof original === "string" ? original : "original"),
    ...(compressed !== undefined ? { compressed: opts.names?.compressed ?? (typeof compressed === "string" ? compressed : "compressed") } : {}),
  };
  const sessions: Session[] = [];
  try {
    const ref = await createSession(original, { label: names.original });
    sessions.push(ref);
    let cmp: Session | undefined;
    if (compressed !== undefined) {
      cmp = await createSession(compressed, { label: names.compressed });
      sessions.push(cmp);
      const missing = ref.outputNames.filter((n) => !cmp!.outputNames.includes(n));
      if (missing.length > 0)
        throw new InputError(
          `${names.compressed} does not have the outputs ${missing.join(", ")} of ${names.original} (it has ${cmp.outputNames.join(", ")}); the models cannot be compared.`,
        );
      const missingIn = ref.inputNames.filter((n) => !cmp!.inputNames.includes(n));
      if (missingIn.length > 0)
        throw new InputError(`${names.compressed} does not take the inputs ${missingIn.join(", ")} of ${names.original}; the models cannot be compared.`);
    }
    if (opts.labelOutput !== undefined && !ref.outputNames.includes(opts.labelOutput))
      throw new InputError(`${names.original} has no output "${opts.labelOutput}" (outputs: ${ref.outputNames.join(", ")}).`);

    const outputs = ref.outputNames;
    const fidelity = new Map(outputs.map((n) => [n, new FidelityAccumulator(n)]));
    const skipped = new Map<string, string>();
    const warnings = [...(data.info?.warnings ?? [])];
    let labelOutput: string | undefined = opts.labelOutput;
    let accRef: AccuracyAccumulator | undefined;
    let accCmp: AccuracyAccumulator | undefined;
    let labelled = false;
    let outOfRange = 0;
    const total = data.info?.indices.length;
    let samples = 0;
    let batches = 0;

    for await (const batch of data.batches()) {
      if (opts.signal?.aborted) throw new CancelledError();
      const feeds = toOrtFeeds(batch.feeds);
      const yr = await runSession(ref, feeds, undefined, names.original);
      if (opts.signal?.aborted) throw new CancelledError();
      const yc = cmp ? await runSession(cmp, feeds, outputs, names.compressed) : undefined;
      const n = batch.indices.length;

      if (batch.labels) {
        labelled = true;
        if (labelOutput === undefined) {
          labelOutput = outputs.find((o) => yr[o] && hasClassAxis(yr[o]!.dims.map(Number), n));
          if (labelOutput === undefined)
            throw new InputError(
              `Labels were given, but no output of ${names.original} is [batch, classes] (outputs: ${outputs
                .map((o) => `${o} [${yr[o]?.dims.join(", ") ?? "?"}]`)
                .join(", ")}).`,
            );
        }
        const tr = yr[labelOutput]!;
        const dims = tr.dims.map(Number);
        const values = tensorValues(tr);
        if (!values || !hasClassAxis(dims, n))
          throw new InputError(`Output "${labelOutput}" has shape [${dims.join(", ")}] (${tr.type}), not [batch, classes]; it cannot be compared with labels.`);
        const classes = dims[1]!;
        outOfRange += batch.labels.filter((l) => l < 0 || l >= classes).length;
        (accRef ??= new AccuracyAccumulator()).add(values, dims, batch.labels);
        if (yc) {
          const tc = yc[labelOutput]!;
          const vc = tensorValues(tc);
          const dc = tc.dims.map(Number);
          if (!vc || dc.length !== 2 || dc[0] !== n || dc[1] !== classes)
            throw new InputError(`Output "${labelOutput}" of ${names.compressed} has shape [${dc.join(", ")}], not [${n}, ${classes}] as in ${names.original}.`);
          (accCmp ??= new AccuracyAccumulator()).add(vc, dc, batch.labels);
        }
      }

      if (yc)
        for (const name of outputs) {
          if (skipped.has(name)) continue;
          const a = yr[name];
          const b = yc[name];
          const va = a ? tensorValues(a) : undefined;
          const vb = b ? tensorValues(b) : undefined;
          if (!a || !b || !va || !vb) {
            skipped.set(name, "not a numeric tensor");
            continue;
          }
          const da = a.dims.map(Number);
          const db = b.dims.map(Number);
          if (da.length !== db.length || da.some((d, i) => d !== db[i])) {
            skipped.set(name, `shapes differ: [${da.join(", ")}] vs [${db.join(", ")}]`);
            continue;
          }
          fidelity.get(name)!.add(va, vb, da, n);
        }

      samples += n;
      batches++;
      opts.onProgress?.({ samplesDone: samples, samplesTotal: total, fraction: total ? samples / total : undefined });
    }
    if (samples === 0) throw new InputError("The evaluation data holds no samples.");
    if (outOfRange > 0) warnings.push(`${outOfRange} label(s) are outside the output's class range; they never count as correct.`);

    const report: EvaluationReport = {
      models: names,
      data: data.info,
      samples,
      batches,
      outputs: cmp ? outputs.filter((o) => !skipped.has(o)).map((o) => fidelity.get(o)!.result()) : [],
      skipped: [...skipped].map(([name, reason]) => ({ name, reason })),
      warnings,
      seconds: 0,
    };
    if (labelled && labelOutput && accRef)
      report.accuracy = {
        output: labelOutput,
        labelled: accRef.total,
        original: accRef.result(),
        ...(accCmp ? { compressed: accCmp.result() } : {}),
      };
    report.seconds = (performance.now() - t0) / 1000;
    return report;
  } finally {
    for (const s of sessions) await s.release().catch(() => undefined);
  }
}
