/** A canvas sized in CSS pixels and drawn at the screen's pixel ratio, with an accessible label. */
import { h } from "../shared/dom.js";

export function chartCanvas(width: number, height: number, label: string): { canvas: HTMLCanvasElement; ctx: CanvasRenderingContext2D } {
  const ratio = Math.max(1, Math.min(3, window.devicePixelRatio || 1));
  const canvas = h("canvas", { role: "img", "aria-label": label, width: Math.round(width * ratio), height: Math.round(height * ratio), class: "chart" });
  // Sizes via CSSOM (not a style attribute: the CSP allows no inline styles).
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d")!;
  ctx.scale(ratio, ratio);
  return { canvas, ctx };
}
