import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Report } from "../src/core/report.js";
import { ssvq } from "./helpers/cli.js";
import { fixture } from "./helpers/paths.js";

const work = mkdtempSync(join(tmpdir(), "ssvq-csim-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

interface SimLayer {
  name: string;
  format: string;
  bitsPerWeight: number;
  latencyCycles: number;
}

test("compress --preset --shape adds a simulate stage; the simulated bits are the compression's own", () => {
  const out = join(work, "vit.ssvq.onnx");
  const r = ssvq(["compress", fixture("fashion_tinyvit.onnx"), "--out", out, "--preset", "ethos-u65-512", "--shape", "input=1,1,28,28", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /stage: simulate/);
  const report = JSON.parse(r.stdout) as Report;
  const sim = report.simulation!;
  assert.equal(sim.preset, "ethos-u65-512");
  for (const f of ["fp16", "int8", "int4", "ssvq"]) assert.ok(sim.totals[f]!.latencyCycles > 0, f);
  const layers = (sim as unknown as { layers: SimLayer[] }).layers.filter((l) => l.format === "ssvq");
  for (const l of report.layers) {
    const s = layers.find((x) => x.name === l.name || l.consumers.includes(x.name));
    assert.ok(s, `layer ${l.name} not simulated`);
    assert.ok(Math.abs(s.bitsPerWeight - l.bits.bitsPerWeight) < 1e-9, `${l.name}: ${s.bitsPerWeight} vs ${l.bits.bitsPerWeight}`);
  }
  // The .ssvq.onnx carries the same figures in its metadata; --report gives them too.
  for (const args of [[out], [fixture("fashion_tinyvit.onnx"), "--report", join(work, "vit.ssvq.json")]]) {
    const s = ssvq(["simulate", ...args, "--shape", "input=1,1,28,28", "--formats", "int8,ssvq", "--json"]);
    assert.equal(s.status, 0, s.stderr);
    const again = (JSON.parse(s.stdout) as { layers: SimLayer[] }).layers.filter((l) => l.format === "ssvq");
    for (const l of report.layers)
      assert.equal(again.find((x) => x.name === l.name || l.consumers.includes(x.name))?.bitsPerWeight, l.bits.bitsPerWeight, `${args[0]}: ${l.name}`);
  }
});

test("compress --preset with an unknown preset: exit 2 and nothing written", () => {
  const out = join(work, "bad.ssvq.onnx");
  const r = ssvq(["compress", fixture("fashion_lenet5.onnx"), "--out", out, "--preset", "tpu-v9"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /tpu-v9/);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.equal(existsSync(out), false);
});
