import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checkConfigHash,
  listCheckpoints,
  loadCheckpoint,
  restoreTensors,
  saveCheckpoint,
} from "../../experiments/checkpoint/checkpoint.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createOptimizer } from "../../optim/create.ts";
import { Tensor } from "../../tensor/mod.ts";

// Every test writes below this folder, which is removed when the test module unloads.
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-checkpoint-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

const backend = createCpuBackend({ precision: "f32" });

function weights(offset = 0): Map<string, Tensor> {
  return new Map([
    [
      "blocks.0.mlp.up.weight",
      Tensor.fromArray(backend, [1, 2, 3, 4, 5, 6].map((v) => v + offset), [3, 2]),
    ],
    ["finalNorm.weight", Tensor.fromArray(backend, [0.5, 0.25].map((v) => v + offset), [2])],
  ]);
}

function contents(offset = 0) {
  const optimizerState = new Map([[
    "adamw.m.finalNorm.weight",
    Tensor.fromArray(backend, [0.125, -1], [2]),
  ]]);
  return {
    weights: weights(offset),
    optimizer: optimizerState,
    state: { configHash: "abc123", rng: { seed: 1, counter: 40 }, dataPosition: 96 },
  };
}

async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

Deno.test("saveCheckpoint writes three files", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });

  const dir = await saveCheckpoint(runDir, 3, contents(), 2);

  assert.equal(dir, join(runDir, "checkpoints", "step-3"));
  assert.deepEqual(await entries(dir), [
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
  ]);
  assert.deepEqual(await entries(join(runDir, "checkpoints")), ["step-3"]);
});

Deno.test("loadCheckpoint round trip", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const dir = await saveCheckpoint(runDir, 5, contents(), 2);

  const loaded = await loadCheckpoint(dir);

  assert.equal(loaded.step, 5);
  assert.deepEqual(loaded.state, {
    configHash: "abc123",
    rng: { seed: 1, counter: 40 },
    dataPosition: 96,
    step: 5,
  });
  assert.deepEqual(loaded.weights.get("blocks.0.mlp.up.weight"), {
    dtype: "F32",
    shape: [3, 2],
    data: Float32Array.from([1, 2, 3, 4, 5, 6]),
  });
  assert.deepEqual(
    loaded.optimizer.get("adamw.m.finalNorm.weight")?.data,
    Float32Array.from([0.125, -1]),
  );
});

Deno.test("saveCheckpoint keeps last k", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });

  for (const step of [10, 20, 30, 40]) await saveCheckpoint(runDir, step, contents(), 2);

  assert.deepEqual((await listCheckpoints(runDir)).map((c) => c.step), [30, 40]);
  assert.deepEqual(await entries(join(runDir, "checkpoints")), ["step-30", "step-40"]);
});

Deno.test("saveCheckpoint replaces same step", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await saveCheckpoint(runDir, 7, contents(0), 3);

  const dir = await saveCheckpoint(runDir, 7, contents(100), 3);

  const loaded = await loadCheckpoint(dir);
  assert.equal(loaded.weights.get("finalNorm.weight")?.data[0], 100.5);
  assert.deepEqual(await entries(join(runDir, "checkpoints")), ["step-7"]);
});

Deno.test("listCheckpoints ignores partial checkpoints", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await saveCheckpoint(runDir, 2, contents(), 5);
  // A save that crashed before its rename leaves a temporary directory behind.
  await Deno.mkdir(join(runDir, "checkpoints", ".tmp-step-4-crashed"));
  await Deno.writeTextFile(join(runDir, "checkpoints", ".tmp-step-4-crashed", "state.json"), "{");

  const listed = await listCheckpoints(runDir);
  await saveCheckpoint(runDir, 6, contents(), 5);

  assert.deepEqual(listed.map((c) => c.step), [2]);
  assert.deepEqual(await entries(join(runDir, "checkpoints")), ["step-2", "step-6"]);
});

Deno.test("listCheckpoints sorts numerically", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  for (const step of [100, 9, 20]) await saveCheckpoint(runDir, step, contents(), Infinity);

  assert.deepEqual((await listCheckpoints(runDir)).map((c) => c.step), [9, 20, 100]);
});

Deno.test("listCheckpoints without checkpoints folder", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });

  assert.deepEqual(await listCheckpoints(runDir), []);
});

Deno.test("saveCheckpoint rejects invalid keepLast", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });

  await assert.rejects(() => saveCheckpoint(runDir, 1, contents(), 0), /keepLast is 0/);
});

Deno.test("loadCheckpoint truncated model file", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const dir = await saveCheckpoint(runDir, 1, contents(), 1);
  const path = join(dir, "model.safetensors");
  const bytes = await Deno.readFile(path);
  await Deno.writeFile(path, bytes.subarray(0, bytes.length - 8));

  await assert.rejects(
    () => loadCheckpoint(dir),
    new RegExp(`${path.replaceAll(".", "\\.")}: tensor .* the file is truncated`),
  );
});

Deno.test("checkConfigHash equal hashes", () => {
  assert.equal(checkConfigHash("abc", "abc", false), null);
});

Deno.test("checkConfigHash differing hashes", () => {
  assert.throws(
    () => checkConfigHash("abc", "def", false),
    /checkpoint config hash abc differs from the current config hash def/,
  );
  assert.match(checkConfigHash("abc", "def", true)!, /abc differs .* def; resuming anyway/);
});

Deno.test("restoreTensors writes in place", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const loaded = await loadCheckpoint(await saveCheckpoint(runDir, 1, contents(), 1));
  const targets = weights(50);

  restoreTensors(targets, loaded.weights, "model.safetensors");

  assert.deepEqual([...await targets.get("finalNorm.weight")!.data()], [0.5, 0.25]);
});

Deno.test("restoreTensors rejects mismatch", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const loaded = await loadCheckpoint(await saveCheckpoint(runDir, 1, contents(), 1));
  const wrongShape = new Map([
    ["blocks.0.mlp.up.weight", Tensor.zeros(backend, [2, 3])],
    ["finalNorm.weight", Tensor.zeros(backend, [2])],
  ]);
  const extra = new Map([...weights(), ["head.weight", Tensor.zeros(backend, [2, 2])]]);

  assert.throws(
    () => restoreTensors(wrongShape, loaded.weights, "model.safetensors"),
    /up\.weight was saved with shape \[3, 2\] but is \[2, 3\]/,
  );
  assert.throws(
    () => restoreTensors(extra, loaded.weights, "model.safetensors"),
    /missing head\.weight, unexpected none/,
  );
});

Deno.test("checkpoint resumes optimizer state", async () => {
  const runDir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const params = weights();
  const { optimizer } = createOptimizer(params, { name: "muon", lr: 0.01 });
  for (const p of params.values()) p.grad = Tensor.full(backend, p.shape, 0.5);
  optimizer.update(1, null);
  optimizer.update(1, null);

  const dir = await saveCheckpoint(runDir, optimizer.step, {
    weights: params,
    optimizer: optimizer.stateTensors(),
    state: { configHash: "h" },
  }, 1);
  const loaded = await loadCheckpoint(dir);
  const resumed = createOptimizer(weights(), { name: "muon", lr: 0.01 }).optimizer;
  resumed.loadState(loaded.optimizer, loaded.step);

  assert.equal(resumed.step, 2);
  for (const [name, t] of optimizer.stateTensors()) {
    assert.deepEqual(
      [...await resumed.stateTensors().get(name)!.data()],
      [...await t.data()],
      name,
    );
  }
});
