/**
 * Token-choice top-K routing (Switch Transformer, GShard, Mixtral): each token scores every
 * routed expert with a linear router, keeps its K best, and weights their outputs by its scores.
 *
 * `TokenChoiceRouter` also serves the `aux-free` router (a per-expert selection bias, Loss-Free
 * Balancing) and the `deepseek` router (DeepSeekMoE's raw softmax weights and device-level
 * balance loss), which differ from `softmax-topk` only in their settings.
 */

import { z } from "zod";
import {
  add,
  div,
  gatherColumns,
  matmul,
  mean,
  noGrad,
  scale,
  sigmoid,
  softmax,
  sub,
  sum,
  tanh,
  Tensor,
  topK,
  withScope,
} from "../../../tensor/mod.ts";
import { ShapeError } from "../../../tensor/shape.ts";
import { isGradEnabled } from "../../../tensor/tensor.ts";
import { normalParameter } from "../../module.ts";
import {
  deviceBalanceLoss,
  type DispatchPlan,
  expertCounts,
  loadBalanceLoss,
  normalizeRows,
  type RouteInput,
  Router,
  type RouterContext,
  slotTokens,
  zLoss,
} from "../router.ts";

export interface TokenChoiceSettings {
  /** `softmax` over the routed experts, or an independent `sigmoid` per expert. */
  scoreFunction: "softmax" | "sigmoid";
  /** Divide the K selected scores by their sum. Ignored at K = 1, where it would fix w ≡ 1. */
  renormalize: boolean;
  /** Multiplies every combine weight (DeepSeek-V3 uses 2.5 with sigmoid scores). */
  routeScale: number;
  /** Router init std as a multiple of the model's init std (Switch uses 0.1). */
  initScale: number;
  /** Loss-Free Balancing bias step u; 0 means no bias. */
  biasUpdateRate: number;
  /** Expert groups of the device-level balance loss (1 disables it). */
  deviceGroups: number;
  /** Multiplier α2 of the device-level balance loss. */
  deviceBalanceWeight: number;
}

/** Differences of expert counts are multiples of 1/E, so tanh of them times this is exactly ±1. */
const SIGN_GAIN = 1e4;

export class TokenChoiceRouter extends Router {
  readonly weight: Tensor;
  readonly numExperts: number;
  readonly topK: number;
  /** Per-expert selection bias [numExperts] (aux-free only): not a parameter, not trained. */
  bias: Tensor | null = null;

  protected override ownBuffers(): Map<string, Tensor> {
    return this.bias === null ? new Map() : new Map([["bias", this.bias]]);
  }
  #lastCounts: Tensor | null = null;

  constructor(readonly context: RouterContext, readonly settings: TokenChoiceSettings) {
    super();
    const { backend, rng, dModel, numExperts, topK, initStd } = context;
    if (topK < 1 || topK > numExperts) {
      throw new Error(
        `router: topK is ${topK} but there are ${numExperts} routed experts; choose 1 <= topK <= ` +
          `${numExperts}`,
      );
    }
    const { deviceGroups } = settings;
    if (!Number.isInteger(deviceGroups) || deviceGroups < 1 || numExperts % deviceGroups !== 0) {
      throw new Error(
        `router: deviceGroups is ${deviceGroups} but must be a positive divisor of the ` +
          `${numExperts} routed experts`,
      );
    }
    this.numExperts = numExperts;
    this.topK = topK;
    // W [numExperts, dModel], stored [out, in] like a Linear weight.
    this.weight = this.addParameter(
      "weight",
      normalParameter(backend, rng, [numExperts, dModel], initStd * settings.initScale),
    );
    if (settings.biasUpdateRate > 0) {
      this.bias = Tensor.zeros(backend, [numExperts]);
      this.bias.persistent = true;
      this.bias.name = "router.bias";
    }
  }

