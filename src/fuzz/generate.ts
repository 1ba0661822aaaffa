/**
 * Case generation: case INDEX of seed SEED is made from its own generator (seeded by both), so any case
 * can be made again alone (`--replay SEED:INDEX`), and a shrunk case applies a subset of its drawn
 * mutations (`keep`).
 */
import { applyBlindOp, describeBlindOp, drawBlindOps } from "./blind.js";
import { bombCase } from "./bombs.js";
import { caseSize, MODEL_PATH, OUT_PATH, type CaseSpec, type CommandName, type FileEntry, type MutatorClass, type WrongMessage } from "./case.js";
import { externalCase } from "./external.js";
import { decodeLoose, encode, type SeedModel } from "./models.js";
import { FuzzRng, mix32 } from "./rng.js";
import { applyStructOp, dataHostility, drawStructOps, type Effects } from "./structure.js";

export interface GenerateOptions {
  /** Only these classes (default all). */
  classes?: readonly MutatorClass[];
  /** Apply only these of the drawn mutations (shrinking). */
  keep?: readonly number[];
}

const CLASS_WEIGHTS: readonly (readonly [number, MutatorClass])[] = [
  [4, "control"],
  [28, "blind"],
  [34, "structure"],
  [22, "external"],
  [12, "bomb"],
];

export function generateCase(seeds: readonly SeedModel[], seed: number, index: number, opts: GenerateOptions = {}): CaseSpec {
  const r = new FuzzRng(mix32(seed, index));
  const allowed = CLASS_WEIGHTS.filter(([, c]) => !opts.classes || opts.classes.includes(c));
  const klass = r.weighted(allowed.length > 0 ? allowed : CLASS_WEIGHTS);
  const seedModel = r.weighted(seeds.map((s) => [s.weight, s] as const));
  const flags = commandFlags(r.fork());
  const body = r.fork();
  const keep = opts.keep ? new Set(opts.keep) : undefined;

  let files: FileEntry[] = [];
  let ops: string[] = [];
  let opCount = 1;
  let hostile: string | undefined;
  let wellFormed = false;
  let wrong: WrongMessage[] = [];
  let seedName = seedModel.name;
  try {
    switch (klass) {
      case "control":
        files = [{ path: MODEL_PATH, kind: "file", data: seedModel.bytes }];
        ops = ["unchanged"];
        wellFormed = true;
        break;
      case "blind": {
        const drawn = drawBlindOps(body);
        opCount = drawn.length;
        let b: Uint8Array = seedModel.bytes;
        drawn.forEach((op, i) => {
          if (keep && !keep.has(i)) return;
          b = applyBlindOp(b, op);
          ops.push(describeBlindOp(op));
        });
        files = [{ path: MODEL_PATH, kind: "file", data: b }];
        break;
      }
      case "structure": {
        const drawn = drawStructOps(body);
        opCount = drawn.length;
        const m = decodeLoose(seedModel.bytes);
        const fx: Effects = { wrong: [] };
        let valid = true;
        drawn.forEach((op, i) => {
          if (keep && !keep.has(i)) return;
          const res = applyStructOp(m, op, fx, (s) => new FuzzRng(s));
          if (res) {
            ops.push(`${op.name}: ${res.desc}`);
            valid &&= res.keepsValid === true;
          } else ops.push(`${op.name}: nothing to change`);
        });
        let bytes: Uint8Array;
        try {
          bytes = encode(m);
        } catch (e) {
          // The fuzzer's own encoder refused the mutation (e.g. a value out of range): a control case.
          ops.push(`(not encodable: ${(e as Error).message.slice(0, 80)}; the seed is used as is)`);
          bytes = seedModel.bytes;
          valid = true;
        }
        files = [{ path: MODEL_PATH, kind: "file", data: bytes }];
        // Data damage is judged on the model as written (a later operation may remove the damaged tensor).
        hostile = fx.hostile ?? dataHostility(m);
        wellFormed = valid && !hostile;
        wrong = wellFormed ? fx.wrong : [];
        break;
      }
      case "external": {
        const o = externalCase(decodeLoose(seedModel.bytes), body);
        ({ files, ops, hostile, wellFormed, wrong } = o);
        break;
      }
      case "bomb": {
        const o = bombCase(seedModel.bytes, seedModel.name, body);
        ({ files, ops, hostile, wellFormed, wrong } = o);
        if (o.built) seedName = o.built;
        break;
      }
    }
  } catch (e) {
    // A mutator that throws is a fuzzer bug: the case falls back to the seed, and says so.
    files = [{ path: MODEL_PATH, kind: "file", data: seedModel.bytes }];
    ops = [...ops, `(fuzzer error, the seed is used as is: ${(e as Error).message.slice(0, 120)})`];
    hostile = undefined;
    wellFormed = true;
    wrong = [];
  }
  // Bombs are slow enough with the defaults: no compressing of their many tiny layers.
  if (klass === "bomb") {
    const at = flags.compress.indexOf("--min-weights");
    if (at >= 0) flags.compress.splice(at, 2);
  }
  const model = files.find((f) => f.path === MODEL_PATH);
  const shapeArgs = model?.kind === "file" ? simulateShapes(model.data) : [];
  const args: Record<CommandName, string[]> = {
    inspect: ["inspect", MODEL_PATH, ...flags.inspect],
    compress: ["compress", MODEL_PATH, "--no-finetune", "--out", OUT_PATH, ...flags.compress],
    simulate: ["simulate", MODEL_PATH, ...shapeArgs, ...flags.simulate],
  };
  return {
    id: `${seed}:${index}`,
    seed,
    index,
    klass,
    seedModel: seedName,
    ops,
    opCount,
    ...(opts.keep ? { kept: [...opts.keep] } : {}),
    ...(hostile ? { hostile } : {}),
    ...(wellFormed ? { wellFormed } : {}),
    wrongMessages: wrong,
    files,
    args,
    size: caseSize(files),
  };
}

