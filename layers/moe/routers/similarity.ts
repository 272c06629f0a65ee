/**
 * Similarity-Aware routing (Graph of Tokens, arXiv 2505.00792): the token graph is a softmax over
 * the similarities of the MoE layer's own input states, S = softmax_row(X̂·X̂ᵀ / τ + M), with X̂
 * the L2-normalised states (`cosine`) or the raw states scaled by 1/√dModel (`dot`), and M the
 * causal mask, so token t mixes the expert distributions of tokens 0..t only.
 *
 * NOTE: the similarity function, τ and the mask follow the spec's proposed defaults; the paper's
 * own choices could not be checked (see graph_of_tokens.ts).
 */

import { z } from "zod";
import {
  addScalar,
  matmul,
  mul,
  rsqrt,
  scale,
  softmax,
  square,
  sum,
  type Tensor,
} from "../../../tensor/mod.ts";
import type { RouteInput, RouterContext } from "../router.ts";
import { graphMixOptions, type GraphMixSettings, GraphOfTokensRouter } from "./graph_of_tokens.ts";

/** Options of the `similarity` router. */
export const similarityOptions = z.strictObject({
  ...graphMixOptions,
  /** `cosine` on L2-normalised states, or `dot` on raw states divided by √dModel. */
  similarity: z.enum(["cosine", "dot"]).default("cosine"),
  /** τ: similarities are divided by it before the row softmax (sweep 0.05 to 1). */
  temperature: z.number().positive().default(1),
  /** Mask later tokens; turn off only for encoders, where a token may see the whole sequence. */
  causal: z.boolean().default(true),
});

export type SimilarityOptions = z.output<typeof similarityOptions>;

/** Keeps ‖x̂‖ finite for an all-zero state. */
const NORM_EPS = 1e-12;

export class SimilarityRouter extends GraphOfTokensRouter {
  constructor(context: RouterContext, readonly options: SimilarityOptions) {
    super(context, options satisfies GraphMixSettings);
  }

  override get usesLaterTokens(): boolean {
    return !this.options.causal;
  }

  protected tokenGraph(input: RouteInput): Tensor {
    const { x, batch, seqLen } = input;
    const dModel = x.shape[1];
    const states = x.reshape([batch, seqLen, dModel]);
    const { similarity, temperature, causal } = this.options;

    const unit = similarity === "cosine"
      ? mul(states, rsqrt(addScalar(sum(square(states), -1, true), NORM_EPS)))
      : states;
    const factor = similarity === "cosine"
      ? 1 / temperature
      : 1 / (temperature * Math.sqrt(dModel));
    const scores = scale(matmul(unit, unit, { transB: true }), factor);
    return softmax(scores, { causal });
  }
}

export function createSimilarityRouter(
  context: RouterContext,
  options: z.input<typeof similarityOptions> = {},
): SimilarityRouter {
  return new SimilarityRouter(context, similarityOptions.parse(options));
}
