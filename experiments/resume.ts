/**
 * Resuming a run from its newest checkpoint: the model, optimizer and data RNG come back exactly,
 * and metrics rows logged after the checkpoint are dropped, so the continued run appends the same
 * rows that an uninterrupted run would have written.
 */

import { join } from "node:path";
import Papa from "papaparse";
import type { Optimizer } from "../optim/optimizer.ts";
import type { RngState, Tensor } from "../tensor/mod.ts";
import {
  checkConfigHash,
  listCheckpoints,
  loadCheckpoint,
  restoreTensors,
} from "./checkpoint/checkpoint.ts";
import { readCsv } from "./csv.ts";
import { UserError } from "./errors.ts";

/** What a checkpoint's state.json holds beyond the step and config hash. */
export interface TrainerState {
  step: number;
  configHash: string;
  dataRng: RngState;
}

/**
 * Loads the newest checkpoint of `runDir` into `weights` and `optimizer` and returns the saved
 * trainer state. Throws `UserError` when the run has no checkpoint or was saved from another
 * config (unless `force`); returns the warning to log when forced past a hash mismatch.
 */
export async function restoreLatest(
  runDir: string,
  configHash: string,
  weights: ReadonlyMap<string, Tensor>,
  optimizer: Optimizer,
  force: boolean,
): Promise<{ state: TrainerState; warning: string | null }> {
  const checkpoints = await listCheckpoints(runDir);
  const latest = checkpoints.at(-1);
  if (latest === undefined) {
    throw new UserError(
      `cannot resume ${runDir}: it has no checkpoint under checkpoints/; start a new run, or ` +
        `set train.checkpointEvery so that runs save checkpoints while they train`,
    );
  }

  const checkpoint = await loadCheckpoint(latest.dir);
  let warning: string | null;
  try {
    warning = checkConfigHash(String(checkpoint.state.configHash), configHash, force);
  } catch (error) {
    throw new UserError(
      `cannot resume ${runDir}: ${(error as Error).message}. The run's own resolved config is ` +
        `${join(runDir, "config.yaml")}: deno task run ${join(runDir, "config.yaml")} --resume ` +
        `${runDir}; --force resumes with the current config anyway`,
    );
  }
  restoreTensors(weights, checkpoint.weights, join(latest.dir, "model.safetensors"));
  optimizer.loadState(checkpoint.optimizer, checkpoint.step);

  const state = checkpoint.state as unknown as TrainerState;
  if (state.dataRng === undefined) {
    throw new UserError(`cannot resume ${runDir}: ${latest.dir}/state.json has no dataRng`);
  }
  return { state, warning };
}

/**
 * Rewrites a metrics CSV without the rows whose step is after `step`, and returns the rows kept.
 * The rewrite goes to a temporary file that replaces the original, so a crash leaves one of them.
 */
export async function truncateMetrics(
  path: string,
  step: number,
): Promise<Record<string, number | string>[]> {
  const rows = await readCsv(path);
  const kept = rows.filter((row) => Number(row.step) <= step);
  const header = (await Deno.readTextFile(path)).split("\n", 1)[0];
  const columns = header.split(",");
  const lines = [header];
  for (const row of kept) {
    lines.push(Papa.unparse([columns.map((c) => formatCell(row[c]))], { newline: "\n" }));
  }
  const temporary = `${path}.tmp`;
  await Deno.writeTextFile(temporary, lines.join("\n") + "\n");
  await Deno.rename(temporary, path);
  return kept;
}

function formatCell(value: number | string | undefined): string {
  if (value === undefined) return "";
  return typeof value === "number" ? String(value) : value;
}
