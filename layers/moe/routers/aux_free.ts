/**
 * Auxiliary-loss-free balancing (Wang et al., "Auxiliary-Loss-Free Load Balancing Strategy for
 * Mixture-of-Experts", 2024; used by DeepSeek-V3): a per-expert bias b is added to the scores
 * for top-K selection only, while the combine weights use the unbiased scores. After each
 * optimizer step the trainer calls `afterStep()`, which moves b_e by u toward balance:
 * b_e ← b_e + u · sign(mean_e c_e − c_e), with c_e the assignments of the last training batch.
 */

import { z } from "zod";
import type { RouterContext } from "../router.ts";
import { TokenChoiceRouter } from "./softmax_topk.ts";

/** Options of the `aux-free` router. */
export const auxFreeOptions = z.strictObject({
  /** DeepSeek-V3 scores with a sigmoid; with softmax the Loss-Free paper needed other updates. */
  scoreFunction: z.enum(["softmax", "sigmoid"]).default("sigmoid"),
  /** Bias step u per optimizer step (1e-3 was best in the Loss-Free Balancing sweep). */
  biasUpdateRate: z.number().positive().default(1e-3),
  renormalize: z.boolean().default(true),
  routeScale: z.number().positive().default(1),
  initScale: z.number().positive().default(0.1),
});

export type AuxFreeOptions = z.output<typeof auxFreeOptions>;

/**
 * Builds an `aux-free` router. A load-balance loss is still added when the layer's
 * auxLossWeight is above 0; set it to 0 for the pure aux-free arm.
 */
export function createAuxFreeRouter(
  context: RouterContext,
  options: z.input<typeof auxFreeOptions> = {},
): TokenChoiceRouter {
  const parsed = auxFreeOptions.parse(options);
  return new TokenChoiceRouter(context, { ...parsed, deviceGroups: 1, deviceBalanceWeight: 0 });
}
