import assert from "node:assert/strict";
import { after, afterEach, describe, it } from "node:test";
import { Rng } from "../src/core/rng.js";
import { dropRecycled, giveBackShared, RECYCLE_MAX_BYTES, recycledBytes, takeShared } from "../src/core/shared-recycle.js";
import { kmeans, Lloyd } from "../src/core/ssvq/kmeans.js";
import { createThreadPool } from "../src/io/pool.js";

const pool = createThreadPool(2);
after(() => pool.close());
afterEach(() => dropRecycled());

describe("shared memory kept for reuse", () => {
  it("lends a buffer given back to the next request of at least half its size, and a new one otherwise", () => {
    const a = takeShared(Float32Array, 1000);
    assert.ok(a.buffer instanceof SharedArrayBuffer);
    assert.equal(a.length, 1000);
    a.fill(7);
    giveBackShared(a);
    assert.equal(recycledBytes(), 4000);
    const small = takeShared(Uint8Array, 100); // far smaller: a new buffer
    assert.notEqual(small.buffer, a.buffer);
    const b = takeShared(Uint32Array, 600); // 2400 bytes: the 4000-byte buffer, not cleared
    assert.equal(b.buffer, a.buffer);
    assert.equal(b.length, 600);
    assert.equal(new Float32Array(b.buffer)[0], 7);
    assert.equal(recycledBytes(), 0);
    const c = takeShared(Float32Array, 1000); // the only free one is lent: a new buffer
    assert.notEqual(c.buffer, a.buffer);
  });

  it("keeps at most RECYCLE_MAX_BYTES, the most recently given back, and lets all go on request", () => {
    const big = RECYCLE_MAX_BYTES / 4;
    const arrays = Array.from({ length: 5 }, () => takeShared(Uint8Array, big));
    giveBackShared(...arrays);
    assert.equal(recycledBytes(), 4 * big);
    // The first given back was dropped: only the last four are lent again.
    const again = Array.from({ length: 4 }, () => takeShared(Uint8Array, big));
    assert.deepEqual(new Set(again.map((x) => x.buffer)), new Set(arrays.slice(1).map((x) => x.buffer)));
    giveBackShared(again[0], again[0], undefined); // twice, and nothing: kept once
    assert.equal(recycledBytes(), big);
    dropRecycled();
    assert.equal(recycledBytes(), 0);
  });

  it("never lends what a k-means run handed out: results stay intact through later runs", async () => {
    const [n, d, k] = [20000, 8, 16];
    const first = new Rng(1).fillNormal(new Float32Array(n * d));
    const second = new Rng(2).fillNormal(new Float32Array(n * d)).map((x) => 5 * x);
    const a = await kmeans(first, n, d, k, { seed: 1, maxIters: 5, map: pool });
    const kept = a.assignments.slice();
    assert.ok(recycledBytes() > 0, "the run gave its copy of the points and its bounds back");
    for (let r = 0; r < 3; r++) await kmeans(second, n, d, k, { seed: r, maxIters: 5, map: pool });
    assert.deepEqual(a.assignments, kept);
    // And the same bytes as a run that found nothing to reuse.
    dropRecycled();
    const fresh = await kmeans(first, n, d, k, { seed: 1, maxIters: 5, map: pool });
    assert.deepEqual(fresh.assignments, kept);
    assert.deepEqual(fresh.centroids, a.centroids);
    assert.equal(fresh.sse, a.sse);
  });

  it("a finished Lloyd run refuses to finish twice", async () => {
    const points = new Rng(3).fillNormal(new Float32Array(4000 * 4));
    const lloyd = new Lloyd(points, 4000, 4, 8, points.slice(0, 32), pool);
    await lloyd.assign();
    lloyd.finish();
    assert.throws(() => lloyd.finish(), /twice/);
  });
});
