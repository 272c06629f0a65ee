/**
 * DeepSeekMoE routing (Dai et al., "DeepSeekMoE: Towards Ultimate Expert Specialization in
 * Mixture-of-Experts Language Models", 2024): softmax affinities over the routed experts, top-K
 * with the raw (not renormalised) scores as gates, the expert-level balance loss, and an
 * optional device-level balance loss over equal groups of routed experts.
 *
 * Shared experts and fine-grained segmentation are properties of the MoE layer (`sharedExperts`
 * and `granularity` in its spec), so this router sees only the routed experts. The expert-level
 * loss α1 · Σ_i f_i · P_i with f_i = N'/(K'·T) · count_i equals the Switch loss, and α1 is the
 * layer's auxLossWeight.
 */

import { z } from "zod";
import type { RouterContext } from "../router.ts";
import { TokenChoiceRouter } from "./softmax_topk.ts";

/** Options of the `deepseek` router. */
export const deepseekOptions = z.strictObject({
  /** Groups E_1..E_D of routed experts, one per device; 1 disables the device-level loss. */
  deviceGroups: z.int().min(1).default(1),
  /** α2 of the device-level balance loss (DeepSeekMoE 145B: 0.05). */
  deviceBalanceWeight: z.number().min(0).default(0),
  initScale: z.number().positive().default(0.1),
});

export type DeepseekOptions = z.output<typeof deepseekOptions>;

export function createDeepseekRouter(
  context: RouterContext,
  options: z.input<typeof deepseekOptions> = {},
): TokenChoiceRouter {
  const parsed = deepseekOptions.parse(options);
  return new TokenChoiceRouter(context, {
    ...parsed,
    scoreFunction: "softmax",
    renormalize: false,
    routeScale: 1,
    biasUpdateRate: 0,
  });
}
