/**
 * The `ssvq.*` settings and the `ssvq compress` options they mirror: one table, used both ways. The
 * extension turns the settings into the same arguments a user would type (so the command line it logs
 * gives the same bytes), and a test holds package.json's `contributes.configuration` to this table.
 * No VS Code import: the mapping is plain data and pure functions.
 */
import { isAbsolute, join, resolve } from "node:path";

export type SettingKind = "enum" | "number" | "integer" | "string" | "path" | "boolean" | "strings";

export interface SettingSpec {
  /** The key after `ssvq.`. */
  key: string;
  /** The `ssvq compress` option without its dashes. */
  flag: string;
  kind: SettingKind;
  /** The CLI's default: the setting's default in package.json. null = the option is not given. */
  default: string | number | boolean | string[] | null;
  /** Which part of the run the option belongs to (it is only passed when that part runs). */
  group: "general" | "data" | "finetune" | "simulate";
  /**
   * Booleans whose CLI spelling is a negative flag (`--no-freeze` when ssvq.freeze is false), or
   * settings that pick one of two flags (`ssvq.finetune`: on -> --finetune, off -> --no-finetune).
   */
  spelling?: "negated" | "finetuneChoice" | "compareChoice";
}

/** In the order of `ssvq compress --help`. */
export const SETTINGS: readonly SettingSpec[] = [
  { key: "mode", flag: "mode", kind: "enum", default: "ssvq", group: "general" },
  { key: "ratio", flag: "ratio", kind: "number", default: null, group: "general" },
  { key: "bits", flag: "bits", kind: "number", default: null, group: "general" },
  { key: "k", flag: "k", kind: "integer", default: null, group: "general" },
  { key: "d", flag: "d", kind: "integer", default: null, group: "general" },
  { key: "layers", flag: "layers", kind: "string", default: "", group: "general" },
  { key: "minWeights", flag: "min-weights", kind: "integer", default: 1024, group: "general" },
  { key: "seed", flag: "seed", kind: "integer", default: 0, group: "general" },
  { key: "kmeansIters", flag: "kmeans-iters", kind: "integer", default: 25, group: "general" },
  { key: "format", flag: "format", kind: "enum", default: "ssvq", group: "general" },
  { key: "threads", flag: "threads", kind: "integer", default: 0, group: "general" },
  { key: "memoryBudget", flag: "memory-budget", kind: "string", default: "", group: "general" },
  { key: "externalData", flag: "external-data", kind: "boolean", default: false, group: "general" },
  { key: "calib", flag: "calib", kind: "path", default: "", group: "data" },
  { key: "calibRange", flag: "calib-range", kind: "string", default: "", group: "data" },
  { key: "calibCount", flag: "calib-count", kind: "integer", default: null, group: "data" },
  { key: "eval", flag: "eval", kind: "path", default: "", group: "data" },
  { key: "evalRange", flag: "eval-range", kind: "string", default: "", group: "data" },
  { key: "evalCount", flag: "eval-count", kind: "integer", default: null, group: "data" },
  { key: "labels", flag: "labels", kind: "path", default: "", group: "data" },
  { key: "scale", flag: "scale", kind: "string", default: "", group: "data" },
  { key: "mean", flag: "mean", kind: "string", default: "", group: "data" },
  { key: "std", flag: "std", kind: "string", default: "", group: "data" },
  { key: "size", flag: "size", kind: "string", default: "", group: "data" },
  { key: "layout", flag: "layout", kind: "enum", default: "", group: "data" },
  { key: "batch", flag: "batch", kind: "integer", default: 32, group: "data" },
  { key: "finetune", flag: "finetune", kind: "enum", default: "auto", group: "general", spelling: "finetuneChoice" },
  { key: "iters", flag: "iters", kind: "integer", default: 500, group: "finetune" },
  { key: "lrCodebook", flag: "lr-codebook", kind: "number", default: 0.01, group: "finetune" },
  { key: "lrSign", flag: "lr-sign", kind: "number", default: 0.01, group: "finetune" },
  { key: "freezeEvery", flag: "freeze-every", kind: "integer", default: null, group: "finetune" },
  { key: "freezeThreshold", flag: "freeze-threshold", kind: "string", default: "0.3,0.1", group: "finetune" },
  { key: "freezeMomentum", flag: "freeze-momentum", kind: "number", default: 0.9, group: "finetune" },
  { key: "freeze", flag: "no-freeze", kind: "boolean", default: true, group: "finetune", spelling: "negated" },
  { key: "fixedSigns", flag: "fixed-signs", kind: "boolean", default: false, group: "finetune" },
  { key: "reassign", flag: "reassign", kind: "boolean", default: false, group: "finetune" },
  { key: "sequential", flag: "sequential", kind: "boolean", default: false, group: "finetune" },
  { key: "compare", flag: "compare", kind: "enum", default: "none", group: "general", spelling: "compareChoice" },
  { key: "preset", flag: "preset", kind: "string", default: "", group: "simulate" },
  { key: "shape", flag: "shape", kind: "strings", default: [], group: "simulate" },
  { key: "accelConfig", flag: "accel-config", kind: "path", default: "", group: "simulate" },
];

