/** A minimal training loop for task tests: forward, backward and an AdamW update per step. */

import type { Backend } from "../../../kernels/backend.ts";
import { zeroGrad } from "../../../optim/clip.ts";
import { createOptimizer } from "../../../optim/create.ts";
import { backward, Rng, withScope } from "../../../tensor/mod.ts";
import type { Batch, Task, TaskModel } from "../../../experiments/tasks/task.ts";

export interface TrainSettings {
  steps: number;
  batchSize: number;
  lr: number;
  seed?: number;
}

/** Trains a fresh model of `task` and returns it with the last training loss. */
export async function trainTask<B extends Batch>(
  task: Task<B>,
  backend: Backend,
  settings: TrainSettings,
): Promise<{ model: TaskModel<B>; lastLoss: number }> {
  const rng = new Rng(settings.seed ?? 0);
  const model = task.createModel(backend, rng.fork("init"));
  const params = [...model.parameters().values()];
  const { optimizer } = createOptimizer(model.parameters(), { name: "adamw", lr: settings.lr });
  const dataRng = rng.fork("data");
  let lastLoss = NaN;

  for (let step = 0; step < settings.steps; step++) {
    const batch = task.trainBatch(dataRng, settings.batchSize);
    const loss = withScope(() => {
      const loss = model.loss(batch);
      backward(loss);
      optimizer.update(1, null);
      return loss.detach();
    });
    zeroGrad(params);
    for (const t of batch.tensors()) t.dispose();
    if (step === settings.steps - 1) lastLoss = await loss.item();
    loss.dispose();
  }
  optimizer.dispose();
  return { model, lastLoss };
}

/** A small model section for CPU training tests. */
export const TINY_MODEL = {
  dModel: 32,
  numLayers: 2,
  numHeads: 2,
  dFF: 64,
  mlp: "gelu" as const,
  norm: "rmsnorm" as const,
  position: "rope" as const,
  tieEmbeddings: true,
  normEps: 1e-5,
  initStd: 0.02,
};
