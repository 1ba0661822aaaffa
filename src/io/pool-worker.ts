/**
 * A thread of the pool in `pool.ts`: runs one registered task per message (awaiting a task that returns a
 * promise) and posts back its output (its typed arrays' buffers transferred, not copied) or its error.
 */
import { parentPort } from "node:worker_threads";
import { runTask } from "../core/tasks.js";
import { registerOrtProduct } from "./ort-product.js";
import { registerGramEngine } from "../core/calib/gram-pool.js";
import { OrtGram } from "./ort-gram.js";

export interface PoolRequest {
  task: string;
  input: unknown;
}

export type PoolReply = { ok: true; output: unknown } | { ok: false; name: string; message: string; stack?: string };

const port = parentPort;
if (!port) throw new Error("pool-worker must run as a worker thread");

// Fine-tuning tasks may ask for onnxruntime's product engine: make it available in this thread.
registerOrtProduct();
// Capture's Gram products (PooledGram), one intra-op thread: the bytes of the capturing thread's engine.
registerGramEngine(new OrtGram());

port.on("message", async (request: PoolRequest) => {
  try {
    const output = await runTask(request.task, request.input);
    port.postMessage({ ok: true, output } satisfies PoolReply, transferables(output));
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    port.postMessage({ ok: false, name: err.name, message: err.message, stack: err.stack } satisfies PoolReply);
  }
});

/** The non-shared buffers of the output's typed arrays (the output itself or its top-level properties). */
function transferables(output: unknown): ArrayBuffer[] {
  const found = new Set<ArrayBuffer>();
  const add = (v: unknown): void => {
    if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer) found.add(v.buffer);
  };
  add(output);
  if (output !== null && typeof output === "object") for (const v of Object.values(output)) add(v);
  return [...found];
}
