// End-to-end test harness: a real VS Code (code-server 4.100.3) on a free loopback port with its own
// config, data and extension folders, driven in headless Debian Chromium through playwright-core the
// way a person uses it (command palette, explorer context menu, status bar, notifications, webviews).
// stop() ends the server's whole process tree. Importing this file does nothing by itself.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, createWriteStream } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type Browser, type Frame, type Locator, type Page } from "playwright-core";
import { repoRoot } from "../helpers/paths.js";
import { chromiumPath, cleanEnv, ensureCodeServer } from "./install.js";

export interface CodeServerOptions {
  /** The folder the workbench opens. */
  workspace: string;
  /** A .vsix installed with --install-extension into this server's own extensions folder. */
  vsix?: string;
  /** An unpacked extension folder, linked as <publisher>.<name>-<version> into the extensions folder. */
  extensionDir?: string;
  /** Default true: --disable-workspace-trust. False leaves workspace trust on, as a first-time user has it. */
  trust?: boolean;
  /** Merged into User/settings.json over the harness's own settings. */
  settings?: Record<string, unknown>;
  /** workbench.colorTheme, e.g. "Default Dark Modern". */
  theme?: string;
}

export interface CodeServer {
  /** http://127.0.0.1:PORT/ */
  url: string;
  workspace: string;
  /** Temporary folder with this server's xdg/, ud/ (user data), exts/ and code-server.log; removed by stop() unless SSVQ_E2E_KEEP=1. */
  runDir: string;
  pid: number;
  stop(): Promise<void>;
  /** What code-server has printed so far. */
  logs(): string;
}

export interface Workbench {
  browser: Browser;
  page: Page;
}

const CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
/** Marks every process a server starts (children inherit it), so stop() finds them even after re-parenting. */
const RUN_MARK = "SSVQ_E2E_RUN";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const exact = (s: string): RegExp => new RegExp(`^\\s*${escapeRe(s)}\\s*$`);
const norm = (s: string): string => s.replace(/\s+/g, " ").trim();
const matches = (text: string, pattern: string | RegExp): boolean => (typeof pattern === "string" ? text.includes(pattern) : pattern.test(text));

// ---------------------------------------------------------------- processes

interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  marked: boolean;
}

function procTable(runDir: string): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // state ppid pgrp ...
      let marked = false;
      try {
        marked = readFileSync(`/proc/${name}/environ`, "utf8").split("\0").includes(`${RUN_MARK}=${runDir}`);
      } catch {
        /* another user's process */
      }
      out.push({ pid: Number(name), state: f[0]!, ppid: Number(f[1]), pgid: Number(f[2]), marked });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** Live (not zombie) pids that belong to the server: its descendants, its process group, or marked with its run folder. */
export function serverProcesses(pid: number, runDir: string): number[] {
  const table = procTable(runDir).filter((p) => p.state !== "Z");
  const mine = new Set<number>(table.filter((p) => p.pid === pid || p.pgid === pid || p.marked).map((p) => p.pid));
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of table) {
      if (!mine.has(p.pid) && mine.has(p.ppid)) {
        mine.add(p.pid);
        grew = true;
      }
    }
  }
  return [...mine].sort((a, b) => a - b);
}

function signal(pids: number[], group: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-group, sig);
  } catch {
    /* group gone */
  }
  for (const p of pids) {
    try {
      process.kill(p, sig);
    } catch {
      /* gone */
    }
  }
}

const running = new Map<number, string>(); // pid -> runDir of servers not yet stopped
let guarded = false;

/** A test process that ends without stop() (a crash, a timeout, Ctrl-C) still leaves no server behind. */
function guardExit(): void {
  if (guarded) return;
  guarded = true;
  const killAll = (): void => {
    for (const [pid, runDir] of running) {
      signal(serverProcesses(pid, runDir), pid, "SIGKILL");
      if (process.env.SSVQ_E2E_KEEP !== "1") rmSync(runDir, { recursive: true, force: true });
    }
    running.clear();
  };
  process.on("exit", killAll);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig); // the default action, now that this listener is gone
    });
  }
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

// ---------------------------------------------------------------- code-server

