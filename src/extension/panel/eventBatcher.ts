/**
 * Batches a fast stream (a job's events) into at most one delivery per interval: the panel gets every
 * event, in order, in at most ten messages a second however fast they come. No VS Code import.
 */
export class EventBatcher<T> {
  private pending: T[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private last = -Infinity;

  constructor(
    private readonly deliver: (batch: T[]) => void,
    private readonly minIntervalMs = 100,
    private readonly now: () => number = () => performance.now(),
  ) {}

  push(item: T): void {
    this.pending.push(item);
    if (!this.timer) this.schedule();
  }

  private schedule(): void {
    const wait = this.last + this.minIntervalMs - this.now();
    if (wait <= 0 && this.timer === undefined && this.last === -Infinity) {
      // Nothing sent yet: the first batch goes out on the next turn of the event loop.
      this.timer = setTimeout(() => this.fire(), 0);
      return;
    }
    this.timer = setTimeout(() => this.fire(), Math.max(0, Math.ceil(wait)));
  }

  /** Timers may fire a little early: wait out the rest of the interval before delivering. */
  private fire(): void {
    this.timer = undefined;
    if (this.now() < this.last + this.minIntervalMs) this.schedule();
    else this.flush();
  }

  /** Delivers what is pending now (at the end of a job, so the last events precede its outcome). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.last = this.now();
    this.deliver(batch);
  }

  /**
   * At the end of a stream: waits out the interval, delivers what is pending, and resolves when the next
   * message may go (so an outcome posted then still keeps the rate).
   */
  async drain(): Promise<void> {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, Math.ceil(ms))));
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pending.length) {
      while (this.now() < this.last + this.minIntervalMs) await sleep(this.last + this.minIntervalMs - this.now());
      this.flush();
    }
    while (this.now() < this.last + this.minIntervalMs) await sleep(this.last + this.minIntervalMs - this.now());
  }

  /** Counts a message sent outside the batcher (a snapshot), so the next batch keeps its distance. */
  markSent(): void {
    this.last = this.now();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = [];
  }
}
