/**
 * What a running compression has done so far, folded from the worker's events: the stage, the layer, the
 * stage's and the whole run's fraction, and every event in order (a panel opened late replays them).
 * No VS Code import: the status bar, the notification and the panel read it.
 */
import { formatBytes } from "../core/text-table.js";
import { isOutcome, type CompressJobSpec, type LayerPosition, type WorkerEvent } from "./protocol.js";

/** Runs shorter than this show no expected time (an estimate from a few seconds is noise). */
export const ETA_AFTER_SECONDS = 15;
/** Sources smaller than this show no byte count while quantizing. */
export const BYTES_SHOWN_FROM = 256 * 2 ** 20;

/** Relative cost of each stage, for the whole run's fraction (measured on the fixtures, roughly). */
const STAGE_WEIGHTS: Record<string, number> = {
  check: 0.1,
  capture: 2,
  search: 8,
  read: 0.2,
  quantize: 3,
  finetune: 6,
  write: 0.5,
  evaluate: 1.5,
  compare: 6,
  simulate: 0.5,
};

/** The stages that come once per wave when statistics come in waves (src/core/calib/waves.ts). */
const WAVE_STAGES = new Set(["capture", "quantize", "finetune"]);

/** The stages a job will go through, in order. */
export function plannedStages(spec: CompressJobSpec): string[] {
  const c = spec.config;
  // --ratio / --bits: each layer's point is searched on calibration data (random inputs without it).
  const search = !spec.dryRun && (c.mode === "ssvq" || c.mode === "vq") && (c.ratio !== undefined || c.bits !== undefined);
  const calib = !spec.dryRun && (spec.data?.calib !== undefined || c.finetune || search) && !c.sequential;
  return [
    "check",
    // The search captures its statistics itself (wave by wave), before the compression reads the model.
    ...(search ? ["search"] : []),
    "read",
    ...(calib ? ["capture"] : []),
    ...(spec.dryRun ? [] : ["quantize"]),
    ...(!spec.dryRun && c.finetune ? ["finetune"] : []),
    ...(spec.dryRun ? [] : ["write"]),
    ...(!spec.dryRun && spec.data?.eval ? ["evaluate"] : []),
    ...(!spec.dryRun && spec.compare ? ["compare"] : []),
    ...(spec.simulate ? ["simulate"] : []),
  ];
}

export class JobProgress {
  readonly stages: string[];
  stage = "starting";
  /** Fraction of the current stage, 0 to 1. */
  stageFraction = 0;
  layer: LayerPosition | undefined;
  /** Every event but the outcome, in order. */
  readonly events: WorkerEvent[] = [];
  warnings: string[] = [];
  /** Fine-tuning: iterations per layer, the layers quantized, and how far each layer's checks have come. */
  private readonly iters: number;
  private layersQuantized = 0;
  private readonly iterationByLayer = new Map<string, number>();
  /** Statistics in waves: the wave running and how many there are; each wave stage's furthest fraction. */
  private wave = { index: 0, count: 1 };
  private readonly blockFractions = new Map<string, number>();

  private readonly startedAt: number;

  /** `now` gives milliseconds (tests pass their own clock). */
  constructor(
    spec: CompressJobSpec,
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
    this.stages = plannedStages(spec);
    // Resolved by the argument parser whenever fine-tuning runs.
    this.iters = spec.config.finetuning?.iters ?? 0;
  }