/** `ssvq compress` options that are choices of one run, not settings: the extension sets them itself. */
export const PER_RUN_FLAGS = ["out", "force", "json", "dry-run", "no-finetune"] as const;

export type SettingValues = Readonly<Record<string, unknown>>;

export interface ArgsContext {
  /** The model, absolute. */
  model: string;
  /** Workspace folders (name and absolute path); the one holding the model first. */
  workspaceFolders: readonly { name: string; path: string }[];
}

export interface CompressArgs {
  /** The arguments after `ssvq compress`: the model first, then the options. */
  args: string[];
  /** Settings that were set but do not apply to this run, with the reason (for the log). */
  ignored: string[];
}

const isSet = (spec: SettingSpec, v: unknown): boolean => {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length > 0 && JSON.stringify(v) !== JSON.stringify(spec.default);
  if (typeof v === "string" && v.trim() === "" ) return false;
  return v !== spec.default;
};

/**
 * A path setting: `${workspaceFolder}` (or `${workspaceFolder:name}`) and `${fileDirname}` expanded,
 * `~/` from the home folder, anything relative taken from the model's folder.
 */
export function resolveSettingPath(text: string, ctx: ArgsContext, home = process.env["HOME"] ?? ""): string {
  const modelDir = resolve(ctx.model, "..");
  const folderNamed = (name: string | undefined): string => {
    const f = name === undefined ? ctx.workspaceFolders[0] : ctx.workspaceFolders.find((w) => w.name === name);
    if (!f) throw new SettingError(name === undefined ? `\${workspaceFolder} is used but no folder is open` : `no workspace folder is named ${JSON.stringify(name)}`);
    return f.path;
  };
  let p = text.trim().replace(/\$\{(workspaceFolder(?::([^}]*))?|fileDirname)\}/g, (_m, what: string, name: string | undefined) =>
    what === "fileDirname" ? modelDir : folderNamed(name),
  );
  if (p === "~" || p.startsWith("~/")) p = join(home, p.slice(1));
  return isAbsolute(p) ? resolve(p) : resolve(modelDir, p);
}

/** A setting that cannot be turned into an option; the message names the setting. */
export class SettingError extends Error {
  override readonly name = "SettingError";
}

/**
 * The `ssvq compress` arguments for a model from the settings. Only options that differ from the CLI's
 * defaults are given; options of a part that will not run (fine-tuning without data, (k, d) for the INT
 * modes, a comparison that only applies to SSVQ) are left out and listed in `ignored`.
 */
