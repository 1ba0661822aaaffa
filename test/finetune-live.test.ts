/**
 * Fine-tuning's freezeCheck events arrive while a layer is still being fine-tuned (from the pool's
 * threads, through the check record), each exactly once and in order, equal to the report's checks, and
 * the results do not change.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compressModel, type CompressRun, type ProgressEvent, type SequentialLayerStats } from "../src/core/compress.js";
import { encodeModel, decodeModel } from "../src/core/onnx/proto.js";
import { tensorToFloat32 } from "../src/core/onnx/tensor-data.js";
import { findWeights } from "../src/core/onnx/weights.js";
import type { CompressConfig, Report } from "../src/core/report.js";
import { Rng } from "../src/core/rng.js";
import {
  CHECK_RECORD_FIELDS,
  createCheckRecord,
  finetuneCheckCount,
  finetuneLayerTask,
  readCheckRecord,
  resolveFinetuneOptions,
  writeCheckRecord,
  type FreezeCheck,
} from "../src/core/ssvq/finetune.js";
import type { GramStatistic as LayerStatistic } from "../src/core/ssvq/objective.js";
import { toRows } from "../src/core/ssvq/layout.js";
import { quantizeRows, type VqQuantized } from "../src/core/ssvq/quantize.js";
import { serialMap } from "../src/core/tasks.js";
import { createThreadPool } from "../src/io/pool.js";
import { startJob } from "../src/job/client.js";
import type { WorkerEvent } from "../src/job/protocol.js";
import { graph, model, node, randomTensor, valueInfo } from "./helpers/models.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-live-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const pool = createThreadPool(2);
after(() => pool.close());

/** A big layer (96 x 512: about 1.5 s of fine-tuning with the WebAssembly product) and a small one (48 x 96). */
const BIG = "w_big";
const SMALL = "w_small";
const K = 512;
const N1 = 96;
const N2 = 48;

function twoLayerModel(): Uint8Array {
  const inits = [randomTensor(BIG, [K, N1], 11), randomTensor(SMALL, [N1, N2], 12)];
  const nodes = [node("MatMul", ["x", BIG], ["h"], {}, "mm1"), node("Relu", ["h"], ["r"]), node("MatMul", ["r", SMALL], ["y"], {}, "mm2")];
  return encodeModel(model(graph({ nodes, inputs: [valueInfo("x", ["batch", K])], outputs: [valueInfo("y", ["batch", N2])], initializers: inits })));
}

/** H = X X^T / m of m correlated samples of `cols` features. */
function statistic(cols: number, m: number, seed: number): LayerStatistic {
  const rng = new Rng(seed);
  const x = new Float64Array(cols * m);
  for (let s = 0; s < m; s++) {
    let prev = 0;
    for (let c = 0; c < cols; c++) {
      prev = 0.6 * prev + rng.normal();
      x[c * m + s] = Math.max(0, prev);
    }
  }
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++)
    for (let j = i; j < cols; j++) {
      let acc = 0;
      for (let s = 0; s < m; s++) acc += x[i * m + s]! * x[j * m + s]!;
      H[i * cols + j] = H[j * cols + i] = acc / m;
    }
  return { H, groups: 1, cols };
}

const bytes = twoLayerModel();
const stats = new Map<string, LayerStatistic>([
  [BIG, statistic(K, 256, 1)],
  [SMALL, statistic(N1, 128, 2)],
]);
const config: CompressConfig = {
  mode: "ssvq",
  k: 16,
  d: 4,
  seed: 1,
  kmeansIters: 10,
  minWeights: 1,
  format: "ssvq",
  finetune: true,
  finetuning: resolveFinetuneOptions({ iters: 500 }),
};

interface Timed {
  t: number;
  e: ProgressEvent;
}

