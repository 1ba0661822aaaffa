/**
 * The centroid side of k-means' bounds: what each assignment pass needs to know about the centroids
 * besides their coordinates, rebuilt on the calling thread before every pass and shared (read-only)
 * with the pass's tasks (kmeans-assign.ts).
 *
 *  - Shifts: how far each centroid moved since the previous pass (an upper bound), the largest and
 *    second largest. Per point, the assignment tasks keep Hamerly's bounds, an upper bound u on the
 *    distance to its centroid and a lower bound l on the distance to every other one; a centroid shift
 *    moves u up by its own centroid's shift and l down by the largest shift of the others. Also half the
 *    distance from each centroid to its nearest other one (Hamerly's second test: u below it settles
 *    the point too), for k <= 1024.
 *  - Groups: the centroids cut into 2^L groups of at most `groupSize(d)` by a balanced k-d split (halves at
 *    the median of the widest coordinate), each with its bounding box. A point that its bounds do not
 *    settle is searched group by group: its own centroid's group first, then only the groups whose box
 *    is nearer than the best distance so far. The groups' centroids are laid out four to a block for
 *    the SIMD kernel (kmeans-kernel.ts).
 */
import { sharedArray } from "../parallel.js";
import { kernelRho, nearestKernel, SLACK } from "./kmeans-kernel.js";

export { F32_OUTWARD, SLACK } from "./kmeans-kernel.js";

/**
 * Centroids per group, at most: 128 for d <= 4, 64 above. Measured on standard normal data (the search's
 * CPU time at k = 256 and 4096, d = 4 and 8, for sizes 8 to 512): small groups prune more centroids but
 * cost a box test each; these were the fastest, by 10 to 60% over 32.
 */
export const groupSize = (d: number): number => (d <= 4 ? 128 : 64);
/** Largest k for which the centroids' nearest-neighbour distances (Hamerly's second test) are computed. */
const HALF_MAX_K = 1024;

export interface Shifts {
  max: number;
  at: number;
  second: number;
}

/**
 * Writes into `shift` how far each centroid moved from `previous` (float64) to `current` (float32), as
 * an upper bound, and returns the largest (with its centroid) and the second largest.
 */
export function centroidShifts(current: Float32Array, previous: Float64Array, shift: Float64Array, k: number, d: number): Shifts {
  const shifts: Shifts = { max: 0, at: -1, second: 0 };
  for (let j = 0; j < k; j++) {
    let s2 = 0;
    for (let t = 0; t < d; t++) {
      const v = current[j * d + t] - previous[j * d + t];
      s2 += v * v;
    }
    const s = Math.sqrt(s2) * (1 + SLACK);
    shift[j] = s;
    if (s > shifts.max) {
      shifts.second = shifts.max;
      shifts.max = s;
      shifts.at = j;
    } else if (s > shifts.second) shifts.second = s;
  }
  return shifts;
}

/**
 * The centroid groups of one pass, in shared memory (see the file comment). `blocks` [blockCount, d, 4]
 * holds the coordinates of four centroids per block, `laneCentroid` the centroid of each lane (-1 for
 * padding, whose coordinates are +Infinity), `groupStart` [groups + 1] each group's first block,
 * `boxes` [ceil(groups / 4), 2, d, 4] the boxes of four groups (lo, then hi; +Infinity for padding
 * groups), and `groupOf` each centroid's group.
 */
export class CentroidGroups {
  readonly groups: number;
  blockCount = 0;
  readonly blocks: Float32Array;
  readonly laneCentroid: Int32Array;
  readonly groupStart: Int32Array;
  readonly boxes: Float32Array;
  readonly groupOf: Int32Array;
  /** Half the distance from each centroid to its nearest other one, at most (a lower bound). */
  readonly half: Float64Array;
  private readonly order: Uint32Array;

  constructor(
    readonly k: number,
    readonly d: number,
  ) {
    let groups = 1;
    while (groups * groupSize(d) < k) groups *= 2;
    this.groups = groups;
    const maxBlocks = Math.ceil(k / 4) + groups;
    this.blocks = sharedArray(Float32Array, maxBlocks * d * 4);
    this.laneCentroid = sharedArray(Int32Array, maxBlocks * 4);
    this.groupStart = sharedArray(Int32Array, groups + 1);
    this.boxes = sharedArray(Float32Array, Math.ceil(groups / 4) * 2 * d * 4);
    this.groupOf = sharedArray(Int32Array, k);
    this.half = sharedArray(Float64Array, k);
    this.order = Uint32Array.from({ length: k }, (_, j) => j);
  }