/** Starts code-server (installing it first if needed) and resolves once /healthz answers. */
export async function startCodeServer(opts: CodeServerOptions): Promise<CodeServer> {
  const bin = await ensureCodeServer();
  const workspace = resolve(opts.workspace);
  const runDir = mkdtempSync(join(tmpdir(), "ssvq-e2e-run-"));
  const xdg = join(runDir, "xdg");
  const ud = join(runDir, "ud");
  const exts = join(runDir, "exts");
  for (const d of [xdg, join(ud, "User"), exts]) mkdirSync(d, { recursive: true });
  const trust = opts.trust ?? true;
  const settings: Record<string, unknown> = {
    "workbench.startupEditor": "none",
    "extensions.autoCheckUpdates": false,
    "extensions.autoUpdate": false,
    "extensions.ignoreRecommendations": true,
    "update.mode": "none",
    "telemetry.telemetryLevel": "off",
    "workbench.enableExperiments": false,
    "workbench.tips.enabled": false,
    "workbench.welcomePage.walkthroughs.openOnInstall": false,
    "security.workspace.trust.enabled": !trust,
    ...(opts.theme ? { "workbench.colorTheme": opts.theme } : {}),
    ...opts.settings,
  };
  writeFileSync(join(ud, "User", "settings.json"), JSON.stringify(settings, null, 2) + "\n");
  const env = cleanEnv({ XDG_CONFIG_HOME: xdg, XDG_DATA_HOME: xdg, [RUN_MARK]: runDir });
  const dirs = ["--extensions-dir", exts, "--user-data-dir", ud];

  if (opts.vsix) {
    const r = spawnSync(bin, [...dirs, "--install-extension", resolve(opts.vsix)], { env, encoding: "utf8", timeout: 120_000 });
    if (r.status !== 0 || !/successfully installed/i.test(r.stdout + r.stderr)) {
      throw new Error(`--install-extension ${opts.vsix} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
    }
  }
  if (opts.extensionDir) {
    const dir = resolve(opts.extensionDir);
    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { publisher?: string; name?: string; version?: string };
    if (!pkg.publisher || !pkg.name || !pkg.version) throw new Error(`${dir}/package.json lacks publisher, name or version`);
    symlinkSync(dir, join(exts, `${pkg.publisher}.${pkg.name}-${pkg.version}`), "dir");
  }

  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const args = ["--auth", "none", "--bind-addr", `127.0.0.1:${port}`, "--disable-telemetry", "--disable-update-check", ...(trust ? ["--disable-workspace-trust"] : []), ...dirs, workspace];
    try {
      return await launch(bin, args, env, port, runDir, workspace);
    } catch (e) {
      lastError = e as Error;
      if (!/EADDRINUSE/.test(lastError.message)) break; // only a lost race for the port is worth another try
    }
  }
  if (process.env.SSVQ_E2E_KEEP !== "1") rmSync(runDir, { recursive: true, force: true });
  throw lastError;
}

async function launch(bin: string, args: string[], env: NodeJS.ProcessEnv, port: number, runDir: string, workspace: string): Promise<CodeServer> {
  const output: string[] = [];
  const file = createWriteStream(join(runDir, "code-server.log"), { flags: "a" });
  // detached: its own process group, so stop() can signal the whole group with kill(-pid).
  const child: ChildProcess = spawn(bin, args, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`code-server did not start: ${bin}`);
  running.set(pid, runDir);
  guardExit();
  const take = (b: Buffer): void => {
    output.push(b.toString());
    file.write(b);
  };
  child.stdout?.on("data", take);
  child.stderr?.on("data", take);
  let exitCode: number | string | null | undefined;
  const exited = new Promise<void>((res) => child.on("exit", (code, sig) => ((exitCode = code ?? sig), res())));
  child.on("error", (e) => output.push(`spawn error: ${e.message}\n`));
  const logs = (): string => output.join("");
  const url = `http://127.0.0.1:${port}/`;

  let stopping: Promise<void> | undefined;
  const server: CodeServer = {
    url,
    workspace,
    runDir,
    pid,
    logs,
    stop: () => (stopping ??= stopServer(server, exited, () => exitCode !== undefined, browsersOf(server)).finally(() => file.end())),
  };

  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      running.delete(pid);
      signal(serverProcesses(pid, runDir), pid, "SIGKILL");
      file.end();
      throw new Error(`code-server exited (${exitCode}) before /healthz answered:\n${logs()}`);
    }
    try {
      const r = await fetch(`${url}healthz`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return server;
    } catch {
      /* not listening yet */
    }
    await sleep(200);
  }
  await server.stop();
  throw new Error(`code-server's /healthz did not answer within 60 s:\n${logs()}`);
}

async function stopServer(server: CodeServer, exited: Promise<void>, hasExited: () => boolean, browsers: Browser[]): Promise<void> {
  for (const b of browsers) await b.close().catch(() => undefined);
  const { pid, runDir } = server;
  const waitGone = async (ms: number): Promise<number[]> => {
    const end = Date.now() + ms;
    for (;;) {
      const left = serverProcesses(pid, runDir);
      if ((left.length === 0 && hasExited()) || Date.now() > end) return left;
      await sleep(100);
    }
  };
  signal(serverProcesses(pid, runDir), pid, "SIGTERM");
  let left = await waitGone(5000);
  if (left.length > 0 || !hasExited()) {
    signal(left, pid, "SIGKILL");
    left = await waitGone(5000);
  }
  if (left.length > 0) throw new Error(`processes of code-server ${pid} survived SIGKILL: ${left.join(" ")}`);
  await exited;
  running.delete(pid);
  if (process.env.SSVQ_E2E_KEEP !== "1") rmSync(runDir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- browser

const browsersByServer = new WeakMap<CodeServer, Browser[]>();
function browsersOf(server: CodeServer): Browser[] {
  let list = browsersByServer.get(server);
  if (!list) browsersByServer.set(server, (list = []));
  return list;
}

/** Opens the workbench on the server's workspace in a fresh headless Chromium (closed by server.stop() too). */
export async function openWorkbench(server: CodeServer): Promise<Workbench> {
  const browser = await chromium.launch({ executablePath: chromiumPath(), headless: true, args: CHROMIUM_FLAGS });
  browsersOf(server).push(browser);
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  const page = await context.newPage();
  await page.goto(`${server.url}?folder=${encodeURIComponent(server.workspace)}`);
  try {
    await page.locator(".monaco-workbench .statusbar").waitFor({ state: "visible", timeout: 60_000 });
  } catch (e) {
    throw new Error(`workbench did not show its status bar: ${(e as Error).message}\ncode-server said:\n${server.logs()}`);
  }
  // The color theme (an extension's contribution) lands a second or two later; screenshots want it.
  await page.locator('.monaco-workbench[class*="vscode-theme-"]').waitFor({ timeout: 15_000 }).catch(() => undefined);
  return { browser, page };
}

/** What is on screen, for error messages: notifications, status bar, quick input, open menu. */
export async function screenState(page: Page): Promise<string> {
  const texts = async (sel: string): Promise<string[]> =>
    (await page.locator(sel).filter({ visible: true }).allInnerTexts().catch(() => [] as string[])).map(norm).filter((t) => t !== "");
  const parts = [
    `notifications: ${JSON.stringify(await texts(".notifications-toasts .notification-list-item-message, .notifications-center .notification-list-item-message"))}`,
    `status bar: ${JSON.stringify(await texts(".statusbar .statusbar-item"))}`,
    `quick input: ${JSON.stringify(await texts(".quick-input-widget .quick-input-list .label-name"))}`,
    `menu: ${JSON.stringify(await texts(".context-view .monaco-menu .action-label"))}`,
    `editor tabs: ${JSON.stringify(await texts(".tabs-container .tab .label-name"))}`,
  ];
  return parts.join("\n  ");
}

async function timeoutError(page: Page, what: string): Promise<Error> {
  return new Error(`${what}\non screen:\n  ${await screenState(page)}`);
}

// ---------------------------------------------------------------- quick input

const quickInput = (page: Page): Locator => page.locator(".quick-input-widget input.input");

/** Waits up to `ms` for a visible quick-pick row whose label is exactly `label`. */
async function quickPickRow(page: Page, label: string, ms: number): Promise<Locator | undefined> {
  const row = page
    .locator(".quick-input-widget .quick-input-list .monaco-list-row")
    .filter({ has: page.locator(".label-name", { hasText: exact(label) }) })
    .first();
  try {
    await row.waitFor({ state: "visible", timeout: ms });
    return row;
  } catch {
    return undefined;
  }
}

async function closeQuickInput(page: Page): Promise<void> {
  if (await quickInput(page).isVisible()) {
    await page.keyboard.press("Escape");
    await quickInput(page).waitFor({ state: "hidden", timeout: 5000 }).catch(() => undefined);
  }
}

/** Runs a command from the palette (F1) by its exact title, reopening it until the command is listed. */
export async function runCommand(page: Page, title: string, timeout = 30_000): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    await closeQuickInput(page);
    await page.keyboard.press("F1");
    const opened = await quickInput(page).waitFor({ state: "visible", timeout: 2000 }).then(() => true, () => false);
    if (!opened) {
      await page.keyboard.press("Control+Shift+P");
    }
    await quickInput(page).waitFor({ state: "visible", timeout: 5000 });
    await quickInput(page).fill(`>${title}`);
    const row = await quickPickRow(page, title, Math.min(3000, Math.max(500, deadline - Date.now())));
    if (row) {
      await row.click();
      return;
    }
    if (Date.now() > deadline) {
      const err = await timeoutError(page, `command "${title}" not in the palette after ${timeout} ms`);
      await closeQuickInput(page);
      throw err;
    }
    await sleep(500);
  }
}

/** Picks the row labelled exactly `label` in the quick pick that is open now. */
export async function pickQuickItem(page: Page, label: string, timeout = 10_000): Promise<void> {
  const row = await quickPickRow(page, label, timeout);
  if (!row) throw await timeoutError(page, `no quick-pick item "${label}" within ${timeout} ms`);
  await row.click();
}

// ---------------------------------------------------------------- explorer

async function explorerLabels(page: Page): Promise<string[]> {
  return page.locator(".explorer-folders-view .monaco-list-row").evaluateAll((els) => els.map((e) => e.getAttribute("aria-label") ?? ""));
}

/**
 * The explorer row of `fileName` (a path relative to the workspace, "/"-separated): shows the explorer,
 * expands folders on the way and refreshes the tree while the file is not listed yet.
 */
export async function explorerRow(page: Page, fileName: string, timeout = 30_000): Promise<Locator> {
  const deadline = Date.now() + timeout;
  if (!(await page.locator(".explorer-folders-view").isVisible())) await runCommand(page, "View: Show Explorer", timeout);
  const parts = fileName.split("/").filter((p) => p !== "");
  let lastRefresh = Date.now();
  for (;;) {
    let row: Locator | undefined;
    for (let i = 0; i < parts.length; i++) {
      const r = page.locator(`.explorer-folders-view .monaco-list-row[aria-level="${i + 1}"][aria-label=${JSON.stringify(parts[i])}]`).first();
      if (!(await r.isVisible())) break;
      if (i < parts.length - 1 && (await r.getAttribute("aria-expanded")) === "false") {
        await r.click();
        await sleep(300);
      }
      if (i === parts.length - 1) row = r;
    }
    if (row) return row;
    if (Date.now() > deadline) {
      throw await timeoutError(page, `"${fileName}" not in the explorer after ${timeout} ms; explorer rows: ${JSON.stringify(await explorerLabels(page))}`);
    }
    if (Date.now() - lastRefresh > 3000) {
      await runCommand(page, "Refresh Explorer", Math.max(1000, deadline - Date.now()));
      lastRefresh = Date.now();
    }
    await sleep(250);
  }
}

/** Waits until the explorer lists `fileName`. */
export async function explorerHasFile(page: Page, fileName: string, timeout = 30_000): Promise<void> {
  await explorerRow(page, fileName, timeout);
}

const contextMenu = (page: Page): Locator => page.locator(".context-view .monaco-menu");

/** Right-clicks the file in the explorer and returns the labels of the context menu, which stays open. */
export async function openExplorerContextMenu(page: Page, fileName: string, timeout = 30_000): Promise<string[]> {
  const row = await explorerRow(page, fileName, timeout);
  await row.click({ button: "right" });
  await contextMenu(page).first().waitFor({ state: "visible", timeout: 5000 });
  return (await contextMenu(page).locator(".action-label").filter({ visible: true }).allInnerTexts()).map(norm).filter((t) => t !== "");
}

/**
 * Right-clicks the file in the explorer and clicks the menu item labelled `itemLabel`, reopening the
 * menu while the item is missing (an extension's menu items appear once it has registered).
 */
export async function explorerContextMenu(page: Page, fileName: string, itemLabel: string, timeout = 30_000): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const labels = await openExplorerContextMenu(page, fileName, Math.max(1000, deadline - Date.now()));
    if (labels.includes(itemLabel)) {
      const item = contextMenu(page).locator(".action-item .action-label", { hasText: exact(itemLabel) }).first();
      // VS Code attaches the items' mouse-up handlers 100 ms after showing the menu: a click sooner is lost.
      for (let attempt = 0; attempt < 3; attempt++) {
        await sleep(250);
        await item.click();
        if (await contextMenu(page).first().waitFor({ state: "hidden", timeout: 2000 }).then(() => true, () => false)) return;
      }
      throw await timeoutError(page, `clicking "${itemLabel}" in the context menu of ${fileName} did not close the menu`);
    }
    await page.keyboard.press("Escape");
    if (Date.now() > deadline) throw new Error(`no "${itemLabel}" in the context menu of ${fileName} after ${timeout} ms; it had: ${JSON.stringify(labels)}`);
    await sleep(1000);
  }
}

