/**
 * Sliding-window attention variants. `window`: every head sees its last `window` keys.
 * `moa` (Fu et al., "Mixture of Attention Spans", arXiv 2406.14909): head h sees a span
 * S_h(N) = alpha_h + beta_h·N keys for inputs of length N, clipped to [1, N], so heads can mix
 * local and long-range spans at the same mean span.
 */

import { z } from "zod";
import type { AttentionContext } from "./base.ts";
import { calibrateOptionsSchema } from "./calibration.ts";
import { defaultDotProductConfig, DotProductAttention } from "./dot_product.ts";
import { commonOptionsShape } from "./mha.ts";

export const windowOptionsSchema = z.object({
  ...commonOptionsShape,
  /** Keys each query sees, itself included. */
  window: z.number().int().min(1, {
    message: "window must be at least 1 key; omit the window variant for full attention",
  }),
  /** Leading keys that stay visible to every query (StreamingLLM-style initial tokens). */
  initialKeys: z.number().int().nonnegative().default(0),
  /** ACT calibration of sink keys in evaluation forwards (off unless `enabled`). */
  calibrate: calibrateOptionsSchema.optional(),
}).strict();
export type WindowOptions = z.infer<typeof windowOptionsSchema>;

export function createWindow(
  context: AttentionContext,
  options: WindowOptions,
): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    variant: "window",
    kernel: "fused",
    numKvHeads: options.numKvHeads ?? context.numHeads,
    alibi: options.alibi,
    window: options.window,
    initialKeys: options.initialKeys,
    calibrate: options.calibrate ?? null,
  });
}

export const moaOptionsSchema = z.object({
  ...commonOptionsShape,
  /** Per-head span offsets in keys (one entry per head). */
  alpha: z.array(z.number()),
  /** Per-head span slopes: the fraction of the input length added to alpha (one per head). */
  beta: z.array(z.number().min(0).max(1)),
  initialKeys: z.number().int().nonnegative().default(0),
  /** ACT calibration of sink keys in evaluation forwards (off unless `enabled`). */
  calibrate: calibrateOptionsSchema.optional(),
}).strict();
export type MoaOptions = z.infer<typeof moaOptionsSchema>;

export function createMoa(context: AttentionContext, options: MoaOptions): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    variant: "moa",
    kernel: "fused",
    numKvHeads: options.numKvHeads ?? context.numHeads,
    alibi: options.alibi,
    spans: { alpha: options.alpha, beta: options.beta },
    initialKeys: options.initialKeys,
    calibrate: options.calibrate ?? null,
  });
}
