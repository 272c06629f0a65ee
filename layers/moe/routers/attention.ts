/**
 * Attention-Aware routing (Graph of Tokens, arXiv 2505.00792): the token graph is the attention
 * probabilities of the self-attention sublayer in the same block, just before the MoE layer,
 * averaged over heads (`head: "mean"`) or taken from one head. The probabilities are causal, so
 * the routing of token t depends on tokens 0..t only.
 *
 * The block passes the probabilities because `needsAttention` is true; a block that cannot
 * (or an MoE layer used alone) makes `route` throw. Rows of variants whose probabilities do not
 * sum to 1 (an attention sink's share is excluded) are renormalised after mixing in `prob` mode.
 *
 * NOTE: the head choice, the same-block source and the gradient through the probabilities follow
 * the spec's proposed defaults, because the paper's own choices could not be checked. Fused attention
 * kernels return probabilities without gradient, so `detachAttention: false` only matters for
 * variants that compute them with ordinary ops (the unfused kernel).
 */

import { z } from "zod";
import { mean, slice, type Tensor } from "../../../tensor/mod.ts";
import { ShapeError } from "../../../tensor/shape.ts";
import type { RouteInput, RouterContext } from "../router.ts";
import { graphMixOptions, type GraphMixSettings, GraphOfTokensRouter } from "./graph_of_tokens.ts";

/** Options of the `attention` router. */
export const attentionRouterOptions = z.strictObject({
  ...graphMixOptions,
  /** `mean` over heads, or the index of one head. */
  head: z.union([z.literal("mean"), z.int().min(0)]).default("mean"),
  /** Stop the routing gradient at the attention probabilities. */
  detachAttention: z.boolean().default(false),
});

export type AttentionRouterOptions = z.output<typeof attentionRouterOptions>;

export class AttentionRouter extends GraphOfTokensRouter {
  constructor(context: RouterContext, readonly options: AttentionRouterOptions) {
    super(context, options satisfies GraphMixSettings);
  }

  override get needsAttention(): boolean {
    return true;
  }

  protected tokenGraph(input: RouteInput): Tensor {
    const { batch, seqLen } = input;
    const probs = input.attentionProbs;
    if (probs === undefined || probs === null) {
      throw new Error(
        "model.moe.router.name is attention, but this MoE layer got no attention probabilities; " +
          "use it in a model whose blocks have self-attention (the decoder LM), or choose " +
          "model.moe.router.name: similarity",
      );
    }
    if (probs.rank !== 4 || probs.shape[0] !== batch || probs.shape[2] !== seqLen) {
      throw new ShapeError(
        `attention router: probabilities must be [${batch}, heads, ${seqLen}, ${seqLen}], got ` +
          `${probs.describe()}`,
      );
    }
    const numHeads = probs.shape[1];
    const { head, detachAttention } = this.options;
    if (head !== "mean" && head >= numHeads) {
      throw new Error(
        `model.moe.router.head is ${head} but the attention has ${numHeads} heads; choose a ` +
          `head from 0 to ${numHeads - 1} or "mean"`,
      );
    }

    const source = detachAttention ? probs.detach() : probs;
    const graph = head === "mean" ? mean(source, 1) : slice(source, 1, head, head + 1);
    return graph.reshape([batch, seqLen, seqLen]);
  }
}

export function createAttentionRouter(
  context: RouterContext,
  options: z.input<typeof attentionRouterOptions> = {},
): AttentionRouter {
  return new AttentionRouter(context, attentionRouterOptions.parse(options));
}
