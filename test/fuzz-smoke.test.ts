/**
 * A short seeded fuzz run over the bundled CLI (inspect, compress --no-finetune, simulate): about 300
 * runs in 2 to 4 minutes on 2 cores. Every run must keep the README's promises (exit 0, or exit 2 with
 * one clean line; no crash, hang, leftover, change to the input, hostile case accepted, output that
 * onnxruntime cannot load). On failure the message lists each finding group with its reproduction;
 * the full report stays in the folder it names. `npm run fuzz` runs longer sessions.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runFuzz } from "../src/fuzz/fuzz.js";

const SEED = 20260;
const CASES = 100;

test(`fuzz smoke: seed ${SEED}, ${CASES} cases x 3 commands, no findings`, { timeout: 20 * 60_000 }, async () => {
  const outDir = mkdtempSync(join(tmpdir(), "ssvq-fuzz-smoke-"));
  const { report, files } = await runFuzz({ seed: SEED, count: CASES, outDir, jobs: 2, timeoutMs: 60_000, shrinkRuns: 2 });
  const t = report.totals;
  assert.equal(t.runs, CASES * 3, "every case ran its three commands");
  const groups = report.groups.map(
    (g, i) =>
      `${i + 1}. ${g.klass} in ${g.command} (${g.runs} runs): ${g.firstLine || g.detail}\n` +
      `   case ${g.repro!.caseId} (${g.repro!.klass} on ${g.repro!.seedModel}: ${g.repro!.ops.join("; ").slice(0, 200)})\n` +
      `   sh ${g.repro!.dir}/repro.sh`,
  );
  if (groups.length === 0) rmSync(outDir, { recursive: true, force: true });
  assert.deepEqual(groups, [], `fuzz findings (report: ${files.markdown}):\n${groups.join("\n")}`);
});
