/**
 * `summary.json`: what a report needs to trace a number back to its run (config hash, software
 * version, adapter, wall time and final metrics).
 */

import { join } from "node:path";
import packageJson from "../package.json" with { type: "json" };

/** The contents of a run's `summary.json`. */
export interface RunSummary {
  runId: string;
  experiment: string;
  /** `configHash` of the resolved config. */
  configHash: string;
  /** moelab version from package.json. */
  version: string;
  backend: string;
  /** The GPU adapter description, or the CPU backend's name. */
  adapter: string;
  seed: number;
  /** ISO 8601 UTC time when the run started. */
  startedAt: string;
  wallTimeSeconds: number;
  /** Optimizer steps completed. */
  steps: number;
  status: "completed" | "failed";
  /** Final metric values by name, for example `{ trainLoss: 1.52, valLoss: 1.61 }`. */
  finalMetrics: Record<string, number>;
  /** The error message when status is "failed". */
  error?: string;
  /** Other facts the trainer records. */
  [key: string]: unknown;
}

/**
 * Writes `<dir>/summary.json` atomically: a temporary file in the same directory is renamed over
 * it, so a reader sees the old or the new summary, never part of one.
 *
 * JSON has no NaN or Infinity, so a non-finite number is written as the string "NaN", "Infinity"
 * or "-Infinity" (JSON.stringify would write null and hide a diverged run).
 */
export async function writeSummary(dir: string, summary: RunSummary): Promise<void> {
  const path = join(dir, "summary.json");
  const temporaryPath = join(dir, "summary.json.tmp");

  const text = JSON.stringify(summary, nonFiniteAsString, 2) + "\n";
  await Deno.writeTextFile(temporaryPath, text);
  await Deno.rename(temporaryPath, path);
}

/** Returns the moelab version from package.json, for example "0.1.0". */
export function moelabVersion(): string {
  return packageJson.version;
}

function nonFiniteAsString(_key: string, value: unknown): unknown {
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return value;
}
