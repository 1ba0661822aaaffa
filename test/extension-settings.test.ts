/**
 * The extension's settings <-> `ssvq compress` options table: package.json's configuration matches it,
 * every compress option has a setting (or is a per-run choice), the arguments built from settings parse
 * to the job the CLI runs, and the logged command line reads back as the same arguments.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { compressCommandOptions, parseCompressArgs } from "../src/job/compress-args.js";
import { PRESETS } from "../src/core/accel/presets.js";
import { PER_RUN_FLAGS, resolveSettingPath, SETTINGS, settingsToArgs, shellQuote, withSettingNames } from "../src/extension/settings-table.js";
import { fixture, repoRoot } from "./helpers/paths.js";

interface Prop {
  type: string | string[];
  default: unknown;
  enum?: unknown[];
  markdownDescription?: string;
  description?: string;
  scope?: string;
}
const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
  contributes: { configuration: { properties: Record<string, Prop> }; commands: { command: string; title: string; category: string }[]; menus: Record<string, { command: string; when?: string }[]>; customEditors: { viewType: string; priority: string; selector: { filenamePattern: string }[] }[] };
  activationEvents: string[];
  extensionKind: string[];
  capabilities: { untrustedWorkspaces: { supported: string }; virtualWorkspaces: { supported: boolean } };
};
const props = pkg.contributes.configuration.properties;

test("package.json has one setting per table entry, with the CLI's default, a description and the option named", () => {
  assert.deepEqual(Object.keys(props).sort(), SETTINGS.map((s) => `ssvq.${s.key}`).sort());
  for (const s of SETTINGS) {
    const p = props[`ssvq.${s.key}`]!;
    assert.deepEqual(p.default, s.default, `ssvq.${s.key} default`);
    const text = p.markdownDescription ?? p.description ?? "";
    assert.ok(text.length > 20, `ssvq.${s.key} has a description`);
    if (!s.spelling) assert.ok(text.includes(`--${s.flag}`), `ssvq.${s.key}'s description names --${s.flag}`);
    if (s.kind === "path") assert.match(text, /\$\{workspaceFolder\}/, `ssvq.${s.key} says it accepts \${workspaceFolder}`);
  }
  assert.deepEqual(props["ssvq.mode"]!.enum, ["ssvq", "vq", "int4", "int8"]);
  assert.deepEqual(props["ssvq.preset"]!.enum, ["", ...PRESETS.map((p) => p.name)]);
});

test("every ssvq compress option is a setting or a per-run choice of the extension", () => {
  const covered = new Set<string>([...SETTINGS.map((s) => s.flag), ...PER_RUN_FLAGS]);
  for (const flag of Object.keys(compressCommandOptions)) assert.ok(covered.has(flag), `--${flag} has a setting`);
  for (const s of SETTINGS) if (!s.spelling) assert.ok(s.flag in compressCommandOptions, `ssvq.${s.key} -> --${s.flag} exists`);
});

test("manifest: commands in category SSVQ, menus for .onnx, an optional read-only inspector, workspace kind, limited trust", () => {
  const titles = Object.fromEntries(pkg.contributes.commands.map((c) => [c.command, c.title]));
  assert.deepEqual(
    ["Compress with SSVQ", "Compress with SSVQ (Choose Settings)...", "Open SSVQ Inspector", "Cancel SSVQ Compression", "Show SSVQ Log"].filter((t) => !Object.values(titles).includes(t)),
    [],
  );
  assert.ok(pkg.contributes.commands.every((c) => c.category === "SSVQ"));
  const explorer = pkg.contributes.menus["explorer/context"]!;
  assert.ok(explorer.some((m) => m.command === "ssvq.compress" && m.when === "resourceExtname == .onnx"));
  assert.ok(pkg.contributes.menus["editor/title"]!.some((m) => m.command === "ssvq.compress" && m.when?.includes("resourceExtname == .onnx")));
  assert.ok(pkg.contributes.menus["commandPalette"]!.some((m) => m.command === "ssvq.cancel" && m.when === "ssvq.running"));
  const [editor] = pkg.contributes.customEditors;
  assert.equal(editor!.viewType, "ssvq.inspector");
  assert.equal(editor!.priority, "option");
  assert.deepEqual(editor!.selector, [{ filenamePattern: "*.onnx" }]);
  assert.deepEqual(pkg.extensionKind, ["workspace"]);
  assert.equal(pkg.capabilities.untrustedWorkspaces.supported, "limited");
  assert.equal(pkg.capabilities.virtualWorkspaces.supported, false);
  // Commands and custom editors activate the extension by themselves (VS Code 1.74+): nothing at startup.
  assert.ok(!pkg.activationEvents.includes("*") && !pkg.activationEvents.includes("onStartupFinished"));
});

const ctx = { model: "/models/net.onnx", workspaceFolders: [{ name: "ws", path: "/work/ws" }, { name: "data", path: "/data" }] };

test("default settings give the bare command; set values become options with absolute paths", () => {
  const defaults = Object.fromEntries(SETTINGS.map((s) => [s.key, s.default]));
  assert.deepEqual(settingsToArgs(defaults, ctx), { args: ["/models/net.onnx"], ignored: [] });
  const { args } = settingsToArgs(
    { ...defaults, k: 64, d: 8, calib: "${workspaceFolder}/calib.npy", calibRange: "0:512", eval: "${workspaceFolder:data}/x.npy", labels: "y.npy", scale: "1/255", lrCodebook: 0.02, freeze: false, compare: "vq", threads: 2 },
    ctx,
  );
  assert.deepEqual(args, [
    "/models/net.onnx", "--k", "64", "--d", "8", "--threads", "2",
    "--calib", "/work/ws/calib.npy", "--calib-range", "0:512", "--eval", "/data/x.npy", "--labels", "/models/y.npy", "--scale", "1/255",
    "--lr-codebook", "0.02", "--no-freeze", "--compare", "vq",
  ]);
});

test("options of parts that do not run are left out and reported", () => {
  const r = settingsToArgs({ mode: "int8", bits: 3, iters: 900, compare: "vq" }, ctx);
  assert.deepEqual(r.args, ["/models/net.onnx", "--mode", "int8"]);
  assert.equal(r.ignored.length, 3);
  assert.match(r.ignored.join("\n"), /ssvq\.bits: applies to modes ssvq and vq, not int8/);
  const noCalib = settingsToArgs({ iters: 900, reassign: true }, ctx);
  assert.deepEqual(noCalib.args, ["/models/net.onnx"]);
  assert.match(noCalib.ignored.join("\n"), /ssvq\.iters: fine-tuning does not run/);
  const noEval = settingsToArgs({ evalRange: "512:2000", labels: "y.npy", calib: "c.npy", calibRange: "0:64" }, ctx);
  assert.deepEqual(noEval.args, ["/models/net.onnx", "--calib", "/models/c.npy", "--calib-range", "0:64"]);
  assert.deepEqual(noEval.ignored, ["ssvq.evalRange: applies to ssvq.eval, which is not set", "ssvq.labels: applies to ssvq.eval, which is not set"]);
  const forced = settingsToArgs({ finetune: "on", iters: 900 }, ctx);
  assert.deepEqual(forced.args, ["/models/net.onnx", "--finetune", "--iters", "900"]);
});

test("paths: ${workspaceFolder}, ${fileDirname}, ~ and relative to the model's folder; unknown folders are errors", () => {
  assert.equal(resolveSettingPath("data/c.npy", ctx), "/models/data/c.npy");
  assert.equal(resolveSettingPath("${fileDirname}/../c.npy", ctx), "/c.npy");
  assert.equal(resolveSettingPath("~/c.npy", ctx, "/home/u"), "/home/u/c.npy");
  assert.equal(resolveSettingPath("/abs/c.npy", ctx), "/abs/c.npy");
  assert.throws(() => resolveSettingPath("${workspaceFolder:nope}/x", ctx), /no workspace folder is named "nope"/);
  assert.throws(() => resolveSettingPath("${workspaceFolder}/x", { model: "/m.onnx", workspaceFolders: [] }), /no folder is open/);
});

test("the arguments from settings parse into the same job as the CLI's, and errors name the setting", () => {
  const lenet = fixture("fashion_lenet5.onnx");
  const { args } = settingsToArgs(
    { calib: "fashion_test2000_x_u8.npy", calibRange: "0:64", scale: "1/255", iters: 20, seed: 3, mode: "ssvq", k: 16, d: 8, bits: 1.5 },
    { model: lenet, workspaceFolders: [] },
  );
  const spec = parseCompressArgs(args);
  assert.equal(spec.input, lenet);
  assert.deepEqual([spec.config.mode, spec.config.k, spec.config.d, spec.config.seed, spec.config.finetune, spec.config.finetuning?.iters], ["ssvq", 16, 8, 3, true, 20]);
  assert.equal(spec.data?.calib?.path, fixture("fashion_test2000_x_u8.npy"));
  assert.throws(() => parseCompressArgs([lenet, "--bits", "0"]), /--bits must be a number of bits per weight above 0/);
  // --ratio (or --bits): the search, with k and d 0 in the config; ssvq.k/ssvq.d take their place.
  const searched = parseCompressArgs(settingsToArgs({ ratio: 12, mode: "vq" }, { model: lenet, workspaceFolders: [] }).args);
  assert.deepEqual([searched.config.mode, searched.config.ratio, searched.config.k, searched.config.d], ["vq", 12, 0, 0]);
  const both = settingsToArgs({ ratio: 12, bits: 2 }, { model: lenet, workspaceFolders: [] });
  assert.deepEqual(both.args, [lenet, "--ratio", "12"]);
  assert.deepEqual(both.ignored, ["ssvq.bits: ssvq.ratio is set and takes its place"]);
  assert.equal(withSettingNames("--lr-codebook must be a number > 0, not -1"), "ssvq.lrCodebook (--lr-codebook) must be a number > 0, not -1");
  assert.equal(withSettingNames("--no-finetune turns it off"), "ssvq.finetune (--no-finetune) turns it off");
});

test("the logged command line reads back, in a POSIX shell, as the same arguments", () => {
  const args = ["/models/my net.onnx", "--layers", "conv[0-9]+|fc's", "--calib", "/data/$HOME/x.npy", "--scale", "1/255"];
  const line = shellQuote(args);
  const echoed = execFileSync("sh", ["-c", `for a in ${line}; do printf '%s\\n' "$a"; done`], { encoding: "utf8" });
  assert.deepEqual(echoed.trimEnd().split("\n"), args);
});
