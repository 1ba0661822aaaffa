/**
 * A line chart on canvas: one or more series of (x, y) points against a shared x axis, with the axis
 * range labelled, light grid lines and a legend, in theme colours. Its numbers are always in a table
 * beside it (the caller's job); the canvas carries an aria-label saying what it plots.
 */
import { chartCanvas } from "./canvas.js";
import { h } from "../shared/dom.js";
import { themeColor } from "../shared/theme.js";

export interface LineSeries {
  label: string;
  /** A `--vscode-charts-*` variable. */
  color: string;
  points: readonly (readonly [number, number])[];
}

export interface LineChartOptions {
  label: string;
  xLabel: string;
  yFormat: (y: number) => string;
  width?: number;
  height?: number;
  /** Fix the y axis minimum (default: 0 or the data's minimum, whichever is lower). */
  yMin?: number;
  yMax?: number;
}

export function lineChart(series: readonly LineSeries[], o: LineChartOptions): HTMLElement {
  const width = o.width ?? 420;
  const height = o.height ?? 160;
  const { canvas, ctx } = chartCanvas(width, height, o.label);
  const pad = { left: 56, right: 10, top: 8, bottom: 22 };
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const fg = themeColor("--vscode-descriptionForeground", "--vscode-foreground");
  const grid = themeColor("--vscode-editorWidget-border", "--vscode-panel-border");
  ctx.font = `11px ${getComputedStyle(document.body).getPropertyValue("--vscode-font-family") || "sans-serif"}`;
  ctx.fillStyle = fg;
  if (xs.length === 0 || ys.length === 0) {
    ctx.fillText("no data yet", pad.left, height / 2);
    return h("div", { class: "chart-box" }, canvas);
  }
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  const y0 = o.yMin ?? Math.min(0, ...ys);
  let y1 = o.yMax ?? Math.max(...ys);
  if (y1 <= y0) y1 = y0 + 1;
  const px = (x: number) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const py = (y: number) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  // Grid and axis labels: bottom, middle, top.
  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  for (const t of [0, 0.5, 1]) {
    const y = y0 + t * (y1 - y0);
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(py(y)) + 0.5);
    ctx.lineTo(width - pad.right, Math.round(py(y)) + 0.5);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillText(o.yFormat(y), pad.left - 6, py(y));
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.fillText(String(Math.round(x0)), pad.left, height - 6);
  ctx.textAlign = "right";
  ctx.fillText(`${Math.round(x1)} ${o.xLabel}`, width - pad.right, height - 6);
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    ctx.strokeStyle = themeColor(s.color);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.stroke();
    if (pts.length <= 60) for (const [x, y] of pts) ctx.fillRect(px(x) - 1.5, py(y) - 1.5, 3, 3);
  }
  const legend = series.length > 1 ? h("div", { class: "legend" }, series.map((s) => h("span", { class: "legend-item", "data-color": s.color }, h("span", { class: `swatch ${swatchClass(s.color)}` }), s.label))) : null;
  return h("div", { class: "chart-box" }, canvas, legend);
}

/** CSS classes for legend swatches (colours come from the stylesheet: no inline styles under the CSP). */
export function swatchClass(color: string): string {
  return `swatch-${color.replace(/^--vscode-charts-/, "")}`;
}
