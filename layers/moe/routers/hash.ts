/**
 * Hash routing (Roller et al., "Hash Layers For Large Sparse Models", 2021): a fixed table maps
 * each token id to K distinct experts, drawn at random from the seed when the layer is built.
 * Nothing is learned, so the router has no parameters and no loss; each of the K experts gets
 * weight 1/K.
 */

import { z } from "zod";
import { gatherRows, Tensor } from "../../../tensor/mod.ts";
import {
  type DispatchPlan,
  type RouteInput,
  Router,
  type RouterContext,
  slotTokens,
} from "../router.ts";

/** Options of the `hash` router (none). */
export const hashOptions = z.strictObject({});

export type HashOptions = z.output<typeof hashOptions>;

/** Draws k distinct values of [0, n) with a partial Fisher–Yates shuffle. */
export function distinctDraw(rng: { int(n: number): number }, n: number, k: number): number[] {
  const pool = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, k);
}

export class HashRouter extends Router {
  /** i32 [vocabSize, K]: the experts of each token id. */
  readonly table: Tensor;

  constructor(readonly context: RouterContext) {
    super();
    const { backend, rng, numExperts, topK, vocabSize } = context;
    if (vocabSize === null) {
      throw new Error("hash router: the model has no token ids; use a router that reads states");
    }
    const table = new Int32Array(vocabSize * topK);
    for (let id = 0; id < vocabSize; id++) {
      table.set(distinctDraw(rng, numExperts, topK), id * topK);
    }
    this.table = Tensor.fromArray(backend, table, [vocabSize, topK], "i32");
    this.table.persistent = true;
  }

  /** Reads the table back: the K experts of each token id, row after row. */
  async tableValues(): Promise<Int32Array> {
    return (await this.table.data()) as Int32Array;
  }

  route(input: RouteInput): DispatchPlan {
    const { tokenIds, x } = input;
    if (tokenIds === null) {
      throw new Error("hash router: route() needs tokenIds; this layer received none");
    }
    const n = tokenIds.size;
    const k = this.context.topK;
    const experts = gatherRows(this.table, tokenIds.reshape([n])).reshape([n * k]);
    return {
      tokens: slotTokens(x.backend, n, k),
      experts,
      weights: Tensor.full(x.backend, [n * k], 1 / k),
      priority: null,
      probs: null,
      auxLosses: {},
      slotsPerToken: k,
    };
  }

  override dispose(): void {
    super.dispose();
    this.table.dispose();
  }
}

export function createHashRouter(
  context: RouterContext,
  options: Record<string, unknown> = {},
): HashRouter {
  hashOptions.parse(options);
  return new HashRouter(context);
}
