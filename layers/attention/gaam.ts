/**
 * GAAM, Gaussian adaptive attention (Ioannides, Chadha and Elkins, arXiv 2401.11143, later
 * "Density Adaptive Attention"). Each GAAM head re-weights its chunk of the features with a
 * Gaussian of the normalised input whose mean offset δ and spread c are learnable:
 *
 *   μ, σ² = mean and variance of x along the normalisation axis
 *   y = (x − (μ + δ)) / √(σ² + ε),   G = exp(−y² / (2c²))   (or exp(−y² / (2ξ)) with ξ learned)
 *   output = x ⊙ G
 *
 * moelab places GAAM in front of a dot-product attention block, as the GQDAAM decoder combines
 * GAAM with grouped-query attention: q, k and v are projected from the re-weighted input x ⊙ G.
 * Heads split the feature axis into `gaussianHeads` equal chunks, each with its own (δ, c).
 *
 * NOTE: the paper normalises over a whole axis. Over tokens that would let a causal LM read future
 * tokens, so `axis: tokens` uses the mean and variance of the causal prefix t' ≤ t instead. The
 * first token then has σ² = 0 and y = −δ/√ε, so it is damped as soon as δ moves away from 0.
 */

import { z } from "zod";
import {
  add,
  addScalar,
  div,
  exp,
  matmul,
  mean,
  mul,
  relu,
  scale,
  square,
  sub,
  Tensor,
  transpose,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { constantParameter } from "../module.ts";
import { AttentionConfigError, type AttentionContext, optionPath, requireCausal } from "./base.ts";
import { calibrateOptionsSchema } from "./calibration.ts";
import { defaultDotProductConfig, DotProductAttention, type Projected } from "./dot_product.ts";
import { commonOptionsShape } from "./mha.ts";

export const gaamOptionsSchema = z.object({
  ...commonOptionsShape,
  kernel: z.enum(["unfused", "fused"]).default("unfused"),
  /** GAAM heads, each re-weighting dModel / gaussianHeads features; default numHeads. */
  gaussianHeads: z.number().int().positive().optional(),
  /**
   * Axis of μ and σ²: "tokens" (the causal prefix of each feature; the proposed GQDAAM insertion)
   * or "features" (the head's feature chunk of each token).
   */
  axis: z.enum(["tokens", "features"]).default("tokens"),
  /**
   * "c": G = exp(−y²/(2c²)) with c learned (the library form); "xi": G = exp(−y²/(2ξ)) with ξ
   * learned (the paper's "scaled variance"). Which form the paper's experiments used is unverified.
   */
  spread: z.enum(["c", "xi"]).default("c"),
  /** Initial c (or ξ) of every head; the library default is 2. */
  spreadInit: z.number().positive().default(2),
  /** Initial mean offset δ of every head. */
  meanOffsetInit: z.number().default(0),
  /**
   * "head": one scalar (δ, c) per head (the library); "feature": one per feature of the head
   * (the write-up's 2·H·d parameter count). Which one the experiments used is unverified.
   */
  parameters: z.enum(["head", "feature"]).default("head"),
  /** ε added to σ² under the square root (the write-up's 1e-5). */
  eps: z.number().positive().default(1e-5),
  /** ACT calibration of sink keys in evaluation forwards (off unless `enabled`). */
  calibrate: calibrateOptionsSchema.optional(),
}).strict();
export type GaamOptions = z.infer<typeof gaamOptionsSchema>;

export class GaussianAdaptiveAttention extends DotProductAttention {
  readonly gaussianHeads: number;
  /** δ: [gaussianHeads, 1] or [gaussianHeads, chunk]. */
  readonly meanOffset: Tensor;
  /** c (or ξ), shaped like `meanOffset`. */
  readonly spread: Tensor;
  /** Gaussian weights G [B, T, dModel] of the latest forward while `recordProbs` is on. */
  weights: Tensor | null = null;

  constructor(context: AttentionContext, readonly options: GaamOptions) {
    super(context, {
      ...defaultDotProductConfig(context.numHeads),
      variant: "gaam",
      kernel: options.kernel,
      numKvHeads: options.numKvHeads ?? context.numHeads,
      alibi: options.alibi,
      calibrate: options.calibrate ?? null,
    });
    if (options.axis === "tokens") {
      requireCausal(context, "gaam", "normalises over the causal prefix with axis: tokens");
    }
    const { backend, dModel } = context;
    this.gaussianHeads = options.gaussianHeads ?? context.numHeads;
    if (dModel % this.gaussianHeads !== 0) {
      throw new AttentionConfigError(
        `${optionPath(context, "gaussianHeads")} is ${this.gaussianHeads} but dModel is ` +
          `${dModel}; choose a number of GAAM heads that divides ${dModel}`,
      );
    }
    const chunk = dModel / this.gaussianHeads;
    const shape = [this.gaussianHeads, options.parameters === "feature" ? chunk : 1];
    this.meanOffset = this.addParameter(
      "meanOffset",
      constantParameter(backend, shape, options.meanOffsetInit),
    );
    this.spread = this.addParameter(
      "spread",
      constantParameter(backend, shape, options.spreadInit),
    );
  }

  protected override project(x: Tensor): Projected {
    const gated = this.gaussianGate(x);
    return super.project(gated);
  }

  /** Returns x ⊙ G for x [B, T, dModel], the input of the attention projections. */
  gaussianGate(x: Tensor): Tensor {
    const dModel = this.context.dModel;
    if (x.rank !== 3 || x.shape[2] !== dModel) {
      throw new ShapeError(`gaam: expected input [batch, seqLen, ${dModel}], got ${x.describe()}`);
    }
    const weights = gaussianWeights(x, this.meanOffset, this.spread, this.options);
    if (this.recordProbs) this.weights = weights;
    return mul(x, weights);
  }
}

/**
 * The Gaussian weights G [B, T, dModel] of x [B, T, dModel] for mean offsets and spreads of shape
 * [gaussianHeads, 1 or dModel / gaussianHeads]; the head count is the first axis of `meanOffset`.
 */
export function gaussianWeights(
  x: Tensor,
  meanOffset: Tensor,
  spread: Tensor,
  options: Pick<GaamOptions, "axis" | "spread" | "eps">,
): Tensor {
  const [batch, seqLen, dModel] = x.shape;
  const heads = meanOffset.shape[0];
  const chunked = x.reshape([batch, seqLen, heads, dModel / heads]);

  const { mu, variance } = options.axis === "features"
    ? featureMoments(chunked)
    : prefixMoments(chunked, x);
  const centred = sub(chunked, add(mu, meanOffset));
  const y2 = div(square(centred), addScalar(variance, options.eps));

  // G = exp(−y² / (2c²)) or exp(−y² / (2ξ)).
  const denominator = options.spread === "c" ? square(spread) : spread;
  const weights = exp(div(y2, scale(denominator, -2)));
  return weights.reshape([batch, seqLen, dModel]);
}

/** Mean and variance over each token's chunk: [B, T, G, 1] each. */
function featureMoments(chunked: Tensor): { mu: Tensor; variance: Tensor } {
  const mu = mean(chunked, 3, true);
  const variance = mean(square(sub(chunked, mu)), 3, true);
  return { mu, variance };
}

/**
 * Mean and variance of each feature over the causal prefix t' ≤ t: [B, T, G, chunk] each, from
 * a host-built lower-triangular averaging matrix A (A_tt' = 1/(t+1) for t' ≤ t).
 */
function prefixMoments(chunked: Tensor, x: Tensor): { mu: Tensor; variance: Tensor } {
  const [batch, seqLen, dModel] = x.shape;
  const averaging = new Float64Array(seqLen * seqLen);
  for (let t = 0; t < seqLen; t++) {
    for (let s = 0; s <= t; s++) averaging[t * seqLen + s] = 1 / (t + 1);
  }
  const a = Tensor.fromArray(x.backend, averaging, [seqLen, seqLen], "f32");

  // Prefix means of x and x² as A·x per sequence: [B, dModel, T] · Aᵀ.
  const prefixMean = (values: Tensor) =>
    transpose(matmul(transpose(values, 1, 2), a, { transB: true }), 1, 2);
  const mu = prefixMean(x);
  // E[x²] − μ² can round below 0, so it is clamped at 0 (the paper takes |σ²| instead).
  const variance = relu(sub(prefixMean(square(x)), square(mu)));
  const shape = [batch, seqLen, chunked.shape[2], dModel / chunked.shape[2]];
  return { mu: mu.reshape(shape), variance: variance.reshape(shape) };
}

export function createGaam(
  context: AttentionContext,
  options: GaamOptions,
): GaussianAdaptiveAttention {
  return new GaussianAdaptiveAttention(context, options);
}
