import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the nearest folder above this compiled file that holds package.json. */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("package.json not found above " + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

export const repoRoot = findRoot();
export const fixturesDir = join(repoRoot, "test", "fixtures");
export const fixture = (...parts: string[]): string => join(fixturesDir, ...parts);
/** The bundled command line, as users run it. */
export const cliPath = join(repoRoot, "dist", "cli.js");

/**
 * A temporary folder for one test file (removed when the process exits) and a function giving a new,
 * empty sub-folder per case: `case0`, `case1`, ...
 */
export function scratchFolders(prefix: string): { folder: () => string } {
  const work = mkdtempSync(join(tmpdir(), prefix));
  process.on("exit", () => rmSync(work, { recursive: true, force: true }));
  let n = 0;
  return {
    folder: () => {
      const d = join(work, `case${n++}`);
      mkdirSync(d);
      return d;
    },
  };
}
