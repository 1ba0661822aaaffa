/** Numbers, sizes and percentages as the webviews show them (English grouping, units spelled out). */

export const int = (n: number): string => Math.round(n).toLocaleString("en-US");

/** Sizes in binary units, as the command line prints them: 512 B, 1.50 KiB, 61.2 MiB. */
export function bytes(n: number): string {
  if (!Number.isFinite(n)) return "-";
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export const pct = (x: number, digits = 2): string => (Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : "-");

export const ratio = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(2)}x` : "-");

/** A value with about four significant digits (codebook entries, scales). */
export function num(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e4 || a < 1e-3) return x.toExponential(3);
  return x.toPrecision(4);
}

export function shape(dims: readonly (number | string | null)[] | null): string {
  if (dims === null) return "?";
  return `[${dims.map((d) => (d === null ? "?" : String(d))).join(", ")}]`;
}