export function settingsToArgs(values: SettingValues, ctx: ArgsContext): CompressArgs {
  const get = (key: string): unknown => values[key] ?? SETTINGS.find((s) => s.key === key)!.default;
  const mode = String(get("mode"));
  const vq = mode === "ssvq" || mode === "vq";
  const finetuneChoice = String(get("finetune"));
  const hasCalib = isSet(spec("calib"), values["calib"]);
  const finetunes = vq && finetuneChoice !== "off" && (finetuneChoice === "on" || hasCalib);
  const kd = isSet(spec("k"), values["k"]) || isSet(spec("d"), values["d"]);
  const simulates = isSet(spec("preset"), values["preset"]) || isSet(spec("shape"), values["shape"]) || isSet(spec("accelConfig"), values["accelConfig"]);

  const args = [ctx.model];
  const ignored: string[] = [];
  for (const s of SETTINGS) {
    const v = values[s.key];
    if (!isSet(s, v)) continue;
    const skip = (why: string) => ignored.push(`ssvq.${s.key}: ${why}`);
    if ((s.key === "ratio" || s.key === "bits" || s.key === "k" || s.key === "d") && !vq) {
      skip(`applies to modes ssvq and vq, not ${mode}`);
      continue;
    }
    if ((s.key === "ratio" || s.key === "bits") && kd) {
      skip("ssvq.k and ssvq.d are set and take its place");
      continue;
    }
    if (s.key === "bits" && isSet(spec("ratio"), values["ratio"])) {
      skip("ssvq.ratio is set and takes its place");
      continue;
    }
    if (s.group === "finetune" && !finetunes) {
      skip(vq ? "fine-tuning does not run (it needs ssvq.calib, or ssvq.finetune set to on)" : `fine-tuning applies to modes ssvq and vq, not ${mode}`);
      continue;
    }
    if (s.key === "fixedSigns" && mode !== "ssvq") {
      skip("applies to mode ssvq");
      continue;
    }
    if (s.key === "compare" && mode !== "ssvq") {
      skip("compares an SSVQ compression with VQ; it does not apply to mode " + mode);
      continue;
    }
    if (s.key === "finetune" && v === "on" && !vq) {
      skip(`fine-tuning applies to modes ssvq and vq, not ${mode}`);
      continue;
    }
    if (s.key === "finetune" && v === "off" && !(vq && hasCalib)) continue; // nothing to turn off
    if (s.group === "simulate" && !simulates) continue;
    const parent = DATA_PARENT[s.key];
    if (parent && !isSet(spec(parent), values[parent])) {
      skip(`applies to ssvq.${parent}, which is not set`);
      continue;
    }
    args.push(...optionArgs(s, v, ctx));
  }
  return { args, ignored };
}

const spec = (key: string): SettingSpec => SETTINGS.find((s) => s.key === key)!;

/** Data settings that only mean something with another one (the CLI refuses them alone). */
const DATA_PARENT: Record<string, string> = { calibRange: "calib", calibCount: "calib", evalRange: "eval", evalCount: "eval", labels: "eval" };

function optionArgs(s: SettingSpec, v: unknown, ctx: ArgsContext): string[] {
  const flag = `--${s.flag}`;
  switch (s.spelling) {
    case "negated":
      return v === false ? [flag] : [];
    case "finetuneChoice":
      return v === "on" ? ["--finetune"] : v === "off" ? ["--no-finetune"] : [];
    case "compareChoice":
      return v === "none" ? [] : [flag, String(v)];
  }
  switch (s.kind) {
    case "boolean":
      return v === true ? [flag] : [];
    case "path":
      if (typeof v !== "string") throw new SettingError(`ssvq.${s.key} must be a path, not ${JSON.stringify(v)}`);
      return [flag, resolveSettingPath(v, ctx)];
    case "strings":
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw new SettingError(`ssvq.${s.key} must be a list of strings`);
      return (v as string[]).filter((x) => x.trim() !== "").flatMap((x) => [flag, x.trim()]);
    case "number":
    case "integer":
      if (typeof v !== "number" || !Number.isFinite(v)) throw new SettingError(`ssvq.${s.key} must be a number, not ${JSON.stringify(v)}`);
      // threads 0 means "the machine's cores": the CLI's default.
      if (s.key === "threads" && v === 0) return [];
      return [flag, String(v)];
    default:
      return [flag, String(v).trim()];
  }
}

/** Messages of the engine name options (`--lr-codebook`); in the extension, name the settings too. */
export function withSettingNames(message: string): string {
  return message.replace(/--([a-z][a-z0-9-]*)/g, (m, flag: string) => {
    const s = SETTINGS.find((x) => x.flag === flag || (x.key === "finetune" && flag === "no-finetune"));
    return s ? `ssvq.${s.key} (${m})` : m;
  });
}

/** A command line a POSIX shell reads back as the same arguments. */
export function shellQuote(args: readonly string[]): string {
  return args.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}
