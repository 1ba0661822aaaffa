/**
 * The live SSVQ panel in a real VS Code (code-server with the packaged vsix): right-click compress with
 * calibration and evaluation data, the sign-flip chart growing while fine-tuning runs, then the layer
 * table, codebooks, latency and accuracy against the report; a preset switch against `ssvq simulate`;
 * export against `ssvq report --markdown`; a window reload; a `.ssvq.json` written by the CLI. Screenshots
 * in dark, light and high-contrast themes go to test-artifacts/e2e/. SSVQ_E2E=0 skips.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Frame, Page } from "playwright-core";
import type { Report } from "../../src/core/report.js";
import { ssvq } from "../helpers/cli.js";
import { makeWorkspace, packageVsix, sleep, tableRows } from "./ssvq-page.js";
import { explorerContextMenu, openWorkbench, pickQuickItem, runCommand, screenshot, screenState, startCodeServer, type CodeServer } from "./harness.js";

const skip = process.env["SSVQ_E2E"] === "0" ? "SSVQ_E2E=0" : false;
const MODEL = "fashion_lenet5.onnx";
const REPORT = "fashion_lenet5.ssvq.json";
const SHAPE = "input=1,1,28,28";

const work = mkdtempSync(join(tmpdir(), "ssvq-e2e-panel-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

function workspace(): string {
  return makeWorkspace(join(work, "ws"), [MODEL, "fashion_tinyvit.onnx", "fashion_test2000_x_u8.npy", "fashion_test2000_y_u8.npy"], {
    "ssvq.calib": "fashion_test2000_x_u8.npy",
    "ssvq.calibRange": "0:512",
    "ssvq.scale": "1/255",
    "ssvq.eval": "fashion_test2000_x_u8.npy",
    "ssvq.evalRange": "512:2000",
    "ssvq.labels": "fashion_test2000_y_u8.npy",
    // Long enough to watch the sign-flip chart grow.
    "ssvq.iters": 3000,
    "ssvq.preset": "ethos-u55-256",
    "ssvq.shape": [SHAPE],
  });
}

/** The panel's frame (a webview showing #tabs), for the model named in its header. */
async function panelFrame(page: Page, model: string, timeout = 60_000): Promise<Frame> {
  const deadline = Date.now() + timeout;
  for (;;) {
    for (const frame of page.frames()) {
      if (!(await frame.locator("#tabs").count().catch(() => 0))) continue;
      const title = await frame.locator("header.top h1").first().innerText({ timeout: 200 }).catch(() => "");
      if (title === model) return frame;
    }
    if (Date.now() > deadline) throw new Error(`no SSVQ panel for ${model}; on screen:\n${await screenState(page)}`);
    await sleep(250);
  }
}

async function selectTab(frame: Frame, index: number): Promise<void> {
  await frame.locator(`vscode-tab-header[data-tab="${index}"]`).click();
  await sleep(150);
}

/** Waits until the page shows the finished report. */
async function waitForReport(frame: Frame, timeout = 240_000): Promise<string> {
  await frame.locator("#report-summary").waitFor({ state: "visible", timeout });
  return frame.locator("#report-summary").innerText();
}

/** Answers VS Code's save dialog (in code-server, the simple file dialog: a path in the quick input). */
async function saveAs(page: Page, path: string): Promise<void> {
  const box = page.locator(".quick-input-widget input.input");
  await box.waitFor({ state: "visible", timeout: 15_000 });
  // Typed as a user types it: the dialog follows each keystroke (filling the box at once is missed).
  // The dialog completes folder names as it goes; under load a completion can land between two
  // keystrokes, so the box is read back and typed again until it holds exactly the path.
  for (let attempt = 0; attempt < 3; attempt++) {
    await box.click();
    await page.keyboard.press("Control+A");
    await page.keyboard.type(path, { delay: 15 });
    await sleep(700);
    if ((await box.inputValue()) === path) break;
  }
  await page.keyboard.press("Enter");
  // The dialog closes, or asks whether to replace an existing file (answered Yes); a dialog still
  // open after that (it was busy validating) gets Enter again.
  const replace = page.locator(".monaco-dialog-box .monaco-button", { hasText: /^\s*(Replace|Yes|OK)\s*$/ }).first();
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await replace.isVisible().catch(() => false)) {
      await replace.click();
      return;
    }
    if (!(await box.isVisible().catch(() => false))) return;
    await sleep(1000);
    if (await box.isVisible().catch(() => false)) await page.keyboard.press("Enter");
  }
}

async function waitForFile(page: Page, path: string, timeout = 20_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!existsSync(path)) {
    if (Date.now() > deadline) {
      await screenshot(page, "panel-export-failed");
      throw new Error(`${path} was not written; on screen:\n${await screenState(page)}`);
    }
    await sleep(200);
  }
}

