/**
 * Shared memory kept for reuse between runs that need the same sizes again (k-means, layer after layer:
 * its copy of the points, its bounds, its assignments).
 *
 * A new SharedArrayBuffer is zero pages the kernel hands out on first touch; on this project's test machines
 * (Firecracker virtual machines) that first touch costs about 12 us a 4 KiB page, 25 ms to copy 8 MB into
 * fresh memory against 1 ms into memory touched before, more than k-means' ten passes over the same
 * points take. Buffers given back here are lent out again for requests of at least half their size;
 * at most RECYCLE_MAX_BYTES are kept, and all are let go after RECYCLE_IDLE_MS without a request, so
 * what a run of quantization keeps does not stay through the stages after it.
 *
 * A lent array's contents are whatever the last user left: callers write every element before reading.
 */

/** At most this many bytes of free buffers are kept (the most recently given back first). */
export const RECYCLE_MAX_BYTES = 128 * 2 ** 20;
/** Free buffers are let go this long after the last take or give-back. */
export const RECYCLE_IDLE_MS = 2000;

interface SharedTypedArrayOf<T> {
  new (buffer: SharedArrayBuffer, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}

/** Free buffers, the most recently given back last. */
const free: SharedArrayBuffer[] = [];
let freeBytes = 0;
let idleTimer: ReturnType<typeof setTimeout> | undefined;

/**
 * A typed array of `length` elements in shared memory: a free buffer of at least its size and at most
 * twice it (the smallest such), or a new one. Its contents are not cleared.
 */
export function takeShared<T>(type: SharedTypedArrayOf<T>, length: number): T {
  const bytes = length * type.BYTES_PER_ELEMENT;
  let best = -1;
  for (let i = 0; i < free.length; i++) {
    const size = free[i]!.byteLength;
    if (size >= bytes && size <= 2 * bytes && (best < 0 || size < free[best]!.byteLength)) best = i;
  }
  let buffer: SharedArrayBuffer;
  if (best >= 0) {
    buffer = free.splice(best, 1)[0]!;
    freeBytes -= buffer.byteLength;
  } else {
    buffer = new SharedArrayBuffer(bytes);
  }
  touch();
  return new type(buffer, 0, length);
}

/**
 * Gives the arrays' buffers back for reuse. The caller must hold no other view of them, and must give
 * back only what `takeShared` lent (never an array it handed on).
 */
export function giveBackShared(...arrays: ReadonlyArray<{ buffer: ArrayBufferLike } | undefined>): void {
  for (const a of arrays) {
    if (!a || !(a.buffer instanceof SharedArrayBuffer) || a.buffer.byteLength === 0 || free.includes(a.buffer)) continue;
    free.push(a.buffer);
    freeBytes += a.buffer.byteLength;
  }
  while (freeBytes > RECYCLE_MAX_BYTES && free.length > 0) freeBytes -= free.shift()!.byteLength;
  touch();
}

/** Lets every free buffer go now. */
export function dropRecycled(): void {
  free.length = 0;
  freeBytes = 0;
  if (idleTimer !== undefined) clearTimeout(idleTimer);
  idleTimer = undefined;
}

/** Bytes of free buffers kept now. */
export const recycledBytes = (): number => freeBytes;

function touch(): void {
  if (idleTimer !== undefined) clearTimeout(idleTimer);
  idleTimer = undefined;
  if (free.length === 0) return;
  idleTimer = setTimeout(dropRecycled, RECYCLE_IDLE_MS);
  // The timer alone must not keep a process alive.
  (idleTimer as { unref?: () => void }).unref?.();
}
