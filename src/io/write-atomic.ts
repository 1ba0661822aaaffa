/**
 * Writing outputs so that a failed or cancelled run leaves nothing behind: each file goes to a
 * temporary name in the same folder (`.<name>.<pid>-<random>.tmp`, which the job client removes after a
 * killed worker) and is renamed into place once every output of the run is ready.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { InputError } from "../core/errors.js";

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
}

/** Node.js writes at most 2 GiB per call: larger buffers go in pieces of this size. */
const WRITE_PIECE = 2 ** 30;

/** Writes all of `bytes` at `fd`'s position, in pieces of any size. */
export function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, Math.min(WRITE_PIECE, bytes.length - done));
}

/**
 * Writes a new temporary file beside `path` with `write`, which gets `put` to append bytes (in pieces of
 * any size); fsync'd, and its name returned: rename it into place when everything the run writes is
 * ready. Nothing is left behind if the write fails.
 */
export function writeTempWith(path: string, write: (put: (bytes: Uint8Array) => void) => void): string {
  const tmp = tempPathFor(path);
  try {
    const fd = openSync(tmp, "wx");
    try {
      write((bytes) => writeAllSync(fd, bytes));
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

/** Writes `data` to a new temporary file beside `path` (`writeTempWith`) and returns its name. */
export function writeTemp(path: string, data: Uint8Array | string): string {
  return writeTempWith(path, (put) => put(typeof data === "string" ? Buffer.from(data, "utf8") : data));
}

/** Errors of the file system rather than of the program: said in one line as the output's fault. */
const UNWRITABLE = new Set(["ENOENT", "ENOTDIR", "EACCES", "EPERM", "EROFS", "ENOSPC", "EISDIR", "EDQUOT"]);

/**
 * Writes every file or none: each to its temporary name first, then (after `beforeRename`, a last
 * cancel check) all renamed into place. A failure removes the temporary files; a full disk, a read-only
 * or missing folder becomes an InputError naming the file.
 */
export function writeAll(files: readonly { path: string; data: Uint8Array | string }[], beforeRename?: () => void): void {
  const temps: string[] = [];
  let current = "";
  try {
    for (const f of files) {
      current = f.path;
      temps.push(writeTemp(f.path, f.data));
    }
    beforeRename?.();
    files.forEach((f, i) => {
      current = f.path;
      renameSync(temps[i]!, f.path);
    });
  } catch (e) {
    for (const t of temps) rmSync(t, { force: true });
    throw asUnwritable(e, current);
  }
}

/** A file-system error writing `path` as the one-line InputError it is for the user; anything else as it is. */
export function asUnwritable(e: unknown, path: string): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  return code !== undefined && UNWRITABLE.has(code) ? new InputError(`cannot write ${path}: ${(e as Error).message}`) : e;
}
