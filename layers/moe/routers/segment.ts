/**
 * Segment routing (Seg-MoE, Ortigossa and Segal, arXiv 2601.21641): each sequence is cut into
 * contiguous segments of ω tokens, and each segment is routed as one unit. Every token of a
 * segment goes to the segment's K experts with the segment's weights. The experts stay
 * position-wise FFNs, as in the authors' released `MoESegment`.
 *
 * - Routing input: the mean of the segment's states (`pooling: "mean"`, a router of dModel
 *   inputs), or the flattened segment vec(U_c) of ω·dModel inputs (`flatten`, the authors' code).
 * - Multi-resolution: `segmentLength` may list one ω per block (Seg-MoE's default is [3, 5, 5, 5]).
 * - A sequence length that ω does not divide is right-padded with zero states to C = ⌈T/ω⌉
 *   segments. Padded positions are never tokens of the plan, and the mean pools only real ones.
 * - Scores: p_c = softmax(W·u_c / τ); weights are renormalised over the top-K when K > 1 and
 *   left raw at K = 1. The balance loss counts one routing "token" per segment.
 * - `sharedExpertGate`: the layer's shared experts are gated per segment by σ(w_s · u_c).
 *   NOTE: Seg-MoE's shared expert is one FFN on the flattened segment; here the layer's shared
 *   experts stay position-wise and only the gate is per segment.
 *
 * Causality: a segment's routing sees all its tokens, so with ω > 1 the routing of a token
 * depends on up to ω − 1 later tokens. That is fine for forecasting encoders but leaks the future
 * in a causal language model, where the decoder LM warns at construction.
 */

import { z } from "zod";
import {
  concat,
  div,
  gatherRows,
  matmul,
  mul,
  scale,
  sigmoid,
  softmax,
  sum,
  Tensor,
  topK,
} from "../../../tensor/mod.ts";
import { ShapeError } from "../../../tensor/shape.ts";
import { normalParameter } from "../../module.ts";
import {
  type DispatchPlan,
  loadBalanceLoss,
  type RouteInput,
  Router,
  type RouterContext,
  slotTokens,
  zLoss,
} from "../router.ts";

/** Options of the `segment` router. */
export const segmentOptions = z.strictObject({
  /** ω: tokens per segment, one value for every block or a list indexed by block. */
  segmentLength: z.union([z.int().min(1), z.array(z.int().min(1)).min(1)]).default(4),
  /** Route on the mean of the segment's states, or on the flattened segment (ω·dModel inputs). */
  pooling: z.enum(["mean", "flatten"]).default("mean"),
  /** τ: router logits are divided by it. */
  temperature: z.number().positive().default(1),
  /** Divide the K selected weights by their sum. Ignored at K = 1, where it would fix w ≡ 1. */
  renormalize: z.boolean().default(true),
  /** Gate the layer's shared experts per segment by σ(w_s · u_c); needs sharedExperts ≥ 1. */
  sharedExpertGate: z.boolean().default(false),
  initScale: z.number().positive().default(0.1),
});

export type SegmentOptions = z.output<typeof segmentOptions>;

/** ω of block `layer`, or an error naming the list and the block. */
export function segmentLengthOf(options: SegmentOptions, layer: number): number {
  const { segmentLength } = options;
  if (!Array.isArray(segmentLength)) return segmentLength;
  if (layer >= segmentLength.length) {
    throw new Error(
      `model.moe.router.segmentLength lists ${segmentLength.length} lengths but block ${layer} ` +
        `has an MoE layer; give one length per block`,
    );
  }
  return segmentLength[layer];
}

export class SegmentRouter extends Router {
  readonly weight: Tensor;
  readonly sharedGate: Tensor | null;
  /** ω of this layer. */
  readonly segmentLength: number;

  constructor(readonly context: RouterContext, readonly options: SegmentOptions) {
    super();
    const { backend, rng, dModel, numExperts, topK, initStd } = context;
    if (topK < 1 || topK > numExperts) {
      throw new Error(
        `router: topK is ${topK} but there are ${numExperts} routed experts; choose 1 <= topK <= ` +
          `${numExperts}`,
      );
    }
    if (options.sharedExpertGate && (context.sharedExperts ?? 0) < 1) {
      throw new Error(
        "model.moe.router.sharedExpertGate is true but the layer has no shared experts; set " +
          "model.moe.sharedExperts >= 1 or sharedExpertGate: false",
      );
    }
    this.segmentLength = segmentLengthOf(options, context.layerIndex ?? 0);
    const width = options.pooling === "flatten" ? this.segmentLength * dModel : dModel;
    this.weight = this.addParameter(
      "weight",
      normalParameter(backend, rng, [numExperts, width], initStd * options.initScale),
    );
    this.sharedGate = options.sharedExpertGate
      ? this.addParameter(
        "sharedGate",
        normalParameter(backend, rng, [1, width], initStd * options.initScale),
      )
      : null;
  }