  route(input: RouteInput): DispatchPlan {
    const { x } = input;
    if (x.rank !== 2) {
      throw new ShapeError(`router: x must be [tokens, dModel], got ${x.describe()}`);
    }
    const n = x.shape[0];
    const k = this.topK;
    const { scoreFunction, renormalize, routeScale } = this.settings;
    const { auxLossWeight, zLossWeight } = this.context;

    // Router math stays in float32 (the only float dtype of the GPU backend).
    const logits = matmul(x, this.weight, { transB: true });
    const scores = scoreFunction === "softmax" ? softmax(logits) : sigmoid(logits);

    // The bias steers selection only; weights come from the unbiased scores.
    const selection = this.bias === null ? scores : add(scores, this.bias);
    const picked = topK(selection, k);
    let weights = this.bias === null ? picked.values : gatherColumns(scores, picked.indices);
    const priority = weights.detach().reshape([n * k]);
    if (renormalize && k > 1) weights = div(weights, sum(weights, -1, true));
    if (routeScale !== 1) weights = scale(weights, routeScale);

    const experts = picked.indices.reshape([n * k]);
    const probs = scoreFunction === "softmax" ? scores : normalizeRows(scores);
    const auxLosses: Record<string, Tensor> = {};
    if (auxLossWeight > 0) {
      auxLosses.loadBalance = scale(loadBalanceLoss(probs, experts, k), auxLossWeight);
    }
    if (this.settings.deviceGroups > 1 && this.settings.deviceBalanceWeight > 0) {
      const device = deviceBalanceLoss(probs, experts, k, this.settings.deviceGroups);
      auxLosses.deviceBalance = scale(device, this.settings.deviceBalanceWeight);
    }
    if (zLossWeight > 0) auxLosses.zLoss = scale(zLoss(logits), zLossWeight);

    if (this.bias !== null && isGradEnabled()) this.#keepCounts(experts);

    return {
      tokens: slotTokens(x.backend, n, k),
      experts,
      weights: weights.reshape([n * k]),
      priority,
      probs,
      auxLosses,
      slotsPerToken: k,
    };
  }

  /**
   * Loss-Free Balancing: b_e ← b_e + u · sign(mean count − c_e), from the counts of the last
   * training forward. Does nothing without a bias or before the first training forward.
   */
  override afterStep(): void {
    const counts = this.#lastCounts;
    const bias = this.bias;
    if (bias === null || counts === null) return;
    const next = withScope(() =>
      noGrad(() => {
        const error = sub(mean(counts, 0), counts);
        const sign = tanh(scale(error, SIGN_GAIN));
        return add(bias, scale(sign, this.settings.biasUpdateRate));
      })
    );
    next.persistent = true;
    next.name = bias.name;
    bias.dispose();
    this.bias = next;
    counts.dispose();
    this.#lastCounts = null;
  }

  override dispose(): void {
    super.dispose();
    this.bias?.dispose();
    this.#lastCounts?.dispose();
  }

  #keepCounts(experts: Tensor): void {
    const counts = noGrad(() => expertCounts(experts, this.numExperts));
    counts.persistent = true;
    this.#lastCounts?.dispose();
    this.#lastCounts = counts;
  }
}

/** Options of the `softmax-topk` router. */
export const softmaxTopKOptions = z.strictObject({
  scoreFunction: z.enum(["softmax", "sigmoid"]).default("softmax"),
  renormalize: z.boolean().default(true),
  routeScale: z.number().positive().default(1),
  initScale: z.number().positive().default(0.1),
});

export type SoftmaxTopKOptions = z.output<typeof softmaxTopKOptions>;

/** Builds a `softmax-topk` router (Switch at K = 1, GShard/Mixtral-style at K > 1). */
export function createSoftmaxTopKRouter(
  context: RouterContext,
  options: z.input<typeof softmaxTopKOptions> = {},
): TokenChoiceRouter {
  const parsed = softmaxTopKOptions.parse(options);
  return new TokenChoiceRouter(context, {
    ...parsed,
    biasUpdateRate: 0,
    deviceGroups: 1,
    deviceBalanceWeight: 0,
  });
}
