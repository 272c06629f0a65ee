/**
 * The experiment runner: trains the runs of a plan into `<output.dir>/<experiment>/<run id>/`,
 * resuming from what is on disk.
 *
 * - A run whose directory has a `done` marker is skipped.
 * - A run is claimed with a lock file first (run_lock.ts), so several processes (shards, SLURM
 *   array tasks) can share one results folder; a run claimed by a live process is skipped.
 * - A run directory without `done` is an unfinished run and goes to `resumeRun`.
 *
 * The runner also writes `plan.json` (the runs, arms and claims) beside the runs, so a report can
 * be made from the results folder alone.
 */

import { join } from "node:path";
import type { Backend } from "../kernels/backend.ts";
import { BackendUnavailableError } from "../kernels/backend.ts";
import { UserError } from "./errors.ts";
import type { ExperimentPlan, PlannedRun } from "./plan.ts";
import { listCheckpoints } from "./checkpoint/checkpoint.ts";
import { claimLock } from "./run_lock.ts";
import { train } from "./trainer.ts";

/** The file in a run directory that marks a finished run. */
export const DONE_MARKER = "done";
/** The plan file in an experiment's results folder. */
export const PLAN_FILE = "plan.json";

/** Options for `runPlan`. */
export interface RunnerOptions {
  /** Returns the backend for a config's `backend`; the caller owns and disposes it. */
  backend: (name: "webgpu" | "cpu") => Promise<Backend>;
  /** Receives one line per event. */
  log?: (line: string) => void;
  /** Draws the trainer's progress line when stdout is a terminal (default true). */
  progress?: boolean;
  /** Stops the run in progress at the end of its current step, with a checkpoint. */
  signal?: AbortSignal;
}

/** What happened to each selected run, by run id. */
export interface RunnerResult {
  completed: string[];
  /** Finished earlier (a `done` marker exists). */
  skipped: string[];
  /** Claimed by another live process. */
  busy: string[];
  failed: { id: string; message: string }[];
}

/** The contents of `plan.json`. */
export interface PlanFile {
  experiment: string;
  source: string;
  arms: string[];
  baseline: string;
  seeds: number[];
  points: Record<string, unknown>[];
  claims: ExperimentPlan["claims"];
  targets?: ExperimentPlan["targets"];
  runs: Pick<PlannedRun, "index" | "id" | "arm" | "seed" | "point" | "pointValues" | "group">[];
}

/** Returns the results folder of an experiment: `<output.dir>/<experiment>`. */
export function experimentDir(plan: ExperimentPlan): string {
  return join(plan.outputDir, plan.experiment);
}

/**
 * Runs `runs` (a selection of `plan.runs`) one after another.
 *
 * A run that fails is logged and recorded, and the next run starts; a backend that is not
 * available stops the whole loop, because every later run would fail the same way.
 */
export async function runPlan(
  plan: ExperimentPlan,
  runs: PlannedRun[],
  options: RunnerOptions,
): Promise<RunnerResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const folder = experimentDir(plan);
  await Deno.mkdir(folder, { recursive: true });
  await writePlanFile(folder, plan);

  const result: RunnerResult = { completed: [], skipped: [], busy: [], failed: [] };
  for (const run of runs) {
    const dir = join(folder, run.id);
    const label = `[${run.index + 1}/${plan.runs.length}] ${run.id}`;

    if (await exists(join(dir, DONE_MARKER))) {
      log(`${label}: done earlier, skipped`);
      result.skipped.push(run.id);
      continue;
    }

    const lock = await claimLock(join(folder, `${run.id}.lock`));
    if ("heldBy" in lock) {
      log(`${label}: claimed by ${lock.heldBy}, skipped`);
      result.busy.push(run.id);
      continue;
    }

    try {
      // Another process may have finished it between the check above and the claim.
      if (await exists(join(dir, DONE_MARKER))) {
        log(`${label}: done earlier, skipped`);
        result.skipped.push(run.id);
        continue;
      }

      const backend = await options.backend(run.config.backend);
      if (await exists(dir)) {
        log(`${label}: unfinished run found, resuming`);
        await resumeRun(dir, run, {
          backend,
          log,
          progress: options.progress,
          signal: options.signal,
        });
      } else {
        log(`${label}: starting (arm ${run.arm}, seed ${run.seed})`);
        await train(run.config, {
          backend,
          configText: run.text,
          log,
          progress: options.progress,
          runDir: dir,
          signal: options.signal,
        });
      }

      await writeDoneMarker(dir, run);
      result.completed.push(run.id);
    } catch (error) {
      if (error instanceof BackendUnavailableError || error instanceof UserError) throw error;
      // An interrupted run has saved its checkpoint; the runs after it must not start.
      if (options.signal?.aborted) throw error;
      const message = error instanceof Error ? error.message : String(error);
      log(`${label}: failed: ${message}`);
      result.failed.push({ id: run.id, message });
    } finally {
      lock.release();
    }
  }
  return result;
}

/**
 * Continues an unfinished run from its newest checkpoint; a run that stopped before its first
 * checkpoint restarts from step 0 in a fresh directory.
 */
export async function resumeRun(
  dir: string,
  run: PlannedRun,
  context: {
    backend: Backend;
    log: (line: string) => void;
    progress?: boolean;
    signal?: AbortSignal;
  },
): Promise<void> {
  const options = {
    backend: context.backend,
    configText: run.text,
    log: context.log,
    progress: context.progress,
    signal: context.signal,
  };
  if ((await listCheckpoints(dir)).length > 0) {
    await train(run.config, { ...options, resume: { dir } });
    return;
  }
  context.log(`${run.id}: no checkpoint was written, so the run restarts from step 0`);
  await Deno.remove(dir, { recursive: true });
  await train(run.config, { ...options, runDir: dir });
}

/** Reads `plan.json` from an experiment's results folder; undefined when there is none. */
export async function readPlanFile(folder: string): Promise<PlanFile | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(join(folder, PLAN_FILE))) as PlanFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new UserError(
      `cannot read ${join(folder, PLAN_FILE)}: ${String(error)}; rerun deno task run on the ` +
        `experiment's config to rewrite it`,
    );
  }
}

/** Writes `plan.json` by renaming a private temporary file, so concurrent writers never mix. */
async function writePlanFile(folder: string, plan: ExperimentPlan): Promise<void> {
  const file: PlanFile = {
    experiment: plan.experiment,
    source: plan.source,
    arms: plan.arms,
    baseline: plan.baseline,
    seeds: plan.seeds,
    points: plan.points,
    claims: plan.claims,
    targets: plan.targets,
    runs: plan.runs.map(({ index, id, arm, seed, point, pointValues, group }) => ({
      index,
      id,
      arm,
      seed,
      point,
      pointValues,
      group,
    })),
  };
  await writeAtomically(join(folder, PLAN_FILE), JSON.stringify(file, null, 2) + "\n");
}

async function writeDoneMarker(dir: string, run: PlannedRun): Promise<void> {
  const marker = { runId: run.id, finishedAt: new Date().toISOString() };
  await writeAtomically(join(dir, DONE_MARKER), JSON.stringify(marker) + "\n");
}

async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(temporary, text);
  await Deno.rename(temporary, path);
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
