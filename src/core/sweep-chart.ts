/**
 * The accuracy (or fidelity) against whole-model size frontier of `ssvq sweep` as a standalone SVG and
 * as a text table. Pure: data in, text out (the panel can draw the same points later).
 */
import { table } from "./text-table.js";

export interface ChartPoint {
  method: string;
  target?: number;
  reached: boolean;
  tensorRatio?: number;
  bitsPerWeight?: number;
  accuracy?: number;
  outputError?: number;
  top1Agreement?: number;
  finetuned: boolean;
  seconds?: number;
  reason?: string;
}

export interface ChartInput {
  model: string;
  metric: "accuracy" | "top1Agreement" | "fidelity";
  original: { accuracy?: number };
  points: readonly ChartPoint[];
  notes: readonly string[];
}

const METRIC_LABEL = { accuracy: "top-1 accuracy", top1Agreement: "top-1 agreement with the original", fidelity: "1 - relative output error" } as const;
const COLOURS: Record<string, string> = { ssvq: "#d62728", vq: "#1f77b4", int8: "#2ca02c", int4: "#9467bd" };

const yOf = (p: ChartPoint, metric: ChartInput["metric"]): number | undefined =>
  metric === "accuracy" ? p.accuracy : metric === "top1Agreement" ? p.top1Agreement : p.outputError === undefined ? undefined : 1 - p.outputError;

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Round steps for an axis spanning `span`. */
function step(span: number, ticks: number): number {
  const raw = span / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

export function sweepSvg(r: ChartInput, title = ""): string {
  const W = 720;
  const H = 440;
  const m = { l: 70, r: 150, t: 40, b: 55 };
  const pts = r.points.filter((p) => p.reached && p.tensorRatio !== undefined && yOf(p, r.metric) !== undefined);
  const xs = pts.map((p) => p.tensorRatio!);
  const ys = pts.map((p) => yOf(p, r.metric)! * 100);
  if (r.metric === "accuracy" && r.original.accuracy !== undefined) ys.push(r.original.accuracy * 100);
  const xMax = Math.max(2, ...xs) * 1.05;
  const xMin = 0;
  let yMin = Math.min(...ys, 100);
  let yMax = Math.max(...ys, 0);
  if (!Number.isFinite(yMin) || !Number.isFinite(yMax) || ys.length === 0) {
    yMin = 0;
    yMax = 100;
  }
  const pad = Math.max(0.5, (yMax - yMin) * 0.08);
  yMin -= pad;
  yMax += pad;
  const px = (x: number) => m.l + ((x - xMin) / (xMax - xMin)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((y - yMin) / (yMax - yMin)) * (H - m.t - m.b);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="22" font-size="14" font-weight="bold">${esc(title || `${METRIC_LABEL[r.metric][0]!.toUpperCase()}${METRIC_LABEL[r.metric].slice(1)} against size: ${r.model.split(/[\\/]/).pop()}`)}</text>`,
  ];
  const xs0 = step(xMax - xMin, 8);
  for (let x = 0; x <= xMax + 1e-9; x += xs0) {
    out.push(`<line x1="${px(x).toFixed(1)}" y1="${m.t}" x2="${px(x).toFixed(1)}" y2="${H - m.b}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${px(x).toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle">${+x.toFixed(2)}x</text>`);
  }
  const ys0 = step(yMax - yMin, 6);
  for (let y = Math.ceil(yMin / ys0) * ys0; y <= yMax + 1e-9; y += ys0) {
    out.push(`<line x1="${m.l}" y1="${py(y).toFixed(1)}" x2="${W - m.r}" y2="${py(y).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 6}" y="${(py(y) + 4).toFixed(1)}" text-anchor="end">${+y.toFixed(2)}%</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#888"/>`);
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 14}" text-anchor="middle">whole-model size reduction (tensor-only ratio)</text>`);
  out.push(`<text transform="translate(18 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(METRIC_LABEL[r.metric])}</text>`);
  if (r.metric === "accuracy" && r.original.accuracy !== undefined) {
    const y = py(r.original.accuracy * 100).toFixed(1);
    out.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="#444" stroke-dasharray="5 4"/>`);
    out.push(`<text x="${W - m.r - 6}" y="${(Number(y) - 5).toFixed(1)}" text-anchor="end" fill="#444">FP32 ${(r.original.accuracy * 100).toFixed(2)}%</text>`);
  }
  const methods = [...new Set(r.points.map((p) => p.method))];
  for (const [i, method] of methods.entries()) {
    const colour = COLOURS[method] ?? "#555";
    const own = pts.filter((p) => p.method === method).sort((a, b) => a.tensorRatio! - b.tensorRatio!);
    if (own.length > 1)
      out.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${own.map((p) => `${px(p.tensorRatio!).toFixed(1)},${py(yOf(p, r.metric)! * 100).toFixed(1)}`).join(" ")}"/>`);
    for (const p of own)
      out.push(
        `<circle cx="${px(p.tensorRatio!).toFixed(1)}" cy="${py(yOf(p, r.metric)! * 100).toFixed(1)}" r="4" fill="${p.finetuned ? colour : "white"}" stroke="${colour}" stroke-width="2">` +
          `<title>${esc(`${method.toUpperCase()}${p.target ? ` target ${p.target}x` : ""}: ${p.tensorRatio!.toFixed(2)}x, ${(yOf(p, r.metric)! * 100).toFixed(2)}%${p.finetuned ? ", fine-tuned" : ""}`)}</title></circle>`,
      );
    const ly = m.t + 20 + i * 20;
    out.push(`<line x1="${W - m.r + 6}" y1="${ly}" x2="${W - m.r + 26}" y2="${ly}" stroke="${colour}" stroke-width="2"/>`);
    out.push(`<text x="${W - m.r + 32}" y="${ly + 4}">${esc(method === "ssvq" || method === "vq" ? `${method.toUpperCase()} (searched)` : method.toUpperCase())}</text>`);
  }
  const ny = m.t + 30 + methods.length * 20;
  out.push(`<text x="${W - m.r + 6}" y="${ny}" font-size="10">filled: fine-tuned</text>`);
  out.push(`<text x="${W - m.r + 6}" y="${ny + 14}" font-size="10">open: not fine-tuned</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}

export function sweepTable(r: ChartInput): string {
  const pct = (x: number | undefined) => (x === undefined ? "-" : `${(100 * x).toFixed(2)}%`);
  const rows = r.points.map((p) => [
    p.method.toUpperCase(),
    p.target !== undefined ? `${p.target}x` : "-",
    p.reached ? `${p.tensorRatio!.toFixed(2)}x` : "not reached",
    p.reached ? p.bitsPerWeight!.toFixed(3) : "-",
    ...(r.metric === "accuracy" ? [pct(p.accuracy)] : []),
    pct(p.top1Agreement),
    pct(p.outputError),
    p.reached ? (p.finetuned ? "yes" : "no") : "-",
    p.seconds !== undefined ? p.seconds.toFixed(1) : "-",
  ]);
  const lines = [
    `${r.model}${r.metric === "accuracy" && r.original.accuracy !== undefined ? `: FP32 accuracy ${pct(r.original.accuracy)}` : ""}`,
    "",
    table(
      ["method", "target", "tensor ratio", "bits/weight", ...(r.metric === "accuracy" ? ["accuracy"] : []), "top-1 agreement", "output error", "fine-tuned", "seconds"],
      rows,
      [false, true, true, true, true, true, true, false, true],
    ),
    "",
    ...r.notes.map((n) => `- ${n}`),
  ];
  const missed = r.points.filter((p) => !p.reached && p.reason);
  const reasons = [...new Set(missed.map((p) => `${p.method.toUpperCase()}: ${p.reason}`))];
  for (const why of reasons) lines.push(`- not reached: ${why}`);
  return lines.join("\n");
}
