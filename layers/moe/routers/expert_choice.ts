/**
 * Expert-choice routing (Zhou et al., "Mixture-of-Experts with Expert Choice Routing", 2022):
 * each expert picks its top-c tokens by router probability, so every expert gets exactly c
 * tokens and a token may get 0 to E experts. No balance loss is needed.
 *
 * Causal leak guard: an expert that chooses among the tokens of one sequence sees later tokens
 * when it decides about earlier ones, which leaks the future into a causal language model. Here
 * the routing group of a token is the set of tokens at the same position in the other sequences
 * of the batch, so a choice depends on no later position of any sequence. Each expert takes
 * c = ceil(batch · capacityFactor / E) of the batch's tokens at every position (at most batch),
 * so sparsity needs a batch of several sequences, and evaluation must use batches of the same
 * size to route the same way.
 */

import { z } from "zod";
import { gatherColumns, matmul, softmax, Tensor, topK, transpose } from "../../../tensor/mod.ts";
import { ShapeError } from "../../../tensor/shape.ts";
import { normalParameter } from "../../module.ts";
import {
  type DispatchPlan,
  type RouteInput,
  Router,
  type RouterContext,
  zLoss,
} from "../router.ts";
import { scale } from "../../../tensor/mod.ts";

/** Options of the `expert-choice` router. */
export const expertChoiceOptions = z.strictObject({
  /** c in k = n·c/E tokens per expert and routing group; c = 2 matches top-2 token choice. */
  capacityFactor: z.number().positive().default(2),
  initScale: z.number().positive().default(0.1),
});

export type ExpertChoiceOptions = z.output<typeof expertChoiceOptions>;

export class ExpertChoiceRouter extends Router {
  readonly weight: Tensor;

  constructor(readonly context: RouterContext, readonly options: ExpertChoiceOptions) {
    super();
    const { backend, rng, dModel, numExperts, initStd } = context;
    this.weight = this.addParameter(
      "weight",
      normalParameter(backend, rng, [numExperts, dModel], initStd * options.initScale),
    );
  }

  /** Tokens each expert takes per position for a batch of `batch` sequences. */
  tokensPerExpert(batch: number): number {
    const c = Math.ceil((batch * this.options.capacityFactor) / this.context.numExperts);
    return Math.min(batch, c);
  }

  route(input: RouteInput): DispatchPlan {
    const { x, batch, seqLen } = input;
    const numExperts = this.context.numExperts;
    if (x.rank !== 2 || x.shape[0] !== batch * seqLen) {
      throw new ShapeError(
        `expert-choice: x must be [batch·seqLen, dModel] = [${batch * seqLen}, ...], got ` +
          `${x.describe()}`,
      );
    }
    const c = this.tokensPerExpert(batch);

    const logits = matmul(x, this.weight, { transB: true });
    const probs = softmax(logits);

    // [batch, seqLen, E] → [seqLen, E, batch]: row (t, e) lists expert e's candidates at t.
    const candidates = transpose(transpose(probs.reshape([batch, seqLen, numExperts]), 0, 1), 1, 2);
    const picked = topK(candidates, c);
    const tokens = gatherColumns(this.#tokenTable(batch, seqLen), picked.indices);

    const auxLosses: Record<string, Tensor> = {};
    if (this.context.zLossWeight > 0) {
      auxLosses.zLoss = scale(zLoss(logits), this.context.zLossWeight);
    }
    const count = seqLen * numExperts * c;
    const weights = picked.values.reshape([count]);
    return {
      tokens: tokens.reshape([count]),
      experts: this.#expertTable(seqLen, c),
      weights,
      priority: null,
      probs,
      auxLosses,
      slotsPerToken: null,
    };
  }

  /** i32 [seqLen, E, batch]: entry (t, e, b) is the token index b·seqLen + t. */
  #tokenTable(batch: number, seqLen: number): Tensor {
    const numExperts = this.context.numExperts;
    const table = new Int32Array(seqLen * numExperts * batch);
    for (let t = 0; t < seqLen; t++) {
      for (let e = 0; e < numExperts; e++) {
        for (let b = 0; b < batch; b++) table[(t * numExperts + e) * batch + b] = b * seqLen + t;
      }
    }
    return Tensor.fromArray(this.context.backend, table, [seqLen, numExperts, batch], "i32");
  }

  /** i32 [seqLen·E·c]: the expert of each assignment, e for entry (t, e, j). */
  #expertTable(seqLen: number, c: number): Tensor {
    const numExperts = this.context.numExperts;
    const table = new Int32Array(seqLen * numExperts * c);
    for (let i = 0; i < table.length; i++) table[i] = Math.floor(i / c) % numExperts;
    return Tensor.fromArray(this.context.backend, table, [table.length], "i32");
  }
}

export function createExpertChoiceRouter(
  context: RouterContext,
  options: z.input<typeof expertChoiceOptions> = {},
): ExpertChoiceRouter {
  return new ExpertChoiceRouter(context, expertChoiceOptions.parse(options));
}
