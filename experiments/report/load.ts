/**
 * Reads an experiment's results folder for a report: `plan.json` (written by the runner) and, per
 * run, `metrics.csv`, the optional `routing.csv` and `attention.csv`, `summary.json` and the
 * `done` marker.
 *
 * A folder without `plan.json` (runs made by plain `deno task run` without arms) is read as one
 * arm named "base" holding every run directory that has a summary.json.
 *
 * Optional per-run files, in long format:
 * - routing.csv: step, layer, expert, load (fraction of the layer's tokens sent to the expert),
 *   and optionally fluctuation (fraction of tokens whose top-1 expert changed since the previous
 *   logged step; the same value on every expert row of a step and layer).
 * - attention.csv: step, layer, head, sink_rate (fraction of attention mass on the first token).
 */

import { join } from "node:path";
import { type CsvValue, readCsv } from "../csv.ts";
import { UserError } from "../errors.ts";
import type { Claim } from "../plan.ts";
import { DONE_MARKER, type PlanFile, readPlanFile } from "../runner.ts";

/** The state of a planned run on disk. */
export type RunStatus = "completed" | "failed" | "unfinished" | "missing";

export type CsvRows = Record<string, CsvValue>[];

/** One run as found on disk. */
export interface RunResult {
  id: string;
  arm: string;
  seed: number;
  group: string;
  status: RunStatus;
  metrics: CsvRows;
  routing?: CsvRows;
  attention?: CsvRows;
  /** The error from summary.json of a failed run. */
  error?: string;
}

/** An experiment's results as found on disk. */
export interface ExperimentResults {
  folder: string;
  experiment: string;
  baseline: string;
  /** Row labels in plan order: the arm, then sweep values when there is a sweep. */
  groups: { group: string; arm: string; point: number }[];
  claims: Claim[];
  /** Metric thresholds whose first crossing is reported in steps. */
  targets: Record<string, number>;
  runs: RunResult[];
}

/** Reads `folder`; throws `UserError` when it is not an experiment's results folder. */
export async function loadResults(folder: string): Promise<ExperimentResults> {
  try {
    if (!(await Deno.stat(folder)).isDirectory) throw new Deno.errors.NotFound();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new UserError(
      `results folder not found: ${folder}; pass results/<experiment>, the folder that ` +
        `deno task run wrote`,
    );
  }

  const plan = await readPlanFile(folder);
  return plan === undefined ? await loadUnplanned(folder) : await loadPlanned(folder, plan);
}

async function loadPlanned(folder: string, plan: PlanFile): Promise<ExperimentResults> {
  const runs: RunResult[] = [];
  for (const run of plan.runs) {
    const dir = join(folder, run.id);
    const status = await runStatus(dir);
    runs.push({
      id: run.id,
      arm: run.arm,
      seed: run.seed,
      group: run.group,
      status: status.status,
      error: status.error,
      ...(await readRunFiles(dir, status.status)),
    });
  }

  const groups: ExperimentResults["groups"] = [];
  for (const run of plan.runs) {
    if (!groups.some((g) => g.group === run.group)) {
      groups.push({ group: run.group, arm: run.arm, point: run.point });
    }
  }
  return {
    folder,
    experiment: plan.experiment,
    baseline: plan.baseline,
    groups,
    claims: plan.claims,
    targets: plan.targets ?? {},
    runs,
  };
}

async function loadUnplanned(folder: string): Promise<ExperimentResults> {
  const runs: RunResult[] = [];
  const names: string[] = [];
  for await (const entry of Deno.readDir(folder)) if (entry.isDirectory) names.push(entry.name);

  for (const name of names.sort()) {
    const summary = await readSummary(join(folder, name));
    if (summary === undefined) continue;
    const status: RunStatus = summary.status === "completed" ? "completed" : "failed";
    runs.push({
      id: name,
      arm: "base",
      seed: typeof summary.seed === "number" ? summary.seed : 0,
      group: "base",
      status,
      error: typeof summary.error === "string" ? summary.error : undefined,
      ...(await readRunFiles(join(folder, name), status)),
    });
  }
  if (runs.length === 0) {
    throw new UserError(
      `${folder} has no plan.json and no run directories with a summary.json; pass ` +
        `results/<experiment>, the folder that deno task run wrote`,
    );
  }

  const experiment = folder.split(/[\\/]/).filter(Boolean).at(-1) ?? folder;
  return {
    folder,
    experiment,
    baseline: "base",
    groups: [{ group: "base", arm: "base", point: 0 }],
    claims: [],
    targets: {},
    runs,
  };
}

async function runStatus(dir: string): Promise<{ status: RunStatus; error?: string }> {
  if (await exists(join(dir, DONE_MARKER))) return { status: "completed" };
  if (!(await exists(dir))) return { status: "missing" };
  const summary = await readSummary(dir);
  if (summary?.status === "failed") {
    return {
      status: "failed",
      error: typeof summary.error === "string" ? summary.error : undefined,
    };
  }
  return { status: "unfinished" };
}

async function readRunFiles(
  dir: string,
  status: RunStatus,
): Promise<Pick<RunResult, "metrics" | "routing" | "attention">> {
  if (status === "missing") return { metrics: [] };
  return {
    metrics: (await readOptionalCsv(join(dir, "metrics.csv"))) ?? [],
    routing: await readOptionalCsv(join(dir, "routing.csv")),
    attention: await readOptionalCsv(join(dir, "attention.csv")),
  };
}

async function readOptionalCsv(path: string): Promise<CsvRows | undefined> {
  try {
    return await readCsv(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

async function readSummary(dir: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));
  } catch {
    // No summary (a run still in progress or one killed early) or a partial one.
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
