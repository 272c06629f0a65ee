/**
 * Attention variants that remove or relocate the attention sink (Gu et al., "When Attention Sink
 * Emerges in Language Models", arXiv 2410.10781, and the gated attention of Qiu et al.,
 * arXiv 2505.06708):
 * - `sigmoid`: weights sigmoid(q·k/√d) with no normalisation over keys;
 * - `keyBias`: a learnable key k* per head with value 0, visible to every query;
 * - `sinkLogit`: a learnable logit b_h per head added to the softmax denominator, as in gpt-oss,
 *   p_ij = exp(s_ij) / (exp(b_h) + Σ_j' exp(s_ij'));
 * - `gated`: the attention output times sigmoid(x·W_gate) before the output projection.
 */

import { z } from "zod";
import type { AttentionContext } from "./base.ts";
import { calibrateOptionsSchema } from "./calibration.ts";
import { defaultDotProductConfig, DotProductAttention } from "./dot_product.ts";
import { commonOptionsShape } from "./mha.ts";

export const sigmoidOptionsSchema = z.object({
  numKvHeads: commonOptionsShape.numKvHeads,
}).strict();
export type SigmoidOptions = z.infer<typeof sigmoidOptionsSchema>;

export function createSigmoid(
  context: AttentionContext,
  options: SigmoidOptions,
): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    variant: "sigmoid",
    numKvHeads: options.numKvHeads ?? context.numHeads,
    normalization: "sigmoid",
  });
}

export const keyBiasOptionsSchema = z.object({ ...commonOptionsShape }).strict();
export type KeyBiasOptions = z.infer<typeof keyBiasOptionsSchema>;

export function createKeyBias(
  context: AttentionContext,
  options: KeyBiasOptions,
): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    variant: "keyBias",
    kernel: "fused",
    numKvHeads: options.numKvHeads ?? context.numHeads,
    alibi: options.alibi,
    sink: "keyBias",
  });
}

export const sinkLogitOptionsSchema = z.object({
  ...commonOptionsShape,
  /** Initial sink logit of every head; 0 gives the "off-by-one" softmax at step 0. */
  init: z.number().default(0),
  /** Optional sliding window, as gpt-oss pairs sinks with windowed layers; 0 means none. */
  window: z.number().int().nonnegative().default(0),
}).strict();
export type SinkLogitOptions = z.infer<typeof sinkLogitOptionsSchema>;

export function createSinkLogit(
  context: AttentionContext,
  options: SinkLogitOptions,
): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    variant: "sinkLogit",
    kernel: "fused",
    numKvHeads: options.numKvHeads ?? context.numHeads,
    alibi: options.alibi,
    sink: "logit",
    sinkInit: options.init,
    window: options.window,
  });
}

export const gatedOptionsSchema = z.object({
  ...commonOptionsShape,
  /** "elementwise": one gate per output element (W: d × d); "headwise": one per head (d × H). */
  gate: z.enum(["elementwise", "headwise"]).default("elementwise"),
  /** ACT calibration of sink keys in evaluation forwards (off unless `enabled`). */
  calibrate: calibrateOptionsSchema.optional(),
}).strict();
export type GatedOptions = z.infer<typeof gatedOptionsSchema>;

export function createGated(
  context: AttentionContext,
  options: GatedOptions,
): DotProductAttention {
  return new DotProductAttention(context, {
    ...defaultDotProductConfig(context.numHeads),
    variant: "gated",
    kernel: "fused",
    numKvHeads: options.numKvHeads ?? context.numHeads,
    alibi: options.alibi,
    gate: options.gate,
    calibrate: options.calibrate ?? null,
  });
}
