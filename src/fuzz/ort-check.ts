/**
 * `node out/src/fuzz/ort-check.js MODEL`: exit 0 when onnxruntime creates a session for MODEL, exit 3
 * (first line of its error on stdout) when it refuses. Run as a process of its own, so that a crash in
 * onnxruntime cannot take the fuzzer down.
 */
import * as ort from "onnxruntime-node";

const path = process.argv[2];
if (!path) {
  process.stdout.write("usage: ort-check MODEL\n");
  process.exit(2);
}
try {
  // onnxruntime's default optimizations, as users load models and as compress checks its input.
  const session = await ort.InferenceSession.create(path, { logSeverityLevel: 4 });
  await session.release();
  process.exit(0);
} catch (e) {
  const msg = (e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 500);
  process.stdout.write(msg + "\n");
  process.exit(3);
}
