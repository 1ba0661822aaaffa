/** Plain-text tables and numbers for the command line. */

export function table(headers: string[], rows: (string | number)[][], rightAlign: boolean[] = []): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((v, c) => (rightAlign[c] ? v.padStart(widths[c]!) : v.padEnd(widths[c]!)))
      .join("  ")
      .trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...cells.slice(1).map(line)].join("\n");
}

export const int = (n: number): string => n.toLocaleString("en-US");

export function shape(dims: readonly (number | string | null)[] | null): string {
  if (dims === null) return "?";
  return `[${dims.map((d) => (d === null ? "?" : String(d))).join(", ")}]`;
}
