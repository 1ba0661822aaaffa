import { existsSync } from "node:fs";
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
