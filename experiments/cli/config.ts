/** `deno task config`: lists an experiment's runs, checks config files, prints the reference. */

import { UserError } from "../errors.ts";
import { loadPlan } from "../plan.ts";
import { configReference } from "../reference.ts";
import { type Command, parseCommandArgs, parseCount } from "./common.ts";

const USAGE = `usage: deno task config <config.yaml> [options]
       deno task config --check <config.yaml>...
       deno task config --reference

Without options, prints the runs a config expands to (position, id, arm, seed) and the resolved
config of the first run.

options:
  --set key.path=value   override one config value in every run (repeatable)
  --index i              print the resolved config of the run at position i (from 0)
  --check                validate every file given and expand its runs; prints one line per file
                         and exits 2 when any is invalid
  --reference            print every config key with its type, default and registered choices
  --help                 print this message`;

export const configCommand: Command = {
  name: "config",
  summary: "list an experiment's runs, check configs, or print the config reference",
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseCommandArgs(args, {
      set: { type: "string", multiple: true },
      index: { type: "string" },
      check: { type: "boolean" },
      reference: { type: "boolean" },
      help: { type: "boolean" },
    }, USAGE);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (values.reference) {
      console.log(configReference());
      return 0;
    }
    if (values.check) return await checkFiles(positionals, values.set ?? []);

    if (positionals.length !== 1) {
      throw new UserError(`config takes one config file, got ${positionals.length}\n\n${USAGE}`);
    }
    const plan = await loadPlan(positionals[0], values.set ?? []);
    const index = parseCount(values.index, "--index") ?? 0;
    if (index >= plan.runs.length) {
      throw new UserError(
        `--index is ${index} but ${plan.source} has ${plan.runs.length} run(s); choose an index ` +
          `from 0 to ${plan.runs.length - 1}`,
      );
    }

    console.log(`${plan.experiment}: ${plan.runs.length} run(s), baseline arm ${plan.baseline}`);
    for (const run of plan.runs) {
      console.log(`  ${run.index}  ${run.id}  arm ${run.group}  seed ${run.seed}`);
    }
    console.log(`\n# resolved config of run ${index} (${plan.runs[index].id})`);
    console.log(plan.runs[index].text.trimEnd());
    return 0;
  },
};

/**
 * Validates each file in turn. Each result starts a line with "check <path>: ", followed by
 * "ok (N runs)" or "invalid" and the error lines.
 */
async function checkFiles(paths: string[], overrides: string[]): Promise<number> {
  if (paths.length === 0) throw new UserError(`--check needs at least one config file\n\n${USAGE}`);

  let invalid = 0;
  for (const path of paths) {
    try {
      const plan = await loadPlan(path, overrides);
      console.log(`check ${path}: ok (${plan.runs.length} runs)`);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      invalid++;
      console.log(
        `check ${path}: invalid\n${
          error.message.split("\n").map((l) => `  error: ${l}`).join("\n")
        }`,
      );
    }
  }
  return invalid > 0 ? 2 : 0;
}