/** Options that vary per case (so more code paths run), drawn before anything else. */
function commandFlags(r: FuzzRng): Record<CommandName, string[]> {
  const compress: string[] = [];
  const mode = r.weighted([
    [60, "ssvq"],
    [15, "vq"],
    [12, "int4"],
    [13, "int8"],
  ] as const);
  if (mode !== "ssvq") compress.push("--mode", mode);
  if (r.chance(0.1)) compress.push("--format", "dense");
  if (r.chance(0.2)) compress.push("--min-weights", "64");
  if (r.chance(0.5)) compress.push("--kmeans-iters", "5");
  if (r.chance(0.15)) compress.push("--json");
  return {
    inspect: r.chance(0.25) ? ["--json"] : [],
    compress,
    simulate: r.chance(0.2) ? ["--json"] : [],
  };
}

/** `--shape NAME=DIMS` for each input with dynamic dimensions (taken as 1), from the model as written. */
export function simulateShapes(bytes: Uint8Array): string[] {
  let m;
  try {
    m = decodeLoose(bytes);
  } catch {
    return [];
  }
  const g = m.graph;
  if (!g) return [];
  const inits = new Set(g.initializer.map((t) => t.name));
  const out: string[] = [];
  for (const v of g.input) {
    if (inits.has(v.name) || v.name.length > 1000 || v.name === "" || v.name.includes("\u0000")) continue;
    if (v.type?.value.case !== "tensorType" || !v.type.value.value.shape) continue;
    const dims = v.type.value.value.shape.dim;
    if (dims.length > 64) continue;
    const dynamic = dims.some((d) => d.value.case !== "dimValue" || d.value.value <= 0n);
    if (!dynamic) continue;
    const fixed = dims.map((d) => (d.value.case === "dimValue" && d.value.value > 0n ? d.value.value.toString() : "1"));
    out.push("--shape", `${v.name}=${fixed.join(",")}`);
  }
  return out;
}
