/**
 * Writing outputs so that a failed or cancelled run leaves nothing behind: each file goes to a
 * temporary name in the same folder (`.<name>.<pid>-<random>.tmp`, which the job client removes after a
 * killed worker) and is renamed into place once every output of the run is ready.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
}

/**
 * Writes `data` to a new temporary file beside `path` (fsync'd) and returns its name; rename it into
 * place when everything the run writes is ready. Nothing is left behind if the write fails.
 */
export function writeTemp(path: string, data: Uint8Array | string): string {
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
    return tmp;
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
