/**
 * External-data tricks: some of a model's tensors are moved to external files (one file, or one per
 * tensor; with or without `length`), then one tensor's location is made hostile: `..`, absolute paths,
 * /dev and /proc files, links out of the folder, link loops, NUL bytes, `file://`, names too long for the
 * file system, a folder, a FIFO, a socket, a device, short files, offsets past the end, lengths no file
 * has, two locations. Or the model file itself is made special (a FIFO, a link to /dev/zero, ...).
 */
import { create, StringStringEntryProtoSchema, TensorProto_DataLocation, type ModelProto, type TensorProto } from "../core/onnx/proto.js";
import type { FileEntry, WrongMessage } from "./case.js";
import { encode } from "./models.js";
import type { FuzzRng } from "./rng.js";
import { tensorsOf } from "./structure.js";

export interface ExternalOutcome {
  files: FileEntry[];
  ops: string[];
  hostile?: string;
  wellFormed: boolean;
  wrong: WrongMessage[];
}

const NOT_EXIST = "does not exist|no such file";

const kv = (key: string, value: string) => create(StringStringEntryProtoSchema, { key, value });

function setRef(t: TensorProto, location: string, offset: number | string | undefined, length: number | string | undefined): void {
  t.dataLocation = TensorProto_DataLocation.EXTERNAL;
  t.rawData = new Uint8Array(0);
  t.externalData = [kv("location", location)];
  if (offset !== undefined) t.externalData.push(kv("offset", String(offset)));
  if (length !== undefined) t.externalData.push(kv("length", String(length)));
}

