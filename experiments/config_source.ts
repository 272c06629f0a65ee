/**
 * Reading config files: YAML 1.2 parsing with located errors, and `extends:`, which merges one or
 * more base files under a config.
 *
 * `extends` names a path or a list of paths relative to the folder of the file that contains it.
 * The bases are merged in order, then the file itself on top: mappings merge key by key at every
 * depth, while lists and scalars replace. A base may extend other files; a cycle is an error.
 */

import { dirname, resolve } from "node:path";
import YAML from "yaml";
import { UserError } from "./errors.ts";

/**
 * Top-level keys that describe the runs of an experiment rather than one run: plan.ts reads them,
 * and `loadConfig` leaves them out of the config.
 */
export const PLAN_KEYS = ["arms", "baseline", "seeds", "sweep", "claims", "targets"];

/** Reads a config file; throws `UserError` naming the path and the fix when it cannot. */
export async function readConfigFile(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UserError(
        `config file not found: ${path}; check the path, or run ls configs/ to list the configs`,
      );
    }
    const reason = error instanceof Error ? error.message : String(error);
    throw new UserError(
      `cannot read config file ${path}: ${reason}; check that it is a readable file, or run ` +
        `ls configs/ to list the configs`,
    );
  }
}

/** Parses YAML text; throws `UserError` with `source:line:column`, the reason and the line. */
export function parseYaml(text: string, source: string): unknown {
  // `uniqueKeys` is the default, so a key given twice in one mapping (such as an arm name) is an
  // error here instead of the last value silently winning.
  const doc = YAML.parseDocument(text, { uniqueKeys: true });
  const error = doc.errors[0];
  if (error === undefined) return doc.toJS();

  const position = error.linePos?.[0];
  const location = position === undefined ? source : `${source}:${position.line}:${position.col}`;
  // The yaml package appends " at line L, column C:" and a code frame; the location is given above.
  const reason = error.message.split(" at line ")[0];
  const lineText = position === undefined ? "" : text.split("\n")[position.line - 1]?.trim();
  const lineNote = lineText ? `; the line is: ${lineText}` : "";
  const fix = error.code === "DUPLICATE_KEY"
    ? "; each key may appear once in a mapping, so rename or remove one of them"
    : "";
  throw new UserError(`${location}: invalid YAML: ${reason}${lineNote}${fix}`);
}

/**
 * Reads a config file and merges the files it extends under it.
 *
 * Returns the merged mapping without the `extends` key, or the parsed value as it is when the
 * file is empty or not a mapping (validation reports those). Throws `UserError` for a missing
 * base, an `extends` value that is not a path or list of paths, or a cycle.
 */
export async function readConfigTree(path: string, chain: string[] = []): Promise<unknown> {
  const text = await readConfigFile(path);
  const raw = parseYaml(text, path);
  if (!isMapping(raw) || !("extends" in raw)) return raw;

  const bases = extendsList(raw.extends, path);
  let merged: Record<string, unknown> = {};
  const absolute = resolve(path);

  for (const base of bases) {
    const basePath = resolve(dirname(path), base);
    if (basePath === absolute || chain.includes(basePath)) {
      throw new UserError(
        `${path}: extends: ${base} is extended in a cycle (${
          [...chain, absolute, basePath]
            .join(" -> ")
        }); remove one of the extends entries`,
      );
    }

    let baseRaw: unknown;
    try {
      baseRaw = await readConfigTree(basePath, [...chain, absolute]);
    } catch (error) {
      if (error instanceof UserError && error.message.startsWith("config file not found")) {
        throw new UserError(
          `${path}: extends: base file not found: ${base} (resolved to ${basePath}); paths in ` +
            `extends are relative to the folder of ${path}`,
        );
      }
      throw error;
    }
    if (baseRaw === null || baseRaw === undefined) continue;
    if (!isMapping(baseRaw)) {
      throw new UserError(
        `${basePath}: a base config must be a mapping of keys, got ${describeValue(baseRaw)}; ` +
          `fix the file or remove it from extends in ${path}`,
      );
    }
    merged = deepMerge(merged, baseRaw);
  }

  const own = { ...raw };
  delete own.extends;
  return deepMerge(merged, own);
}

/**
 * Merges `top` over `base`: mappings merge key by key at every depth, while lists, scalars and
 * nulls in `top` replace what `base` has. Neither input is changed.
 */
export function deepMerge(
  base: Record<string, unknown>,
  top: Record<string, unknown>,
): Record<string, unknown> {
  const result: Record<string, unknown> = structuredClone(base);
  for (const [key, value] of Object.entries(top)) {
    const existing = result[key];
    result[key] = isMapping(existing) && isMapping(value)
      ? deepMerge(existing, value)
      : structuredClone(value);
  }
  return result;
}

/** True for a plain mapping (an object that is not an array or null). */
export function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Describes a value for an error message: `"text"`, `3`, `a list`, `a mapping`. */
export function describeValue(value: unknown): string {
  if (value === null) return "an empty value (null)";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return JSON.stringify(value);
  return String(value);
}

function extendsList(value: unknown, path: string): string[] {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0 || !list.every((item) => typeof item === "string" && item !== "")) {
    throw new UserError(
      `${path}: extends: expected a file path or a list of file paths, got ` +
        `${describeValue(value)}; for example extends: ../quickstart.yaml`,
    );
  }
  return list as string[];
}