describe("the SSVQ panel in code-server", { skip, timeout: 20 * 60_000 }, () => {
  let vsix = "";
  let server: CodeServer;
  let page: Page;
  let ws: string;
  before(async () => {
    vsix = packageVsix(join(work, "ssvq.vsix"));
    ws = workspace();
    server = await startCodeServer({ workspace: ws, vsix, theme: "Default Dark Modern" });
    ({ page } = await openWorkbench(server));
  });
  after(async () => {
    await server?.stop();
  });

  test("a compression's panel: sign flips grow live; the finished views show the report's numbers", async () => {
    await explorerContextMenu(page, MODEL, "Compress with SSVQ");
    const frame = await panelFrame(page, MODEL);
    await selectTab(frame, 3);
    // While fine-tuning runs, the chart's table gains points between two samples.
    const points = async () => Number((await frame.locator("#signflips").getAttribute("data-points").catch(() => null)) ?? 0);
    let first = 0;
    const deadline = Date.now() + 120_000;
    while ((first = await points()) === 0 && Date.now() < deadline) await sleep(100);
    assert.ok(first > 0, "the sign-flip view received checks while the job ran");
    assert.equal(await frame.locator("#job-status").count(), 1, "the job still runs at the first sample");
    await screenshot(page, "panel-during-run-dark");
    let second = first;
    const until = Date.now() + 30_000;
    while ((second = await points()) === first && Date.now() < until && (await frame.locator("#job-status").count())) await sleep(100);
    assert.ok(second > first, `the chart grew: ${first} then ${second} points`);

    const summary = await waitForReport(frame);
    const report = JSON.parse(readFileSync(join(ws, REPORT), "utf8")) as Report;
    assert.match(summary, /SSVQ k=16 d=4/);
    // Overview: the accuracy is the report's.
    await selectTab(frame, 0);
    const acc = frame.locator("#accuracy");
    assert.equal(Number(await acc.getAttribute("data-compressed")), report.evaluation!.accuracy!.compressed!.accuracy);
    assert.equal(Number(await acc.getAttribute("data-original")), report.evaluation!.accuracy!.original.accuracy);
    assert.equal(Number(await frame.locator("#tensor-ratio").getAttribute("data-value")), report.sizes.tensorRatio);
    await screenshot(page, "panel-overview-dark");
    // Layers: names, bits and errors as in the report.
    await selectTab(frame, 1);
    const rows = await tableRows(frame, "#layers-table");
    assert.deepEqual(rows.map((r) => r[0]), report.layers.map((l) => l.name));
    assert.deepEqual(rows.map((r) => Number(r[6])), report.layers.map((l) => l.bits.bitsPerWeight));
    assert.deepEqual(rows.map((r) => Number(r[9])), report.layers.map((l) => l.finetune!.errorAfter));
    // Select f1.weight: the codebook view shows its codebook after fine-tuning, and before.
    await frame.locator('#layers-table tbody tr[data-layer="f1.weight"]').click();
    await selectTab(frame, 2);
    const f1 = report.layers.find((l) => l.name === "f1.weight")!;
    const after = await tableRows(frame, '.codebook-table[data-codebook="codebook-after"]');
    assert.deepEqual(after.map((r) => r.slice(1, 1 + f1.d!).map(Number)), f1.codebook);
    const beforeRows = await tableRows(frame, '.codebook-table[data-codebook="codebook-before"]');
    assert.deepEqual(beforeRows.map((r) => r.slice(1, 1 + f1.d!).map(Number)), f1.finetune!.codebookBefore);
    assert.equal(await frame.locator("#codebook-after canvas").count(), 2, "a heatmap and a usage histogram");
    await screenshot(page, "panel-codebooks-dark");
    // Sign flips of f1.weight: the report's checks.
    await selectTab(frame, 3);
    await frame.locator("#signflips-layer").selectOption("f1.weight");
    await sleep(200);
    const checks = await tableRows(frame, "#signflips-table");
    assert.deepEqual(checks.map((r) => [Number(r[0]), Number(r[1]), Number(r[2])]), f1.finetune!.checks.map((c) => [c.iteration, c.flips, c.frozenFraction]));
    await screenshot(page, "panel-signflips-dark");
  });

  test("the latency view: the preset of the run, then another one, as ssvq simulate prints them", async () => {
    const frame = await panelFrame(page, MODEL);
    await selectTab(frame, 4);
    const reportPath = join(ws, REPORT);
    const expectTotals = async (preset: string) => {
      await frame.locator(`#latency[data-preset="${preset}"][data-status="ready"]`).waitFor({ timeout: 60_000 });
      const cli = ssvq(["simulate", join(ws, MODEL), "--preset", preset, "--report", reportPath, "--shape", SHAPE, "--json"]);
      assert.equal(cli.status, 0, cli.stderr);
      const sim = JSON.parse(cli.stdout) as { totals: Record<string, { seconds: number; latencyCycles: number }> };
      const rows = await tableRows(frame, "#latency-totals");
      for (const r of rows) {
        const f = r[0]!.toLowerCase();
        assert.equal(Number(r[1]), sim.totals[f]!.seconds, `${preset} ${f}`);
        assert.equal(Number(r[2]), sim.totals[f]!.latencyCycles, `${preset} ${f}`);
      }
      assert.deepEqual(rows.map((r) => r[0]), ["FP16", "INT8", "INT4", "VQ", "SSVQ"]);
    };
    await expectTotals("ethos-u55-256");
    assert.match(await frame.locator(".simulated").innerText(), /^Simulated on ethos-u55-256/);
    await screenshot(page, "panel-latency-dark");
    await frame.locator("#preset-select").selectOption("nvdla-large");
    await expectTotals("nvdla-large");
  });

  test("export writes the JSON and the Markdown that ssvq report prints", async () => {
    const frame = await panelFrame(page, MODEL);
    const md = join(ws, "exported.md");
    await frame.locator("#export-markdown").click();
    await saveAs(page, md);
    await waitForFile(page, md);
    const expected = ssvq(["report", join(ws, REPORT), "--markdown"]);
    assert.equal(expected.status, 0, expected.stderr);
    assert.equal(readFileSync(md, "utf8"), expected.stdout.endsWith("\n") ? expected.stdout : `${expected.stdout}\n`);
    const json = join(ws, "exported.json");
    await frame.locator("#export-json").click();
    await saveAs(page, json);
    await waitForFile(page, json);
    assert.deepEqual(JSON.parse(readFileSync(json, "utf8")), JSON.parse(readFileSync(join(ws, REPORT), "utf8")));
  });

  test("themes: the finished panel in light and high contrast", async () => {
    for (const [theme, name] of [
      ["Light Modern", "light"],
      ["Dark High Contrast", "high-contrast"],
    ] as const) {
      await runCommand(page, "Preferences: Color Theme");
      await pickQuickItem(page, theme);
      await sleep(1200);
      const frame = await panelFrame(page, MODEL);
      await selectTab(frame, 0);
      await screenshot(page, `panel-overview-${name}`);
      await selectTab(frame, 3);
      await screenshot(page, `panel-signflips-${name}`);
      await selectTab(frame, 4);
      await frame.locator('#latency[data-status="ready"]').waitFor({ timeout: 60_000 });
      await screenshot(page, `panel-latency-${name}`);
    }
  });

  test("after a window reload the panel comes back with the same content", async () => {
    let frame = await panelFrame(page, MODEL);
    await selectTab(frame, 1);
    const before = await tableRows(frame, "#layers-table");
    const summary = await frame.locator("#report-summary").innerText();
    // Wait for the reloaded page itself: the old workbench (and its panel frame, soon detached) can
    // still be on screen for a moment after the command.
    const reloaded = page.waitForEvent("load", { timeout: 60_000 });
    await runCommand(page, "Developer: Reload Window");
    await reloaded;
    await page.locator(".monaco-workbench .statusbar").waitFor({ state: "visible", timeout: 60_000 });
    frame = await panelFrame(page, MODEL, 90_000);
    assert.equal(await waitForReport(frame, 60_000), summary);
    await selectTab(frame, 1);
    assert.deepEqual(await tableRows(frame, "#layers-table"), before);
  });

  test("a report written by the CLI opens in the same panel", async () => {
    const vit = join(ws, "fashion_tinyvit.onnx");
    const r = ssvq(["compress", vit, "--k", "16", "--d", "8", "--calib", join(ws, "fashion_test2000_x_u8.npy"), "--calib-range", "0:128", "--scale", "1/255", "--iters", "40"]);
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(readFileSync(join(ws, "fashion_tinyvit.ssvq.json"), "utf8")) as Report;
    await explorerContextMenu(page, "fashion_tinyvit.ssvq.json", "Open SSVQ Panel");
    const frame = await panelFrame(page, "fashion_tinyvit.onnx");
    assert.match(await waitForReport(frame, 60_000), /SSVQ k=16 d=8/);
    await selectTab(frame, 1);
    assert.deepEqual((await tableRows(frame, "#layers-table")).map((x) => x[0]), report.layers.map((l) => l.name));
    // The command line the report recorded is the one the panel copies.
    assert.equal(await frame.locator("#copy-command").count(), 1);
    await screenshot(page, "panel-cli-report");
  });
});