/** Moves tensors out, applies one trick, and returns the case's files (the model last). */
export function externalCase(m: ModelProto, r: FuzzRng): ExternalOutcome {
  const ops: string[] = [];
  const files: FileEntry[] = [];
  const wrong: WrongMessage[] = [];
  let hostile: string | undefined;
  let wellFormed = false;

  const candidates = tensorsOf(m)
    .map((x) => x.t)
    .filter((t) => t.rawData.length >= 16 && t.dataLocation !== TensorProto_DataLocation.EXTERNAL);
  const modelSpecial = r.chance(0.1);
  if (candidates.length === 0 || modelSpecial) return specialModel(m, r);

  const chosen = r.chance(0.4) ? candidates : Array.from(new Set(Array.from({ length: r.range(1, 3) }, () => r.pick(candidates))));
  const target = r.pick(chosen);
  const oneFile = r.chance(0.5);
  // A shared file always says each tensor's length (as exporters write it); a file per tensor may not.
  const withLength = oneFile || r.chance(0.6);
  const align = r.chance(0.3) ? 64 : 1;
  ops.push(`${chosen.length} tensor(s) moved to ${oneFile ? "one external file" : "a file each"}${withLength ? " with length" : " without length"}`);

  const blobParts: Uint8Array[] = [];
  let blobLen = 0;
  let targetData = new Uint8Array(0);
  let targetLoc = "";
  let targetOffset = 0;
  chosen.forEach((t, i) => {
    const data = t.rawData.slice();
    if (t === target) targetData = data;
    if (oneFile) {
      const pad = (align - (blobLen % align)) % align;
      if (pad) {
        blobParts.push(new Uint8Array(pad));
        blobLen += pad;
      }
      const offset = blobLen;
      blobParts.push(data);
      blobLen += data.length;
      setRef(t, "weights.bin", offset > 0 || r.chance(0.3) ? offset : undefined, withLength ? data.length : undefined);
      if (t === target) {
        targetLoc = "weights.bin";
        targetOffset = offset;
      }
    } else {
      const loc = `t${i}.bin`;
      files.push({ path: `model/${loc}`, kind: "file", data });
      setRef(t, loc, r.chance(0.2) ? 0 : undefined, withLength ? data.length : undefined);
      if (t === target) targetLoc = loc;
    }
  });
  if (oneFile) {
    const all = new Uint8Array(blobLen);
    let at = 0;
    for (const p of blobParts) {
      all.set(p, at);
      at += p.length;
    }
    files.push({ path: "model/weights.bin", kind: "file", data: all });
  }
  const len = targetData.length;
  const tname = JSON.stringify(target.name.slice(0, 40));
  const secret = (): void => {
    files.push({ path: "outside/secret.bin", kind: "file", data: targetData });
  };
  const escape = (why: string) => {
    hostile = `tensor ${tname}: ${why}`;
  };
  const lengthArg = withLength ? len : undefined;

  const trick = r.weighted([
    [12, "none"],
    [3, "dotdot"],
    [2, "dotdotInner"],
    [1, "backslashDotdot"],
    [4, "absolute"],
    [4, "symlinkOut"],
    [3, "symlinkAbs"],
    [2, "symlinkDirOut"],
    [3, "symlinkLoop"],
    [2, "symlinkIn"],
    [2, "symlinkDangling"],
    [2, "nul"],
    [2, "fileUrl"],
    [4, "longName"],
    [3, "directory"],
    [3, "fifo"],
    [2, "socket"],
    [2, "device"],
    [4, "shortWithLength"],
    [4, "shortNoLength"],
    [2, "longNoLength"],
    [3, "offsetPastEnd"],
    [3, "badLength"],
    [2, "badOffset"],
    [3, "noLocation"],
    [2, "dupKeys"],
    [1, "caseVariant"],
    [1, "dotSlash"],
  ] as const);

  switch (trick) {
    case "none":
      wellFormed = true;
      ops.push("no trick (valid external data)");
      break;
    case "dotdot":
      secret();
      setRef(target, "../outside/secret.bin", undefined, lengthArg);
      escape("location ../outside/secret.bin");
      ops.push("location ../outside/secret.bin (the file exists)");
      break;
    case "dotdotInner":
      files.push({ path: "model/sub", kind: "dir" });
      setRef(target, `sub/../${targetLoc}`, targetOffset || undefined, lengthArg);
      escape("location with a .. segment");
      ops.push(`location sub/../${targetLoc}`);
      break;
    case "backslashDotdot":
      secret();
      setRef(target, "..\\outside\\secret.bin", undefined, lengthArg);
      escape("location ..\\outside\\secret.bin");
      ops.push("location ..\\outside\\secret.bin");
      break;
    case "absolute": {
      const loc = r.pick(["/proc/self/cwd/outside/secret.bin", "/dev/zero", "/dev/urandom", "/etc/hostname", "/proc/self/environ", "/proc/self/mem", "/dev/stdin"]);
      if (loc.includes("secret")) secret();
      setRef(target, loc, undefined, r.chance(0.5) ? len : undefined);
      escape(`absolute location ${loc}`);
      ops.push(`absolute location ${loc}`);
      break;
    }
    case "symlinkOut":
      secret();
      files.push({ path: "model/link.bin", kind: "symlink", target: "../outside/secret.bin" });
      setRef(target, "link.bin", undefined, lengthArg);
      escape("a link to ../outside/secret.bin");
      ops.push("location link.bin -> ../outside/secret.bin");
      break;
    case "symlinkAbs": {
      const to = r.pick(["/dev/zero", "/proc/self/environ", "/etc/hostname", "/dev/stdin", "/proc/self/fd/0", "/dev/urandom"]);
      files.push({ path: "model/link.bin", kind: "symlink", target: to });
      setRef(target, "link.bin", undefined, r.chance(0.5) ? len : undefined);
      escape(`a link to ${to}`);
      ops.push(`location link.bin -> ${to}`);
      break;
    }
    case "symlinkDirOut":
      secret();
      files.push({ path: "model/sub", kind: "symlink", target: "../outside" });
      setRef(target, "sub/secret.bin", undefined, lengthArg);
      escape("a folder link to ../outside");
      ops.push("location sub/secret.bin, sub -> ../outside");
      break;
    case "symlinkLoop":
      if (r.chance(0.5)) {
        files.push({ path: "model/loop_a", kind: "symlink", target: "loop_b" }, { path: "model/loop_b", kind: "symlink", target: "loop_a" });
        setRef(target, "loop_a", undefined, lengthArg);
        ops.push("location loop_a -> loop_b -> loop_a");
      } else {
        files.push({ path: "model/loop", kind: "symlink", target: "loop" });
        setRef(target, "loop", undefined, lengthArg);
        ops.push("location loop -> loop");
      }
      escape("a link loop");
      wrong.push({ pattern: NOT_EXIST, why: "a link loop exists; it is not missing" });
      break;
    case "symlinkIn":
      files.push({ path: "model/link.bin", kind: "symlink", target: targetLoc });
      setRef(target, "link.bin", targetOffset || undefined, lengthArg);
      wellFormed = true;
      ops.push(`location link.bin -> ${targetLoc} (inside the folder)`);
      break;
    case "symlinkDangling":
      files.push({ path: "model/link.bin", kind: "symlink", target: "gone.bin" });
      setRef(target, "link.bin", undefined, lengthArg);
      escape("a dangling link");
      ops.push("location link.bin -> gone.bin (missing)");
      break;
    case "nul":
      setRef(target, `${targetLoc}\u0000../../etc/passwd`, targetOffset || undefined, lengthArg);
      escape("a location with a NUL byte");
      ops.push("location with a NUL byte");
      break;
    case "fileUrl": {
      const loc = r.pick([`file://${targetLoc}`, "file:///etc/hostname", `file:${targetLoc}`]);
      setRef(target, loc, undefined, lengthArg);
      escape(`location ${loc}`);
      ops.push(`location ${loc}`);
      break;
    }
    case "longName": {
      const n = r.pick([255, 256, 300, 4096, 200000, -1]);
      if (n === 255) {
        const name = "n".repeat(251) + ".bin";
        files.push({ path: `model/${name}`, kind: "file", data: targetData });
        setRef(target, name, undefined, lengthArg);
        wellFormed = true;
        ops.push("location of 255 characters (exists)");
      } else if (n === -1) {
        const loc = "d/".repeat(2100) + targetLoc;
        setRef(target, loc, undefined, lengthArg);
        escape(`a location of ${loc.length} characters`);
        ops.push(`location of 2100 folders (${loc.length} characters)`);
      } else {
        const loc = "n".repeat(n - 4) + ".bin";
        setRef(target, loc, undefined, lengthArg);
        escape(`a location of ${n} characters`);
        wrong.push({ pattern: NOT_EXIST, why: "the name is too long for the file system, which is another reason" });
        ops.push(`location of ${n} characters`);
      }
      break;
    }
    case "directory":
      files.push({ path: "model/wdir", kind: "dir" }, { path: "model/wdir/x", kind: "file", data: targetData });
      setRef(target, "wdir", undefined, r.chance(0.5) ? len : undefined);
      escape("the location is a folder");
      wrong.push({ pattern: NOT_EXIST, why: "the folder exists" });
      ops.push("location names a folder");
      break;
    case "fifo": {
      const l = r.chance(0.5) ? len : undefined;
      files.push({ path: "model/w.fifo", kind: "fifo" });
      setRef(target, "w.fifo", undefined, l);
      escape("the location is a FIFO");
      wrong.push({ pattern: NOT_EXIST, why: "the FIFO exists" });
      ops.push(`location names a FIFO (${l === undefined ? "no length" : "with length"})`);
      break;
    }
    case "socket":
      files.push({ path: "model/w.sock", kind: "socket" });
      setRef(target, "w.sock", undefined, r.chance(0.5) ? len : undefined);
      escape("the location is a socket");
      wrong.push({ pattern: NOT_EXIST, why: "the socket exists" });
      ops.push("location names a socket");
      break;
    case "device": {
      const [major, minor, what] = r.pick([
        [1, 5, "zero"],
        [1, 3, "null"],
        [1, 9, "urandom"],
      ] as const);
      files.push({ path: "model/w.dev", kind: "chardev", major, minor });
      setRef(target, "w.dev", undefined, r.chance(0.5) ? len : undefined);
      escape("the location is a character device");
      ops.push(`location names a character device (${what}; a FIFO when not root)`);
      break;
    }
    case "shortWithLength": {
      const cut = r.range(1, Math.min(len, 64));
      files.push({ path: "model/short.bin", kind: "file", data: targetData.slice(0, len - cut) });
      setRef(target, "short.bin", undefined, len);
      escape(`the file is ${cut} bytes shorter than its length`);
      ops.push(`short.bin ${cut} bytes short, with length`);
      break;
    }
    case "shortNoLength": {
      const cut = r.range(1, Math.min(len, 64));
      files.push({ path: "model/short.bin", kind: "file", data: targetData.slice(0, len - cut) });
      setRef(target, "short.bin", undefined, undefined);
      escape(`the file is ${cut} bytes shorter than the tensor`);
      ops.push(`short.bin ${cut} bytes short, no length`);
      break;
    }
    case "longNoLength": {
      const extra = r.range(1, 4096);
      const data = new Uint8Array(len + extra);
      data.set(targetData);
      files.push({ path: "model/long.bin", kind: "file", data });
      setRef(target, "long.bin", undefined, undefined);
      ops.push(`long.bin ${extra} bytes longer than the tensor, no length`);
      break;
    }
    case "offsetPastEnd": {
      const fileLen = oneFile ? blobLen : len;
      const off = fileLen + r.pick([0, 1, 4096, 2 ** 40]);
      setRef(target, targetLoc, off, r.chance(0.5) ? len : undefined);
      escape(`offset ${off} past the end of a ${fileLen}-byte file`);
      ops.push(`offset ${off} in a ${fileLen}-byte file`);
      break;
    }
    case "badLength": {
      const l = r.pick(["18446744073709551615", "9007199254740993", "1099511627776", "-1", "1e3", "0x10", " 12", "12 ", "", "NaN", String(len + 4), String(len - 4), "0"]);
      setRef(target, targetLoc, targetOffset || undefined, l);
      escape(`length ${JSON.stringify(l)} (the tensor has ${len} bytes)`);
      ops.push(`length ${JSON.stringify(l)}`);
      break;
    }
    case "badOffset": {
      const o = r.pick(["9007199254740993", "-4", "1e9", "4294967296", "0x0", ""]);
      setRef(target, targetLoc, o, lengthArg);
      escape(`offset ${JSON.stringify(o)}`);
      ops.push(`offset ${JSON.stringify(o)}`);
      break;
    }
    case "noLocation": {
      const how = r.pick(["missing", "", ".", "/", "./", "model.onnx/..", " "]);
      if (how === "missing") {
        target.dataLocation = TensorProto_DataLocation.EXTERNAL;
        target.rawData = new Uint8Array(0);
        target.externalData = [kv("length", String(len))];
      } else setRef(target, how, undefined, lengthArg);
      escape(`location ${JSON.stringify(how)}`);
      ops.push(`location ${JSON.stringify(how)}`);
      break;
    }
    case "dupKeys": {
      secret();
      const good = kv("location", targetLoc);
      const bad = kv("location", "../outside/secret.bin");
      setRef(target, targetLoc, targetOffset || undefined, lengthArg);
      target.externalData = r.chance(0.5) ? [good, bad, ...target.externalData.slice(1)] : [bad, good, ...target.externalData.slice(1)];
      escape("two locations, one of them ../outside/secret.bin");
      ops.push("location given twice (one escapes)");
      break;
    }
    case "caseVariant": {
      const loc = targetLoc.toUpperCase();
      setRef(target, loc, targetOffset || undefined, lengthArg);
      escape(`location ${loc}, which is not there (case differs)`);
      ops.push(`location ${loc} (upper case)`);
      break;
    }
    case "dotSlash":
      files.push({ path: `model/sub/${targetLoc}`, kind: "file", data: targetData });
      setRef(target, `./sub//${targetLoc}`, undefined, lengthArg);
      wellFormed = true;
      ops.push(`location ./sub//${targetLoc}`);
      break;
  }
  files.push({ path: "model/model.onnx", kind: "file", data: encode(m) });
  return { files, ops, hostile, wellFormed, wrong };
}

