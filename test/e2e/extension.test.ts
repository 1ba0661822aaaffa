/**
 * The extension as a user meets it, in a real VS Code (code-server 4.100.3 in headless Chromium) with
 * the vsix from `npm run package` installed: right-click compress with status-bar progress and the
 * outcome notification, cancel, the inspector on an original, a compressed and a damaged model, its
 * Content-Security-Policy, Restricted Mode, and no worker left after a window reload. Screenshots go to
 * test-artifacts/e2e/. Set SSVQ_E2E=0 to skip (the set-up installs code-server into ~/.cache/ssvq-e2e).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Frame, Page } from "playwright-core";
import { cliPath, fixture } from "../helpers/paths.js";
import { argmaxRows, fashionImages, runModel } from "../helpers/ort.js";
import { ssvq } from "../helpers/cli.js";
import {
  clickNotificationButton,
  explorerContextMenu,
  explorerHasFile,
  findFrame,
  openExplorerContextMenu,
  openWith,
  openWorkbench,
  pickQuickItem,
  runCommand,
  screenshot,
  screenState,
  serverProcesses,
  startCodeServer,
  waitForNotification,
  type CodeServer,
} from "./harness.js";
import { makeWorkspace, packageVsix, sleep, tableColumn, tableRows } from "./ssvq-page.js";

const skip = process.env["SSVQ_E2E"] === "0" ? "SSVQ_E2E=0" : false;
const MODEL = "fashion_lenet5.onnx";
const OUT = "fashion_lenet5.ssvq.onnx";
const REPORT = "fashion_lenet5.ssvq.json";

const work = mkdtempSync(join(tmpdir(), "ssvq-e2e-ext-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
let vsix = "";

/** A folder as a user has it: the model, its data, the settings pointing at them (relative to the model). */
function workspace(name: string): string {
  const ws = makeWorkspace(join(work, name), [MODEL, "fashion_tinyvit.onnx", "fashion_test2000_x_u8.npy", "fashion_test2000_y_u8.npy"], {
    "ssvq.calib": "${workspaceFolder}/fashion_test2000_x_u8.npy",
    "ssvq.calibRange": "0:512",
    "ssvq.scale": "1/255",
    "ssvq.eval": "fashion_test2000_x_u8.npy",
    "ssvq.evalRange": "512:2000",
    "ssvq.labels": "fashion_test2000_y_u8.npy",
  });
  // A damaged model: the first 700 bytes of a real one.
  writeFileSync(join(ws, "damaged.onnx"), readFileSync(fixture(MODEL)).subarray(0, 700));
  return ws;
}

/** The extension's log file in the server's user-data folder. */
function ssvqLogText(server: CodeServer): string {
  const logs = join(server.runDir, "ud", "logs");
  const found = existsSync(logs) ? readdirSync(logs, { recursive: true }).map(String).filter((p) => p.endsWith("SSVQ.log")) : [];
  return found.map((p) => readFileSync(join(logs, p), "utf8")).join("\n");
}

/** Job workers the server's extension host started. */
function jobWorkers(server: CodeServer): number[] {
  return serverProcesses(server.pid, server.runDir).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("job-worker.js");
    } catch {
      return false;
    }
  });
}

async function ssvqStatusTexts(page: Page): Promise<string[]> {
  return (await page.locator(".statusbar .statusbar-item").allInnerTexts()).map((t) => t.replace(/\s+/g, " ").trim()).filter((t) => t.startsWith("SSVQ:"));
}

/** Clicks a button of the modal dialog whose message matches. */
async function answerDialog(page: Page, message: RegExp, button: string): Promise<string> {
  const dialog = page.locator(".monaco-dialog-box").filter({ hasText: message }).first();
  await dialog.waitFor({ state: "visible", timeout: 30_000 });
  const text = (await dialog.innerText()).replace(/\s+/g, " ");
  await dialog.locator(".monaco-button", { hasText: new RegExp(`^\\s*${button}\\s*$`) }).first().click();
  await dialog.waitFor({ state: "hidden", timeout: 10_000 });
  return text;
}