async function compress(run: Omit<CompressRun, "config" | "onProgress"> & { config?: CompressConfig }, listen = true) {
  const events: Timed[] = [];
  const t0 = performance.now();
  const result = await compressModel(
    { bytes, path: "live.onnx" },
    { config, stats, ...run, ...(listen ? { onProgress: (e: ProgressEvent) => events.push({ t: performance.now() - t0, e }) } : {}) },
  );
  return { ...result, events };
}

type CheckEvent = Extract<ProgressEvent, { kind: "freezeCheck" }>;
const checksOf = (events: Timed[], layer: string): Timed[] => events.filter((x) => x.e.kind === "freezeCheck" && x.e.layer === layer);
const asCheck = (x: Timed): FreezeCheck => {
  const { kind: _k, layer: _l, ...check } = x.e as CheckEvent;
  return check;
};
const layerDone = (events: Timed[], layer: string): Timed => {
  const done = events.filter((x) => x.e.kind === "layer" && x.e.name === layer);
  // One "layer" event per stage: quantize (first), then finetune.
  assert.equal(done.length, 2, `${layer}: ${done.length} layer events`);
  return done[1]!;
};

/** The report without what measures time (seconds differ from run to run). */
function timeless(r: Report): unknown {
  return { ...r, timings: {}, layers: r.layers.map((l) => (l.finetune ? { ...l, finetune: { ...l.finetune, seconds: 0 } } : l)) };
}

/**
 * A layer's checks arrived live: the first well before the layer was done (at least 40% of its
 * fine-tuning time: it happens after 5% of the iterations), and in at least 3 separate batches.
 */
function assertLive(events: Timed[], layer: string, seconds: number): string {
  const checks = checksOf(events, layer);
  const done = layerDone(events, layer);
  const early = done.t - checks[0]!.t;
  assert.ok(seconds >= 0.8, `${layer} was fine-tuned in ${seconds.toFixed(2)} s: too fast for this test`);
  assert.ok(early >= 400 * seconds, `${layer}: the first check came ${early.toFixed(0)} ms before the layer was done (fine-tuning took ${(1000 * seconds).toFixed(0)} ms)`);
  const batches = new Set(checks.map((x) => Math.round(x.t / 30))).size;
  assert.ok(batches >= 3, `${layer}: the checks came in ${batches} batches`);
  assert.ok(checks.every((x) => x.t <= done.t), `${layer}: a check came after the layer was done`);
  return `${layer}: fine-tuned in ${(1000 * seconds).toFixed(0)} ms, first check ${early.toFixed(0)} ms before the layer was done, ${checks.length} checks in ${batches} batches`;
}

/** Every layer's freezeCheck events are its report's checks: same numbers, same order, none twice. */
function assertSameChecks(events: Timed[], report: Report): void {
  const layers = new Set(events.filter((x) => x.e.kind === "freezeCheck").map((x) => (x.e as CheckEvent).layer));
  assert.deepEqual([...layers].sort(), report.layers.filter((l) => l.finetune).map((l) => l.name).sort());
  for (const l of report.layers) {
    const live = checksOf(events, l.name).map(asCheck);
    assert.ok(l.finetune!.checks.length > 0, `${l.name}: no checks in the report`);
    assert.deepStrictEqual(live, l.finetune!.checks, `${l.name}: the live checks differ from the report's`);
    const iterations = live.map((c) => c.iteration);
    assert.ok(iterations.every((v, i) => i === 0 || v > iterations[i - 1]!), `${l.name}: iterations ${iterations.join(",")}`);
  }
}

