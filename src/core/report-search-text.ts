/**
 * The search's explanation as text (issue 12): per layer, the candidates on its convex hull of
 * (bits, damage) with their cost and damage, and the one chosen; the whole report JSON has every
 * candidate tried.
 */
import type { CompressConfig, SearchCandidate, SearchReport } from "./report.js";
import { table } from "./text-table.js";

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

/** "SSVQ k=16 d=4", "SSVQ searched for 16x", "SSVQ searched for 2 bits/weight", "INT8". */
export function methodText(c: Pick<CompressConfig, "mode" | "k" | "d" | "ratio" | "bits">): string {
  if (c.mode !== "ssvq" && c.mode !== "vq") return c.mode.toUpperCase();
  if (c.ratio !== undefined) return `${c.mode.toUpperCase()} searched per layer for ${c.ratio}x`;
  if (c.bits !== undefined) return `${c.mode.toUpperCase()} searched per layer for ${c.bits} bits/weight`;
  return `${c.mode.toUpperCase()} k=${c.k} d=${c.d}`;
}

export const candidateLabel = (c: Pick<SearchCandidate, "mode" | "k" | "d">): string =>
  c.mode === "ssvq" || c.mode === "vq" ? `${c.mode.toUpperCase()} k${c.k} d${c.d}` : c.mode === "fp" ? "full precision" : c.mode.toUpperCase();

export function renderSearch(s: SearchReport): string {
  const lines = [
    `search      ${s.family.toUpperCase()} per layer, target ${s.target.ratio !== undefined ? `${s.target.ratio}x whole-model tensors` : `${s.target.bits} bits/weight`}: ` +
      `${s.costBits.toLocaleString("en-US")} of ${s.budgetBits.toLocaleString("en-US")} bits; damage = sensitivity x (output error after k-means)^2, ` +
      `sensitivities on ${s.sensitivitySamples} calibration samples`,
  ];
  const rows: string[][] = [];
  for (const l of s.layers) {
    const shown = l.candidates.map((c, i) => ({ c, i })).filter(({ c, i }) => c.hull || i === l.pick);
    for (const [j, { c, i }] of shown.entries())
      rows.push([
        j === 0 ? l.name : "",
        j === 0 ? l.sensitivity.toPrecision(3) : "",
        j === 0 ? String(l.candidates.length) : "",
        `${i === l.pick ? "* " : "  "}${candidateLabel(c)}`,
        c.bitsPerWeight.toFixed(3),
        pct(c.outputError),
        c.damage.toPrecision(3),
      ]);
  }
  lines.push(table(["layer", "sensitivity", "tried", "hull points (* chosen)", "bits/weight", "output error", "damage"], rows, [false, true, true, false, true, true, true]));
  return lines.join("\n");
}
