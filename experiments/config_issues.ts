/**
 * Turns zod issues into one error line each: the source, the dotted path, what was expected, the
 * value found and, where it helps, the fix.
 */

import { z } from "zod";
import { describeValue, PLAN_KEYS } from "./config_source.ts";
import type { Registry } from "./registry.ts";

/** Schema lookups by key path, for the config being validated. */
export interface SchemaLookup {
  /** The unwrapped schema at a key path; undefined when the path is not in the schema. */
  leafAt(keys: string[]): z.ZodType | undefined;
  /** The valid keys of the section at a key path; undefined when it is not a section. */
  keysAt(keys: string[]): string[] | undefined;
  /** The registry whose entries the section at a key path selects by name. */
  registryAt(keys: string[]): Registry<unknown> | undefined;
}

/**
 * Formats zod issues as `<source>: <path>: <problem>` lines; a key in `overridden` gets
 * " (from --set)".
 */
export function formatIssues(
  issues: z.core.$ZodIssue[],
  source: string,
  lookup: SchemaLookup,
  overridden: Set<string> = new Set(),
): string[] {
  return issues.flatMap((issue) => formatIssue(issue, source, lookup, overridden));
}

function formatIssue(
  issue: z.core.$ZodIssue,
  source: string,
  lookup: SchemaLookup,
  overridden: Set<string>,
): string[] {
  const path = issue.path.map(String);
  const dotted = path.join(".");
  const origin = overridden.has(dotted) ? " (from --set)" : "";

  switch (issue.code) {
    case "unrecognized_keys": {
      const validKeys = lookup.keysAt(path) ?? [];
      // The plan keys are valid at the top level of a config file, though not in a run's config.
      const valid = path.length === 0 ? [...validKeys, ...PLAN_KEYS] : validKeys;
      return issue.keys.map((key) =>
        `${source}: ${[...path, key].join(".")}: unknown key; valid keys: ${valid.join(", ")}`
      );
    }
    case "invalid_union": {
      // A registered section whose name matches no entry.
      const registry = lookup.registryAt(path.slice(0, -1));
      if (registry !== undefined && path.at(-1) === "name") {
        const input = (issue as { input?: { name?: unknown } }).input;
        return [
          `${source}: ${dotted}: unknown ${registry.kind} ${describeValue(input?.name)}; ` +
          `registered ${registry.plural}: ${registry.describeNames()}${origin}`,
        ];
      }
      return [`${source}: ${dotted || "(top level)"}: ${describeIssue(issue, path, lookup)}`];
    }
    case "custom":
      // Cross-field checks write whole sentences that start with the path.
      if (issue.message.startsWith(dotted)) return [`${source}: ${issue.message}${origin}`];
      return [`${source}: ${dotted}: ${describeIssue(issue, path, lookup)}${origin}`];
    default:
      return [
        `${source}: ${dotted || "(top level)"}: ${describeIssue(issue, path, lookup)}${origin}`,
      ];
  }
}

function describeIssue(issue: z.core.$ZodIssue, path: string[], lookup: SchemaLookup): string {
  const input = (issue as { input?: unknown }).input;
  const got = `got ${describeValue(input)}`;
  // zod reports `origin: "number"` for range checks on integers, so the schema decides the noun.
  const schema = lookup.leafAt(path);
  const kind = schema instanceof z.ZodNumber && schema.isInt ? "an integer" : "a number";

  switch (issue.code) {
    case "invalid_type": {
      // zod reports `expected: "number"` for integer fields too.
      const expected = issue.expected === "number" && kind === "an integer"
        ? kind
        : describeType(issue.expected);
      if (input === undefined) return `required but missing; add it with ${expected} as its value`;
      return `expected ${expected}, ${got}`;
    }
    case "too_small":
      if (issue.origin === "string") return `must not be empty, ${got}`;
      if (issue.origin === "array") return `must list at least ${issue.minimum} item(s), ${got}`;
      return `expected ${kind} ${issue.inclusive ? ">=" : ">"} ${issue.minimum}, ${got}`;
    case "too_big":
      return `expected ${kind} ${issue.inclusive ? "<=" : "<"} ${issue.maximum}, ${got}`;
    case "invalid_value":
      return `expected one of ${issue.values.map(String).join(", ")}, ${got}`;
    default:
      return `${issue.message}, ${got}`;
  }
}

function describeType(expected: string): string {
  switch (expected) {
    case "int":
      return "an integer";
    case "number":
      return "a finite number";
    case "boolean":
      return "true or false";
    case "string":
      return "a string";
    case "object":
    case "record":
      return "a mapping";
    case "array":
      return "a list";
    default:
      return expected;
  }
}
