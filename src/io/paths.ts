/** Where a compression writes, and whether two paths are the same file. Light: no onnxruntime. */
import { existsSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";

const stem = (p: string): string => p.replace(/\.onnx$/i, "");

/** `<input without .onnx>.ssvq.onnx` beside the input. */
export function defaultOutput(input: string): string {
  return join(dirname(resolve(input)), `${basename(stem(input))}.ssvq.onnx`);
}

/** The report's path: the output's path without `.onnx`, plus `.json`. */
export const reportPathFor = (out: string): string => `${stem(out)}.json`;

/**
 * Whether two paths name the same file: the same device and inode when both exist (so links, other
 * spellings and case-insensitive file systems are caught), else the same resolved path.
 */
export function samePath(a: string, b: string): boolean {
  if (existsSync(a) && existsSync(b)) {
    const sa = statSync(a);
    const sb = statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  }
  const real = (p: string) => (existsSync(p) ? realpathSync.native(p) : resolve(p));
  return real(a) === real(b);
}

/** The external data file of an output model: `<output>.data` beside it (io/write-external.ts). */
export const dataPathFor = (out: string): string => `${out}.data`;