/** Answers an input box once its prompt shows. */
async function answerInputBox(page: Page, prompt: RegExp, value: string | undefined): Promise<void> {
  await page.locator(".quick-input-widget").filter({ hasText: prompt }).first().waitFor({ state: "visible", timeout: 15_000 });
  const box = page.locator(".quick-input-widget input.input");
  if (value !== undefined) await box.fill(value);
  await page.keyboard.press("Enter");
}

/**
 * "Compress with SSVQ (Choose Settings)..." with a slow operating point (SSVQ k=4096 d=2, about 6 s on
 * LeNet-5), the calibration data of the settings, no evaluation, no simulation.
 */
async function chooseSlowSettings(page: Page): Promise<void> {
  await explorerContextMenu(page, MODEL, "Compress with SSVQ (Choose Settings)...");
  await pickQuickItem(page, "SSVQ with a chosen k and d...");
  await answerInputBox(page, /Codebook size k/, "4096");
  await answerInputBox(page, /Sub-vector length d/, "2");
  await pickQuickItem(page, "fashion_test2000_x_u8.npy"); // the current calibration setting
  await answerInputBox(page, /Which calibration samples/, undefined); // its range from the settings
  await pickQuickItem(page, "No evaluation");
  await pickQuickItem(page, "No simulation");
}

async function inspectorFrame(page: Page, file: string, selector: string): Promise<Frame> {
  await openWith(page, file, "SSVQ Inspector");
  const deadline = Date.now() + 60_000;
  for (;;) {
    const frame = await findFrame(page, selector, 60_000);
    // Several inspectors may be open: take the one showing this file.
    const title = await frame.locator("header h1").innerText().catch(() => "");
    if (title === file) return frame;
    if (Date.now() > deadline) throw new Error(`no inspector frame for ${file} showing ${selector}`);
    await sleep(250);
  }
}

