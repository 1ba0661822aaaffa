/**
 * Outputs with ONNX external data (`--external-data`, or automatically over the protobuf limit, which
 * SSVQ_MODEL_LIMIT_BYTES lowers for tests), and models with external data as inputs of inspect,
 * compress --calib, eval and simulate.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_ALIGN, layoutExternal } from "../src/core/onnx/external-out.js";
import { clearField } from "@bufbuild/protobuf";
import { decodeModel, encodeModel, TensorProto_DataLocation, TensorProtoSchema, type ModelProto } from "../src/core/onnx/proto.js";
import { rawBytes } from "../src/core/onnx/tensor-data.js";
import { walkTensors } from "../src/core/onnx/walk.js";
import { externalRef } from "../src/core/onnx/external.js";
import { writeNpy } from "../src/core/calib/npy.js";
import type { Report } from "../src/core/report.js";
import { compressFile } from "../src/io/compress-file.js";
import { loadModel } from "../src/io/model-file.js";
import { stageModel } from "../src/io/write-external.js";
import { withModelRef } from "../src/io/model-ref.js";
import { InputError, isCancelledError } from "../src/core/errors.js";
import { floatTensor, int64Tensor, node, randomValues, smallCnn } from "./helpers/models.js";
import { listing, ssvq } from "./helpers/cli.js";
import { runModel } from "./helpers/ort.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-extout-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

/** Equal bytes (Buffer or Uint8Array), without printing megabytes when they are not. */
function sameBytes(a: Uint8Array, b: Uint8Array, what: string): void {
  assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), `${what}: ${a.length} vs ${b.length} bytes differ`);
}

const freshDir = (name: string): string => mkdtempSync(join(work, `${name}-`));

function writeModel(dir: string, name: string, m: ModelProto = smallCnn()): string {
  const p = join(dir, name);
  writeFileSync(p, encodeModel(m));
  return p;
}

/** A model written with external data by our own writer (tensors >= 1 KiB in `<name>.data`). */
function writeExternalModel(dir: string, name: string, m: ModelProto = smallCnn()): string {
  const p = join(dir, name);
  for (const [from, to] of stageModel(p, m, { externalData: true }).renames) renameSync(from, to);
  return p;
}

/**
 * The model with every external tensor read back inline, as one protobuf. (An explicit data_location
 * DEFAULT, which compress writes for tensors it read from external data, is dropped: it means the same.)
 */
function inlined(path: string): Uint8Array {
  const loaded = loadModel(path);
  walkTensors(loaded.model, (t) => {
    if (t.dataLocation === TensorProto_DataLocation.DEFAULT) clearField(t, TensorProtoSchema.field.dataLocation);
    if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL) return;
    t.rawData = rawBytes(t, loaded.readExternal) as Uint8Array<ArrayBuffer>;
    t.externalData = [];
    clearField(t, TensorProtoSchema.field.dataLocation);
  });
  return encodeModel(loaded.model);
}

const feeds = { x: { data: randomValues(2 * 3 * 8 * 8, 7, 1), dims: [2, 3, 8, 8] } };

/** A signal that reads as aborted once `condition` holds (compress checks it between its steps). */
const abortedWhen = (condition: () => boolean): AbortSignal =>
  ({
    get aborted() {
      return condition();
    },
    addEventListener() {},
    removeEventListener() {},
    throwIfAborted() {},
  }) as unknown as AbortSignal;

function calibNpy(dir: string): string {
  const p = join(dir, "calib.npy");
  writeFileSync(p, writeNpy({ elemType: "float32", shape: [16, 3, 8, 8], data: randomValues(16 * 3 * 8 * 8, 3, 1) }));
  return p;
}

