/**
 * Run directories: `<outputDir>/<experiment>/<runId>/` with a `plots/` folder inside.
 *
 * A run never writes into an existing directory: the last path component is created with a plain
 * (non-recursive) mkdir, which fails when the directory exists, and the next suffix is tried.
 */

import { basename, dirname, join } from "node:path";
import { RunError } from "./errors.ts";

/** Options for `createRunDir`. */
export interface RunDirOptions {
  /** The time that names the run (default: now). */
  now?: Date;
}

// More runs of one config in the same second than this means something is looping.
const MAX_SUFFIX = 1000;

/**
 * Creates a new run directory and its `plots/` folder.
 *
 * The run id is `<UTC yyyymmdd-hhmmss>-<hash>`; when that directory exists, `-2`, `-3`, ... is
 * appended. Returns the directory path and the run id. Throws `RunError` when no free name is
 * found or the directory cannot be created.
 */
export async function createRunDir(
  outputDir: string,
  experiment: string,
  hash: string,
  options: RunDirOptions = {},
): Promise<{ dir: string; runId: string }> {
  const parent = join(outputDir, experiment);
  await Deno.mkdir(parent, { recursive: true });

  const baseId = `${formatUtc(options.now ?? new Date())}-${hash}`;
  for (let suffix = 1; suffix <= MAX_SUFFIX; suffix++) {
    const runId = suffix === 1 ? baseId : `${baseId}-${suffix}`;
    const dir = join(parent, runId);

    try {
      await Deno.mkdir(dir);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) continue;
      throw new RunError(`cannot create run directory ${dir}: ${String(error)}`, { cause: error });
    }

    await Deno.mkdir(join(dir, "plots"));
    return { dir, runId };
  }

  throw new RunError(
    `cannot create a run directory in ${parent}: ${baseId} and its suffixes -2 to ` +
      `-${MAX_SUFFIX} all exist; remove old runs or wait a second`,
  );
}

/**
 * Creates the run directory `dir`, whose parent may not exist yet, and its `plots/` folder.
 *
 * The run id is the directory's name. Throws `RunError` when `dir` exists, because a run never
 * writes into another run's directory, or when it cannot be created.
 */
export async function createNamedRunDir(dir: string): Promise<{ dir: string; runId: string }> {
  await Deno.mkdir(dirname(dir), { recursive: true });

  try {
    await Deno.mkdir(dir);
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new RunError(`cannot create run directory ${dir}: it exists; remove it to rerun`, {
        cause: error,
      });
    }
    throw new RunError(`cannot create run directory ${dir}: ${String(error)}`, { cause: error });
  }

  await Deno.mkdir(join(dir, "plots"));
  return { dir, runId: basename(dir) };
}

function formatUtc(date: Date): string {
  const pad = (value: number) => String(value).padStart(2, "0");
  const day = `${date.getUTCFullYear()}${pad(date.getUTCMonth() + 1)}${pad(date.getUTCDate())}`;
  const time = `${pad(date.getUTCHours())}${pad(date.getUTCMinutes())}${pad(date.getUTCSeconds())}`;
  return `${day}-${time}`;
}
