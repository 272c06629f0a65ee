/** Helpers shared by the CLI commands: argument parsing and backend creation. */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Backend } from "../../kernels/backend.ts";
import { createFastCpuBackend } from "../../kernels/cpu/fast_backend.ts";
import { UserError } from "../errors.ts";

/** A subcommand of the CLI. */
export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  usage: string;
  /** Runs the command; returns the exit code. */
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parses `args`; an unknown option or a missing value throws `UserError` with the usage. */
export function parseCommandArgs<T extends Options>(args: string[], options: T, usage: string) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UserError(`${(error as Error).message}\n\n${usage}`);
  }
}

/** Parses a non-negative integer option; throws `UserError` naming the option otherwise. */
export function parseCount(
  text: string | undefined,
  option: string,
  minimum = 0,
): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < minimum) {
    throw new UserError(`${option} is "${text}"; expected an integer >= ${minimum}`);
  }
  return Number(text);
}

/** Returns the `--backend` value as a `--set` override; throws `UserError` for an unknown name. */
export function backendOverride(name: string | undefined): string[] {
  if (name === undefined) return [];
  if (name !== "webgpu" && name !== "cpu") {
    throw new UserError(`--backend is "${name}"; choose webgpu or cpu`);
  }
  return [`backend=${name}`];
}

/** Creates the backend a config names. */
export async function createBackend(name: "webgpu" | "cpu"): Promise<Backend> {
  // The CPU backend runs its matrix products as WebAssembly SIMD kernels; the plain TypeScript
  // reference (createCpuBackend) stays the oracle of the tests.
  if (name === "cpu") return createFastCpuBackend();
  // Loaded on demand, so a CPU run never touches navigator.gpu.
  const { createWebGpuBackend } = await import("../../kernels/webgpu/backend.ts");
  return await createWebGpuBackend();
}
