/**
 * One optimizer step and one evaluation pass. Both keep their intermediates inside a step scope,
 * so every buffer they allocate returns to the pool before they return.
 */

import type { DecoderLM } from "../layers/models/decoder_lm.ts";
import { globalGradNorm, zeroGrad } from "../optim/clip.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { backward, noGrad, Tensor, withScope } from "../tensor/mod.ts";
import type { LmTask } from "./tasks/lm.ts";

/**
 * Forward, backward, global-norm clipping and the optimizer update at `lrFactor` times each
 * group's base learning rate. Returns the loss and the squared gradient norm, still on the device,
 * so the caller reads them back only when it logs.
 */
export function trainStep(
  model: DecoderLM,
  optimizer: Optimizer,
  batch: { inputs: Tensor; targets: Tensor },
  lrFactor: number,
  gradClip: number,
): { loss: Tensor; normSq: Tensor } {
  const params = [...model.parameters().values()];
  const result = withScope(() => {
    const loss = model.loss(batch.inputs, batch.targets);
    backward(loss);
    const { normSq, coefficient } = globalGradNorm(params, gradClip > 0 ? gradClip : Infinity);
    optimizer.update(lrFactor, gradClip > 0 ? coefficient : null);
    return { loss: loss.detach(), normSq };
  });
  batch.inputs.dispose();
  batch.targets.dispose();
  zeroGrad(params);
  return result;
}

/** Mean validation loss over the task's fixed validation batches. */
export async function evaluate(
  model: DecoderLM,
  task: LmTask,
  batchSize: number,
  batches: number,
): Promise<number> {
  let total = 0;
  const fixed = task.valBatches(batchSize, batches);
  for (const batch of fixed) {
    const loss = withScope(() => noGrad(() => model.loss(batch.inputs, batch.targets)));
    total += await loss.item();
    loss.dispose();
    batch.inputs.dispose();
    batch.targets.dispose();
  }
  return total / fixed.length;
}
