/**
 * ONNX external data: tensors whose bytes live in another file, named relative to the model's folder.
 * This file only reads and checks the description; the file system side is in src/io/model-file.ts.
 */
import { InputError, quoted } from "../errors.js";
import { TensorProto_DataLocation, type ModelProto, type TensorProto } from "./proto.js";
import { walkTensors } from "./walk.js";

export interface ExternalDataRef {
  /** The location as written in the model. */
  location: string;
  /** Path segments relative to the model's folder, checked not to escape it. */
  segments: string[];
  offset: number;
  /** Bytes to read; undefined means "to the end of the file". */
  length: number | undefined;
}

/** Reads the bytes of an external tensor. Implementations refuse locations outside the model's folder. */
export type ExternalDataReader = (ref: ExternalDataRef, tensorName: string) => Uint8Array;

export const isExternal = (t: TensorProto): boolean => t.dataLocation === TensorProto_DataLocation.EXTERNAL;

/** Whether any tensor of the model (initializers, Constant nodes, subgraphs) keeps its data in an external file. */
export function hasExternalTensors(model: ModelProto): boolean {
  let any = false;
  walkTensors(model, (t) => {
    any ||= isExternal(t);
  });
  return any;
}

/** The external-data description of a tensor, validated; undefined for tensors stored in the model. */
export function externalRef(t: TensorProto): ExternalDataRef | undefined {
  if (!isExternal(t)) return undefined;
  const kv = new Map<string, string>();
  for (const e of t.externalData) {
    // A key given twice is ambiguous (readers disagree on which one wins): a hostile file's trick.
    if (kv.has(e.key)) throw new InputError(`tensor ${quoted(t.name)} gives its external-data ${quoted(e.key, 40)} twice`);
    kv.set(e.key, e.value);
  }
  const location = kv.get("location");
  if (location === undefined || location === "")
    throw new InputError(`tensor ${quoted(t.name)} is stored externally but names no location`);
  const offset = parseCount(kv.get("offset") ?? "0", "offset", t.name);
  const lengthText = kv.get("length");
  const length = lengthText === undefined ? undefined : parseCount(lengthText, "length", t.name);
  return { location, segments: checkRelativeLocation(location, t.name), offset, length };
}

function parseCount(text: string, what: string, tensor: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)))
    throw new InputError(`tensor ${quoted(tensor)} has an external-data ${what} of ${quoted(text, 40)}`);
  return Number(text);
}

/**
 * Splits a location into segments and refuses any that could leave the model's folder: absolute
 * paths, drive letters, UNC paths, `..` segments, NUL bytes. Links that point outside are refused by
 * the reader, which sees the file system.
 */
export function checkRelativeLocation(location: string, tensor: string): string[] {
  const refuse = (why: string): never => {
    throw new InputError(
      `tensor ${quoted(tensor)} has external data at ${quoted(location)}, ${why}; ` +
        `external data must stay inside the model's folder`,
    );
  };
  if (location.includes("\0")) refuse("which contains a NUL byte");
  if (/^[\\/]/.test(location) || /^[a-zA-Z]:/.test(location)) refuse("an absolute path");
  const segments = location.split(/[\\/]+/).filter((s) => s !== "" && s !== ".");
  if (segments.includes("..")) refuse("which goes up out of the folder with '..'");
  if (segments.length === 0) refuse("which names no file");
  return segments;
}