/** The model path itself is not a regular file holding a model. */
function specialModel(m: ModelProto, r: FuzzRng): ExternalOutcome {
  const how = r.pick(["fifo", "zero", "urandom", "dir", "socket", "loop", "empty", "proc", "device"] as const);
  const files: FileEntry[] = [];
  const p = "model/model.onnx";
  switch (how) {
    case "fifo":
      files.push({ path: p, kind: "fifo" });
      break;
    case "zero":
      files.push({ path: p, kind: "symlink", target: "/dev/zero" });
      break;
    case "urandom":
      files.push({ path: p, kind: "symlink", target: "/dev/urandom" });
      break;
    case "dir":
      files.push({ path: p, kind: "dir" }, { path: `${p}/model.onnx`, kind: "file", data: encode(m) });
      break;
    case "socket":
      files.push({ path: p, kind: "socket" });
      break;
    case "loop":
      files.push({ path: p, kind: "symlink", target: "model.onnx" });
      break;
    case "empty":
      files.push({ path: p, kind: "file", data: new Uint8Array(0) });
      break;
    case "proc":
      files.push({ path: p, kind: "symlink", target: "/proc/self/status" });
      break;
    case "device":
      files.push({ path: p, kind: "chardev", major: 1, minor: 5 });
      break;
  }
  return {
    files,
    ops: [`the model file is ${how === "zero" || how === "urandom" ? `a link to /dev/${how}` : how === "proc" ? "a link to /proc/self/status" : `a ${how}`}`],
    hostile: `the model path is a ${how}, not a model file`,
    wellFormed: false,
    wrong: [],
  };
}
