/** A bar chart of counts (a codebook's usage: sub-vectors per codeword), in a theme colour, with a baseline. */
import { chartCanvas } from "./canvas.js";
import { themeColor } from "../shared/theme.js";

export function barChart(values: readonly number[], opts: { label: string; width?: number; height?: number }): HTMLCanvasElement {
  const width = opts.width ?? 320;
  const height = opts.height ?? 120;
  const { canvas, ctx } = chartCanvas(width, height, opts.label);
  const max = Math.max(1, ...values);
  const n = Math.max(1, values.length);
  const slot = width / n;
  ctx.fillStyle = themeColor("--vscode-charts-blue");
  values.forEach((v, i) => {
    const bh = (v / max) * (height - 2);
    ctx.fillRect(i * slot, height - 1 - bh, Math.max(1, slot - (slot > 4 ? 1 : 0)), bh);
  });
  ctx.fillStyle = themeColor("--vscode-editorWidget-border", "--vscode-foreground");
  ctx.fillRect(0, height - 1, width, 1);
  return canvas;
}