test("check record: a task fills it as it runs with exactly its result's checks; full records refuse more", async () => {
  const rows = 16;
  const cols = 32;
  const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 1.7) * 0.1);
  const q = (await quantizeRows(w, rows, cols, { mode: "ssvq", k: 8, d: 4, seed: 3, kmeansIters: 10, map: serialMap })) as VqQuantized;
  const stat = statistic(cols, 64, 5);
  for (const freeze of [undefined, false] as const) {
    const options = resolveFinetuneOptions({ iters: 57, ...(freeze === false ? { freeze: false } : {}) });
    const progress = createCheckRecord(finetuneCheckCount(options));
    assert.ok(progress.buffer instanceof SharedArrayBuffer);
    assert.equal(progress.length, 1 + finetuneCheckCount(options) * CHECK_RECORD_FIELDS);
    assert.deepEqual(readCheckRecord(progress), []);
    const r = await finetuneLayerTask({ w, h: stat.H, groups: 1, quantized: q, options, progress });
    assert.equal(r.stats.checks.length, finetuneCheckCount(options), "finetuneCheckCount counts the checks of a run");
    assert.deepStrictEqual(readCheckRecord(progress), r.stats.checks);
    assert.deepStrictEqual(readCheckRecord(progress, 2), r.stats.checks.slice(2));
    if (freeze === false) assert.ok(r.stats.checks.every((c) => c.threshold === null));
    else assert.ok(r.stats.checks.every((c) => typeof c.threshold === "number"));
    // Without a record, the same result.
    const plain = await finetuneLayerTask({ w, h: stat.H, groups: 1, quantized: q, options });
    assert.deepStrictEqual(plain, r);
  }
  const small = createCheckRecord(1);
  const check: FreezeCheck = { iteration: 5, loss: -0, relativeError: 0.25, flips: 3, newlyFrozen: 1, frozenFraction: 0.5, threshold: null };
  assert.equal(writeCheckRecord(small, check), true);
  assert.equal(writeCheckRecord(small, { ...check, iteration: 10 }), false);
  assert.deepStrictEqual(readCheckRecord(small), [check]);
  assert.throws(() => finetuneLayerTask({ w, h: stat.H, groups: 1, quantized: q, options: resolveFinetuneOptions({ iters: 5 }), progress: new Float64Array(3) }), /check record/);
});

test("thread pool: freezeCheck events stream while a layer is fine-tuned, equal the report's checks, same bytes as serialMap", async (t) => {
  const live = await compress({ map: pool });
  const serial = await compress({ map: serialMap }, false);
  const big = live.report.layers.find((l) => l.name === BIG)!;
  t.diagnostic(assertLive(live.events, BIG, big.finetune!.seconds));
  assertSameChecks(live.events, live.report);
  // Each layer's checks come before its "layer" event of the fine-tuning stage.
  for (const name of [BIG, SMALL]) assert.ok(checksOf(live.events, name).at(-1)!.t <= layerDone(live.events, name).t);
  assert.ok(Buffer.from(live.model).equals(Buffer.from(serial.model)), "the output model differs from serialMap's");
  assert.deepStrictEqual(timeless(live.report), timeless(serial.report));
});

test("serialMap: every check is emitted once, in order, equal to the report's, before the layer's event", async () => {
  const { events, report } = await compress({ map: serialMap, config: { ...config, finetuning: resolveFinetuneOptions({ iters: 60 }) } });
  assertSameChecks(events, report);
  for (const name of [BIG, SMALL]) assert.ok(events.indexOf(checksOf(events, name).at(-1)!) < events.indexOf(layerDone(events, name)));
});

test("sequential variant on the pool: checks stream live and equal the report's; same bytes as serialMap", async (t) => {
  const source = decodeModel(bytes, "live.onnx");
  const rowsOf = new Map(findWeights(source).weights.map((w) => [w.name, toRows(tensorToFloat32(w.tensor), w.layout)]));
  const sequentialStats = async (w: { name: string }): Promise<SequentialLayerStats> => ({
    stat: stats.get(w.name)!,
    target: rowsOf.get(w.name)!,
    outputError: (wHat) => {
      const rows = rowsOf.get(w.name)!;
      let num = 0;
      let den = 0;
      for (let i = 0; i < rows.length; i++) {
        num += (wHat[i]! - rows[i]!) ** 2;
        den += rows[i]! ** 2;
      }
      return Math.sqrt(num / den);
    },
  });
  const seqConfig: CompressConfig = { ...config, sequential: true };
  const live = await compress({ map: pool, config: seqConfig, sequentialStats });
  const serial = await compress({ map: serialMap, config: seqConfig, sequentialStats }, false);
  const big = live.report.layers.find((l) => l.name === BIG)!;
  t.diagnostic(assertLive(live.events, BIG, big.finetune!.seconds));
  assertSameChecks(live.events, live.report);
  assert.ok(Buffer.from(live.model).equals(Buffer.from(serial.model)), "the output model differs from serialMap's");
  assert.deepStrictEqual(timeless(live.report), timeless(serial.report));
});

