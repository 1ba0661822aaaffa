// End-to-end smoke test of the harness itself, independent of the SSVQ extension: a real code-server
// workbench in headless Chromium (palette, explorer, context menu, Open With, terminal, screenshot, and
// no process left after stop), then a tiny probe extension loaded both unpacked and from a .vsix
// (status bar, command, notification button, webview frame, explorer menu item).
// SSVQ_E2E=0 skips it; otherwise it installs what it needs (code-server into ~/.cache/ssvq-e2e).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type TestContext } from "node:test";
import { crc32 } from "node:zlib";
import {
  clickNotificationButton,
  explorerContextMenu,
  explorerHasFile,
  findFrame,
  openExplorerContextMenu,
  openWith,
  openWorkbench,
  runCommand,
  screenshot,
  startCodeServer,
  statusBarText,
  type CodeServer,
} from "./harness.js";

function skipped(t: TestContext): boolean {
  if (process.env.SSVQ_E2E !== "0") return false;
  t.skip("SSVQ_E2E=0 turns the end-to-end tests off");
  return true;
}

function tempWorkspace(): string {
  const ws = mkdtempSync(join(tmpdir(), "ssvq-e2e-ws-"));
  writeFileSync(join(ws, "hello.txt"), "hello from the e2e smoke test\n");
  return ws;
}

interface Proc {
  pid: number;
  ppid: number;
  args: string;
}

/** Every process on the machine, as `ps` lists it. */
function ps(): Proc[] {
  return execFileSync("ps", ["-e", "-ww", "-o", "pid=,ppid=,args="], { encoding: "utf8" })
    .split("\n")
    .map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[3]! }));
}

/** The server's process and all its descendants, by `ps`. */
function processTree(rootPid: number): Proc[] {
  const all = ps();
  const tree = new Set([rootPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of all) if (!tree.has(p.pid) && tree.has(p.ppid)) (tree.add(p.pid), (grew = true));
  }
  return all.filter((p) => tree.has(p.pid));
}

/** Stops the server and checks, with `ps`, that none of the processes it had remain. */
async function stopAndCheck(server: CodeServer, before: Proc[]): Promise<void> {
  await server.stop();
  const now = ps();
  const survivors = now.filter((p) => before.some((b) => b.pid === p.pid && b.args === p.args));
  assert.deepEqual(survivors, [], "processes of the stopped server remain");
  const mentioning = now.filter((p) => p.args.includes(server.runDir));
  assert.deepEqual(mentioning, [], "processes naming the server's run folder remain");
  assert.equal(existsSync(server.runDir), process.env.SSVQ_E2E_KEEP === "1");
}

test("e2e harness: code-server workbench, palette, explorer, context menu, clean stop", { timeout: 20 * 60_000 }, async (t) => {
  if (skipped(t)) return;
  const ws = tempWorkspace();
  const t0 = Date.now();
  // The file watcher ignores unwatched.txt, so the explorer shows it only after a refresh.
  const server = await startCodeServer({ workspace: ws, theme: "Default Dark Modern", settings: { "files.watcherExclude": { "**/unwatched.txt": true } } });
  t.diagnostic(`code-server ready in ${((Date.now() - t0) / 1000).toFixed(1)} s at ${server.url} (pid ${server.pid})`);
  let before: Proc[] = [];
  try {
    const t1 = Date.now();
    const { page } = await openWorkbench(server);
    t.diagnostic(`workbench ready in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    assert.ok(await page.locator(".monaco-workbench.vs-dark").isVisible(), "the theme setting did not apply");

    await runCommand(page, "View: Show Search");
    await page.locator(".search-view").waitFor({ state: "visible", timeout: 10_000 });
    await runCommand(page, "View: Show Explorer");
    await page.locator(".explorer-folders-view").waitFor({ state: "visible", timeout: 10_000 });
    await explorerHasFile(page, "hello.txt");

    const labels = await openExplorerContextMenu(page, "hello.txt");
    assert.ok(labels.includes("Copy Path"), `context menu of hello.txt: ${JSON.stringify(labels)}`);
    await page.keyboard.press("Escape");
    await page.locator(".context-view .monaco-menu").waitFor({ state: "hidden", timeout: 5000 });

    // A file created after the workbench opened shows up too (watcher or refresh).
    mkdirSync(join(ws, "later"));
    writeFileSync(join(ws, "later", "new.txt"), "made while the workbench was open\n");
    await explorerHasFile(page, "later/new.txt");
    writeFileSync(join(ws, "unwatched.txt"), "seen after a refresh\n");
    await explorerHasFile(page, "unwatched.txt");

    await openWith(page, "hello.txt", "Text Editor");
    await page.locator(".tabs-container .tab", { hasText: "hello.txt" }).waitFor({ state: "visible", timeout: 10_000 });
    await page.locator(".monaco-editor .view-lines", { hasText: "hello from the e2e smoke test" }).waitFor({ state: "visible", timeout: 10_000 });

    // A terminal: its shell runs in a session of its own, outside the server's process group.
    await runCommand(page, "View: Toggle Terminal");
    await page.locator(".terminal-wrapper .xterm").first().waitFor({ state: "visible", timeout: 20_000 });

    const png = await screenshot(page, "smoke-workbench");
    assert.ok(statSync(png).size > 10_000, `screenshot ${png} is too small`);

    // The processes stop() must end: extension host, pty host and the terminal's shell among them.
    const deadline = Date.now() + 20_000;
    for (;;) {
      before = processTree(server.pid);
      const ptyHost = before.find((p) => p.args.includes("--type=ptyHost"));
      const missing = [
        ...(before.some((p) => p.args.includes("--type=extensionHost")) ? [] : ["extension host"]),
        ...(ptyHost ? [] : ["pty host"]),
        ...(ptyHost && before.some((p) => p.ppid === ptyHost.pid) ? [] : ["terminal shell"]),
      ];
      if (missing.length === 0) break;
      if (Date.now() > deadline) assert.fail(`server process tree lacks ${missing.join(", ")}:\n${before.map((p) => `${p.pid} ${p.args}`).join("\n")}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    for (const p of before) t.diagnostic(`server process ${p.pid}: ${p.args.slice(0, 150)}`);
  } finally {
    if (before.length === 0) before = processTree(server.pid);
    const t2 = Date.now();
    await stopAndCheck(server, before);
    t.diagnostic(`stopped in ${((Date.now() - t2) / 1000).toFixed(1)} s`);
    rmSync(ws, { recursive: true, force: true });
  }
});

// A probe extension: plain CommonJS, no build step.
const PROBE_PACKAGE = {
  name: "e2e-probe",
  displayName: "E2E Probe",
  publisher: "ssvq-e2e",
  version: "0.0.1",
  engines: { vscode: "^1.100.0" },
  main: "./extension.js",
  activationEvents: ["onStartupFinished"],
  contributes: {
    commands: [{ command: "ssvqE2eProbe.hello", title: "Hello", category: "E2E Probe" }],
    menus: { "explorer/context": [{ command: "ssvqE2eProbe.hello", when: "resourceFilename == hello.txt" }] },
  },
};
const PROBE_MAIN = `const vscode = require("vscode");
const path = require("path");
exports.activate = (context) => {
  const item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 1000);
  item.text = "$(beaker) Probe ready";
  item.show();
  context.subscriptions.push(item, vscode.commands.registerCommand("ssvqE2eProbe.hello", async (uri) => {
    const from = uri ? path.basename(uri.fsPath) : "palette";
    const panel = vscode.window.createWebviewPanel("ssvqE2eProbe", "Probe Panel", vscode.ViewColumn.One, {});
    panel.webview.html = '<!DOCTYPE html><html><body><h1 id="probe-heading">Probe from ' + from + '</h1></body></html>';
    const answer = await vscode.window.showInformationMessage("Probe says hello from " + from, "Thanks", "Later");
    item.text = "$(beaker) Probe " + (answer === "Thanks" ? "thanked" : "ignored") + " from " + from;
  }));
};
`;

function writeProbe(dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify(PROBE_PACKAGE, null, 2));
  writeFileSync(join(dir, "extension.js"), PROBE_MAIN);
}

