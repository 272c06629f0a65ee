/**
 * SGD with momentum, with torch.optim.SGD's semantics and dampening 0:
 *   g ← g + λ·W;  B ← μ·B + g;  d = g + μ·B (Nesterov) or d = B;  W ← W − η·d
 * The buffer starts at zero, so the first step sets B = g, as PyTorch's first step does.
 */

import { add, mul, noGrad, scale, sub, withScope } from "../tensor/mod.ts";
import { assignInPlace } from "./_state.ts";
import type { ParamUpdate, SgdGroupOptions } from "./optimizer.ts";

/** Returns the state slots SGD keeps per parameter: a momentum buffer unless momentum is 0. */
export function sgdSlots(options: SgdGroupOptions): readonly string[] {
  return options.momentum === 0 ? [] : ["momentum"];
}

/** Applies one SGD step to one parameter in place. */
export function sgdUpdate(update: ParamUpdate, options: SgdGroupOptions): void {
  const { name, param, grad, state, lr, gradScale } = update;
  const { momentum, nesterov, weightDecay } = options;

  withScope(() =>
    noGrad(() => {
      let g = gradScale === null ? grad : mul(grad, gradScale);
      if (weightDecay !== 0) g = add(g, scale(param, weightDecay));

      if (momentum !== 0) {
        const buffer = state.get("momentum");
        if (buffer === undefined) throw new Error(`sgd: parameter ${name} has no momentum buffer`);
        const b = add(scale(buffer, momentum), g);
        assignInPlace(buffer, b);
        g = nesterov ? add(g, scale(b, momentum)) : b;
      }

      assignInPlace(param, sub(param, scale(g, lr)));
    })
  );
}