/** Opens a file with a given editor: explorer context menu "Open With...", then the editor's label in the quick pick. */
export async function openWith(page: Page, fileName: string, editorLabel: string, timeout = 30_000): Promise<void> {
  await explorerContextMenu(page, fileName, "Open With...", timeout);
  await pickQuickItem(page, editorLabel, timeout);
}

// ---------------------------------------------------------------- status bar, notifications

/** Waits for a status-bar item whose text matches and returns that text. */
export async function statusBarText(page: Page, pattern: string | RegExp, timeout = 30_000): Promise<string> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const texts = (await page.locator(".statusbar .statusbar-item").allInnerTexts()).map(norm);
    const hit = texts.find((t) => matches(t, pattern));
    if (hit !== undefined) return hit;
    if (Date.now() > deadline) throw await timeoutError(page, `no status-bar item matching ${String(pattern)} after ${timeout} ms`);
    await sleep(250);
  }
}

export interface Notification {
  element: Locator;
  text: string;
}

/**
 * Waits for a notification whose message matches. Toasts are searched first; after 5 s without a match
 * the notification center is opened too, since a toast hides itself after a while.
 */
export async function waitForNotification(page: Page, pattern: string | RegExp, timeout = 30_000): Promise<Notification> {
  const start = Date.now();
  const items = page.locator(".notifications-toasts .notification-list-item, .notifications-center .notification-list-item");
  let centerOpened = false;
  for (;;) {
    const messages = (await items.locator(".notification-list-item-message").allInnerTexts()).map(norm);
    const index = messages.findIndex((t) => matches(t, pattern));
    if (index >= 0) {
      const text = messages[index]!;
      const element = items.filter({ has: page.locator(".notification-list-item-message", { hasText: text }) }).first();
      return { element, text };
    }
    if (Date.now() - start > timeout) throw await timeoutError(page, `no notification matching ${String(pattern)} after ${timeout} ms`);
    if (!centerOpened && Date.now() - start > 5000 && !(await page.locator(".notifications-center.visible").isVisible())) {
      await page.locator('.statusbar [id="status.notifications"] a, .statusbar [id="status.notifications"]').first().click().catch(() => undefined);
      centerOpened = true;
    }
    await sleep(250);
  }
}

