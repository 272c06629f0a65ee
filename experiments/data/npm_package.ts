/**
 * Locates the files of an installed npm package through Deno's npm resolution, so data sets ship
 * as npm dependencies and are never downloaded at run time.
 */

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { UserError } from "../errors.ts";

/**
 * Returns the root folder of the installed npm package `name`.
 *
 * A package whose `exports` hide `package.json` (vega-datasets 3) is found from its main entry
 * point instead. Throws `UserError` naming the package and `npm ci` when it is not installed.
 *
 * @param purpose what the package provides, for the error message (e.g. "the Brown corpus").
 */
export function packageRoot(name: string, purpose: string): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve(`${name}/package.json`));
  } catch (error) {
    if (!isNotExported(error)) throw notInstalled(name, purpose, error);
  }

  let entry: string;
  try {
    entry = require.resolve(name);
  } catch (error) {
    throw notInstalled(name, purpose, error);
  }
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).name === name) {
      return dir;
    }
  }
  throw notInstalled(name, purpose, new Error(`no package.json above ${entry}`));
}

/**
 * Returns the path of `relativePath` inside the npm package `name`; throws `UserError` when the
 * package or the file is missing.
 */
export function packageFile(name: string, relativePath: string, purpose: string): string {
  const path = join(packageRoot(name, purpose), relativePath);
  if (!existsSync(path)) {
    throw new UserError(
      `the file ${relativePath}, ${purpose}, is missing from the npm package ${name} at ${path}; ` +
        `reinstall it with npm ci in the repository root`,
    );
  }
  return path;
}

function isNotExported(error: unknown): boolean {
  return (error as { code?: string } | null)?.code === "ERR_PACKAGE_PATH_NOT_EXPORTED";
}

function notInstalled(name: string, purpose: string, cause: unknown): UserError {
  return new UserError(
    `the npm package ${name}, which provides ${purpose}, is not installed; run npm ci in the ` +
      `repository root`,
    { cause },
  );
}
