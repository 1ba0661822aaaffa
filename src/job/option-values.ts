/**
 * Option values as `node:util` parseArgs returns them, and their parsing with one-line errors: shared by
 * the `ssvq` commands and the extension, which builds the same arguments from its settings.
 */
import { cpus } from "node:os";
import { InputError } from "../core/errors.js";

export type OptionValues = Record<string, string | boolean | string[] | boolean[] | undefined>;

export function intOption(values: OptionValues, name: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = values[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== "string" || !/^-?\d+$/.test(v.trim()) || n < min || n > max)
    throw new InputError(`--${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(v)}`);
  return n;
}

export function numberOption(values: OptionValues, name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isFinite(n)) throw new InputError(`--${name} must be a number, not ${JSON.stringify(v)}`);
  return n;
}

export function choiceOption<T extends string>(values: OptionValues, name: string, choices: readonly T[], dflt: T): T {
  const v = values[name];
  if (v === undefined) return dflt;
  if (typeof v !== "string" || !choices.includes(v as T))
    throw new InputError(`--${name} must be one of ${choices.join(", ")}, not ${JSON.stringify(v)}`);
  return v as T;
}

const SIZE_UNITS: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/**
 * A size in bytes: a number with an optional binary unit K, M, G or T (also KB/KiB, ...: 4G = 4 GiB,
 * 512M, 1.5G); a bare number is bytes. Undefined when the option is not given (or given empty).
 */
export function sizeOption(values: OptionValues, name: string): number | undefined {
  const v = values[name];
  if (v === undefined || (typeof v === "string" && v.trim() === "")) return undefined;
  const m = typeof v === "string" ? /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(v) : null;
  const bytes = m ? Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!m || !(bytes >= 1) || !Number.isSafeInteger(bytes))
    throw new InputError(`--${name} must be a size such as 4G, 512M or 1.5G (bytes without a unit), not ${JSON.stringify(v)}`);
  return bytes;
}

/** Worker threads: --threads N, default the machine's cores (at most 8). */
export function threadsOption(values: OptionValues): number {
  return intOption(values, "threads", Math.min(8, Math.max(1, cpus().length)), 1, 64);
}

/** Some of a command's option specs, to share them with another command. */
export function pickOptions<T extends Record<string, unknown>, K extends keyof T>(specs: T, names: readonly K[]): Pick<T, K> {
  return Object.fromEntries(names.map((n) => [n, specs[n]])) as Pick<T, K>;
}