describe("the extension in code-server", { skip, timeout: 15 * 60_000 }, () => {
  before(() => {
    // The vsix as users get it.
    vsix = packageVsix(join(work, "ssvq.vsix"));
  });

  describe("a trusted workspace", () => {
    let server: CodeServer;
    let page: Page;
    let ws: string;
    before(async () => {
      ws = workspace("trusted");
      server = await startCodeServer({ workspace: ws, vsix, theme: "Default Dark Modern" });
      ({ page } = await openWorkbench(server));
    });
    after(async () => {
      await server?.stop();
    });

    test("right-click Compress with SSVQ: status-bar progress, notification, outputs the CLI reproduces byte for byte", async () => {
      // The menu waits for the extension's contributions (they come with the installed vsix).
      let labels: string[] = [];
      for (let i = 0; i < 20 && !labels.includes("Compress with SSVQ"); i++) {
        labels = await openExplorerContextMenu(page, MODEL);
        if (!labels.includes("Compress with SSVQ")) {
          await page.keyboard.press("Escape");
          await sleep(1000);
        }
      }
      for (const l of ["Compress with SSVQ", "Compress with SSVQ (Choose Settings)...", "Open SSVQ Inspector"]) assert.ok(labels.includes(l), `menu has ${l}: ${labels}`);
      await screenshot(page, "explorer-menu");
      await page.keyboard.press("Escape");
      // Not on other files.
      const other = await openExplorerContextMenu(page, "fashion_test2000_y_u8.npy");
      assert.ok(!other.includes("Compress with SSVQ"));
      await page.keyboard.press("Escape");

      await explorerContextMenu(page, MODEL, "Compress with SSVQ");
      const seen: string[] = [];
      let shot = false;
      const deadline = Date.now() + 180_000;
      let done: string | undefined;
      while (!done && Date.now() < deadline) {
        for (const t of await ssvqStatusTexts(page)) {
          if (!seen.includes(t)) seen.push(t);
          if (!shot && /\d+%/.test(t)) {
            shot = true;
            await screenshot(page, "status-bar-during-run");
          }
        }
        const toast = page.locator(".notification-list-item-message", { hasText: /SSVQ: compressed/ });
        if (await toast.count()) done = (await toast.first().innerText()).replace(/\s+/g, " ");
        else await sleep(100);
      }
      assert.ok(done, `a success notification; status texts seen: ${JSON.stringify(seen)}`);
      assert.match(done!, /^SSVQ: compressed fashion_lenet5\.onnx [\d.]+x on disk \(tensors [\d.]+x\), accuracy [\d.]+% → [\d.]+%\.$/);
      const withStage = seen.filter((t) => /^SSVQ: (capture|read|quantize|finetune|write|evaluate)\b.*\d+%/.test(t));
      assert.ok(withStage.length >= 2, `the status bar reported stages and percentages: ${JSON.stringify(seen)}`);
      assert.ok(seen.some((t) => /^SSVQ: (quantize|finetune) \d+\/\d+ \S+ \d+%/.test(t)), `a layer position: ${JSON.stringify(seen)}`);
      await explorerHasFile(page, OUT);
      await explorerHasFile(page, REPORT);
      await sleep(500);
      await screenshot(page, "compress-success");
      const toastButtons = (await page.locator(".notification-list-item", { hasText: /SSVQ: compressed/ }).first().locator(".monaco-button").allInnerTexts()).map((t) => t.trim());
      assert.deepEqual(toastButtons.filter((t) => t !== ""), ["Open Inspector", "Reveal in Explorer"]);
      // The status-bar item is gone once the job has ended.
      for (let i = 0; i < 20 && (await ssvqStatusTexts(page)).length; i++) await sleep(250);
      assert.deepEqual(await ssvqStatusTexts(page), []);

      // The report's accuracy is what onnxruntime gives for the written model on images 512-1999.
      const report = JSON.parse(readFileSync(join(ws, REPORT), "utf8")) as { evaluation: { accuracy: { compressed: { accuracy: number } } } };
      const { x, y } = fashionImages();
      const logits = (await runModel(join(ws, OUT), { input: { data: x.subarray(512 * 784, 2000 * 784), dims: [1488, 1, 28, 28] } }))["logits"]!;
      const pred = argmaxRows(logits, 10);
      const correct = pred.reduce((a, p, i) => a + (p === y[512 + i] ? 1 : 0), 0);
      assert.equal(correct / 1488, report.evaluation.accuracy.compressed.accuracy);

      // The logged command line, pasted into a shell (with another --out), writes the same bytes.
      const log = ssvqLogText(server);
      const line = log.match(/command line: ssvq compress (.*)$/m)?.[1];
      assert.ok(line, `the log has the command line:\n${log}`);
      assert.match(log, /stage finetune/);
      assert.match(log, /finetune \[\d+\/\d+\] /);
      const cliOut = join(work, "cli.ssvq.onnx");
      execFileSync("sh", ["-c", `node ${JSON.stringify(cliPath)} compress ${line} --out ${JSON.stringify(cliOut)}`], { stdio: "pipe" });
      assert.ok(readFileSync(cliOut).equals(readFileSync(join(ws, OUT))), "the CLI wrote the same bytes");
    });

    test("Choose Settings, then cancel from the notification: the status bar clears, no worker and no new file remain", async () => {
      const before = readFileSync(join(ws, OUT));
      await chooseSlowSettings(page);
      const question = await answerDialog(page, /already exist/, "Replace");
      assert.match(question, /fashion_lenet5\.ssvq\.onnx and fashion_lenet5\.ssvq\.json already exist/);
      const running = await (async () => {
        for (let i = 0; i < 200; i++) {
          const t = await ssvqStatusTexts(page);
          if (t.length) return t[0]!;
          await sleep(100);
        }
        throw new Error(`no status-bar item; on screen:\n${await screenState(page)}`);
      })();
      assert.match(running, /^SSVQ: /);
      assert.equal(jobWorkers(server).length, 1, "one worker runs");
      await screenshot(page, "cancel-before");
      await clickNotificationButton(page, /SSVQ: compressing fashion_lenet5\.onnx/, "Cancel");
      const t0 = Date.now();
      while ((jobWorkers(server).length || (await ssvqStatusTexts(page)).length) && Date.now() - t0 < 5000) await sleep(50);
      assert.deepEqual(jobWorkers(server), [], "the worker has ended");
      assert.deepEqual(await ssvqStatusTexts(page), [], "the status bar has cleared");
      assert.ok(Date.now() - t0 < 2500, `ended ${Date.now() - t0} ms after the click`);
      assert.deepEqual(readdirSync(ws).filter((f) => f.endsWith(".tmp")), []);
      assert.ok(readFileSync(join(ws, OUT)).equals(before), "the earlier output is untouched");
      assert.match(ssvqLogText(server), /cancelled during \w+/);
    });

    test("a second request for the same model while it runs says so", async () => {
      await chooseSlowSettings(page);
      await answerDialog(page, /already exist/, "Replace");
      for (let i = 0; i < 100 && !(await ssvqStatusTexts(page)).length; i++) await sleep(100);
      await explorerContextMenu(page, MODEL, "Compress with SSVQ");
      const busy = await waitForNotification(page, /already compressing fashion_lenet5\.onnx/);
      assert.match(busy.text, /one compression per model at a time/);
      assert.equal(jobWorkers(server).length, 1);
      // Reloading the window ends the running job: no orphan worker.
      // The reloaded page itself is waited for: the old workbench can stay on screen for a moment.
      const reloaded = page.waitForEvent("load", { timeout: 60_000 });
      await runCommand(page, "Developer: Reload Window");
      const t0 = Date.now();
      while (jobWorkers(server).length && Date.now() - t0 < 10_000) await sleep(100);
      assert.deepEqual(jobWorkers(server), [], "the reload ended the worker");
      await reloaded;
      await page.locator(".monaco-workbench .statusbar").waitFor({ state: "visible", timeout: 60_000 });
      assert.deepEqual(readdirSync(ws).filter((f) => f.endsWith(".tmp")), []);
    });

    test("the inspector shows what ssvq inspect --json gives, for the original and the compressed model", async () => {
      const expected = JSON.parse(ssvq(["inspect", join(ws, MODEL), "--json"]).stdout) as {
        parameters: { count: number };
        weights: { name: string; rows: number; cols: number; elements: number }[];
        opCounts: Record<string, number>;
      };
      const frame = await inspectorFrame(page, MODEL, "#weights-table");
      assert.equal(Number(await frame.locator("#parameter-count").getAttribute("data-value")), expected.parameters.count);
      assert.deepEqual(await tableColumn(frame, "#weights-table", 0), expected.weights.map((w) => w.name));
      assert.deepEqual(await tableColumn(frame, "#weights-table", 4), expected.weights.map((w) => `${w.rows}x${w.cols}`));
      assert.deepEqual(await tableColumn(frame, "#weights-table", 6), expected.weights.map((w) => String(w.elements)));
      assert.deepEqual(await tableColumn(frame, "#ops-table", 0), Object.keys(expected.opCounts));
      assert.deepEqual((await tableColumn(frame, "#ops-table", 1)).map(Number), Object.values(expected.opCounts));
      assert.equal(await frame.locator("#compress").count(), 1, "a Compress with SSVQ button");

      // The page's HTML: a CSP with a nonce, every script carries it, no inline script or handler.
      // The live document as the page holds it (Frame.content() can see a blank document while VS Code
      // swaps the webview's inner frame).
      const html = await frame.locator("html").evaluate((el) => (el as unknown as { outerHTML: string }).outerHTML);
      const csp = html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]+)"/)?.[1];
      assert.ok(csp, `a CSP meta tag in ${html.slice(0, 1500)}`);
      const nonce = csp!.match(/script-src 'nonce-([^']+)'/)?.[1];
      assert.ok(nonce && nonce.length >= 16, `a nonce in ${csp}`);
      assert.match(csp!, /default-src 'none'/);
      assert.doesNotMatch(csp!, /unsafe-inline|unsafe-eval/);
      // VS Code injects its own acquireVsCodeApi script (id _vscodeApiScript) into every webview; ours are the rest.
      const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)].filter(([, attrs]) => !/id="_vscodeApiScript"/.test(attrs!));
      assert.ok(scripts.length >= 1);
      for (const [, attrs, body] of scripts) {
        assert.match(attrs!, new RegExp(`nonce="${nonce!.replace(/[+/=]/g, (c) => `\\${c}`)}"`));
        assert.match(attrs!, /src="/);
        assert.equal(body!.trim(), "");
      }
      assert.doesNotMatch(html, /\son[a-z]+\s*=/i, "no inline event handlers");
      await screenshot(page, "inspector-lenet-dark");

      // The compressed model: parameters and codebooks read back from the file.
      const compressed = JSON.parse(ssvq(["inspect", join(ws, OUT), "--json"]).stdout) as {
        compression: { config: { k: number; d: number }; layers: { name: string; codebook?: number[][]; bits?: { bitsPerWeight: number } }[] };
      };
      const cframe = await inspectorFrame(page, OUT, "#codebooks");
      const layers = compressed.compression.layers;
      assert.deepEqual(await tableColumn(cframe, "#compressed-layers-table", 0), layers.map((l) => l.name));
      assert.deepEqual((await tableColumn(cframe, "#compressed-layers-table", 7)).map(Number), layers.map((l) => l.bits!.bitsPerWeight));
      const first = layers.find((l) => l.codebook)!;
      const rows = (await tableRows(cframe, `.codebook-table[data-layer="${first.name}"]`)).map((r) => r.slice(1, -1).map(Number));
      assert.deepEqual(rows, first.codebook);
      assert.equal(await cframe.locator(`.layer-card[data-layer="${first.name}"] canvas`).count(), 2, "a heatmap and a usage chart");
      await screenshot(page, "inspector-compressed-dark");

      await runCommand(page, "Preferences: Color Theme");
      await pickQuickItem(page, "Light Modern");
      await sleep(1000);
      await screenshot(page, "inspector-compressed-light");
      await inspectorFrame(page, MODEL, "#weights-table");
      await sleep(500);
      await screenshot(page, "inspector-lenet-light");
      await runCommand(page, "Preferences: Color Theme");
      await pickQuickItem(page, "Dark High Contrast");
      await sleep(1000);
      await screenshot(page, "inspector-lenet-high-contrast");
    });

    test("a damaged model shows the engine's error in the inspector, and nothing else breaks", async () => {
      const cli = ssvq(["inspect", join(ws, "damaged.onnx")]);
      assert.equal(cli.status, 2);
      const message = cli.stderr.trim().replace(/^ssvq inspect: /, "");
      const frame = await inspectorFrame(page, "damaged.onnx", "#inspection-error");
      assert.equal((await frame.locator(".error-message").innerText()).trim(), message);
      await screenshot(page, "inspector-damaged");
      // The other inspectors still work.
      const again = await inspectorFrame(page, MODEL, "#weights-table");
      assert.ok((await again.locator("#weights-table tbody tr").count()) > 0);
    });
  });

  describe("Restricted Mode", () => {
    let server: CodeServer;
    let page: Page;
    let ws: string;
    before(async () => {
      ws = workspace("untrusted");
      server = await startCodeServer({ workspace: ws, vsix, trust: false });
      ({ page } = await openWorkbench(server));
    });
    after(async () => {
      await server?.stop();
    });

    test("the inspector opens; compressing asks for trust and does nothing without it", async () => {
      await answerDialog(page, /trust the authors/i, "No, I don't trust the authors");
      const frame = await inspectorFrame(page, MODEL, "#weights-table");
      assert.match(await frame.locator(".restricted").innerText(), /Restricted Mode/);
      await screenshot(page, "restricted-inspector");
      await explorerContextMenu(page, MODEL, "Compress with SSVQ");
      const question = await answerDialog(page, /needs a trusted workspace/, "Cancel");
      assert.match(question, /compressing fashion_lenet5\.onnx needs a trusted workspace/);
      await sleep(1500);
      assert.deepEqual(await ssvqStatusTexts(page), []);
      assert.deepEqual(jobWorkers(server), []);
      assert.ok(!existsSync(join(ws, OUT)) && !existsSync(join(ws, REPORT)));
    });
  });
});
