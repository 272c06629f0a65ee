/**
 * Multi-head attention, with grouped-query (numKvHeads < numHeads) and multi-query
 * (numKvHeads = 1) options and rotary or ALiBi positions. With default options it runs moelab's
 * original unfused causal attention: scores = q·kᵀ/√d_head, a causal softmax, then the weighted
 * sum of values.
 */

import { z } from "zod";
import type { Backend } from "../../kernels/backend.ts";
import type { Rng } from "../../tensor/mod.ts";
import type { RopeTables } from "../rope.ts";
import type { AttentionContext } from "./base.ts";
import { calibrateOptionsSchema } from "./calibration.ts";
import { defaultDotProductConfig, DotProductAttention } from "./dot_product.ts";

/** Options shared by every dot-product variant. */
export const commonOptionsShape = {
  /** Key and value heads: numHeads (the default) for MHA, a divisor for GQA, 1 for MQA. */
  numKvHeads: z.number().int().positive().optional(),
  /** ALiBi position biases per head (Press et al., 2022), on top of any rotary positions. */
  alibi: z.boolean().default(false),
};

export const mhaOptionsSchema = z.object({
  ...commonOptionsShape,
  /** "unfused" materialises the T×T scores (the default); "fused" runs the flash-style kernel. */
  kernel: z.enum(["unfused", "fused"]).default("unfused"),
  /** ACT calibration of sink keys in evaluation forwards (off unless `enabled`). */
  calibrate: calibrateOptionsSchema.optional(),
}).strict();
export type MhaOptions = z.infer<typeof mhaOptionsSchema>;

export function createMha(context: AttentionContext, options: MhaOptions): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    numKvHeads: options.numKvHeads ?? context.numHeads,
    alibi: options.alibi,
    kernel: options.kernel,
    calibrate: options.calibrate ?? null,
  });
}

/** Options of the original attention layer, kept for callers that construct it directly. */
export interface AttentionOptions {
  dModel: number;
  numHeads: number;
  initStd: number;
  outputInitStd: number;
  /** Rotary tables for q and k, or null for no rotary positions. */
  rope: RopeTables | null;
}

/** Plain causal multi-head attention with the original constructor. */
export class CausalSelfAttention extends DotProductAttention {
  constructor(backend: Backend, rng: Rng, options: AttentionOptions) {
    super({ backend, rng, ...options }, defaultDotProductConfig(options.numHeads));
  }
}