test("a listener that throws on a live check fails the run with its error", async () => {
  // A pool of its own, closed at the end: the layers still running stop with it.
  const own = createThreadPool(2);
  try {
    let seen = 0;
    await assert.rejects(
      compressModel(
        { bytes, path: "live.onnx" },
        {
          config,
          stats,
          map: own,
          onProgress: (e) => {
            // The big layer's second check comes from the timer that polls the running layers.
            if (e.kind === "freezeCheck" && e.layer === BIG && ++seen === 2) throw new Error("listener failed");
          },
        },
      ),
      /listener failed/,
    );
    assert.equal(seen, 2, "no check of the layer was emitted after the listener threw");
  } finally {
    await own.close();
  }
});

test("background job: freezeCheck events stream from the worker while a layer is fine-tuned, before its progress event and the result", async (t) => {
  const input = join(work, "live.onnx");
  writeFileSync(input, bytes);
  const out = join(work, "live.ssvq.onnx");
  const events: { t: number; e: WorkerEvent }[] = [];
  const t0 = performance.now();
  // onnxruntime's product is faster than WebAssembly's: more iterations keep the big layer busy for > 1 s.
  const job = startJob(
    {
      kind: "compress",
      input,
      out,
      force: true,
      config: { ...config, finetuning: resolveFinetuneOptions({ iters: 800 }) },
      threads: 2,
      data: { calib: { count: 64, seed: 1 } },
    },
    { onEvent: (e) => events.push({ t: performance.now() - t0, e }) },
  );
  const outcome = await job.outcome;
  assert.equal(outcome.type, "result", JSON.stringify(outcome).slice(0, 500));
  if (outcome.type !== "result") return;
  const resultAt = events.find((x) => x.e === outcome)!.t;
  const checks = (layer: string) => events.filter((x) => x.e.type === "freezeCheck" && x.e.layer === layer);
  const big = outcome.report.layers.find((l) => l.name === BIG)!;
  const seconds = big.finetune!.seconds;
  assert.ok(seconds >= 0.8, `${BIG} was fine-tuned in ${seconds.toFixed(2)} s: too fast for this test`);
  const done = events.find((x) => x.e.type === "progress" && x.e.stage === "finetune" && x.e.layer?.name === BIG)!;
  assert.ok(done, "no finetune progress event for the big layer");
  const first = checks(BIG)[0]!;
  t.diagnostic(`${BIG}: fine-tuned in ${(1000 * seconds).toFixed(0)} ms, first check ${(done.t - first.t).toFixed(0)} ms before its progress event, ${(resultAt - first.t).toFixed(0)} ms before the result`);
  assert.ok(done.t - first.t >= 400 * seconds, `the first check came ${(done.t - first.t).toFixed(0)} ms before the layer's progress event (fine-tuning took ${(1000 * seconds).toFixed(0)} ms)`);
  assert.ok(new Set(checks(BIG).map((x) => Math.round(x.t / 30))).size >= 3, "the checks came in fewer than 3 batches");
  for (const l of outcome.report.layers) {
    const live = checks(l.name);
    assert.ok(live.every((x) => x.t < resultAt));
    assert.deepStrictEqual(
      live.map((x) => {
        const { type: _t, layer: _l, ...c } = x.e as Extract<WorkerEvent, { type: "freezeCheck" }>;
        return c;
      }),
      l.finetune!.checks,
      `${l.name}: the streamed checks differ from the report's`,
    );
  }
  assert.ok(readFileSync(out).length > 0);
});