  add(e: WorkerEvent): void {
    if (isOutcome(e)) return;
    this.events.push(e);
    if (e.type === "stage") {
      this.stage = e.stage;
      this.stageFraction = 0;
      this.layer = undefined;
    } else if (e.type === "wave") {
      this.wave = { index: e.index, count: Math.max(1, e.count) };
    } else if (e.type === "progress") {
      if (e.stage !== this.stage) {
        this.stage = e.stage;
        this.layer = undefined;
      }
      this.stageFraction = Math.max(this.stage === "finetune" ? this.stageFraction : 0, Math.min(1, Math.max(0, e.fraction)));
      if (e.layer) this.layer = e.layer;
      if (e.stage === "quantize" && e.layer) this.layersQuantized = e.layer.count;
    } else if (e.type === "freezeCheck" && this.stage === "finetune") {
      // Between layers' ends, fine-tuning moves with the checks: the layers' iterations done over all of them.
      this.iterationByLayer.set(e.layer, Math.max(this.iterationByLayer.get(e.layer) ?? 0, e.iteration));
      const layers = Math.max(this.layersQuantized, this.iterationByLayer.size);
      let done = 0;
      for (const it of this.iterationByLayer.values()) done += this.iters > 0 ? Math.min(1, it / this.iters) : 0;
      this.stageFraction = Math.max(this.stageFraction, Math.min(1, done / layers));
    } else if (e.type === "log" && e.level === "warning") this.warnings.push(e.text);
    if (WAVE_STAGES.has(this.stage)) this.blockFractions.set(this.stage, Math.max(this.blockFractions.get(this.stage) ?? 0, this.stageFraction));
  }

  /** The whole run's fraction, 0 to 1, from the stages' weights. */
  overallFraction(): number {
    const weight = (s: string) => STAGE_WEIGHTS[s] ?? 1;
    const total = this.stages.reduce((a, s) => a + weight(s), 0);
    const at = this.stages.indexOf(this.stage);
    if (at < 0 || total === 0) return 0;
    const before = this.stages.slice(0, at).reduce((a, s) => a + weight(s), 0);
    if (this.wave.count > 1 && WAVE_STAGES.has(this.stage)) {
      // The capture, quantize and finetune stages come once per wave, each reporting its fraction of the
      // whole run: the block is as far as its stages together.
      const start = this.stages.findIndex((s) => WAVE_STAGES.has(s));
      const head = this.stages.slice(0, start).reduce((a, s) => a + weight(s), 0);
      let block = 0;
      for (const s of this.stages) if (WAVE_STAGES.has(s)) block += weight(s) * (this.blockFractions.get(s) ?? 0);
      return Math.min(1, (head + block) / total);
    }
    return Math.min(1, (before + weight(this.stage) * this.stageFraction) / total);
  }

  /**
   * Seconds the run should still take, from its pace so far (elapsed x (1 - f) / f over the whole run's
   * fraction f); undefined before ETA_AFTER_SECONDS or 5% of the run.
   */
  remainingSeconds(): number | undefined {
    const elapsed = (this.now() - this.startedAt) / 1000;
    const f = this.overallFraction();
    if (elapsed < ETA_AFTER_SECONDS || f < 0.05 || f >= 1) return undefined;
    return (elapsed * (1 - f)) / f;
  }

  /** "1.20 GiB of 3.00 GiB" while a large model's layers are quantized, else undefined. */
  bytesText(): string | undefined {
    const b = this.stage === "quantize" ? this.layer?.bytes : undefined;
    if (!b || b.total < BYTES_SHOWN_FROM) return undefined;
    return `${formatBytes(b.done)} of ${formatBytes(b.total)}`;
  }

  /**
   * "finetune 3/12 conv2 45%": the stage, the layer, the stage's percentage; in long runs also the bytes
   * quantized of a large model and the expected time ("quantize 7/40 l6 17% · 1.05 GiB of 3.00 GiB · about
   * 4 min left").
   */
  text(): string {
    const layer = this.layer ? ` ${this.layer.index + 1}/${this.layer.count} ${this.layer.name}` : "";
    const pct = this.stage === "starting" ? "" : ` ${Math.floor(100 * this.stageFraction)}%`;
    const bytes = this.bytesText();
    const left = this.remainingSeconds();
    return `${this.stage}${layer}${pct}${bytes ? ` · ${bytes}` : ""}${left !== undefined ? ` · about ${formatDuration(left)} left` : ""}`;
  }
}

/** "40 s", "3 min", "1 h 20 min": rounded as an estimate should be. */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Math.max(5, Math.round(seconds / 5) * 5)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
