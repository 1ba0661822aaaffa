/**
 * The Markdown report (src/core/report-markdown.ts) and `ssvq report`, on real reports written by
 * `ssvq compress`: every table's numbers are parsed back and compared with the report's own fields,
 * computed independently here.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeModel, encodeModel } from "../src/core/onnx/proto.js";
import type { LayerReport, Report } from "../src/core/report.js";
import { allLayerChecks, allLayerChecksDetail, reportMarkdown, sizeBreakdown } from "../src/core/report-markdown.js";
import { ssvq } from "./helpers/cli.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-mdreport-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const X = fixture("fashion_test2000_x_u8.npy");
const Y = fixture("fashion_test2000_y_u8.npy");
const DATA = ["--calib", X, "--calib-range", "0:256", "--scale", "1/255"];
const CALIB = [...DATA, "--iters", "60"];
const EVAL = ["--eval", X, "--eval-range", "512:1000", "--labels", Y];
const SIM = ["--preset", "ethos-u55-256", "--shape", "input=1,1,28,28"];

interface Run {
  /** The report file and its parsed content. */
  path: string;
  report: Report;
  /** What `ssvq compress` printed on stdout. */
  stdout: string;
}

const runs = new Map<string, Run>();

/** `ssvq compress MODEL --out <work>/<name>.ssvq.onnx ARGS`, once per name. */
function compress(name: string, model: string, args: string[]): Run {
  const done = runs.get(name);
  if (done) return done;
  const out = join(work, `${name}.ssvq.onnx`);
  const r = ssvq(["compress", model, "--out", out, ...args]);
  assert.equal(r.status, 0, r.stderr);
  const path = join(work, `${name}.ssvq.json`);
  const run = { path, report: JSON.parse(readFileSync(path, "utf8")) as Report, stdout: r.stdout };
  runs.set(name, run);
  return run;
}

const lenetFull = () => compress("lenet-full", fixture("fashion_lenet5.onnx"), [...CALIB, ...EVAL, "--compare", "vq", ...SIM]);
const vitFull = () => compress("vit-full", fixture("fashion_tinyvit.onnx"), [...CALIB, ...EVAL, "--compare", "vq", ...SIM]);
const lenetInt8 = () => compress("lenet-int8", fixture("fashion_lenet5.onnx"), ["--mode", "int8", ...DATA, ...EVAL, ...SIM]);
const lenetPlain = () => compress("lenet-plain", fixture("fashion_lenet5.onnx"), []);

/** LeNet-5 with a pipe in f1's weight and node names and a line break in f2's weight name. */
function pipeModel(): string {
  const path = join(work, "pipe.onnx");
  const m = decodeModel(readFileSync(fixture("fashion_lenet5.onnx")));
  const rename: Record<string, string> = { "f1.weight": "f1|weight", "f2.weight": "f2\nweight" };
  for (const t of m.graph!.initializer) t.name = rename[t.name] ?? t.name;
  for (const i of m.graph!.input) i.name = rename[i.name] ?? i.name;
  for (const n of m.graph!.node) {
    n.input = n.input.map((x) => rename[x] ?? x);
    if (n.name === "/f1/Gemm") n.name = "/f1|Gemm";
  }
  writeFileSync(path, encodeModel(m));
  return path;
}
const pipeRun = () => compress("pipe", pipeModel(), [...CALIB, ...SIM]);

// ---------------------------------------------------------------------------------------------------
// Reading the Markdown back

interface MdTable {
  /** The nearest heading above the table, without its #s. */
  section: string;
  headers: string[];
  rows: string[][];
}

/** A table row's cells: split on pipes not escaped by a backslash (GFM), each cell unescaped. */
function splitRow(line: string): string[] {
  assert.ok(line.startsWith("| ") && line.endsWith(" |"), `not a table row: ${line}`);
  return line
    .slice(1, -1)
    .split(/(?<!\\)\|/)
    .map((c) => unescapeCell(c.trim()));
}

function unescapeCell(c: string): string {
  const t = c.replace(/\\\|/g, "|");
  const code = /^(`+) ?(.*?) ?\1$/.exec(t);
  if (code) return code[2]!;
  return t.replace(/<br>/g, "\n").replace(/\\([!-/:-@[-`{-~])/g, "$1");
}

