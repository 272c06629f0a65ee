/** `deno task list`: the registered routers, attention variants, optimizers, schedules and tasks. */

import { describeSchema, optionDefaults } from "../reference.ts";
import { attention, optimizers, type Registry, routers, schedules, tasks } from "../registry.ts";
import { type Command, parseCommandArgs } from "./common.ts";

const USAGE = `usage: deno task list

Prints every registered name with its options, their types and defaults. A config selects an
entry with name: in its task, optimizer or schedule section.

options:
  --help   print this message`;

export const listCommand: Command = {
  name: "list",
  summary: "print the registered tasks, optimizers, schedules, routers and attention variants",
  usage: USAGE,
  run(args) {
    const { values } = parseCommandArgs(args, { help: { type: "boolean" } }, USAGE);
    if (values.help) {
      console.log(USAGE);
      return Promise.resolve(0);
    }
    const registries: Registry<unknown>[] = [routers, attention, optimizers, schedules, tasks];
    console.log(registries.map(describeRegistry).join("\n\n"));
    return Promise.resolve(0);
  },
};

/** Formats one registry: a heading, then each entry with its options. */
export function describeRegistry(registry: Registry<unknown>): string {
  const lines = [`${registry.plural}:`];
  if (registry.entries().length === 0) lines.push("  (none registered)");

  for (const entry of registry.entries()) {
    lines.push(`  ${entry.name}: ${entry.summary}`);
    const defaults = optionDefaults(entry.options);
    for (const [key, schema] of Object.entries(entry.options.shape)) {
      const type = describeSchema(schema as Parameters<typeof describeSchema>[0]);
      lines.push(`    ${key}: ${type}, default ${JSON.stringify(defaults[key])}`);
    }
  }
  return lines.join("\n");
}
