/**
 * Who hears when an onnxruntime call on a user's model starts and ends. The job worker tells its client,
 * whose watchdog stops a call that never ends (a runaway session creation or run on a hostile graph)
 * in whatever stage it runs: the load check, capture, the search's sensitivities, evaluation, simulate.
 * Our own small product models (io/ort-product.ts) are not watched: they are not the user's graph.
 */

/** `running`: some call is in progress. Called at every start and end, so each one is progress. */
export type OrtActivityListener = (running: boolean) => Promise<void> | void;

let listener: OrtActivityListener | undefined;
let inProgress = 0;

export function setOrtActivityListener(l: OrtActivityListener | undefined): void {
  listener = l;
}

/**
 * Runs one onnxruntime call, telling the listener first (and waiting until it has heard: the call may
 * hold the event loop) and after it ends, whether it succeeded or not.
 */
export async function watchedOrtCall<T>(call: () => Promise<T>): Promise<T> {
  inProgress++;
  await listener?.(true);
  try {
    return await call();
  } finally {
    inProgress--;
    void listener?.(inProgress > 0);
  }
}