function parseTables(md: string): MdTable[] {
  const lines = md.split("\n");
  const tables: MdTable[] = [];
  let section = "";
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith("#")) section = line.replace(/^#+\s*/, "");
    if (!line.startsWith("|")) continue;
    const headers = splitRow(line);
    const rule = splitRow(lines[++i]!);
    assert.equal(rule.length, headers.length, `rule of ${section}`);
    for (const r of rule) assert.match(r, /^(?=.{3,}$)-+:?$/);
    const rows: string[][] = [];
    while (lines[i + 1]?.startsWith("|")) {
      const row = splitRow(lines[++i]!);
      assert.equal(row.length, headers.length, `a row of a table in ${section} has ${row.length} cells, not ${headers.length}: ${lines[i]}`);
      rows.push(row);
    }
    tables.push({ section, headers, rows });
  }
  return tables;
}

function findTable(tables: MdTable[], section: string, firstHeader: string): MdTable {
  const t = tables.find((x) => x.section === section && x.headers[0] === firstHeader);
  assert.ok(t, `no table "${firstHeader}" under "${section}"`);
  return t;
}

/** A table's rows as objects, keyed by header. */
const records = (t: MdTable): Record<string, string>[] => t.rows.map((r) => Object.fromEntries(t.headers.map((h, i) => [h, r[i]!])));
/** A two-column table as a map from its first column. */
const keyed = (t: MdTable): Map<string, string[]> => new Map(t.rows.map((r) => [r[0]!, r.slice(1)]));

// Numbers, parsed and compared with the report's value within the printed precision.
function pct(cell: string | undefined, x: number, what: string): void {
  assert.match(cell ?? "", /^-?\d+\.\d{2}%$/, `${what}: ${cell}`);
  assert.ok(Math.abs(Number(cell!.slice(0, -1)) - 100 * x) <= 0.005 + 1e-9, `${what}: ${cell} vs ${100 * x}%`);
}
function ratio(cell: string | undefined, x: number, what: string): void {
  assert.match(cell ?? "", /^\d+\.\d{2}x$/, `${what}: ${cell}`);
  assert.ok(Math.abs(Number(cell!.slice(0, -1)) - x) <= 0.005 + 1e-9, `${what}: ${cell} vs ${x}`);
}
function fixed(cell: string | undefined, x: number, decimals: number, what: string): void {
  assert.match(cell ?? "", new RegExp(`^-?\\d+\\.\\d{${decimals}}$`), `${what}: ${cell}`);
  assert.ok(Math.abs(Number(cell) - x) <= 0.5 * 10 ** -decimals + 1e-9, `${what}: ${cell} vs ${x}`);
}
function count(cell: string | undefined, n: number, what: string): void {
  assert.match(cell ?? "", /^-?\d{1,3}(,\d{3})*$/, `${what}: ${cell}`);
  assert.equal(Number(cell!.replace(/,/g, "")), n, what);
}
function bytes(cell: string | undefined, n: number, what: string): void {
  const m = /^(\d+(?:\.(\d+))?) (B|KiB|MiB|GiB)$/.exec(cell ?? "");
  assert.ok(m, `${what}: ${cell}`);
  const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[3] as "B"];
  const decimals = m[2]?.length ?? 0;
  assert.ok(Math.abs(Number(m[1]) * unit - n) <= 0.5 * 10 ** -decimals * unit + 0.5, `${what}: ${cell} vs ${n} bytes`);
}
function duration(cell: string | undefined, s: number, what: string): void {
  const m = /^(\d+\.\d+) (s|ms|µs)$/.exec(cell ?? "");
  assert.ok(m, `${what}: ${cell}`);
  const unit = { s: 1, ms: 1e-3, "µs": 1e-6 }[m[2] as "s"];
  assert.ok(Math.abs(Number(m[1]) * unit - s) <= 0.5 * 10 ** -m[1]!.split(".")[1]!.length * unit + 1e-15, `${what}: ${cell} vs ${s} s`);
}

// ---------------------------------------------------------------------------------------------------
// Every table of a document against its report

