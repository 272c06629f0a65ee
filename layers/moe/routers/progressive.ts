/**
 * Token-choice top-K routing with a per-layer K schedule over training, after the progressive
 * sparsification of Sigma-MoE-Tiny (arXiv 2512.16248): lower layers activate more experts early
 * in training and are sparsified to the target K later. The scores, weights and losses are those
 * of `softmax-topk`; only K changes with the step.
 *
 * Schedule: a layer starts at its `startTopK` and falls linearly to `endTopK` between the
 * fractions `decayStart` and `decayEnd` of training; K is the ceiling of the line, so it reaches
 * `endTopK` exactly at `decayEnd` and keeps it after. The trainer must call `setStep(step,
 * totalSteps)` before each training forward; a router never told the step stays at its start K.
 *
 * NOTE: Sigma-MoE-Tiny's per-layer K values and switch points were not published in a source the
 * spec could check. The defaults are the spec's proposal: the first ⌈L/4⌉ blocks start at K = 4
 * (block 0) down to 2, decaying to the model's top-K between 10% and 40% of training.
 */

import { z } from "zod";
import {
  div,
  matmul,
  scale,
  sigmoid,
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
import { softmaxTopKOptions } from "./softmax_topk.ts";

const fraction = z.number().min(0).max(1);

/** Options of the `progressive` router: the `softmax-topk` options plus the schedule. */
export const progressiveOptions = z.strictObject({
  ...softmaxTopKOptions.shape,
  /**
   * K at the start of training: one value for every MoE block, or a list indexed by block, where
   * blocks past the list's end start at `endTopK`. Null uses the proposed default described above.
   */
  startTopK: z.union([z.int().min(1), z.array(z.int().min(1))]).nullable().default(null),
  /** K after the decay; null uses the layer's top-K (model.moe.topK after segmentation). */
  endTopK: z.int().min(1).nullable().default(null),
  /** Fraction of training at which K starts to fall: one value, or a list indexed by block. */
  decayStart: z.union([fraction, z.array(fraction)]).default(0.1),
  /** Fraction of training at which K reaches `endTopK`: one value, or a list indexed by block. */
  decayEnd: z.union([fraction, z.array(fraction)]).default(0.4),
});

export type ProgressiveOptions = z.output<typeof progressiveOptions>;

/** The resolved schedule of one layer. */
export interface TopKSchedule {
  startTopK: number;
  endTopK: number;
  decayStart: number;
  decayEnd: number;
}

/** K at `step` of `totalSteps` under `schedule`: the ceiling of the linear decay. */
export function scheduledTopK(schedule: TopKSchedule, step: number, totalSteps: number): number {
  const { startTopK, endTopK, decayStart, decayEnd } = schedule;
  const progress = totalSteps > 0 ? step / totalSteps : 0;
  if (progress <= decayStart) return startTopK;
  if (progress >= decayEnd) return endTopK;
  const t = (progress - decayStart) / (decayEnd - decayStart);
  return Math.ceil(startTopK + (endTopK - startTopK) * t - 1e-9);
}

/** Picks the entry of a per-block option: a number for all blocks or a list by block index. */
function perLayer<T>(value: T | T[], layer: number, fallback: T): T {
  if (!Array.isArray(value)) return value;
  return layer < value.length ? value[layer] : fallback;
}

/** Resolves a layer's schedule; throws with the values when K exceeds the routed experts. */
export function resolveTopKSchedule(
  options: ProgressiveOptions,
  context: Pick<RouterContext, "numExperts" | "topK" | "layerIndex" | "numLayers">,
): TopKSchedule {
  const layer = context.layerIndex ?? 0;
  const endTopK = options.endTopK ?? context.topK;
  let startTopK: number;
  if (options.startTopK === null) {
    // The spec's proposal: K = 4 at block 0 down to 2 at block ⌈L/4⌉ − 1, endTopK elsewhere.
    const lowLayers = Math.ceil((context.numLayers ?? 1) / 4);
    const step = lowLayers > 1 ? 2 / (lowLayers - 1) : 0;
    startTopK = layer < lowLayers ? Math.round(4 - step * layer) : endTopK;
    startTopK = Math.min(Math.max(startTopK, endTopK), context.numExperts);
  } else {
    startTopK = perLayer(options.startTopK, layer, endTopK);
  }
  const decayStart = perLayer(options.decayStart, layer, 0.1);
  const decayEnd = perLayer(options.decayEnd, layer, 0.4);
  if (decayEnd < decayStart) {
    throw new Error(
      `model.moe.router.decayEnd is ${decayEnd} but decayStart is ${decayStart} for block ` +
        `${layer}; choose decayEnd >= decayStart`,
    );
  }
  for (const [name, k] of [["startTopK", startTopK], ["endTopK", endTopK]] as const) {
    if (k > context.numExperts) {
      throw new Error(
        `model.moe.router.${name} is ${k} for block ${layer} but there are ` +
          `${context.numExperts} routed experts; choose at most ${context.numExperts}`,
      );
    }
  }
  return { startTopK, endTopK, decayStart, decayEnd };
}

export class ProgressiveRouter extends Router {
  readonly weight: Tensor;
  readonly schedule: TopKSchedule;
  #topK: number;

  constructor(readonly context: RouterContext, readonly options: ProgressiveOptions) {
    super();
    const { backend, rng, dModel, numExperts, initStd } = context;
    this.schedule = resolveTopKSchedule(options, context);
    this.#topK = this.schedule.startTopK;
    this.weight = this.addParameter(
      "weight",
      normalParameter(backend, rng, [numExperts, dModel], initStd * options.initScale),
    );
  }

  /** The K of the next forward. */
  get topK(): number {
    return this.#topK;
  }

  override setStep(step: number, totalSteps: number): void {
    this.#topK = scheduledTopK(this.schedule, step, totalSteps);
  }

  route(input: RouteInput): DispatchPlan {
    const { x } = input;
    if (x.rank !== 2) {
      throw new ShapeError(`router: x must be [tokens, dModel], got ${x.describe()}`);
    }
    const n = x.shape[0];
    const k = this.#topK;
    const { scoreFunction, renormalize, routeScale } = this.options;
    const { auxLossWeight, zLossWeight } = this.context;

    const logits = matmul(x, this.weight, { transB: true });
    const scores = scoreFunction === "softmax" ? softmax(logits) : sigmoid(logits);
    const picked = topK(scores, k);
    let weights = picked.values;
    const priority = weights.detach().reshape([n * k]);
    // At K = 1 the raw probability stays the weight, as Switch does.
    if (renormalize && k > 1) weights = div(weights, sum(weights, -1, true));
    if (routeScale !== 1) weights = scale(weights, routeScale);

    const experts = picked.indices.reshape([n * k]);
    const probs = scoreFunction === "softmax" ? scores : normalizeRows(scores);
    const auxLosses: Record<string, Tensor> = {};
    if (auxLossWeight > 0) {
      auxLosses.loadBalance = scale(loadBalanceLoss(probs, experts, k), auxLossWeight);
    }
    if (zLossWeight > 0) auxLosses.zLoss = scale(zLoss(logits), zLossWeight);

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
}

export function createProgressiveRouter(
  context: RouterContext,
  options: z.input<typeof progressiveOptions> = {},
): ProgressiveRouter {
  return new ProgressiveRouter(context, progressiveOptions.parse(options));
}