test("layout: fits -> one file as encodeModel writes it; forced or over the limit -> large tensors out, aligned, model unchanged", () => {
  const m = smallCnn();
  const before = encodeModel(m);
  const inline = layoutExternal(m, { location: "m.onnx.data" });
  assert.equal(inline.external, false);
  assert.deepEqual(inline.model, before);

  const forced = layoutExternal(m, { location: "m.onnx.data", force: true });
  assert.equal(forced.external, true);
  // w2 (4,608 bytes), w3 (18,432) and w4 (1,280) go out; w1 (864) and the biases stay.
  assert.equal(forced.tensors, 3);
  assert.deepEqual(forced.chunks.map((c) => c.bytes.length), [4608, 18432, 1280]);
  for (const c of forced.chunks) assert.equal(c.offset % DEFAULT_ALIGN, 0);
  assert.equal(forced.dataBytes, forced.chunks.at(-1)!.offset + 1280);
  assert.deepEqual(encodeModel(m), before, "the model's tensors are as they were");
  const out = decodeModel(forced.model);
  const names = out.graph!.initializer.filter((t) => t.dataLocation === TensorProto_DataLocation.EXTERNAL).map((t) => t.name);
  assert.deepEqual(names, ["w2", "w3", "w4"]);
  const w3 = out.graph!.initializer.find((t) => t.name === "w3")!;
  assert.deepEqual(externalRef(w3), { location: "m.onnx.data", segments: ["m.onnx.data"], offset: forced.chunks[1]!.offset, length: 18432 });
  assert.deepEqual(forced.chunks[1]!.bytes, m.graph!.initializer.find((t) => t.name === "w3")!.rawData);
  // Deterministic.
  const again = layoutExternal(m, { location: "m.onnx.data", force: true });
  assert.deepEqual(again.model, forced.model);
  assert.deepEqual(again.chunks, forced.chunks);

  // A lowered limit splits by itself; one below the graph's own size is refused.
  const split = layoutExternal(m, { location: "m.onnx.data", limit: 8192 });
  assert.equal(split.external, true);
  assert.ok(split.model.length <= 8192);
  assert.throws(() => layoutExternal(m, { location: "m.onnx.data", limit: 100 }), (e: unknown) => e instanceof InputError && /even with its 3 large tensors in external data/.test(e.message));
});

test("layout: Constant-node tensors stay inline unless the main graph's initializers are not enough; nothing to move gives one file", () => {
  const m = smallCnn();
  // y2 = y + a 2 KiB Constant (shape [1, 10] would broadcast; keep it simple: an unused output branch).
  const big = randomValues(512, 11);
  m.graph!.node.push(node("Constant", [], ["c"], { value: floatTensor("c_value", [512], big) }, "const_c"));
  m.graph!.node.push(node("ReduceSum", ["c"], ["c_sum"], { keepdims: 0 }));
  const forced = layoutExternal(m, { location: "m.data", force: true });
  assert.equal(forced.tensors, 3, "only the main graph's initializers");
  const inlineSize = forced.model.length;
  const tighter = layoutExternal(m, { location: "m.data", limit: inlineSize - 1 });
  assert.equal(tighter.tensors, 4, "the Constant too, when the limit needs it");
  assert.ok(tighter.model.length < inlineSize);
  // A model with no tensor of 1 KiB: --external-data has nothing to move and writes one file.
  const tiny = smallCnn();
  tiny.graph!.initializer.splice(0, tiny.graph!.initializer.length, ...tiny.graph!.initializer.filter((t) => t.rawData.length < 1024));
  const none = layoutExternal(tiny, { location: "m.data", force: true });
  assert.equal(none.external, false);
  assert.deepEqual(none.model, encodeModel(tiny));
});

test("layout: a tensor in a typed field goes out as its little-endian raw bytes and reads back the same", () => {
  const m = smallCnn();
  const values = Array.from({ length: 200 }, (_, i) => (i % 2 ? -1 : 1) * i * 1e9);
  m.graph!.initializer.push(int64Tensor("big_ints", [200], values));
  const dir = freshDir("typed");
  const p = writeExternalModel(dir, "typed.onnx", m);
  const loaded = loadModel(p);
  const t = loaded.model.graph!.initializer.find((x) => x.name === "big_ints")!;
  assert.equal(t.dataLocation, TensorProto_DataLocation.EXTERNAL);
  const raw = rawBytes(t, loaded.readExternal)!;
  const view = new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  assert.deepEqual(Array.from(view, Number), values);
});