/** A .vsix is a zip with the extension under extension/; stored (uncompressed) entries are enough. */
function writeZip(path: string, files: Record<string, string>): void {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.from(content);
    const nameBuf = Buffer.from(name);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBuf.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, data);
    centrals.push(central, nameBuf);
    offset += local.length + nameBuf.length + data.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(files).length, 8);
  end.writeUInt16LE(Object.keys(files).length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(path, Buffer.concat([...locals, ...centrals, end]));
}

test("e2e harness: an unpacked extension's status bar, command, notification, webview and menu item", { timeout: 10 * 60_000 }, async (t) => {
  if (skipped(t)) return;
  const ws = tempWorkspace();
  const probe = mkdtempSync(join(tmpdir(), "ssvq-e2e-probe-"));
  writeProbe(probe);
  const server = await startCodeServer({ workspace: ws, extensionDir: probe });
  let before: Proc[] = [];
  try {
    const { page } = await openWorkbench(server);
    assert.equal(await statusBarText(page, /Probe ready/), "Probe ready");

    await runCommand(page, "E2E Probe: Hello");
    const frame = await findFrame(page, "#probe-heading");
    assert.equal(await frame.locator("#probe-heading").innerText(), "Probe from palette");
    await clickNotificationButton(page, /Probe says hello from palette/, "Thanks");
    assert.equal(await statusBarText(page, /Probe thanked/), "Probe thanked from palette");

    await explorerContextMenu(page, "hello.txt", "Hello");
    await clickNotificationButton(page, /Probe says hello from hello\.txt/, "Later");
    assert.equal(await statusBarText(page, /Probe ignored/), "Probe ignored from hello.txt");
    await findFrame(page, "#probe-heading:text('Probe from hello.txt')");
    await screenshot(page, "smoke-probe-extension");
    before = processTree(server.pid);
  } finally {
    if (before.length === 0) before = processTree(server.pid);
    await stopAndCheck(server, before);
    rmSync(ws, { recursive: true, force: true });
    rmSync(probe, { recursive: true, force: true });
  }
});

test("e2e harness: an extension installed from a .vsix", { timeout: 10 * 60_000 }, async (t) => {
  if (skipped(t)) return;
  const ws = tempWorkspace();
  const tmp = mkdtempSync(join(tmpdir(), "ssvq-e2e-vsix-"));
  const vsix = join(tmp, "probe.vsix");
  writeZip(vsix, { "extension/package.json": JSON.stringify(PROBE_PACKAGE), "extension/extension.js": PROBE_MAIN });
  const server = await startCodeServer({ workspace: ws, vsix });
  let before: Proc[] = [];
  try {
    const { page } = await openWorkbench(server);
    await statusBarText(page, /Probe ready/);
    await runCommand(page, "E2E Probe: Hello");
    await clickNotificationButton(page, /Probe says hello/, "Thanks");
    await statusBarText(page, /Probe thanked/);
    before = processTree(server.pid);
  } finally {
    if (before.length === 0) before = processTree(server.pid);
    await stopAndCheck(server, before);
    rmSync(ws, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  }
});