  override get usesLaterTokens(): boolean {
    return this.segmentLength > 1;
  }

  route(input: RouteInput): DispatchPlan {
    const { x, batch, seqLen } = input;
    const { numExperts, topK: k, auxLossWeight, zLossWeight } = this.context;
    if (x.rank !== 2 || x.shape[0] !== batch * seqLen) {
      throw new ShapeError(
        `segment router: x must be [batch·seqLen, dModel] = [${batch * seqLen}, ...], got ` +
          `${x.describe()}`,
      );
    }
    const n = x.shape[0];
    const segments = this.#pool(x, batch, seqLen);
    const numSegments = segments.shape[0];

    const logits = scale(
      matmul(segments, this.weight, { transB: true }),
      1 / this.options.temperature,
    );
    const segmentProbs = softmax(logits);
    const picked = topK(segmentProbs, k);
    let segmentWeights = picked.values;
    const segmentPriority = segmentWeights.detach();
    if (this.options.renormalize && k > 1) {
      segmentWeights = div(segmentWeights, sum(segmentWeights, -1, true));
    }

    // Every token takes its segment's experts and weights.
    const owner = this.#segmentOfToken(batch, seqLen);
    const experts = gatherRows(picked.indices, owner).reshape([n * k]);
    const weights = gatherRows(segmentWeights, owner).reshape([n * k]);
    const priority = gatherRows(segmentPriority, owner).reshape([n * k]);

    const auxLosses: Record<string, Tensor> = {};
    if (auxLossWeight > 0) {
      const segmentExperts = picked.indices.reshape([numSegments * k]);
      const balance = loadBalanceLoss(segmentProbs, segmentExperts, k);
      auxLosses.loadBalance = scale(balance, auxLossWeight);
    }
    if (zLossWeight > 0) auxLosses.zLoss = scale(zLoss(logits), zLossWeight);

    const sharedGate = this.sharedGate === null
      ? null
      : gatherRows(sigmoid(matmul(segments, this.sharedGate, { transB: true })), owner);

    return {
      tokens: slotTokens(x.backend, n, k),
      experts,
      weights,
      priority,
      probs: gatherRows(segmentProbs, owner).reshape([n, numExperts]),
      auxLosses,
      slotsPerToken: k,
      sharedGate,
    };
  }

  /** Routing inputs [batch·C, width] of the C = ⌈seqLen/ω⌉ segments of each sequence. */
  #pool(x: Tensor, batch: number, seqLen: number): Tensor {
    const omega = this.segmentLength;
    const dModel = x.shape[1];
    const perSequence = Math.ceil(seqLen / omega);
    const padding = perSequence * omega - seqLen;
    let states = x.reshape([batch, seqLen, dModel]);
    if (padding > 0) {
      const zeros = Tensor.zeros(x.backend, [batch, padding, dModel]);
      states = concat([states, zeros], 1);
    }
    if (this.options.pooling === "flatten") {
      return states.reshape([batch * perSequence, omega * dModel]);
    }

    const sums = sum(states.reshape([batch * perSequence, omega, dModel]), 1);
    const inverseCounts = new Float32Array(batch * perSequence);
    for (let s = 0; s < inverseCounts.length; s++) {
      const start = (s % perSequence) * omega;
      inverseCounts[s] = 1 / Math.min(omega, seqLen - start);
    }
    return mul(sums, Tensor.fromArray(x.backend, inverseCounts, [inverseCounts.length, 1], "f32"));
  }

  /** i32 [n]: the segment row of each token, b·C + ⌊t/ω⌋. */
  #segmentOfToken(batch: number, seqLen: number): Tensor {
    const omega = this.segmentLength;
    const perSequence = Math.ceil(seqLen / omega);
    const owner = new Int32Array(batch * seqLen);
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < seqLen; t++) {
        owner[b * seqLen + t] = b * perSequence + Math.floor(t / omega);
      }
    }
    return Tensor.fromArray(this.context.backend, owner, [owner.length], "i32");
  }
}

export function createSegmentRouter(
  context: RouterContext,
  options: z.input<typeof segmentOptions> = {},
): SegmentRouter {
  return new SegmentRouter(context, segmentOptions.parse(options));
}
