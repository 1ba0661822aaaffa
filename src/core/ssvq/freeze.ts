/**
 * Progressive freezing of SSVQ's learnable signs (DESIGN.md section 1, the paper's "improved iterative
 * freezing").
 *
 * Per weight: an exponential moving average of its sign flips (ema = m * ema + (1 - m) * flipped, once per
 * iteration, flipped = 1 when sign(L) changed in that iteration) and a balance of the iterations it spent
 * negative minus the iterations it spent positive. Every F iterations (`check`), every still-free weight
 * whose flip EMA exceeds the threshold is frozen for good; the threshold decays on a cosine from tau0 at
 * iteration 0 to tau1 at the last iteration. A frozen sign takes the majority vote of its history (ties:
 * the sign it has at the check), and from then on `observe` ignores it: the caller stops its latent and
 * optimizer state.
 *
 * Weights are indexed 0..n-1 in whatever order the caller chooses (fine-tuning uses the unpadded row
 * matrix [rows, cols]). Sign bits follow VqQuantized.signs: 1 = negative, zero counts as positive.
 */
import { InputError } from "../errors.js";

export interface FreezeOptions {
  /** F: check (and freeze) every F iterations. */
  every: number;
  /** tau0: the flip-EMA threshold at iteration 0. */
  thresholdFrom: number;
  /** tau1: the threshold at the last iteration. */
  thresholdTo: number;
  /** m: momentum of the flip EMA, in [0, 1). */
  momentum: number;
}

/** tau(t) = tau1 + (tau0 - tau1) (1 + cos(pi t / iters)) / 2: tau0 at t = 0, tau1 at t = iters. */
export function freezeThreshold(iteration: number, iters: number, from: number, to: number): number {
  const progress = iters > 0 ? Math.min(1, Math.max(0, iteration / iters)) : 1;
  return to + (from - to) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

export function validateFreezeOptions(o: FreezeOptions): void {
  if (!Number.isInteger(o.every) || o.every < 1) throw new InputError(`freeze every must be an integer >= 1, not ${o.every}`);
  for (const [name, v] of [["from", o.thresholdFrom], ["to", o.thresholdTo]] as const) {
    if (!(v >= 0 && v <= 1)) throw new InputError(`freeze threshold ${name} must be in [0, 1], not ${v}`);
  }
  if (!(o.momentum >= 0 && o.momentum < 1)) throw new InputError(`freeze momentum must be in [0, 1), not ${o.momentum}`);
}

/** What one freezing check did. */
export interface FreezeStep {
  /** The threshold used. */
  threshold: number;
  /** Sign flips (over all weights free at the time) observed since the previous check. */
  flips: number;
  /** Weights frozen by this check. */
  newlyFrozen: number;
  /** Of which frozen at a value different from the sign they had at the check (majority vote). */
  flippedByVote: number;
  /** Frozen weights after the check. */
  frozen: number;
  /** frozen / n. */
  frozenFraction: number;
}

export class SignFreezer {
  readonly n: number;
  /** Current sign bit of every weight (1 = negative); frozen weights keep their frozen value. */
  readonly negative: Uint8Array;
  /** 1 = frozen for good. */
  readonly frozen: Uint8Array;
  /** The flip EMA of every weight (stops changing once frozen). */
  readonly flipEma: Float64Array;
  /** Iterations spent negative minus iterations spent positive (stops changing once frozen). */
  readonly balance: Int32Array;
  private readonly momentum: number;
  private frozenCount = 0;
  private flipsSinceCheck = 0;

  constructor(initialNegative: Uint8Array, momentum: number) {
    if (!(momentum >= 0 && momentum < 1)) throw new InputError(`freeze momentum must be in [0, 1), not ${momentum}`);
    this.n = initialNegative.length;
    this.negative = Uint8Array.from(initialNegative);
    this.frozen = new Uint8Array(this.n);
    this.flipEma = new Float64Array(this.n);
    this.balance = new Int32Array(this.n);
    this.momentum = momentum;
  }

  get frozenTotal(): number {
    return this.frozenCount;
  }

  /**
   * Records one iteration: `negative` holds every weight's sign bit after the update (entries of frozen
   * weights are ignored). Returns the flips among free weights in this iteration.
   */
  observe(negative: Uint8Array): number {
    const m = this.momentum;
    const a = 1 - m;
    const { n, frozen, flipEma, balance } = this;
    const current = this.negative;
    let flips = 0;
    for (let i = 0; i < n; i++) {
      if (frozen[i]) continue;
      const s = negative[i]!;
      if (s !== current[i]) {
        flips++;
        current[i] = s;
        flipEma[i] = m * flipEma[i]! + a;
      } else {
        flipEma[i] = m * flipEma[i]!;
      }
      balance[i] += s ? 1 : -1;
    }
    this.flipsSinceCheck += flips;
    return flips;
  }

  /**
   * Freezes every free weight whose flip EMA exceeds `threshold`, at its majority sign. The caller then
   * reads `negative` for the frozen values (and stops those weights' updates).
   */
  check(threshold: number): FreezeStep {
    let newlyFrozen = 0;
    let flippedByVote = 0;
    for (let i = 0; i < this.n; i++) {
      if (this.frozen[i] || !(this.flipEma[i]! > threshold)) continue;
      this.frozen[i] = 1;
      newlyFrozen++;
      const b = this.balance[i]!;
      const vote = b > 0 ? 1 : b < 0 ? 0 : this.negative[i]!;
      if (vote !== this.negative[i]) flippedByVote++;
      this.negative[i] = vote;
    }
    this.frozenCount += newlyFrozen;
    const flips = this.flipsSinceCheck;
    this.flipsSinceCheck = 0;
    return {
      threshold,
      flips,
      newlyFrozen,
      flippedByVote,
      frozen: this.frozenCount,
      frozenFraction: this.n > 0 ? this.frozenCount / this.n : 0,
    };
  }

  /** Flips observed since the last check, without checking (for a final record). */
  takeFlips(): number {
    const f = this.flipsSinceCheck;
    this.flipsSinceCheck = 0;
    return f;
  }
}