  /** Regroups the centroids [k, d] and fills the blocks and boxes. */
  build(c: Float32Array): void {
    const { k, d, groups, order, blocks, laneCentroid, boxes } = this;
    // Balanced k-d split of `order` into `groups` ranges (deterministic: ties sort by index).
    const ranges: Array<[number, number]> = [];
    const keys = new Float64Array(k);
    const coord = new Float32Array(1);
    const bits = new Uint32Array(coord.buffer);
    const split = (lo: number, hi: number, parts: number): void => {
      if (parts === 1) {
        ranges.push([lo, hi]);
        return;
      }
      let dim = 0;
      let range = -1;
      for (let t = 0; t < d; t++) {
        let min = Infinity;
        let max = -Infinity;
        for (let r = lo; r < hi; r++) {
          const x = c[order[r] * d + t];
          if (x < min) min = x;
          if (x > max) max = x;
        }
        if (max - min > range) {
          range = max - min;
          dim = t;
        }
      }
      // Sorted by (coordinate, index) as one number: the float32's bits made order-preserving, times 2^21,
      // plus the index, which a Float64Array sorts natively (exact below 2^53: k <= 2^21).
      if (k > 2 ** 21) {
        order.subarray(lo, hi).sort((a, b) => c[a * d + dim] - c[b * d + dim] || a - b);
      } else {
        for (let r = lo; r < hi; r++) {
          const j = order[r];
          coord[0] = c[j * d + dim];
          const b = bits[0];
          keys[r] = (b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0) * 2 ** 21 + j;
        }
        const sorted = keys.subarray(lo, hi).sort();
        for (let r = lo; r < hi; r++) order[r] = sorted[r - lo] % 2 ** 21;
      }
      const mid = (lo + hi) >>> 1;
      split(lo, mid, parts / 2);
      split(mid, hi, parts / 2);
    };
    order.sort();
    split(0, k, groups);
    boxes.fill(Infinity);
    let block = 0;
    for (let g = 0; g < groups; g++) {
      const [lo, hi] = ranges[g];
      this.groupStart[g] = block;
      const boxAt = (g >> 2) * 2 * d * 4 + (g & 3);
      for (let t = 0; t < d; t++) {
        let min = Infinity;
        let max = -Infinity;
        for (let r = lo; r < hi; r++) {
          const x = c[order[r] * d + t];
          if (x < min) min = x;
          if (x > max) max = x;
        }
        boxes[boxAt + t * 4] = min;
        boxes[boxAt + (d + t) * 4] = max;
      }
      for (let r = lo; r < hi; r += 4, block++) {
        for (let q = 0; q < 4; q++) {
          const j = r + q < hi ? order[r + q] : -1;
          laneCentroid[block * 4 + q] = j;
          if (j >= 0) this.groupOf[j] = g;
          for (let t = 0; t < d; t++) blocks[(block * d + t) * 4 + q] = j >= 0 ? c[j * d + t] : Infinity;
        }
      }
    }
    this.groupStart[groups] = block;
    this.blockCount = block;
    this.nearestOthers(c);
  }

  /**
   * Fills `half`: a centroid's own nearest-centroid search finds itself (a1 = 0) and bounds every other
   * one from below by a2 (up to the kernel's relative error). Zero (no test) without the kernel or when
   * a2 is outside the range where that error bound holds.
   */
  private nearestOthers(c: Float32Array): void {
    const { k, d, half } = this;
    const kernel = nearestKernel(d);
    half.fill(0);
    // Beyond HALF_MAX_K the test settles next to nothing (measured at k = 4096) and the k searches cost
    // several ms per pass on the calling thread.
    if (!kernel || k < 2 || k > HALF_MAX_K) return;
    kernel.load(this, k);
    kernel.pts.set(c.subarray(0, k * d));
    for (let j = 0; j < k; j++) kernel.hints[j] = this.groupOf[j];
    kernel.run(k);
    const scale = 1 - 2 * kernelRho(d);
    for (let j = 0; j < k; j++) {
      const a2 = kernel.outA2[j];
      if (kernel.outA1[j] === 0 && a2 >= 2 ** -100 && a2 <= 1e37) half[j] = 0.5 * Math.sqrt(a2 * scale) * (1 - SLACK);
    }
  }
}