function checkDocument(r: Report, md: string): void {
  const tables = parseTables(md);
  const heads = md.split("\n").filter((l) => l.startsWith("## ")).map((l) => l.slice(3));
  const expected = [
    "Overview",
    ...(r.comparison ? ["SSVQ vs VQ"] : []),
    "Layers",
    ...(r.layers.some((l) => l.finetune?.checks.length) ? ["Sign freezing"] : []),
    ...(r.simulation ? ["Simulated latency"] : []),
    "Kept as is",
    "Warnings",
  ];
  assert.deepEqual(heads, expected);
  assert.ok(md.startsWith(`# SSVQ report: \`${r.source.path.split("/").pop()}\`\n`), md.slice(0, 80));
  assert.ok(md.endsWith("\n") && !md.endsWith("\n\n"));

  // Sizes.
  const s = r.sizes;
  const sizes = keyed(findTable(tables, "Sizes", ""));
  bytes(sizes.get("tensors (tensor-only)")![0], s.originalTensorBytes, "original tensors");
  bytes(sizes.get("tensors (tensor-only)")![1], s.compressedTensorBytes, "compressed tensors");
  ratio(sizes.get("tensors (tensor-only)")![2], s.originalTensorBytes / s.compressedTensorBytes, "tensor ratio");
  bytes(sizes.get("file on disk")![0], s.sourceFileBytes, "source file");
  bytes(sizes.get("file on disk")![1], s.outputFileBytes, "output file");
  ratio(sizes.get("file on disk")![2], s.sourceFileBytes / s.outputFileBytes, "disk ratio");
  bytes(sizes.get("file, theoretical")![1], s.theoreticalFileBytes, "theoretical file");
  assert.ok(md.includes(`${s.compressedLayers} layers compressed: ${s.compressedWeights.toLocaleString("en-US")} weights at ${s.bitsPerWeight.toFixed(3)} bits/weight.`));

  // Size breakdown: bits summed here over the layers' fields; the rest of the tensors is what is left.
  const sum = (f: (l: LayerReport) => number) => r.layers.reduce((a, l) => a + f(l), 0);
  const parts: [string, number][] = [
    ["codeword indices", sum((l) => l.bits.indexBits)],
    ["sign bits", sum((l) => l.bits.signBits)],
    ["codebooks", sum((l) => l.bits.codebookBits)],
    ["INT values", sum((l) => l.bits.valueBits)],
    ["INT scales", sum((l) => l.bits.scaleBits)],
  ];
  const layerBits = sum((l) => l.bits.totalBits);
  const weights = sum((l) => l.bits.weights);
  const breakdown = keyed(findTable(tables, "Size breakdown", "part"));
  for (const [label, bits] of parts) {
    if (bits === 0) {
      assert.ok(!breakdown.has(label), `${label} has no bits but a row`);
      continue;
    }
    const [b, by, bpw, share] = breakdown.get(label)!;
    count(b, bits, label);
    bytes(by, bits / 8, label);
    fixed(bpw, bits / weights, 3, label);
    pct(share, bits / 8 / s.compressedTensorBytes, label);
  }
  count(breakdown.get("compressed layers")![0], layerBits, "layer bits");
  fixed(breakdown.get("compressed layers")![2], s.bitsPerWeight, 3, "layer bits/weight");
  const keptBytes = s.compressedTensorBytes - layerBits / 8;
  count(breakdown.get("tensors left as they were")![0], keptBytes * 8, "kept bits");
  pct(breakdown.get("tensors left as they were")![3], keptBytes / s.compressedTensorBytes, "kept share");
  bytes(breakdown.get("all tensors")![1], s.compressedTensorBytes, "all tensors");
  const b = sizeBreakdown(r);
  assert.equal(b.parts.reduce((a, p) => a + p.bytes, 0), s.compressedTensorBytes);

  // Run settings.
  const run = keyed(findTable(tables, "Run", "setting"));
  assert.equal(run.get("source")![0]!.split(" (")[0], `\`${r.source.path}\``);
  assert.equal(run.get("output")![0]!.split(" (")[0], `\`${r.output!.path}\``);
  assert.equal(run.get("seed")![0], String(r.config.seed));
  assert.equal(run.get("method")![0], r.config.mode === "ssvq" || r.config.mode === "vq" ? `${r.config.mode.toUpperCase()} k=${r.config.k} d=${r.config.d}` : r.config.mode.toUpperCase());
  if (r.config.finetuning && r.config.finetune) assert.match(run.get("fine-tuning")![0]!, new RegExp(`^${r.config.finetuning.iters} iterations`));
  else assert.equal(run.get("fine-tuning")![0], "off");
  if (r.command) assert.ok(md.includes(`ssvq compress ${r.command.join(" ")}\n`), "the command to reproduce");

  // Calibration.
  if (r.calibration) {
    const cal = keyed(findTable(tables, "Calibration", ""));
    count(cal.get("samples")![0], r.calibration.samples, "calibration samples");
    assert.equal(cal.get("range")![0], `${r.calibration.data.range[0]}:${r.calibration.data.range[1]} of ${r.calibration.data.available.toLocaleString("en-US")} available`);
    assert.equal(cal.get("data")![0], r.calibration.data.paths.join(", "));
    count(cal.get("uncalibrated layers")![0], r.calibration.uncalibrated.length, "uncalibrated");
  } else assert.ok(!tables.some((t) => t.section === "Calibration"));

  // Evaluation.
  const ev = r.evaluation;
  if (ev) {
    count(keyed(findTable(tables, "Evaluation", "")).get("samples")![0], ev.samples, "evaluation samples");
    const acc = keyed(findTable(tables, "Evaluation", "model"));
    for (const which of ["original", "compressed"] as const) {
      const a = ev.accuracy![which]!;
      count(acc.get(which)![0], a.correct, `${which} correct`);
      count(acc.get(which)![1], ev.accuracy!.labelled, "labelled");
      pct(acc.get(which)![2], a.correct / ev.accuracy!.labelled, `${which} accuracy`);
    }
    const fid = records(findTable(tables, "Evaluation", "output"));
    assert.equal(fid.length, ev.outputs.length);
    ev.outputs.forEach((o, i) => {
      const row = fid[i]!;
      assert.equal(row["output"], o.name);
      pct(row["relative error"], o.relError, "relative error");
      fixed(row["cosine"], o.cosine, 4, "cosine");
      fixed(row["mean sample cosine"], o.meanSampleCosine, 4, "mean sample cosine");
      pct(row["top-1 agreement"], o.top1Agreement!, "top-1 agreement");
    });
  } else assert.ok(!tables.some((t) => t.section === "Evaluation"));

  // Time per stage, in the report's order, and their total.
  const times = findTable(tables, "Time per stage", "stage");
  const stages = Object.entries(r.timings);
  assert.deepEqual(times.rows.map((x) => x[0]), [...stages.map(([k]) => k), "total"]);
  stages.forEach(([k, v], i) => fixed(times.rows[i]![1], v, 3, `time of ${k}`));
  fixed(times.rows.at(-1)![1], stages.reduce((a, [, v]) => a + v, 0), 3, "total time");

  // Layers.
  const layers = records(findTable(tables, "Layers", "layer"));
  assert.deepEqual(layers.map((x) => x["layer"]), r.layers.map((l) => l.name));
  r.layers.forEach((l, i) => {
    const row = layers[i]!;
    assert.equal(row["op"], l.opType);
    assert.equal(row["shape"], `[${l.dims.join(", ")}]`);
    assert.equal(row["rows x cols"], `${l.rows} x ${l.cols}`);
    assert.equal(row["k"], l.k === undefined ? "-" : String(l.k));
    assert.equal(row["d"], l.d === undefined ? "-" : String(l.d));
    fixed(row["bits/weight"], l.bits.totalBits / l.bits.weights, 3, `${l.name} bits/weight`);
    pct(row["weight error"], l.weightError, `${l.name} weight error`);
    if (l.finetune) {
      pct(row["output error, k-means"], l.finetune.errorBefore, `${l.name} error before`);
      pct(row["output error, fine-tuned"], l.outputError!, `${l.name} error after`);
      pct(row["signs flipped"], l.finetune.signsChanged / l.bits.weights, `${l.name} flipped`);
      pct(row["frozen"], l.finetune.frozenFraction, `${l.name} frozen`);
    } else if (r.calibration) pct(row["output error"], l.outputError!, `${l.name} output error`);
    else assert.ok(!("output error" in row) && !("calibrated" in row));
    if (r.calibration) assert.equal(row["calibrated"], "yes");
  });

  // Sign freezing: per layer, and all layers per check, recomputed here from each check's own error.
  const tuned = r.layers.filter((l) => l.finetune?.checks.length);
  if (tuned.length) {
    const per = records(findTable(tables, "Sign freezing", "layer"));
    tuned.forEach((l, i) => {
      const row = per[i]!;
      const f = l.finetune!;
      assert.equal(row["layer"], l.name);
      count(row["checks"], f.checks.length, "checks");
      count(row["flips, all checks"], f.checks.reduce((a, c) => a + c.flips, 0), "flips");
      count(row["flips, last check"], f.checks[f.checks.length - 1]!.flips, "last flips");
      pct(row["frozen"], f.frozenFraction, "frozen");
      const [before, after] = row["output error, k-means → fine-tuned"]!.split(" → ");
      pct(before, f.errorBefore, "before");
      pct(after, l.outputError!, "after");
    });
    const all = records(findTable(tables, "Sign freezing", "iteration"));
    const iterations = [...new Set(tuned.flatMap((l) => l.finetune!.checks.map((c) => c.iteration)))].sort((a, b) => a - b);
    assert.deepEqual(all.map((x) => Number(x["iteration"]!.replace(/,/g, ""))), iterations);
    const series = allLayerChecks(r);
    iterations.forEach((it, i) => {
      const at = tuned.map((l) => ({ l, c: l.finetune!.checks.find((c) => c.iteration === it)! }));
      const flips = at.reduce((a, x) => a + x.c.flips, 0);
      const w = at.reduce((a, x) => a + x.l.bits.weights, 0);
      const frozen = at.reduce((a, x) => a + x.c.frozenFraction * x.l.bits.weights, 0) / w;
      const loss = at.reduce((a, x) => a + x.c.loss, 0);
      const ref = at.reduce((a, x) => a + x.c.loss / x.c.relativeError ** 2, 0);
      const rel = Math.sqrt(loss / ref);
      count(all[i]!["flips"], flips, `flips at ${it}`);
      pct(all[i]!["frozen"], frozen, `frozen at ${it}`);
      pct(all[i]!["relative error"], rel, `error at ${it}`);
      assert.equal(series[i]!.iteration, it);
      assert.equal(series[i]!.flips, flips);
      assert.ok(Math.abs(series[i]!.frozenFraction - frozen) < 1e-12);
      assert.ok(Math.abs(series[i]!.relativeError - rel) < 1e-9 * rel, `${series[i]!.relativeError} vs ${rel}`);
      // The aggregate lies between the layers' own errors.
      const errs = at.map((x) => x.c.relativeError);
      assert.ok(rel >= Math.min(...errs) - 1e-12 && rel <= Math.max(...errs) + 1e-12);
    });
    assert.equal(allLayerChecksDetail(r).errorAggregate, "energy");
  }

  // SSVQ vs VQ.
  const vq = r.comparison?.vq;
  if (vq) {
    const cmp = findTable(tables, "SSVQ vs VQ", "");
    assert.deepEqual(cmp.headers.slice(1), [`SSVQ k=${r.config.k} d=${r.config.d}`, `VQ k=${vq.config.k} d=${vq.config.d}`]);
    const rows = keyed(cmp);
    const mean = (ls: LayerReport[]) => ls.reduce((a, l) => a + l.outputError!, 0) / ls.length;
    [r, vq].forEach((x, i) => {
      fixed(rows.get("bits/weight")![i], x.sizes.bitsPerWeight, 3, "bits/weight");
      bytes(rows.get("compressed tensors")![i], x.sizes.compressedTensorBytes, "tensors");
      ratio(rows.get("tensor ratio")![i], x.sizes.tensorRatio, "tensor ratio");
      pct(rows.get("mean layer output error")![i], mean(x.layers), "mean layer output error");
      if (x.evaluation) {
        pct(rows.get("model output relative error")![i], x.evaluation.outputs[0]!.relError, "model error");
        pct(rows.get("accuracy")![i], x.evaluation.accuracy!.compressed!.accuracy, "accuracy");
        pct(rows.get("top-1 agreement")![i], x.evaluation.outputs[0]!.top1Agreement!, "agreement");
      }
    });
    const perLayer = records(findTable(tables, "SSVQ vs VQ", "layer"));
    r.layers.forEach((l, i) => {
      const v = vq.layers.find((x) => x.name === l.name)!;
      assert.equal(perLayer[i]!["layer"], l.name);
      fixed(perLayer[i]!["VQ bits/weight"], v.bits.bitsPerWeight, 3, "VQ bits/weight");
      pct(perLayer[i]!["SSVQ weight error"], l.weightError, "SSVQ weight error");
      pct(perLayer[i]!["VQ weight error"], v.weightError, "VQ weight error");
      pct(perLayer[i]!["VQ output error"], v.outputError!, "VQ output error");
    });
  }

  // Simulated latency.
  const sim = r.simulation as (Report["simulation"] & { layers: { name: string; opType: string; format: string; latencyCycles: number; bound: string; M: number; K: number; N: number; note?: string }[] }) | undefined;
  if (sim) {
    assert.match(md, /\*\*Simulated, not measured\*\*/);
    assert.equal(keyed(findTable(tables, "Simulated latency", "accelerator")).get("preset")![0], sim.preset);
    const per = records(findTable(tables, "Simulated latency", "layer"));
    const names = [...new Set(sim.layers.map((l) => l.name))];
    assert.deepEqual(per.map((x) => x["layer"]), names);
    for (const l of sim.layers) {
      const row = per.find((x) => x["layer"] === l.name)!;
      const m = /^([\d,]+) ([CWAD])( †)?$/.exec(row[`${l.format} cycles`]!);
      assert.ok(m, `${l.name} ${l.format}: ${row[`${l.format} cycles`]}`);
      count(m[1], l.latencyCycles, `${l.name} ${l.format} cycles`);
      assert.equal(m[2], l.bound[0]!.toUpperCase());
      assert.equal(m[3] !== undefined, l.note !== undefined);
      count(row["M"], l.M, "M");
      count(row["K"], l.K, "K");
      count(row["N"], l.N, "N");
    }
    const totals = records(findTable(tables, "Simulated latency", "format"));
    assert.deepEqual(totals.map((x) => x["format"]).sort(), Object.keys(sim.totals).sort());
    for (const row of totals) {
      const f = row["format"]!;
      const t = sim.totals[f] as { latencyCycles: number; seconds: number; dramBytes: { weights: number } };
      count(row["latency cycles"], t.latencyCycles, `${f} cycles`);
      duration(row["time"], t.seconds, `${f} time`);
      bytes(row["DRAM weights"], t.dramBytes.weights, `${f} DRAM weights`);
      const int8 = (sim.totals["int8"] as { latencyCycles: number }).latencyCycles;
      const fp16 = (sim.totals["fp16"] as { latencyCycles: number }).latencyCycles;
      ratio(row["vs INT8"], int8 / t.latencyCycles, `${f} vs INT8`);
      ratio(row["vs FP16"], fp16 / t.latencyCycles, `${f} vs FP16`);
    }
  }

  // Kept as is, and warnings.
  if (r.kept.length) {
    const kept = records(findTable(tables, "Kept as is", "weight"));
    assert.deepEqual(kept.map((k) => [k["weight"], k["op"], k["reason"]]), r.kept.map((k) => [k.name, k.opType, k.reason]));
  } else assert.match(md, /## Kept as is\n\nNone/);
  const warnings = md.slice(md.indexOf("## Warnings")).split("\n").filter((l) => l.startsWith("- "));
  assert.equal(warnings.length, r.warnings.length);
}

// ---------------------------------------------------------------------------------------------------

test("LeNet-5, calibrated, evaluated, compared with VQ, simulated: every table holds the report's numbers", () => {
  const { report } = lenetFull();
  assert.ok(report.calibration && report.evaluation?.accuracy && report.comparison && report.simulation, "a full report");
  checkDocument(report, reportMarkdown(report));
});

test("TinyViT, calibrated, evaluated, compared with VQ, simulated: every table holds the report's numbers", () => {
  const { report } = vitFull();
  assert.ok(report.layers.length >= 9 && report.comparison && report.simulation);
  checkDocument(report, reportMarkdown(report));
});

test("INT8: INT values and scales in the breakdown, no codebook columns, no sign freezing", () => {
  const { report } = lenetInt8();
  const md = reportMarkdown(report);
  checkDocument(report, md);
  const breakdown = keyed(findTable(parseTables(md), "Size breakdown", "part"));
  assert.deepEqual([...breakdown.keys()], ["INT values", "INT scales", "compressed layers", "tensors left as they were", "all tensors"]);
  fixed(breakdown.get("INT values")![2], 8, 3, "INT8 values are 8 bits per weight");
});

test("a plain run without data: no calibration, evaluation, comparison, sign freezing or simulation", () => {
  const { report } = lenetPlain();
  const md = reportMarkdown(report);
  checkDocument(report, md);
  assert.match(md, /### Calibration\n\nNo calibration data/);
  assert.match(md, /### Evaluation\n\nNo evaluation data/);
  assert.doesNotMatch(md, /Sign freezing|Simulated|SSVQ vs VQ/);
});

test("ssvq report --markdown prints exactly reportMarkdown(report); ssvq report prints what compress printed", () => {
  for (const run of [lenetFull(), vitFull(), lenetInt8(), lenetPlain()]) {
    const md = ssvq(["report", run.path, "--markdown"]);
    assert.equal(md.status, 0, md.stderr);
    assert.equal(md.stdout, reportMarkdown(run.report));
    assert.equal(md.stderr, "");
    const text = ssvq(["report", run.path]);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stdout, run.stdout);
    const json = ssvq(["report", run.path, "--json"]);
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), run.report);
  }
});

