/** The forecaster with MoE layers in place of its MLPs: token and segment routing. */

import assert from "node:assert/strict";
import { createCpuBackend } from "../../../kernels/cpu/backend.ts";
import { createForecastTask } from "../../../experiments/tasks/forecast.ts";
import { Rng } from "../../../tensor/mod.ts";
import { TINY_MODEL } from "./_train.ts";

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
};

for (const router of [{ name: "softmax-topk" }, { name: "segment", segmentLength: 2 }]) {
  Deno.test(`forecaster moe ${router.name} block`, async () => {
    const backend = createCpuBackend();
    const task = await createForecastTask(
      backend,
      { lookback: 32, horizon: 8, patchLen: 8 },
      { ...TINY_MODEL, moe: { ...MOE, router } },
    );
    const model = task.createModel(backend, new Rng(3));
    const names = [...model.parameters().keys()];
    assert.ok(names.some((n) => n.startsWith("blocks.1.mlp.moe.router.")), names.join(", "));
    assert.ok(names.some((n) => n.startsWith("blocks.0.mlp.up.")), "block 0 keeps its MLP");
    assert.equal(model.moeLayers.length, 1);

    const batch = task.trainBatch(new Rng(4), 4);
    const loss = await model.loss(batch).item();
    assert.ok(Number.isFinite(loss), `loss ${loss}`);
    for (const tensor of batch.tensors()) tensor.dispose();
    model.dispose();
  });
}
