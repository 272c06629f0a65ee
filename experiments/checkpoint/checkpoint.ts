/**
 * Training checkpoints: `<runDir>/checkpoints/step-N/` holding model.safetensors,
 * optimizer.safetensors and state.json (step, RNG state, data position, config hash, schedule).
 *
 * A checkpoint is written into a temporary directory under checkpoints/ and renamed into place,
 * so a step-N directory is complete whenever it exists and a crash mid-save leaves only a
 * temporary directory, which listing ignores and the next save removes.
 */

import { join } from "node:path";
import type { HostArray } from "../../kernels/backend.ts";
import { formatShape, type Tensor } from "../../tensor/mod.ts";
import { decodeSafetensors, encodeSafetensors, type SafetensorsEntry } from "./safetensors.ts";

/** The contents of state.json: the step and the config hash, plus any fields the trainer adds. */
export interface CheckpointState {
  step: number;
  configHash: string;
  [key: string]: unknown;
}

export interface CheckpointContents {
  /** Model parameters by dotted name. */
  weights: ReadonlyMap<string, Tensor>;
  /** Optimizer state by name, as `Optimizer.stateTensors()` returns it. */
  optimizer: ReadonlyMap<string, Tensor>;
  /** Saved as state.json, with `step` set to the checkpoint's step. */
  state: { configHash: string; [key: string]: unknown };
}

export interface LoadedCheckpoint {
  dir: string;
  step: number;
  weights: Map<string, SafetensorsEntry>;
  optimizer: Map<string, SafetensorsEntry>;
  state: CheckpointState;
}

const STEP_DIR = /^step-(\d+)$/;
const TEMP_PREFIX = ".tmp-";

/**
 * Saves a checkpoint of update `step` to `<runDir>/checkpoints/step-<step>/`, replacing one of
 * the same step, then deletes all but the `keepLast` newest checkpoints (`Infinity` keeps all).
 * Returns the checkpoint directory. Reads every tensor back from the device.
 */
export async function saveCheckpoint(
  runDir: string,
  step: number,
  contents: CheckpointContents,
  keepLast: number,
): Promise<string> {
  if (!Number.isInteger(step) || step < 0) {
    throw new Error(`saveCheckpoint: step is ${step} but must be an integer ≥ 0`);
  }
  if (!(keepLast === Infinity || (Number.isInteger(keepLast) && keepLast >= 1))) {
    throw new Error(
      `saveCheckpoint: keepLast is ${keepLast} but must be an integer ≥ 1 or Infinity`,
    );
  }
  const root = join(runDir, "checkpoints");
  await Deno.mkdir(root, { recursive: true });

  const metadata = { step: String(step), producer: "moelab" };
  const model = encodeSafetensors(await readTensors(contents.weights), {
    ...metadata,
    content: "model",
  });
  const optimizer = encodeSafetensors(await readTensors(contents.optimizer), {
    ...metadata,
    content: "optimizer",
  });
  const state = new TextEncoder().encode(
    JSON.stringify({ ...contents.state, step }, null, 2) + "\n",
  );

  const temp = await Deno.makeTempDir({ dir: root, prefix: `${TEMP_PREFIX}step-${step}-` });
  await writeSynced(join(temp, "model.safetensors"), model);
  await writeSynced(join(temp, "optimizer.safetensors"), optimizer);
  await writeSynced(join(temp, "state.json"), state);

  // rename() cannot replace a non-empty directory, so an old checkpoint of this step moves aside.
  const dir = join(root, `step-${step}`);
  if (await exists(dir)) {
    const aside = await Deno.makeTempDir({
      dir: root,
      prefix: `${TEMP_PREFIX}replaced-step-${step}-`,
    });
    await Deno.remove(aside);
    await Deno.rename(dir, aside);
  }
  await Deno.rename(temp, dir);

  await prune(runDir, keepLast);
  return dir;
}

