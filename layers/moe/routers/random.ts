/**
 * Random routing, a baseline: every forward sends each token to K distinct experts drawn
 * uniformly from a seeded stream, each with weight 1/K. Nothing is learned.
 */

import { z } from "zod";
import { Tensor } from "../../../tensor/mod.ts";
import {
  type DispatchPlan,
  type RouteInput,
  Router,
  type RouterContext,
  slotTokens,
} from "../router.ts";
import { distinctDraw } from "./hash.ts";

/** Options of the `random` router (none). */
export const randomOptions = z.strictObject({});

export type RandomOptions = z.output<typeof randomOptions>;

export class RandomRouter extends Router {
  constructor(readonly context: RouterContext) {
    super();
  }

  route(input: RouteInput): DispatchPlan {
    const { x } = input;
    const n = x.shape[0];
    const { numExperts, topK: k, rng } = this.context;
    // NOTE: the stream position is not saved in checkpoints, so a resumed run draws anew.
    const experts = new Int32Array(n * k);
    for (let t = 0; t < n; t++) experts.set(distinctDraw(rng, numExperts, k), t * k);
    return {
      tokens: slotTokens(x.backend, n, k),
      experts: Tensor.fromArray(x.backend, experts, [n * k], "i32"),
      weights: Tensor.full(x.backend, [n * k], 1 / k),
      priority: null,
      probs: null,
      auxLosses: {},
      slotsPerToken: k,
    };
  }
}

export function createRandomRouter(
  context: RouterContext,
  options: Record<string, unknown> = {},
): RandomRouter {
  randomOptions.parse(options);
  return new RandomRouter(context);
}
