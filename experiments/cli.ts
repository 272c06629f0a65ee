/**
 * moelab's command line: `deno task run|report|config|list|slurm`, each a module in cli/.
 *
 *   deno task run configs/quickstart.yaml [--set key.path=value ...] [--backend webgpu|cpu]
 *   deno task run configs/examples/mlp-ablation.yaml --shard 0/2
 *   deno task report results/mlp-ablation
 *
 * Exit codes: 0 success, 1 a run failed, 2 invalid input (config, arguments), 130 interrupted.
 */

import { BackendUnavailableError } from "../kernels/backend.ts";
import { AttentionConfigError } from "../layers/attention/base.ts";
import { ShapeError } from "../tensor/shape.ts";
import { type Command } from "./cli/common.ts";
import { configCommand } from "./cli/config.ts";
import { listCommand } from "./cli/list.ts";
import { reportCommand } from "./cli/report.ts";
import { runCommand } from "./cli/run.ts";
import { slurmCommand } from "./cli/slurm.ts";
import { RunError, UserError } from "./errors.ts";

export { createBackend } from "./cli/common.ts";

const COMMANDS: Command[] = [runCommand, reportCommand, configCommand, listCommand, slurmCommand];

const USAGE = `usage: deno task <command> [arguments] (or deno run -A experiments/cli.ts <command>)

commands:
${COMMANDS.map((command) => `  ${command.name.padEnd(8)} ${command.summary}`).join("\n")}

Run a command with --help for its options.`;

/** Prints an error as one paragraph and returns the exit code. */
function reportError(error: unknown): number {
  // An attention variant's options are checked when the model is built, against its sizes.
  if (error instanceof UserError || error instanceof AttentionConfigError) {
    console.error(`error: ${error.message}`);
    return 2;
  }
  if (
    error instanceof RunError || error instanceof BackendUnavailableError ||
    error instanceof ShapeError
  ) {
    console.error(`error: ${error.message}`);
    return 1;
  }
  const message = error instanceof Error ? error.message : String(error);
  console.error(`error: ${message}`);
  if (Deno.env.get("MOELAB_DEBUG")) console.error(error instanceof Error ? error.stack : "");
  else console.error("(set MOELAB_DEBUG=1 to print the stack trace)");
  return 1;
}

/** Runs the command line `args` and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  try {
    if (name === undefined || name === "--help" || name === "help") {
      console.log(USAGE);
      return 0;
    }
    const command = COMMANDS.find((c) => c.name === name);
    if (command === undefined) {
      throw new UserError(
        `unknown command "${name}"; the commands are: ${COMMANDS.map((c) => c.name).join(", ")}`,
      );
    }
    return await command.run(rest);
  } catch (error) {
    return reportError(error);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