/** Lists the complete checkpoints of a run, oldest first; none when checkpoints/ is missing. */
export async function listCheckpoints(runDir: string): Promise<{ step: number; dir: string }[]> {
  const root = join(runDir, "checkpoints");
  const found: { step: number; dir: string }[] = [];
  try {
    for await (const entry of Deno.readDir(root)) {
      const match = STEP_DIR.exec(entry.name);
      if (!entry.isDirectory || match === null) continue;
      found.push({ step: Number(match[1]), dir: join(root, entry.name) });
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return found.sort((a, b) => a.step - b.step);
}

/** Loads a checkpoint directory written by `saveCheckpoint`. */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  const statePath = join(dir, "state.json");
  let state: CheckpointState;
  try {
    state = JSON.parse(await Deno.readTextFile(statePath));
  } catch (error) {
    throw new Error(`cannot read checkpoint state ${statePath}: ${String(error)}`, {
      cause: error,
    });
  }
  if (!Number.isInteger(state?.step) || typeof state.configHash !== "string") {
    throw new Error(
      `checkpoint state ${statePath} lacks an integer "step" or a string "configHash"`,
    );
  }

  const modelPath = join(dir, "model.safetensors");
  const optimizerPath = join(dir, "optimizer.safetensors");
  const weights = decodeSafetensors(await Deno.readFile(modelPath), modelPath).tensors;
  const optimizer = decodeSafetensors(await Deno.readFile(optimizerPath), optimizerPath).tensors;
  return { dir, step: state.step, weights, optimizer, state };
}

/**
 * Compares the config hash a checkpoint was saved with to the current one. Returns null when they
 * are equal and a warning line when they differ and `force` is set; throws otherwise.
 */
export function checkConfigHash(
  savedHash: string,
  currentHash: string,
  force: boolean,
): string | null {
  if (savedHash === currentHash) return null;
  const difference =
    `checkpoint config hash ${savedHash} differs from the current config hash ${currentHash}`;
  if (force) return `${difference}; resuming anyway because the resume was forced`;
  throw new Error(
    `${difference}; resume with the config the run was saved with, or force the resume`,
  );
}

/**
 * Writes saved values into existing tensors in place (model parameters on resume). Throws before
 * writing anything when a name is missing or unexpected or a shape differs; `label` names the
 * file in the message.
 */
export function restoreTensors(
  targets: ReadonlyMap<string, Tensor>,
  saved: ReadonlyMap<string, SafetensorsEntry>,
  label: string,
): void {
  const missing = [...targets.keys()].filter((name) => !saved.has(name));
  const unexpected = [...saved.keys()].filter((name) => !targets.has(name));
  if (missing.length > 0 || unexpected.length > 0) {
    throw new Error(
      `${label}: saved tensors do not match: missing ${listNames(missing)}, unexpected ${
        listNames(unexpected)
      }`,
    );
  }
  for (const [name, target] of targets) {
    const entry = saved.get(name)!;
    if (formatShape(entry.shape) !== formatShape(target.shape)) {
      throw new Error(
        `${label}: ${name} was saved with shape ${formatShape(entry.shape)} but is ${
          formatShape(target.shape)
        }`,
      );
    }
    if ((entry.dtype === "I32") !== (target.dtype === "i32")) {
      throw new Error(
        `${label}: ${name} was saved as ${entry.dtype} but the tensor is ${target.dtype}`,
      );
    }
  }

  for (const [name, target] of targets) {
    const backend = target.backend;
    const source = backend.upload(saved.get(name)!.data, target.dtype);
    const n = target.size;
    backend.copyAxis(source, target.storage, {
      outer: 1,
      inner: 1,
      srcAxisLen: n,
      dstAxisLen: n,
      srcStart: 0,
      dstStart: 0,
      len: n,
    });
    backend.release(source);
  }
}

async function readTensors(
  tensors: ReadonlyMap<string, Tensor>,
): Promise<Map<string, SafetensorsEntry>> {
  const out = new Map<string, SafetensorsEntry>();
  for (const [name, tensor] of tensors) {
    out.set(name, toEntry(tensor, await tensor.data()));
  }
  return out;
}

/** i32 tensors become I32; float tensors F64 on a float64 backend, F32 otherwise. */
function toEntry(tensor: Tensor, data: HostArray): SafetensorsEntry {
  const shape = [...tensor.shape];
  if (tensor.dtype === "i32") return { dtype: "I32", shape, data: Int32Array.from(data) };
  if (tensor.backend.precision === "f64") {
    return { dtype: "F64", shape, data: Float64Array.from(data) };
  }
  return {
    dtype: "F32",
    shape,
    data: data instanceof Float32Array ? data : Float32Array.from(data),
  };
}

async function writeSynced(path: string, bytes: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true, createNew: true });
  try {
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Deletes all but the newest `keepLast` checkpoints and every leftover temporary directory. */
async function prune(runDir: string, keepLast: number): Promise<void> {
  const root = join(runDir, "checkpoints");
  const checkpoints = await listCheckpoints(runDir);
  const old = keepLast === Infinity
    ? []
    : checkpoints.slice(0, Math.max(0, checkpoints.length - keepLast));
  for (const { dir } of old) await Deno.remove(dir, { recursive: true });

  for await (const entry of Deno.readDir(root)) {
    if (entry.name.startsWith(TEMP_PREFIX)) {
      await Deno.remove(join(root, entry.name), { recursive: true });
    }
  }
}

function listNames(names: string[]): string {
  if (names.length === 0) return "none";
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}
