/**
 * A codebook as a heatmap: k rows (codewords) by d columns. Non-negative codebooks (SSVQ) shade one
 * theme colour by magnitude; signed ones (VQ) use a second colour for negative values. Up to 512 pixel
 * rows: a larger k shows every (k / rows)-th codeword per pixel row. The numbers are in a table beside it.
 */
import { chartCanvas } from "./canvas.js";
import { rgb, themeColor } from "../shared/theme.js";

export interface HeatmapOptions {
  label: string;
  cellWidth?: number;
  maxHeight?: number;
}

export function codebookHeatmap(codebook: readonly (readonly number[])[], opts: HeatmapOptions): HTMLCanvasElement {
  const k = codebook.length;
  const d = codebook[0]?.length ?? 0;
  const cellWidth = opts.cellWidth ?? Math.max(12, Math.min(40, Math.floor(320 / Math.max(1, d))));
  const rowHeight = Math.max(1, Math.min(16, Math.floor((opts.maxHeight ?? 320) / Math.max(1, k))));
  const height = Math.max(1, Math.min(opts.maxHeight ?? 512, k * rowHeight));
  const width = Math.max(1, d * cellWidth);
  const { canvas, ctx } = chartCanvas(width, height, opts.label);
  let max = 0;
  for (const row of codebook) for (const v of row) max = Math.max(max, Math.abs(v));
  const pos = rgb(themeColor("--vscode-charts-blue"));
  const neg = rgb(themeColor("--vscode-charts-orange"));
  const bg = rgb(themeColor("--vscode-editor-background", "--vscode-sideBar-background"));
  const mix = (c: [number, number, number], t: number) => `rgb(${c.map((x, i) => Math.round(bg[i]! + (x - bg[i]!) * t)).join(",")})`;
  const pxRow = height / k;
  for (let j = 0; j < k; j++) {
    const y0 = Math.floor(j * pxRow);
    const y1 = Math.max(y0 + 1, Math.floor((j + 1) * pxRow));
    if (pxRow < 1 && Math.floor((j - 1) * pxRow) === y0 && j > 0) continue;
    for (let c = 0; c < d; c++) {
      const v = codebook[j]![c]!;
      const t = max > 0 ? Math.abs(v) / max : 0;
      ctx.fillStyle = mix(v < 0 ? neg : pos, t);
      ctx.fillRect(c * cellWidth, y0, cellWidth - (cellWidth > 6 ? 1 : 0), y1 - y0);
    }
  }
  return canvas;
}