test("ssvq report on a dry run's report prints the estimate compress --dry-run printed", () => {
  const model = fixture("fashion_lenet5.onnx");
  const text = ssvq(["compress", model, "--dry-run"]);
  assert.equal(text.status, 0, text.stderr);
  const json = ssvq(["compress", model, "--dry-run", "--json"]);
  assert.equal(json.status, 0, json.stderr);
  const path = join(work, "dry.json");
  writeFileSync(path, json.stdout);
  const again = ssvq(["report", path]);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(again.stdout, text.stdout);
  assert.match(again.stdout, /^Estimate for /);
  const md = ssvq(["report", path, "--markdown"]).stdout;
  assert.match(md, /estimate only \(dry run\)/);
  assert.match(md, /\| file \(estimate\) +\|/);
  assert.match(md, /```sh\nssvq compress .* --dry-run\n```/);
});

test("a pipe and a line break in layer and node names are escaped: the tables keep their columns", async () => {
  const { report } = pipeRun();
  const md = reportMarkdown(report);
  assert.ok(report.layers.some((l) => l.name === "f1|weight") && report.layers.some((l) => l.name === "f2\nweight"));
  assert.match(md, /\| `f1\\\|weight` +\|/, "pipe escaped inside the code span");
  assert.match(md, /\| f2<br>weight +\|/, "line break as <br>");
  assert.ok(md.includes("`/f1\\|Gemm`"), "simulated node name escaped");
  // parseTables checks every row has as many cells as its header; the names come back whole.
  const tables = parseTables(md);
  assert.deepEqual(records(findTable(tables, "Layers", "layer")).map((x) => x["layer"]), report.layers.map((l) => l.name));
  assert.ok(records(findTable(tables, "Simulated latency", "layer")).some((x) => x["layer"] === "/f1|Gemm"));
  checkDocument(report, md);
  // A real GFM renderer (markdown-it) sees the same cells.
  const MarkdownIt = createRequire(import.meta.url)("markdown-it") as (o: object) => { render(s: string): string };
  const html = MarkdownIt({ html: true }).render(md);
  const layersHtml = html.slice(html.indexOf("<h2>Layers</h2>"), html.indexOf("</table>", html.indexOf("<h2>Layers</h2>")));
  const headerCells = (layersHtml.match(/<th[ >]/g) ?? []).length;
  const rowsHtml = layersHtml.split("<tr>").slice(2);
  assert.equal(rowsHtml.length, report.layers.length);
  for (const row of rowsHtml) assert.equal((row.match(/<td[ >]/g) ?? []).length, headerCells, row);
  assert.match(layersHtml, /<td><code>f1\|weight<\/code><\/td>/);
  assert.match(layersHtml, /<td>f2<br>weight<\/td>/);
});

