/**
 * The shared part of the Graph-of-Tokens routers (Nguyen, Tran, Nguyen and Baraniuk, "Improving
 * Routing in Sparse Mixture of Experts with Graph of Tokens", arXiv 2505.00792): each token's
 * expert distribution is mixed with those of related tokens through a row-stochastic token graph
 * G [batch, seqLen, seqLen] before top-K selection, π̃_t = Σ_j G_tj · π_j.
 *
 * NOTE: only the abstract of the paper could be checked, so the mixing rule is a reconstruction
 * consistent with it. Whether probabilities or logits are mixed (`mix`), which scores weight the
 * combine (`weightsFrom`) and which distribution the balance loss averages (`balanceOn`) are options
 * whose defaults are proposals, not the paper's settings.
 */

import { z } from "zod";
import {
  div,
  gatherColumns,
  matmul,
  scale,
  softmax,
  sum,
  type Tensor,
  topK,
} from "../../../tensor/mod.ts";
import { ShapeError } from "../../../tensor/shape.ts";
import { normalParameter } from "../../module.ts";
import {
  type DispatchPlan,
  loadBalanceLoss,
  normalizeRows,
  type RouteInput,
  Router,
  type RouterContext,
  slotTokens,
  zLoss,
} from "../router.ts";

/** Options shared by the `similarity` and `attention` routers. */
export const graphMixOptions = {
  /** `prob`: π̃ = G·softmax(z); `logit`: π̃ = softmax(G·z). */
  mix: z.enum(["prob", "logit"]).default("prob"),
  /** Combine weights from the mixed distribution π̃ or from the token's own π. */
  weightsFrom: z.enum(["smoothed", "raw"]).default("smoothed"),
  /** The distribution the load-balance loss averages: π̃ or π. */
  balanceOn: z.enum(["smoothed", "raw"]).default("smoothed"),
  /** Divide the K selected weights by their sum. Ignored at K = 1, where it would fix w ≡ 1. */
  renormalize: z.boolean().default(true),
  /** Router init std as a multiple of the model's init std. */
  initScale: z.number().positive().default(0.1),
};

export interface GraphMixSettings {
  mix: "prob" | "logit";
  weightsFrom: "smoothed" | "raw";
  balanceOn: "smoothed" | "raw";
  renormalize: boolean;
  initScale: number;
}

/** A token-choice router whose selection scores are mixed over a token graph. */
export abstract class GraphOfTokensRouter extends Router {
  readonly weight: Tensor;
  readonly topK: number;

  constructor(readonly context: RouterContext, readonly settings: GraphMixSettings) {
    super();
    const { backend, rng, dModel, numExperts, topK, initStd } = context;
    if (topK < 1 || topK > numExperts) {
      throw new Error(
        `router: topK is ${topK} but there are ${numExperts} routed experts; choose 1 <= topK <= ` +
          `${numExperts}`,
      );
    }
    this.topK = topK;
    this.weight = this.addParameter(
      "weight",
      normalParameter(backend, rng, [numExperts, dModel], initStd * settings.initScale),
    );
  }

  /** The row-stochastic token graph [batch, seqLen, seqLen] of this batch. */
  protected abstract tokenGraph(input: RouteInput): Tensor;

  route(input: RouteInput): DispatchPlan {
    const { x, batch, seqLen } = input;
    const { numExperts, auxLossWeight, zLossWeight } = this.context;
    if (x.rank !== 2 || x.shape[0] !== batch * seqLen) {
      throw new ShapeError(
        `router: x must be [batch·seqLen, dModel] = [${batch * seqLen}, ...], got ${x.describe()}`,
      );
    }
    const n = x.shape[0];
    const k = this.topK;
    const { mix, weightsFrom, balanceOn, renormalize } = this.settings;

    const graph = this.tokenGraph(input);
    const logits = matmul(x, this.weight, { transB: true });
    const probs = softmax(logits);
    const perSequence = (t: Tensor) => t.reshape([batch, seqLen, numExperts]);
    const mixed = mix === "prob"
      ? normalizeRows(matmul(graph, perSequence(probs)).reshape([n, numExperts]))
      : softmax(matmul(graph, perSequence(logits)).reshape([n, numExperts]));

    const picked = topK(mixed, k);
    let weights = weightsFrom === "smoothed" ? picked.values : gatherColumns(probs, picked.indices);
    const priority = weights.detach().reshape([n * k]);
    if (renormalize && k > 1) weights = div(weights, sum(weights, -1, true));

    const experts = picked.indices.reshape([n * k]);
    const auxLosses: Record<string, Tensor> = {};
    if (auxLossWeight > 0) {
      const balanced = balanceOn === "smoothed" ? mixed : probs;
      auxLosses.loadBalance = scale(loadBalanceLoss(balanced, experts, k), auxLossWeight);
    }
    if (zLossWeight > 0) auxLosses.zLoss = scale(zLoss(logits), zLossWeight);

    return {
      tokens: slotTokens(x.backend, n, k),
      experts,
      weights: weights.reshape([n * k]),
      priority,
      probs: mixed,
      auxLosses,
      slotsPerToken: k,
    };
  }
}