for (const mode of ["int8", "ssvq"] as const)
  test(`compress --external-data (${mode}): the data file reads back to the single-file output, runs the same in onnxruntime, same bytes twice`, async () => {
    const dir = freshDir(`rt-${mode}`);
    const input = writeModel(dir, "net.onnx");
    const single = join(dir, "single.onnx");
    const ext = join(dir, "ext.onnx");
    const a = ssvq(["compress", input, "--mode", mode, "--out", single, "--json"]);
    assert.equal(a.status, 0, a.stderr);
    const b = ssvq(["compress", input, "--mode", mode, "--out", ext, "--external-data", "--json"]);
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stderr, /its external data .*ext\.onnx\.data/);
    assert.deepEqual(listing(dir), ["ext.json", "ext.onnx", "ext.onnx.data", "net.onnx", "single.json", "single.onnx"]);
    // Tensors identical: the external output with its data read back inline is the single-file output.
    sameBytes(inlined(ext), readFileSync(single), "inlined external output vs single file");
    // The readback (ssvq inspect) finds the same compression.
    const ia = JSON.parse(ssvq(["inspect", single, "--json"]).stdout);
    const ib = JSON.parse(ssvq(["inspect", ext, "--json"]).stdout);
    assert.ok(ia.compression.layers.length > 0);
    assert.deepEqual(ib.compression.layers, ia.compression.layers);
    assert.deepEqual(ib.externalFiles, ["ext.onnx.data"]);
    // onnxruntime, by path: the same outputs.
    assert.deepEqual(await runModel(ext, feeds), await runModel(single, feeds));
    // The report: the data file, counted on disk.
    const report = JSON.parse(b.stdout) as Report;
    const dataBytes = statSync(`${ext}.data`).size;
    assert.deepEqual(report.output!.data, { path: `${ext}.data`, bytes: dataBytes, tensors: report.output!.data!.tensors });
    assert.ok(report.output!.data!.tensors >= 1);
    assert.equal(report.sizes.outputDataBytes, dataBytes);
    assert.equal(report.sizes.outputFileBytes, statSync(ext).size + dataBytes);
    assert.equal(report.sizes.diskRatio, report.sizes.sourceFileBytes / report.sizes.outputFileBytes);
    const singleReport = JSON.parse(a.stdout) as Report;
    assert.equal(singleReport.output!.data, undefined);
    assert.equal(singleReport.sizes.outputDataBytes, undefined);
    // Deterministic: the same bytes again.
    const model1 = readFileSync(ext);
    const data1 = readFileSync(`${ext}.data`);
    const c = ssvq(["compress", input, "--mode", mode, "--out", ext, "--external-data", "--force"]);
    assert.equal(c.status, 0, c.stderr);
    sameBytes(readFileSync(ext), model1, "model file");
    sameBytes(readFileSync(`${ext}.data`), data1, "data file");
    // Replaced with --force by a single-file output, the stale data file goes too.
    const d = ssvq(["compress", input, "--mode", mode, "--out", ext, "--force"]);
    assert.equal(d.status, 0, d.stderr);
    assert.ok(!listing(dir).includes("ext.onnx.data"));
  });

test("over the (lowered) protobuf limit the output is split by itself; a limit the graph alone passes fails with nothing written", () => {
  const dir = freshDir("limit");
  const input = writeModel(dir, "net.onnx");
  const env = (limit: string) => ({ env: { ...process.env, SSVQ_MODEL_LIMIT_BYTES: limit } });
  const r = ssvq(["compress", input, "--mode", "int8", "--json"], env("4096"));
  assert.equal(r.status, 0, r.stderr);
  assert.ok(statSync(join(dir, "net.ssvq.onnx")).size <= 4096);
  const report = JSON.parse(r.stdout) as Report;
  assert.equal(report.output!.data!.path, join(dir, "net.ssvq.onnx.data"));
  rmSync(join(dir, "net.ssvq.onnx"));
  rmSync(join(dir, "net.ssvq.onnx.data"));
  rmSync(join(dir, "net.ssvq.json"));
  const f = ssvq(["compress", input, "--mode", "int8"], env("200"));
  assert.equal(f.status, 2, f.stderr);
  assert.match(f.stderr, /even with its \d+ large tensors in external data/);
  assert.deepEqual(listing(dir), ["net.onnx"]);
});

