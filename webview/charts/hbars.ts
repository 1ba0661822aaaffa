/**
 * Grouped horizontal bars: one group per row (a layer), one bar per series (a number format), lengths on a
 * shared scale, the row's label on the left. Theme colours; the numbers are in a table beside it.
 */
import { chartCanvas } from "./canvas.js";
import { h } from "../shared/dom.js";
import { themeColor } from "../shared/theme.js";
import { swatchClass } from "./line.js";

export interface BarGroup {
  label: string;
  values: readonly number[];
}

export function groupedBars(groups: readonly BarGroup[], series: readonly { label: string; color: string }[], o: { label: string; width?: number; barHeight?: number; format: (v: number) => string }): HTMLElement {
  const width = o.width ?? 560;
  const bar = o.barHeight ?? 4;
  const gap = 8;
  const labelWidth = 150;
  const rowHeight = series.length * bar + gap;
  const height = Math.max(20, groups.length * rowHeight + 18);
  const { canvas, ctx } = chartCanvas(width, height, o.label);
  const max = Math.max(1e-30, ...groups.flatMap((g) => g.values));
  const fg = themeColor("--vscode-descriptionForeground", "--vscode-foreground");
  ctx.font = `11px ${getComputedStyle(document.body).getPropertyValue("--vscode-font-family") || "sans-serif"}`;
  const colors = series.map((s) => themeColor(s.color));
  groups.forEach((g, i) => {
    const top = i * rowHeight + gap / 2;
    ctx.fillStyle = fg;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    const text = g.label.length > 24 ? `${g.label.slice(0, 23)}…` : g.label;
    ctx.fillText(text, labelWidth - 8, top + (series.length * bar) / 2);
    g.values.forEach((v, j) => {
      ctx.fillStyle = colors[j]!;
      ctx.fillRect(labelWidth, top + j * bar, Math.max(1, (v / max) * (width - labelWidth - 70)), bar - 1);
    });
  });
  ctx.fillStyle = fg;
  ctx.textAlign = "right";
  ctx.textBaseline = "alphabetic";
  ctx.fillText(`longest ${o.format(max)}`, width - 4, height - 4);
  const legend = h("div", { class: "legend" }, series.map((s) => h("span", { class: "legend-item" }, h("span", { class: `swatch ${swatchClass(s.color)}` }), s.label)));
  return h("div", { class: "chart-box" }, canvas, legend);
}