test("the title option, and the all-layer error falls back to a weighted mean when a layer's energy is unknown", () => {
  const { report } = lenetFull();
  const md = reportMarkdown(report, { title: "CI | run\n42" });
  assert.ok(md.startsWith("# CI \\| run 42\n"), md.slice(0, 40));
  // Zero errors: the layer's output energy cannot be recovered from loss / error^2.
  const r = structuredClone(report);
  const l0 = r.layers[0]!;
  l0.finetune!.checks = l0.finetune!.checks.map((c) => ({ ...c, relativeError: 0, loss: 0 }));
  const d = allLayerChecksDetail(r);
  assert.equal(d.errorAggregate, "weighted-mean");
  const it = d.points[0]!.iteration;
  const w = r.layers.reduce((a, l) => a + l.bits.weights, 0);
  const mean = r.layers.reduce((a, l) => a + l.finetune!.checks.find((c) => c.iteration === it)!.relativeError * l.bits.weights, 0) / w;
  assert.ok(Math.abs(d.points[0]!.relativeError - mean) < 1e-12);
  assert.match(reportMarkdown(r), /mean of the layers' errors weighted by their weights/);
});

test("ssvq report: a report without kept/warnings/timings is normalised; --help; bad input exits 2 with one line", () => {
  const full = JSON.parse(readFileSync(lenetPlain().path, "utf8")) as Record<string, unknown>;
  const { kept: _k, warnings: _w, timings: _t, ...bare } = full;
  const barePath = join(work, "bare.json");
  writeFileSync(barePath, JSON.stringify(bare));
  const norm = ssvq(["report", barePath, "--json"]);
  assert.equal(norm.status, 0, norm.stderr);
  const n = JSON.parse(norm.stdout) as Report;
  assert.deepEqual([n.kept, n.warnings, n.timings], [[], [], {}]);
  const md = ssvq(["report", barePath, "--markdown"]);
  assert.equal(md.status, 0, md.stderr);
  assert.match(md.stdout, /## Warnings\n\nNone\.\n$/);

  const help = ssvq(["report", "--help"]);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: ssvq report REPORT\.json \[--markdown \| --json\]/);
  assert.match(ssvq(["--help"]).stdout, /\n {2}report +print a compression report/);

  const bad = (name: string, text: string) => {
    const p = join(work, name);
    writeFileSync(p, text);
    return p;
  };
  const noSizes = { ...full };
  delete noSizes["sizes"];
  const dir = join(work, "a-folder.json");
  mkdirSync(dir, { recursive: true });
  const cases: [string[], RegExp][] = [
    [[join(work, "missing.ssvq.json")], /missing\.ssvq\.json: no such file/],
    [[dir], /is a folder/],
    [[bad("broken.json", "{ not json")], /broken\.json is not valid JSON/],
    [[bad("array.json", "[1, 2, 3]")], /array\.json is not an ssvq compression report/],
    [[bad("other.json", JSON.stringify({ name: "x", version: "1.0.0" }))], /other\.json is not an ssvq compression report/],
    [[bad("shell.json", JSON.stringify({ layers: [], config: {} }))], /shell\.json is not an ssvq compression report \(no schemaVersion\)/],
    [[bad("nosizes.json", JSON.stringify(noSizes))], /nosizes\.json is not an ssvq compression report \(no sizes\)/],
    [[bad("newer.json", JSON.stringify({ ...full, schemaVersion: 99 }))], /report schema 99, newer than this ssvq reads/],
    [[lenetPlain().path, "--markdown", "--json"], /give --markdown or --json, not both/],
    [[], /expected 1 argument/],
  ];
  for (const [args, message] of cases) {
    const r = ssvq(["report", ...args]);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^ssvq report: /);
    assert.match(lines[0]!, message);
  }
});
