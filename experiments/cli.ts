/**
 * moelab's command line.
 *
 *   deno task run configs/quickstart.yaml [--set key.path=value ...] [--backend webgpu|cpu]
 *
 * Exit codes: 0 success, 1 the run failed, 2 invalid input (config, arguments).
 */

import { parseArgs } from "node:util";
import { BackendUnavailableError } from "../kernels/backend.ts";
import type { Backend } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu/backend.ts";
import { ShapeError } from "../tensor/shape.ts";
import { loadConfig } from "./config.ts";
import { RunError, UserError } from "./errors.ts";
import { train } from "./trainer.ts";

const USAGE = `usage: deno task run <config.yaml> [options]

Trains the experiment described by a YAML config and writes results/<experiment>/<run-id>/.

options:
  --set key.path=value   override one config value (repeatable), e.g. --set train.steps=100
  --backend webgpu|cpu   where to compute: webgpu (default, Deno's navigator.gpu) or cpu
                         (a plain TypeScript reference; slow, needs no GPU)
  --help                 print this message`;

/** Creates the backend a config names. */
export async function createBackend(name: "webgpu" | "cpu"): Promise<Backend> {
  if (name === "cpu") return createCpuBackend({ precision: "f32" });
  // Loaded on demand, so a CPU run never touches navigator.gpu.
  const { createWebGpuBackend } = await import("../kernels/webgpu/backend.ts");
  return await createWebGpuBackend();
}

async function runCommand(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        set: { type: "string", multiple: true },
        backend: { type: "string" },
        help: { type: "boolean" },
      },
    });
  } catch (error) {
    throw new UserError(`${(error as Error).message}\n\n${USAGE}`);
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return;
  }
  if (parsed.positionals.length !== 1) {
    throw new UserError(
      `run takes exactly one config file, got ${parsed.positionals.length}\n\n${USAGE}`,
    );
  }

  const overrides = [...(parsed.values.set ?? [])];
  const backendName = parsed.values.backend;
  if (backendName !== undefined) {
    if (backendName !== "webgpu" && backendName !== "cpu") {
      throw new UserError(`--backend is "${backendName}"; choose webgpu or cpu`);
    }
    overrides.push(`backend=${backendName}`);
  }

  const { config, text } = await loadConfig(parsed.positionals[0], overrides);
  const backend = await createBackend(config.backend);
  try {
    await train(config, { backend, configText: text });
  } finally {
    await backend.dispose();
  }
}

/** Prints an error as one paragraph and returns the exit code. */
function report(error: unknown): number {
  if (error instanceof UserError) {
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

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === "run") await runCommand(rest);
    else if (command === undefined || command === "--help" || command === "help") {
      console.log(USAGE);
    } else throw new UserError(`unknown command "${command}"; the commands are: run`);
    return 0;
  } catch (error) {
    return report(error);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
