// End-to-end test support: installs what a real VS Code in a browser needs, once per machine.
// code-server 4.100.3 (the last release that runs on Node 20) goes into a cache outside the checkout
// ($SSVQ_E2E_CACHE or ~/.cache/ssvq-e2e), following /work/shared/E2E-NOTES.md; Debian's chromium,
// ripgrep and libkrb5-dev come from apt. Importing this file does nothing: the test runner loads it
// as a test file too.
import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const CODE_SERVER_VERSION = "4.100.3";
const APT_PACKAGES = ["chromium", "ripgrep", "libkrb5-dev"];
const CHROMIUM = "/usr/bin/chromium";
const RG = "/usr/bin/rg";

/** Where installs are kept between runs. */
export function cacheRoot(): string {
  return process.env.SSVQ_E2E_CACHE || join(homedir(), ".cache", "ssvq-e2e");
}

/** Debian's Chromium, which Playwright drives (its own browser download cannot work here). */
export function chromiumPath(): string {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run ensureCodeServer() first, or: sudo apt-get install -y ${APT_PACKAGES.join(" ")}`);
  return CHROMIUM;
}

export function log(line: string): void {
  process.stderr.write(`[ssvq-e2e] ${line}\n`);
}

/**
 * The environment for child processes, without what an `npm test` or `node --test` above us set for
 * its own scripts (npm's lifecycle variables, the test runner's child marker, an outer VS Code's
 * variables). For npm itself the user's npm_config_* settings (cache, registry, ...) are kept.
 */
export function cleanEnv(extra: Record<string, string> = {}, forNpm = false): NodeJS.ProcessEnv {
  const always = /^(INIT_CWD|NODE_TEST_CONTEXT|ELECTRON_RUN_AS_NODE|VSCODE_.*)$/i;
  const lifecycle = /^npm_(lifecycle_.*|package_.*|command|execpath|node_execpath|config_local_prefix|config_user_agent)$/i;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (always.test(k) || (forNpm ? lifecycle.test(k) : /^npm_/i.test(k))) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** Runs a command to its end, its output appended to `logFile`; rejects with the output's tail. */
function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, logFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(logFile, { flags: "a" });
    out.write(`\n$ (cd ${cwd} && ${cmd} ${args.join(" ")})\n`);
    let tail = "";
    const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    const take = (b: Buffer): void => {
      out.write(b);
      tail = (tail + b.toString()).slice(-4000);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("error", (e) => out.end(() => reject(new Error(`${cmd} could not start: ${e.message}`))));
    child.on("close", (code, signal) => {
      out.end(() => {
        if (code === 0) resolve();
        else reject(new Error(`${cmd} ${args.join(" ")} (in ${cwd}) exited with ${code ?? signal}; full log ${logFile}\n${tail}`));
      });
    });
  });
}

function aptInstalled(pkg: string): boolean {
  const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", pkg], { encoding: "utf8" });
  return r.status === 0 && r.stdout.includes("install ok installed");
}

/** chromium, ripgrep and libkrb5-dev: installed by apt when missing and root, else an Error naming the command. */
export async function ensureAptPackages(logFile: string): Promise<void> {
  const missing = APT_PACKAGES.filter((p) => !aptInstalled(p));
  if (missing.length === 0) return;
  const command = `sudo apt-get install -y ${APT_PACKAGES.join(" ")}`;
  if (process.getuid?.() !== 0) throw new Error(command);
  const t0 = Date.now();
  log(`apt-get install -y ${missing.join(" ")} (about a minute; log ${logFile})`);
  const env = cleanEnv({ DEBIAN_FRONTEND: "noninteractive" });
  await run("apt-get", ["update"], "/", env, logFile);
  await run("apt-get", ["install", "-y", ...missing], "/", env, logFile);
  const still = APT_PACKAGES.filter((p) => !aptInstalled(p));
  if (still.length > 0) throw new Error(`apt-get did not install ${still.join(" ")}; log ${logFile}. Try: ${command}`);
  log(`apt packages ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** Files whose absence means the install is broken, relative to the install folder. */
const REQUIRED = [
  "node_modules/.bin/code-server",
  "node_modules/argon2/lib/binding/napi-v3/argon2.node",
  "node_modules/code-server/lib/vscode/node_modules.asar",
  "node_modules/code-server/lib/vscode/node_modules/@vscode/ripgrep/bin/rg",
  "node_modules/code-server/lib/vscode/node_modules/node-pty/build/Release/pty.node",
  "node_modules/code-server/lib/vscode/node_modules/@vscode/spdlog/build/Release/spdlog.node",
  "node_modules/code-server/lib/vscode/node_modules/kerberos/build/Release/kerberos.node",
  "node_modules/code-server/lib/vscode/node_modules/native-watchdog/build/Release/watchdog.node",
  "node_modules/code-server/lib/vscode/bin/remote-cli/code-server",
  "node_modules/code-server/lib/vscode/bin/helpers/browser.sh",
  "node_modules/code-server/lib/vscode/extensions/node_modules/typescript/package.json",
];

/** Takes the install lock (a folder holding the owner's pid), waiting while a live process holds it. */
async function lock(dir: string): Promise<() => void> {
  const pidFile = join(dir, "pid");
  for (let waited = 0; ; waited += 1000) {
    try {
      mkdirSync(dir);
      writeFileSync(pidFile, String(process.pid));
      return () => rmSync(dir, { recursive: true, force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let owner = NaN;
    try {
      owner = Number(readFileSync(pidFile, "utf8"));
    } catch {
      /* being written or removed */
    }
    let alive = false;
    if (owner > 0) {
      try {
        process.kill(owner, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (!alive && waited >= 2000) rmSync(dir, { recursive: true, force: true }); // left by an install that died
    else if (alive && waited % 30_000 === 0) log(`waiting for another install (pid ${owner}) to finish`);
    if (waited > 15 * 60_000) throw new Error(`install lock ${dir} still held by pid ${owner} after 15 minutes`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

let installing: Promise<string> | undefined;

/**
 * Installs code-server once into the cache and returns the path of its executable. A marker file is
 * written only after a complete, checked install; a folder without it is removed and installed anew.
 */
export function ensureCodeServer(): Promise<string> {
  installing ??= install().catch((e: unknown) => {
    installing = undefined;
    throw e;
  });
  return installing;
}

async function install(): Promise<string> {
  const root = cacheRoot();
  mkdirSync(root, { recursive: true });
  const dir = join(root, `code-server-${CODE_SERVER_VERSION}`);
  const marker = join(dir, ".install-complete");
  const bin = join(dir, "node_modules", ".bin", "code-server");
  const logFile = join(root, `install-${CODE_SERVER_VERSION}.log`);
  const complete = (): boolean => existsSync(marker) && REQUIRED.every((f) => existsSync(join(dir, f)));

  await ensureAptPackages(logFile);
  if (complete()) return bin;

  const unlock = await lock(join(root, `code-server-${CODE_SERVER_VERSION}.lock`));
  try {
    if (complete()) return bin; // another process finished it while we waited
    const t0 = Date.now();
    const step = (what: string): void => log(`code-server ${CODE_SERVER_VERSION}: ${what} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    writeFileSync(logFile, `install of code-server ${CODE_SERVER_VERSION} started ${new Date().toISOString()}\n`);
    step(`installing into ${dir}, about 70 s the first time; log ${logFile}`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "ssvq-e2e-code-server", private: true }, null, 2) + "\n");
    // unsafe_perm: code-server's scripts refuse root without it; yes: node-pty's `npx node-gyp` must not ask.
    const env = cleanEnv({ npm_config_unsafe_perm: "true", npm_config_yes: "true", npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" }, true);
    const vscode = join(dir, "node_modules", "code-server", "lib", "vscode");
    const npm = (args: string[], cwd: string): Promise<void> => run("npm", args, cwd, env, logFile);

    await npm(["install", "--ignore-scripts", `code-server@${CODE_SERVER_VERSION}`], dir);
    step("lib/vscode dependencies");
    await npm(["install", "--omit=dev", "--ignore-scripts"], vscode);
    // @vscode/ripgrep would download rg from GitHub; its install script stops early when bin/ exists.
    const rgDir = join(vscode, "node_modules", "@vscode", "ripgrep", "bin");
    mkdirSync(rgDir, { recursive: true });
    symlinkSync(RG, join(rgDir, "rg"));
    step("building native modules (node-pty, spdlog, kerberos, ...)");
    await npm(["rebuild"], vscode);
    step("built-in extensions");
    await npm(["install", "--omit=dev"], join(vscode, "extensions"));
    // What code-server's own postinstall.sh would do after that.
    symlinkSync("node_modules", join(vscode, "node_modules.asar"));
    symlinkSync("code-linux.sh", join(vscode, "bin", "remote-cli", "code-server"));
    symlinkSync("browser-linux.sh", join(vscode, "bin", "helpers", "browser.sh"));
    step("argon2");
    await npm(["rebuild", "argon2"], dir);

    const missing = REQUIRED.filter((f) => !existsSync(join(dir, f)));
    if (missing.length > 0) throw new Error(`code-server install incomplete, missing: ${missing.join(", ")}; log ${logFile}`);
    const xdg = join(dir, ".xdg"); // so that even --version writes nothing under ~
    const v = spawnSync(bin, ["--version"], { encoding: "utf8", env: cleanEnv({ XDG_CONFIG_HOME: xdg, XDG_DATA_HOME: xdg }), timeout: 60_000 });
    if (v.status !== 0 || !v.stdout.includes(`${CODE_SERVER_VERSION} `)) {
      throw new Error(`installed code-server does not run: ${v.status} ${v.stdout} ${v.stderr}`);
    }
    writeFileSync(marker, JSON.stringify({ version: CODE_SERVER_VERSION, installed: new Date().toISOString(), seconds: (Date.now() - t0) / 1000 }) + "\n");
    step("ready");
    return bin;
  } finally {
    unlock();
  }
}
