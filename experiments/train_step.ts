/**
 * One optimizer step, with its intermediates inside a step scope so every buffer it allocates
 * returns to the pool before it returns.
 */

import { globalGradNorm, zeroGrad } from "../optim/clip.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { backward, type Tensor, withScope } from "../tensor/mod.ts";
import type { Batch, TaskModel } from "./tasks/task.ts";

/**
 * Forward, backward, global-norm clipping and the optimizer update at `lrFactor` times each
 * group's base learning rate, then the model's own after-step hook (the aux-free router's bias
 * update). Returns the loss and the squared gradient norm, still on the device, so the caller
 * reads them back only when it logs. The batch's tensors are disposed.
 */
export function trainStep<B extends Batch>(
  model: TaskModel<B>,
  optimizer: Optimizer,
  batch: B,
  lrFactor: number,
  gradClip: number,
): { loss: Tensor; normSq: Tensor } {
  const params = [...model.parameters().values()];
  const result = withScope(() => {
    const loss = model.loss(batch);
    backward(loss);
    const { normSq, coefficient } = globalGradNorm(params, gradClip > 0 ? gradClip : Infinity);
    optimizer.update(lrFactor, gradClip > 0 ? coefficient : null);
    model.afterStep?.();
    return { loss: loss.detach(), normSq };
  });
  for (const tensor of batch.tensors()) tensor.dispose();
  zeroGrad(params);
  return result;
}
