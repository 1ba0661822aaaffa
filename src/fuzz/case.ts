/**
 * A fuzz case: a folder with the model (and its external files, links and special files) and the
 * facts its mutator knows about it. Layout of a case folder:
 *
 *   model/model.onnx   the model every command reads (with its external data beside it)
 *   outside/           files outside the model's folder, for locations and links that escape it
 *   out/               compress writes here (--out out/out.ssvq.onnx)
 *   tmp/               TMPDIR of the commands: must be empty after every run
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { closeSync, ftruncateSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, readSync, renameSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";

export type FileEntry =
  | { path: string; kind: "file"; data: Uint8Array }
  /** A sparse file of `size` bytes (no disk used), with `head` written at its start. */
  | { path: string; kind: "sparse"; size: number; head?: Uint8Array }
  | { path: string; kind: "symlink"; target: string }
  | { path: string; kind: "dir" }
  | { path: string; kind: "fifo" }
  | { path: string; kind: "socket" }
  /** A character device (root only; a FIFO otherwise, said in the case's ops). */
  | { path: string; kind: "chardev"; major: number; minor: number };

export type MutatorClass = "control" | "blind" | "structure" | "external" | "bomb";
export const MUTATOR_CLASSES: readonly MutatorClass[] = ["control", "blind", "structure", "external", "bomb"];

export type CommandName = "inspect" | "compress" | "simulate";
export const COMMANDS: readonly CommandName[] = ["inspect", "compress", "simulate"];

export const MODEL_PATH = "model/model.onnx";
export const OUT_PATH = "out/out.ssvq.onnx";
export const OUT_REPORT = "out/out.ssvq.json";

export interface WrongMessage {
  /** A regular expression (source, case-insensitive) that must not match the first stderr line. */
  pattern: string;
  why: string;
}

export interface CaseSpec {
  /** `SEED:INDEX`: `--replay SEED:INDEX` makes the same case again. */
  id: string;
  seed: number;
  index: number;
  klass: MutatorClass;
  seedModel: string;
  /** What was done, one entry per mutation applied. */
  ops: string[];
  /** Mutations drawn; with `kept`, the subset applied (a shrunk case). */
  opCount: number;
  kept?: number[];
  /** Why every command must refuse this case (exit 2); undefined when exit 0 is acceptable. */
  hostile?: string;
  /** The model is valid ONNX (a refusal must not call it damaged). */
  wellFormed?: boolean;
  wrongMessages: WrongMessage[];
  files: FileEntry[];
  args: Record<CommandName, string[]>;
  /** Bytes of the regular and sparse files (a sparse file counts its written head only). */
  size: number;
}

export function caseSize(files: readonly FileEntry[]): number {
  let n = 0;
  for (const f of files) if (f.kind === "file") n += f.data.length;
  else if (f.kind === "sparse") n += f.head?.length ?? 0;
  return n;
}

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;

/** Creates the case's files under `root` (which must exist and be empty). */
export async function materialise(spec: CaseSpec, root: string): Promise<void> {
  for (const d of ["model", "outside", "out", "tmp"]) mkdirSync(join(root, d), { recursive: true });
  const ordered = [...spec.files].sort((a, b) => (a.kind === "dir" ? 0 : 1) - (b.kind === "dir" ? 0 : 1));
  for (const f of ordered) {
    const p = join(root, f.path);
    mkdirSync(dirname(p), { recursive: true });
    switch (f.kind) {
      case "file":
        writeFileSync(p, f.data);
        break;
      case "sparse": {
        const fd = openSync(p, "w");
        try {
          if (f.head) writeSync(fd, f.head, 0, f.head.length, 0);
          ftruncateSync(fd, f.size);
        } finally {
          closeSync(fd);
        }
        break;
      }
      case "symlink":
        symlinkSync(f.target, p);
        break;
      case "dir":
        mkdirSync(p, { recursive: true });
        break;
      case "fifo":
        mkfifo(p);
        break;
      case "socket":
        await makeSocket(p);
        break;
      case "chardev": {
        const r = isRoot ? spawnSync("mknod", [p, "c", String(f.major), String(f.minor)]) : undefined;
        if (!r || r.status !== 0) mkfifo(p);
        break;
      }
    }
  }
}

function mkfifo(p: string): void {
  const r = spawnSync("mkfifo", [p]);
  if (r.status !== 0) throw new Error(`mkfifo ${p} failed: ${String(r.stderr)}`);
}

/** A socket file left on disk: bound under a temporary name, renamed, then closed (close unlinks only the old name). */
function makeSocket(p: string): Promise<void> {
  const tmpName = `${p}.${process.pid}.bind`;
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(tmpName, () => {
      try {
        renameSync(tmpName, p);
      } catch (e) {
        server.close();
        reject(e);
        return;
      }
      server.close(() => resolve());
    });
  });
}

/** What a path is, enough to tell whether a command changed it (never opens special files). */
export type Snapshot = Map<string, string>;

const FULL_HASH_LIMIT = 64 * 2 ** 20;

function fileSignature(p: string, size: number, mtimeMs: number): string {
  const h = createHash("sha256");
  const fd = openSync(p, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    const readRange = (start: number, end: number) => {
      let at = start;
      while (at < end) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, end - at), at);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        at += n;
      }
    };
    if (size <= FULL_HASH_LIMIT) {
      readRange(0, size);
      return `f:${size}:${h.digest("hex").slice(0, 24)}`;
    }
    readRange(0, 1 << 20);
    readRange(size - (1 << 20), size);
    return `f:${size}:${mtimeMs}:${h.digest("hex").slice(0, 24)}`;
  } finally {
    closeSync(fd);
  }
}

export function snapshot(root: string): Snapshot {
  const out: Snapshot = new Map();
  const walk = (rel: string) => {
    const abs = rel === "" ? root : join(root, rel);
    let names: string[];
    try {
      names = readdirSync(abs);
    } catch {
      return;
    }
    for (const name of names) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const p = join(root, r);
      let st;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.isSymbolicLink()) out.set(r, `l:${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.set(r, "d");
        walk(r);
      } else if (st.isFile()) {
        try {
          out.set(r, fileSignature(p, st.size, st.mtimeMs));
        } catch (e) {
          out.set(r, `f:${st.size}:unreadable:${(e as Error).message}`);
        }
      } else if (st.isFIFO()) out.set(r, "p");
      else if (st.isSocket()) out.set(r, "s");
      else if (st.isCharacterDevice()) out.set(r, `c:${st.rdev}`);
      else if (st.isBlockDevice()) out.set(r, `b:${st.rdev}`);
      else out.set(r, "?");
    }
  };
  walk("");
  return out;
}

export interface SnapshotDiff {
  /** New entries, apart from `allowed`. */
  added: string[];
  changed: string[];
  removed: string[];
}

export function diffSnapshots(before: Snapshot, after: Snapshot, allowed: ReadonlySet<string> = new Set()): SnapshotDiff {
  const added: string[] = [];
  const changed: string[] = [];
  const removed: string[] = [];
  for (const [k, v] of after) {
    const b = before.get(k);
    if (b === undefined) {
      if (!allowed.has(k)) added.push(k);
    } else if (b !== v) changed.push(k);
  }
  for (const k of before.keys()) if (!after.has(k)) removed.push(k);
  return { added, changed, removed };
}
