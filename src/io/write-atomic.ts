/**
 * Writing outputs so that a failed or cancelled run leaves nothing behind: each file goes to a
 * temporary name in the same folder and is renamed into place; `discard` removes what a run wrote.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
}

/** Writes `data` to `path` atomically (temporary file, fsync, rename). */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  const tmp = tempPathFor(path);
  try {
    const fd = openSync(tmp, "wx");
    try {
      const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