/**
 * Waits for a notification whose message matches and clicks its button labelled `buttonLabel`. A
 * progress notification's message changes as the job goes on (its element is found by the text of the
 * moment), so the notification is looked up again until the button is there or `timeout` passes.
 */
export async function clickNotificationButton(page: Page, pattern: string | RegExp, buttonLabel: string, timeout = 30_000): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const { element, text } = await waitForNotification(page, pattern, Math.max(1, deadline - Date.now()));
    const button = element.locator(".notification-list-item-buttons-container .monaco-button", { hasText: exact(buttonLabel) }).first();
    if (await button.isVisible()) {
      const clicked = await button.click({ timeout: 2000 }).then(
        () => true,
        () => false,
      );
      if (clicked) return;
    }
    if (Date.now() > deadline) {
      const labels = (await element.locator(".notification-list-item-buttons-container .monaco-button").allInnerTexts()).map(norm);
      throw new Error(`notification "${text}" has no button "${buttonLabel}" after ${timeout} ms; it has ${JSON.stringify(labels)}`);
    }
    await sleep(100);
  }
}

// ---------------------------------------------------------------- webviews, screenshots

/** The frame (webviews are nested same-origin iframes) that contains `selector`, searched until `timeout`. */
export async function findFrame(page: Page, selector: string, timeout = 30_000): Promise<Frame> {
  const deadline = Date.now() + timeout;
  for (;;) {
    for (const frame of page.frames()) {
      const found = await frame.$(selector).catch(() => null); // frames detach while webviews load
      if (found) {
        await found.dispose();
        return frame;
      }
    }
    if (Date.now() > deadline) {
      const urls = page.frames().map((f) => f.url().replace(/\?.*/, ""));
      throw await timeoutError(page, `no frame containing ${selector} after ${timeout} ms; frames: ${JSON.stringify(urls)}`);
    }
    await sleep(250);
  }
}

/** Saves a PNG of the page as test-artifacts/e2e/<name>.png at the repository root and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  const artifacts = join(repoRoot, "test-artifacts");
  const dir = join(artifacts, "e2e");
  mkdirSync(dir, { recursive: true });
  // The folder ignores itself, so screenshots never end up in git.
  if (!existsSync(join(artifacts, ".gitignore"))) writeFileSync(join(artifacts, ".gitignore"), "*\n");
  const path = join(dir, `${name.replace(/[^\w.-]+/g, "-")}.png`);
  await page.screenshot({ path });
  return path;
}
