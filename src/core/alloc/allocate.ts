/**
 * Rate-distortion allocation (issue 12): each layer has candidate operating points, each with an exact
 * cost in stored bits and a damage (its expected contribution to the model's loss); pick one per layer so
 * that the total cost is at most the budget and the total damage is as small as possible.
 *
 * The method is the Lagrangian one, done greedily: per layer, the candidates on the lower convex hull of
 * (cost, damage); every layer starts at its cheapest candidate; then the hull step that buys the most
 * damage per bit, over all layers, is taken while it fits the remaining budget (a step that does not fit
 * ends that layer's climb; the others go on). That is the Lagrangian sweep (lambda from large to small),
 * with the leftover budget filled. A last pass swaps single layers to any candidate (on the hull or not)
 * that lowers the damage within what is left. Integer costs, so the budget is met exactly: the total is
 * never above it. Pure arithmetic with ties broken by layer and candidate order: deterministic.
 */
import { InputError } from "../errors.js";

export interface AllocCandidate {
  /** Stored bits, an integer (as the report counts them). */
  cost: number;
  /** Expected increase of the model's loss; >= 0. */
  damage: number;
}

export interface AllocLayer {
  name: string;
  candidates: readonly AllocCandidate[];
}

export interface Allocation {
  /** Per layer: the index of the chosen candidate. */
  picks: number[];
  /** Per layer: indices of its candidates on the lower convex hull, cheapest first. */
  hulls: number[][];
  cost: number;
  damage: number;
  budget: number;
  /** Damage per bit of the last hull step taken (the Lagrange multiplier reached); 0 when none was taken. */
  lambda: number;
}

/** Candidates not beaten by a cheaper (or equally cheap) one, cheapest first; ties: the lower index. */
export function paretoFront(c: readonly AllocCandidate[]): number[] {
  const order = c.map((_, i) => i).sort((a, b) => c[a]!.cost - c[b]!.cost || c[a]!.damage - c[b]!.damage || a - b);
  const front: number[] = [];
  let best = Infinity;
  for (const i of order)
    if (c[i]!.damage < best) {
      front.push(i);
      best = c[i]!.damage;
    }
  return front;
}

/** The lower convex hull of (cost, damage) over the Pareto front, cheapest first. */
export function lowerHull(c: readonly AllocCandidate[]): number[] {
  const hull: number[] = [];
  for (const i of paretoFront(c)) {
    while (hull.length >= 2) {
      const a = c[hull[hull.length - 2]!]!;
      const b = c[hull[hull.length - 1]!]!;
      const p = c[i]!;
      // b is above the segment a-p (or on it): not on the lower hull.
      const cross = (b.cost - a.cost) * (p.damage - a.damage) - (b.damage - a.damage) * (p.cost - a.cost);
      if (cross <= 0) hull.pop();
      else break;
    }
    hull.push(i);
  }
  return hull;
}

function check(layers: readonly AllocLayer[], budget: number): void {
  if (!Number.isFinite(budget)) throw new InputError(`the budget must be a finite number of bits, not ${budget}`);
  for (const l of layers) {
    if (l.candidates.length === 0) throw new InputError(`layer ${l.name} has no candidate operating point`);
    for (const c of l.candidates) {
      if (!Number.isInteger(c.cost) || c.cost < 0) throw new Error(`layer ${l.name}: a candidate's cost must be a whole number of bits, not ${c.cost}`);
      if (!(c.damage >= 0)) throw new Error(`layer ${l.name}: a candidate's damage must be a number >= 0, not ${c.damage}`);
    }
  }
}

/** The smallest total cost any allocation can have (every layer at its cheapest candidate). */
export function minimumCost(layers: readonly AllocLayer[]): number {
  return layers.reduce((a, l) => a + Math.min(...l.candidates.map((c) => c.cost)), 0);
}

/**
 * One candidate per layer, total cost <= `budget` (bits), total damage as small as the method finds.
 * Throws InputError when even the cheapest candidates do not fit.
 */
export function allocate(layers: readonly AllocLayer[], budget: number): Allocation {
  check(layers, budget);
  const hulls = layers.map((l) => lowerHull(l.candidates));
  const at = hulls.map(() => 0);
  const picks = hulls.map((h) => h[0]!);
  let cost = 0;
  for (const [i, l] of layers.entries()) cost += l.candidates[picks[i]!]!.cost;
  if (cost > budget)
    throw new InputError(
      `the target is too small: even the cheapest operating point of every layer needs ${cost} bits (${(cost / 8).toFixed(0)} bytes), above the budget of ${Math.floor(budget)} bits`,
    );
  let lambda = 0;
  const blocked = hulls.map(() => false);
  for (;;) {
    let best = -1;
    let bestSlope = -Infinity;
    for (const [i, h] of hulls.entries()) {
      if (blocked[i] || at[i]! + 1 >= h.length) continue;
      const cur = layers[i]!.candidates[h[at[i]!]!]!;
      const next = layers[i]!.candidates[h[at[i]! + 1]!]!;
      const dc = next.cost - cur.cost;
      if (cost + dc > budget) {
        blocked[i] = true;
        continue;
      }
      const slope = (cur.damage - next.damage) / dc;
      if (slope > bestSlope) {
        bestSlope = slope;
        best = i;
      }
    }
    if (best < 0) break;
    const h = hulls[best]!;
    cost += layers[best]!.candidates[h[at[best]! + 1]!]!.cost - layers[best]!.candidates[h[at[best]!]!]!.cost;
    at[best]!++;
    picks[best] = h[at[best]!]!;
    lambda = bestSlope;
  }
  // Fill what is left: the single swap that lowers the damage most, any candidate, while one fits.
  for (let round = 0; round < 4 * layers.length + 16; round++) {
    let gain = 0;
    let swap: [number, number] | undefined;
    for (const [i, l] of layers.entries()) {
      const cur = l.candidates[picks[i]!]!;
      for (const [j, c] of l.candidates.entries()) {
        if (cost - cur.cost + c.cost > budget) continue;
        const g = cur.damage - c.damage;
        if (g > gain) {
          gain = g;
          swap = [i, j];
        }
      }
    }
    if (!swap) break;
    const [i, j] = swap;
    cost += layers[i]!.candidates[j]!.cost - layers[i]!.candidates[picks[i]!]!.cost;
    picks[i] = j;
  }
  const damage = layers.reduce((a, l, i) => a + l.candidates[picks[i]!]!.damage, 0);
  return { picks, hulls, cost, damage, budget, lambda };
}
