/**
 * H += Xt Xt^T on a thread pool, while the caller goes on (capture runs the model on the next batch).
 *
 * `PooledGram` is a `GramEngine` whose `add` takes the chunk in shared memory (filled in a buffer it
 * lent, `chunkBuffer`, or else copied into one), queues its products as "calib.gram" tasks, one per
 * range of rows of H (`gramRowBlocks`: each touches only its rows), and returns: each range's chunks run
 * one after another, in the order they came, so every element of H gets the same sums in the same order
 * as with the engine run in the caller's thread; other ranges and other layers' H run on other threads at
 * once (a single large layer keeps every thread busy). The task uses the engine its thread registered
 * (`registerGramEngine`: the pool's threads register onnxruntime's, one intra-op thread each; the
 * TypeScript kernel by default), so the bytes are those of that engine in one thread. `flush` waits for
 * every queued product (call it before reading H) and rethrows the first error.
 *
 * At most `maxQueued` chunks wait or run at once (default 2 per thread): `add` waits for the oldest
 * beyond that, so the buffers held are those chunks and the one being filled, of a capture chunk's size
 * (8 MB) each (they replace the accumulators' own scratch).
 */
import { sharedArray, type ParallelMap } from "../parallel.js";
import { DEFAULT_CHUNK_VALUES, gramRowBlocks, jsGram, type GramEngine } from "./stats.js";

/** Chunks queued per thread of the pool (`PooledGram`'s default bound). */
const QUEUED_PER_THREAD = 2;

/**
 * Memory a pooled capture holds per thread of the pool: its queued chunk copies and the thread's private
 * copy for onnxruntime (which reads no shared memory), a chunk (`DEFAULT_CHUNK_VALUES` float64) each.
 */
export const POOLED_GRAM_BYTES_PER_THREAD = (QUEUED_PER_THREAD + 1) * 8 * DEFAULT_CHUNK_VALUES;

export interface GramTaskInput {
  H: Float32Array | Float64Array;
  off: number;
  /** [c, r], shared. */
  Xt: Float64Array;
  c: number;
  r: number;
  /** The rows of H to add (a range of `gramRowBlocks(c)`). */
  i0: number;
  i1: number;
}

let threadEngine: GramEngine = jsGram;

/** The engine "calib.gram" tasks run in this thread (the pool's threads register onnxruntime's). */
export function registerGramEngine(engine: GramEngine): void {
  threadEngine = engine;
}

/** The task: one chunk's products for a range of rows added into the shared H. */
export async function gramTask(input: GramTaskInput): Promise<Record<string, never>> {
  const { H, off, Xt, c, r, i0, i1 } = input;
  if (threadEngine.addRows) await threadEngine.addRows(H, off, Xt, c, r, i0, i1);
  else if (i0 === 0 && i1 === c) await threadEngine.add(H, off, Xt, c, r);
  else throw new Error(`the Gram engine "${threadEngine.name}" of this thread cannot add a range of rows`);
  return {};
}

export class PooledGram implements GramEngine {
  readonly name: string;
  /** The last queued product of each range of rows (by its first element) of each H: its chunks run in order. */
  private readonly chains = new Map<Float32Array | Float64Array, Map<number, Promise<void>>>();
  private readonly queued = new Set<Promise<void>>();
  private readonly spare: Float64Array[] = [];
  /** Buffers lent by chunkBuffer (the view handed out -> its whole buffer), until they come back to add. */
  private readonly lent = new WeakMap<Float64Array, Float64Array>();
  private error: unknown;
  /** Products queued before a dropping flush (an older generation) are skipped. */
  private generation = 0;

  constructor(
    private readonly map: ParallelMap,
    /** Names the engine the pool's threads run (for reports). */
    engineName: string,
    private readonly maxQueued = QUEUED_PER_THREAD * map.threads,
  ) {
    this.name = engineName;
  }

  async add(H: Float32Array | Float64Array, off: number, Xt: Float64Array, c: number, r: number): Promise<void> {
    this.rethrow();
    while (this.queued.size >= this.maxQueued) {
      await Promise.race(this.queued);
      this.rethrow();
    }
    const n = c * r;
    // A buffer lent by chunkBuffer is taken as it is; anything else is copied into one.
    let full = this.lent.get(Xt);
    let copy = Xt;
    if (full && Xt.length === n) this.lent.delete(Xt);
    else {
      full = this.buffer(n);
      copy = full.length === n ? full : full.subarray(0, n);
      copy.set(Xt.length === n ? Xt : Xt.subarray(0, n));
    }
    const ranges = gramRowBlocks(c);
    const chains = this.chains.get(H) ?? new Map<number, Promise<void>>();
    this.chains.set(H, chains);
    const generation = this.generation;
    const parts = ranges.map(([i0, i1]) => {
      const key = off + i0 * c;
      const input: GramTaskInput = { H, off, Xt: copy, c, r, i0, i1 };
      const part: Promise<void> = (chains.get(key) ?? Promise.resolve())
        .then(() => (this.error === undefined && this.generation === generation ? this.map.run("calib.gram", [input]) : undefined))
        .then(
          () => undefined,
          (e: unknown) => {
            this.error ??= e;
          },
        )
        .finally(() => {
          if (chains.get(key) === part) chains.delete(key);
        });
      chains.set(key, part);
      return part;
    });
    const done: Promise<void> = Promise.all(parts).then(() => {
      this.queued.delete(done);
      if (chains.size === 0 && this.chains.get(H) === chains) this.chains.delete(H);
      this.spare.push(full);
    });
    this.queued.add(done);
  }

  /**
   * Waits for every queued product; rethrows the first error. With `drop` (capture failed or was
   * cancelled: H will not be read), the products not started yet are skipped and only the running ones
   * are waited for.
   */
  async flush(opts: { drop?: boolean } = {}): Promise<void> {
    if (opts.drop) this.generation++;
    while (this.queued.size > 0) await Promise.all(this.queued);
    if (!opts.drop) return this.rethrow();
    // The engine serves the next capture afresh (a runner's waves share it).
    this.error = undefined;
  }

  private rethrow(): void {
    if (this.error !== undefined) throw this.error;
  }

  /** A shared buffer of n values for the caller to fill and pass to `add` (which then copies nothing). */
  chunkBuffer(n: number): Float64Array {
    const full = this.buffer(n);
    const view = full.length === n ? full : full.subarray(0, n);
    this.lent.set(view, full);
    return view;
  }

  /** A shared buffer of at least `n` values: a spare one when one is large enough (all are, but for chunks over the usual size). */
  private buffer(n: number): Float64Array {
    const i = this.spare.findIndex((b) => b.length >= n);
    if (i >= 0) return this.spare.splice(i, 1)[0]!;
    // A buffer too small for this chunk is dropped: the spares never pass maxQueued.
    if (this.spare.length > 0) this.spare.shift();
    return sharedArray(Float64Array, Math.max(n, DEFAULT_CHUNK_VALUES));
  }
}