test("cancelled at the last step, after the data file was written: nothing is left", async () => {
  const dir = freshDir("cancel");
  const input = writeModel(dir, "net.onnx");
  // Cancelled as soon as a temporary data file exists: the check before the renames sees it.
  const stagedData = () => readdirSync(dir).some((n) => n.startsWith(".net.ssvq.onnx.data.") && n.endsWith(".tmp"));
  const signal = abortedWhen(stagedData);
  await assert.rejects(
    compressFile({ input, externalData: true, signal, config: { mode: "int8", k: 0, d: 0, seed: 0, kmeansIters: 25, minWeights: 1024, format: "ssvq", finetune: false } }),
    (e: unknown) => isCancelledError(e),
  );
  assert.deepEqual(listing(dir), ["net.onnx"]);
});

test("the output's data file may not be the input's own data file, even with --force", () => {
  const dir = freshDir("clobber");
  // net.onnx keeps its weights in net.ssvq.onnx.data: the default output's data file.
  const staged = writeExternalModel(dir, "net.ssvq.onnx");
  renameSync(staged, join(dir, "net.onnx"));
  const before = readFileSync(join(dir, "net.ssvq.onnx.data"));
  for (const extra of [[], ["--force"], ["--force", "--external-data"]]) {
    const r = ssvq(["compress", join(dir, "net.onnx"), "--mode", "int8", ...extra]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /net\.ssvq\.onnx\.data is the model's external data file/);
  }
  sameBytes(readFileSync(join(dir, "net.ssvq.onnx.data")), before, "the input's data file");
  assert.deepEqual(listing(dir), ["net.onnx", "net.ssvq.onnx.data"]);
});

test("an existing data file is an output: refused without --force", () => {
  const dir = freshDir("exists");
  const input = writeModel(dir, "net.onnx");
  writeFileSync(join(dir, "net.ssvq.onnx.data"), "old");
  const r = ssvq(["compress", input, "--mode", "int8"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /net\.ssvq\.onnx\.data exists; pass --force/);
});

test("a model with external data: compress --calib gives the same bytes as from one file; eval and simulate run it", async () => {
  const dir = freshDir("calib");
  const one = writeModel(dir, "one.onnx");
  const ext = writeExternalModel(dir, "ext.onnx");
  sameBytes(inlined(ext), readFileSync(one), "external source inlined");
  const calib = calibNpy(dir);
  const args = ["--calib", calib, "--iters", "20", "--json"];
  const a = ssvq(["compress", one, "--out", join(dir, "a.onnx"), ...args]);
  assert.equal(a.status, 0, a.stderr);
  const b = ssvq(["compress", ext, "--out", join(dir, "b.onnx"), "--external-data", ...args]);
  assert.equal(b.status, 0, b.stderr);
  const ra = JSON.parse(a.stdout) as Report;
  const rb = JSON.parse(b.stdout) as Report;
  assert.equal(rb.calibration!.samples, 16);
  assert.deepEqual(rb.layers.map((l) => l.outputError), ra.layers.map((l) => l.outputError));
  sameBytes(inlined(join(dir, "b.onnx")), inlined(join(dir, "a.onnx")), "outputs from the two sources");
  // eval: the external-data original against the external-data output, and the output alone.
  const e = ssvq(["eval", ext, "--eval", calib, "--compare", join(dir, "b.onnx"), "--json"]);
  assert.equal(e.status, 0, e.stderr);
  const ev = JSON.parse(e.stdout);
  assert.equal(ev.samples ?? ev.report?.samples, 16);
  const e2 = ssvq(["eval", join(dir, "b.onnx"), "--eval", calib]);
  assert.equal(e2.status, 0, e2.stderr);
  // compress --eval on an external-data input with an external-data output.
  const c = ssvq(["compress", ext, "--mode", "int8", "--out", join(dir, "c.onnx"), "--external-data", "--eval", calib, "--json"]);
  assert.equal(c.status, 0, c.stderr);
  assert.ok((JSON.parse(c.stdout) as Report).evaluation!.outputs[0]!.cosine > 0.99);
  // simulate reads the shapes of both through onnxruntime.
  for (const m of [ext, join(dir, "b.onnx")]) {
    const s = ssvq(["simulate", m, "--preset", "ethos-u55-256", "--shape", "x=1,3,8,8"]);
    assert.equal(s.status, 0, s.stderr);
    assert.match(s.stdout, /ssvq/);
  }
});

test("a dense output over the (lowered) limit goes to its data file as each layer is done: the same model as one written whole, --eval runs from it, a cancelled run leaves nothing", async () => {
  const dir = freshDir("dense-spool");
  const input = writeModel(dir, "net.onnx");
  const calib = calibNpy(dir);
  const args = ["--format", "dense", "--k", "16", "--d", "4", "--min-weights", "16", "--json"];
  // Whole: the model fits, one file. Spooled: the limit (16 KiB here) is below the source's 25 KB.
  const whole = ssvq(["compress", input, "--out", join(dir, "whole.onnx"), ...args]);
  assert.equal(whole.status, 0, whole.stderr);
  const spooled = ssvq(["compress", input, "--out", join(dir, "spooled.onnx"), "--eval", calib, ...args], { env: { ...process.env, SSVQ_MODEL_LIMIT_BYTES: "16384" } });
  assert.equal(spooled.status, 0, spooled.stderr);
  const report = JSON.parse(spooled.stdout) as Report;
  // w2, w3 and w4 (1 KiB or more) went to the data file as their layers were done; w1 (864 bytes) stays inline.
  assert.equal(report.output!.data!.tensors, 3);
  assert.ok(report.evaluation!.outputs[0]!.cosine > 0.9);
  const loaded = loadModel(join(dir, "spooled.onnx"));
  const external = loaded.model.graph!.initializer.filter((t) => externalRef(t)).map((t) => [t.name, Number(externalRef(t)!.offset) % DEFAULT_ALIGN]);
  assert.deepEqual(external, [["w2", 0], ["w3", 0], ["w4", 0]]);
  sameBytes(inlined(join(dir, "spooled.onnx")), inlined(join(dir, "whole.onnx")), "spooled and whole dense outputs");
  assert.deepEqual(await runModel(join(dir, "spooled.onnx"), feeds), await runModel(join(dir, "whole.onnx"), feeds));
  // Cancelled once the data file has its first tensor: neither it nor anything else is left.
  const cancelDir = freshDir("dense-cancel");
  const source = writeModel(cancelDir, "net.onnx");
  const spooling = () => readdirSync(cancelDir).some((n) => n.startsWith(".net.ssvq.onnx.data.") && n.endsWith(".tmp") && statSync(join(cancelDir, n)).size > 0);
  const signal = abortedWhen(spooling);
  await assert.rejects(
    compressFile({ input: source, externalData: true, signal, config: { mode: "ssvq", k: 16, d: 4, seed: 0, kmeansIters: 25, minWeights: 16, format: "dense", finetune: false } }),
    (e: unknown) => isCancelledError(e),
  );
  assert.deepEqual(listing(cancelDir), ["net.onnx"]);
});

test("a model file over 2 GiB (no external data) is refused in one line by inspect, compress, eval and simulate", () => {
  const dir = freshDir("big");
  const big = join(dir, "big.onnx");
  // Sparse: no disk space is taken.
  const fd = openSync(big, "w");
  ftruncateSync(fd, 2 ** 31 + 4096);
  closeSync(fd);
  mkdirSync(join(dir, "data"));
  const calib = calibNpy(join(dir, "data"));
  for (const args of [["inspect", big], ["compress", big], ["eval", big, "--eval", calib], ["simulate", big, "--preset", "ethos-u55-256"]]) {
    const r = ssvq(args);
    assert.equal(r.status, 2, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /over 2 GiB/, args[0]);
    assert.equal(r.stderr.trim().split("\n").length, 1, `${args[0]}: ${r.stderr}`);
  }
  assert.deepEqual(listing(dir), ["big.onnx", "data", "data/calib.npy"]);
});

test("an output too large for one buffer is evaluated from a temporary copy with external data, removed afterwards", async () => {
  const dir = freshDir("ref");
  const out = join(dir, "net.ssvq.onnx");
  const m = smallCnn();
  let seen: string[] = [];
  const y = await withModelRef(out, new Uint8Array(0), m, undefined, async (ref) => {
    assert.equal(typeof ref, "string");
    seen = listing(dir);
    return runModel(ref as string, feeds);
  });
  assert.equal(seen.length, 3, seen.join(", "));
  assert.ok(seen.every((n) => n.startsWith(".net.ssvq.onnx.") && n.includes(".tmp")));
  assert.ok(seen.some((n) => n.endsWith("/net.ssvq.onnx.data")));
  assert.deepEqual(listing(dir), []);
  assert.deepEqual(y, await runModel(encodeModel(m), feeds));
  // Bytes that fit are used as they are.
  assert.equal(await withModelRef(out, new Uint8Array([1, 2]), m, undefined, async (ref) => (ref as Uint8Array).length), 2);
});

test("capture, the search's sensitivities and simulate's shapes let onnxruntime read external data from the files: nothing is read inline (no 2 GiB limit), from any working directory", async () => {
  const { captureActivations } = await import("../src/io/capture.js");
  const { measureModelChanges } = await import("../src/io/sensitivity.js");
  const { measureShapes } = await import("../src/io/shapes.js");
  const { openData } = await import("../src/io/calib-files.js");
  const { modelInputs } = await import("../src/io/ort.js");
  const { selectWeights } = await import("../src/core/compress.js");
  const { weightKey } = await import("../src/core/onnx/weights.js");
  const dir = freshDir("ortreads");
  const ext = writeExternalModel(dir, "ext.onnx");
  const loaded = loadModel(ext);
  const calib = calibNpy(dir);
  // Any read of external data here fails: only onnxruntime, from the files, may read them.
  const refuse = () => {
    throw new Error("external data was read inline");
  };
  const config = { mode: "ssvq" as const, k: 16, d: 4, seed: 0, kmeansIters: 5, minWeights: 16, format: "ssvq" as const, finetune: true };
  const { selected } = selectWeights(loaded.model, config);
  const cwd = process.cwd();
  process.chdir(work); // not the model's folder
  try {
    const data = await openData(modelInputs(loaded.model), { path: calib, role: "calib" });
    const withFiles = await captureActivations(loaded.model, selected, data, { readExternal: refuse, modelDir: loaded.dir });
    const inline = await captureActivations(loaded.model, selected, await openData(modelInputs(loaded.model), { path: calib, role: "calib" }), { readExternal: loaded.readExternal });
    assert.equal(withFiles.layers.size, selected.length);
    const facts = (l: unknown) => {
      const x = l as { samples: number; trace: number };
      return [x.samples, x.trace];
    };
    for (const [name, l] of inline.layers) assert.deepEqual(facts(withFiles.layers.get(name)), facts(l), `${name}: the same statistic`);
    assert.equal(process.cwd(), work, "the working directory is restored");
    const w = selected[0]!;
    const changed = await measureModelChanges(loaded.bytes, loaded.path, [{ key: weightKey(w), stored: new Float32Array(w.dims.reduce((a, b) => a * b, 1)) }], await openData(modelInputs(loaded.model), { path: calib, role: "calib" }), { readExternal: refuse });
    assert.ok(changed.changes[0]! > 0, "zeroing a layer changes the outputs");
    const shapes = await measureShapes(loaded.model, { x: [1, 3, 8, 8] }, { readExternal: refuse, modelDir: loaded.dir });
    assert.ok(shapes.dims.size > 0);
  } finally {
    process.chdir(cwd);
  }
});
