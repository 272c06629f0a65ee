/**
 * The encoder models (forecaster and ViT) with the LM's attention variants (`model.attention`) and
 * MoE layers (`model.moe`): they build, score a batch and train on the CPU backend, and the ViT's
 * loss on WebGPU matches the CPU's.
 */

import assert from "node:assert/strict";
import { createClassifyTask } from "../../../experiments/tasks/classify.ts";
import { createForecastTask } from "../../../experiments/tasks/forecast.ts";
import type { Batch, Task, TaskModel } from "../../../experiments/tasks/task.ts";
import { type Backend, BackendUnavailableError } from "../../../kernels/backend.ts";
import { createCpuBackend } from "../../../kernels/cpu/backend.ts";
import { createWebGpuBackend } from "../../../kernels/webgpu/backend.ts";
import { Rng } from "../../../tensor/mod.ts";
import { TINY_MODEL, trainTask } from "./_train.ts";

const MOH = { name: "moh", sharedHeads: 1, topK: 1 };

const MOE = {
  layers: [1],
  numExperts: 4,
  topK: 1,
  dFF: 32,
  sharedExperts: 0,
  granularity: 1,
  capacityFactor: null,
  dropPolicy: "position" as const,
  ffn: "gelu" as const,
  auxLossWeight: 0.01,
  zLossWeight: 0,
  router: { name: "softmax-topk" },
};

const MODELS = {
  "moh attention": { ...TINY_MODEL, attention: MOH },
  "moe softmax-topk": { ...TINY_MODEL, moe: MOE },
  "moh attention and moe": { ...TINY_MODEL, attention: MOH, moe: MOE },
};

type ModelSection = (typeof MODELS)[keyof typeof MODELS];

const TASKS = {
  forecaster: (backend: Backend, model: ModelSection) =>
    createForecastTask(backend, { lookback: 32, horizon: 8, patchLen: 8 }, model),
  vit: (backend: Backend, model: ModelSection) => createClassifyTask(backend, {}, model),
};

/** Computes the loss of a fresh model on one training batch. */
async function firstLoss<B extends Batch>(task: Task<B>, backend: Backend): Promise<number> {
  const model = task.createModel(backend, new Rng(3));
  const batch = task.trainBatch(new Rng(4), 4);
  const loss = model.loss(batch);
  const value = await loss.item();
  loss.dispose();
  for (const tensor of batch.tensors()) tensor.dispose();
  model.dispose();
  return value;
}

function parameterNames(model: TaskModel): string[] {
  return [...model.parameters().keys()];
}

for (const [taskName, createTask] of Object.entries(TASKS)) {
  for (const [modelName, section] of Object.entries(MODELS)) {
    Deno.test(`${taskName} ${modelName} builds and trains`, async () => {
      const backend = createCpuBackend();
      const task: Task = await createTask(backend, section);
      const model = task.createModel(backend, new Rng(3));
      const names = parameterNames(model);

      assert.ok(names.includes("blocks.0.attention.query.weight"), names.join(", "));
      if ("attention" in section) {
        assert.ok(names.includes("blocks.0.attention.routedGate.weight"), names.join(", "));
      }
      if ("moe" in section) {
        assert.ok(names.some((n) => n.startsWith("blocks.1.mlp.moe.router.")), names.join(", "));
        assert.ok(names.some((n) => n.startsWith("blocks.0.mlp.up.")), "block 0 keeps its MLP");
        const moeLayers = (model as unknown as { moeLayers: unknown[] }).moeLayers;
        assert.equal(moeLayers.length, 1);
        model.setStep?.(0, 2);
        model.afterStep?.();
      }
      model.dispose();

      const loss = await firstLoss(task, backend);
      assert.ok(Number.isFinite(loss), `first loss ${loss}`);

      const { model: trained, lastLoss } = await trainTask(task, backend, {
        steps: 2,
        batchSize: 4,
        lr: 1e-3,
      });
      assert.ok(Number.isFinite(lastLoss), `loss after 2 steps ${lastLoss}`);
      trained.dispose();
    });
  }
}

Deno.test("encoder default attention keeps parameter names", async () => {
  const backend = createCpuBackend();
  const task = await createClassifyTask(backend, {}, TINY_MODEL);
  const model = task.createModel(backend, new Rng(0));
  const attention = parameterNames(model).filter((n) => n.startsWith("blocks.0.attention."));

  assert.deepEqual(attention.sort(), [
    "blocks.0.attention.key.weight",
    "blocks.0.attention.output.weight",
    "blocks.0.attention.query.weight",
    "blocks.0.attention.value.weight",
  ]);
  model.dispose();
});

Deno.test("encoder rejects window attention", async () => {
  const backend = createCpuBackend();
  const task = await createClassifyTask(backend, {}, {
    ...TINY_MODEL,
    attention: { name: "window", window: 4 },
  });
  assert.throws(
    () => task.createModel(backend, new Rng(0)),
    /model\.attention\.name is window, which limits each query to a window of past keys/,
  );
});

let gpu: Backend | null = null;
try {
  gpu = await createWebGpuBackend();
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  console.warn(`webgpu encoder variant test skipped: ${error.message}`);
}

Deno.test({
  name: "vit moh loss webgpu matches cpu",
  ignore: gpu === null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const section = { ...TINY_MODEL, attention: MOH, moe: MOE };
    const cpu = createCpuBackend();
    const expected = await firstLoss(await createClassifyTask(cpu, {}, section), cpu);
    const actual = await firstLoss(await createClassifyTask(gpu!, {}, section), gpu!);
    const error = Math.abs(actual - expected) / Math.abs(expected);
    assert.ok(error <= 1e-4, `webgpu ${actual}, cpu ${expected}, relative error ${error}`);
    await gpu!.dispose();
  },
});
