/**
 * MoH, multi-head attention as a mixture of heads (Jin et al., arXiv 2410.11842). The output is a
 * per-token weighted sum of head outputs, Σ_i g_ti · H_i W_O^i: shared heads are always on, and
 * each token activates its top-K routed heads.
 *
 * Routers read the block input x_t without bias: p^s = softmax(W_s x), p^r = softmax(W_r x) and,
 * for two-stage routing, [α1, α2] = softmax(W_h x). The default gate follows the authors' code,
 * which keeps the mean head weight near 1 so the output matches MHA's scale at initialisation:
 * shared 2·α1·h_s·p^s, routed 2·α2·K·p^r / Σ_{selected} p^r on selected heads and 0 elsewhere.
 * `gateForm: paper` uses the paper's gate instead (α1·p^s and α2·p^r on selected heads).
 *
 * The head load-balance loss is the code's L_b = R·Σ_j f_j·P_j over the R routed heads, with f_j
 * the fraction of tokens that selected head j (a constant) and P_j the mean router probability.
 * It equals K at perfect balance and is left, times `loadBalanceWeight`, in `auxLoss`.
 */

import { z } from "zod";
import {
  addScalar,
  concat,
  div,
  mean,
  mul,
  scale,
  slice,
  softmax,
  sum,
  sumAll,
  Tensor,
} from "../../tensor/mod.ts";
import { Linear } from "../linear.ts";
import { AttentionConfigError, type AttentionContext, optionPath } from "./base.ts";
import { defaultDotProductConfig, DotProductAttention } from "./dot_product.ts";
import { commonOptionsShape } from "./mha.ts";

export const mohOptionsSchema = z.object({
  ...commonOptionsShape,
  kernel: z.enum(["unfused", "fused"]).default("fused"),
  /**
   * Fraction of heads active per token, (h_s + K)/h. Used to derive `sharedHeads` and `topK`
   * when they are not given: K = round(h/4) routed and the rest shared, so 0.75 gives h/2 shared
   * and h/4 routed, and 0.5 gives h/4 of each.
   */
  activeFraction: z.number().gt(0).max(1).default(0.75),
  /** Always-active heads h_s; 0 routes every head. */
  sharedHeads: z.number().int().nonnegative().optional(),
  /** Routed heads activated per token, K. */
  topK: z.number().int().nonnegative().optional(),
  /** Weight shared against routed heads with a learned softmax; false fixes α to 0.5 each. */
  twoStage: z.boolean().default(true),
  gateForm: z.enum(["code", "paper"]).default("code"),
  /** β of the head load-balance loss. */
  loadBalanceWeight: z.number().nonnegative().default(0.01),
}).strict();
export type MohOptions = z.infer<typeof mohOptionsSchema>;

/** Shared and routed head counts from the options, validated against numHeads. */
export function resolveMohHeads(
  context: AttentionContext,
  options: MohOptions,
): { sharedHeads: number; topK: number } {
  const heads = context.numHeads;
  const active = Math.max(1, Math.round(options.activeFraction * heads));
  const defaultTopK = Math.min(Math.max(Math.round(heads / 4), 1), active);
  const sharedHeads = options.sharedHeads ??
    (options.topK !== undefined ? active - options.topK : active - defaultTopK);
  const topK = options.topK ?? active - sharedHeads;

  if (sharedHeads < 0 || sharedHeads > heads) {
    throw new AttentionConfigError(
      `${optionPath(context, "sharedHeads")} is ${sharedHeads} but numHeads is ${heads}; ` +
        `choose 0 to ${heads}`,
    );
  }
  if (topK < 0 || topK > heads - sharedHeads) {
    throw new AttentionConfigError(
      `${optionPath(context, "topK")} is ${topK} but only ${heads - sharedHeads} heads are ` +
        `routed (numHeads ${heads} − sharedHeads ${sharedHeads}); choose topK <= ` +
        `${heads - sharedHeads}`,
    );
  }
  if (sharedHeads + topK === 0) {
    throw new AttentionConfigError(
      `${optionPath(context, "topK")} and sharedHeads are both 0, so no head is active; ` +
        "activate at least one head",
    );
  }
  return { sharedHeads, topK };
}

/** Tensors of the latest forward, for diagnostics; they live as long as that forward's scope. */
export interface MohState {
  /** Per-token head weights [B·T, H], shared heads first. */
  gates: Tensor;
  /** 0/1 selection of routed heads [B·T, R], or null without routed heads. */
  routedMask: Tensor | null;
  /** Two-stage weights [B·T, 2] (α1 shared, α2 routed), or null without them. */
  stageWeights: Tensor | null;
  /** The unweighted load-balance loss L_b, or null without routed heads. */
  loadBalance: Tensor | null;
}

export class MixtureOfHeadsAttention extends DotProductAttention {
  readonly sharedHeads: number;
  readonly topK: number;
  readonly sharedGate: Linear | null;
  readonly routedGate: Linear | null;
  readonly stageGate: Linear | null;
  /** Set by every forward; see `MohState`. */
  state: MohState | null = null;

  constructor(context: AttentionContext, readonly options: MohOptions) {
    const { sharedHeads, topK } = resolveMohHeads(context, options);
    super(context, {
      ...defaultDotProductConfig(context.numHeads),
      variant: "moh",
      kernel: options.kernel,
      numKvHeads: options.numKvHeads ?? context.numHeads,
      alibi: options.alibi,
    });
    this.sharedHeads = sharedHeads;
    this.topK = topK;

    const { backend, rng, dModel, initStd } = context;
    const routed = this.numHeads - sharedHeads;
    const linear = (name: string, out: number) =>
      this.addModule(name, new Linear(backend, rng, dModel, out, { initStd }));
    this.sharedGate = sharedHeads > 0 ? linear("sharedGate", sharedHeads) : null;
    this.routedGate = routed > 0 && topK > 0 ? linear("routedGate", routed) : null;
    this.stageGate = options.twoStage && this.sharedGate !== null && this.routedGate !== null
      ? linear("stageGate", 2)
      : null;
  }

  protected override headGates(x: Tensor): Tensor {
    const [batch, seqLen, dModel] = x.shape;
    const tokens = x.reshape([batch * seqLen, dModel]);
    const n = batch * seqLen;
    const routed = this.numHeads - this.sharedHeads;
    const code = this.options.gateForm === "code";
    const parts: Tensor[] = [];

    let shared: Tensor | null = null;
    if (this.sharedGate !== null) {
      const probs = softmax(this.sharedGate.forward(tokens));
      shared = code ? scale(probs, this.sharedHeads) : probs;
    }

    let selected: Tensor | null = null;
    let routedMask: Tensor | null = null;
    let loadBalance: Tensor | null = null;
    if (this.routedGate !== null) {
      const probs = softmax(this.routedGate.forward(tokens));
      routedMask = topKMask(probs, this.topK);
      const kept = mul(probs, routedMask);
      // The code's max(Σ, eps) denominator; the sum of selected probabilities is never 0.
      selected = code ? div(scale(kept, this.topK), addScalar(sum(kept, 1, true), 1e-9)) : kept;

      const fraction = mean(routedMask, 0);
      loadBalance = scale(sumAll(mul(fraction, mean(probs, 0))), routed);
    }

    let stageWeights: Tensor | null = null;
    if (shared !== null && selected !== null) {
      // Two-stage weights; the code form doubles them so α = 0.5 leaves the gates unscaled.
      const factor = code ? 2 : 1;
      if (this.stageGate !== null) {
        stageWeights = softmax(this.stageGate.forward(tokens));
        shared = mul(shared, scale(slice(stageWeights, 1, 0, 1), factor));
        selected = mul(selected, scale(slice(stageWeights, 1, 1, 2), factor));
      } else {
        shared = scale(shared, 0.5 * factor);
        selected = scale(selected, 0.5 * factor);
      }
    }
    if (shared !== null) parts.push(shared);
    if (selected !== null) parts.push(selected);
    if (this.sharedGate === null && this.routedGate === null) {
      parts.push(Tensor.zeros(x.backend, [n, this.numHeads]));
    } else if (this.routedGate === null && routed > 0) {
      // topK = 0: the routed heads stay off.
      parts.push(Tensor.zeros(x.backend, [n, routed]));
    }

    const gates = parts.length === 1 ? parts[0] : concat(parts, 1);
    this.auxLoss = loadBalance === null ? null : scale(loadBalance, this.options.loadBalanceWeight);
    this.state = {
      gates: gates.detach(),
      routedMask,
      stageWeights: stageWeights?.detach() ?? null,
      loadBalance: loadBalance?.detach() ?? null,
    };
    return gates.reshape([batch, seqLen, this.numHeads]);
  }
}

/**
 * Builds a 0/1 mask [N, R] of the k largest entries per row (ties to the lower column). Selection only,
 * so it carries no gradient.
 */
export function topKMask(scores: Tensor, k: number): Tensor {
  const [rows, cols] = scores.shape;
  const backend = scores.backend;
  const { indices, values } = backend.topK(scores.storage, rows, cols, k);
  backend.release(values);
  const ones = backend.alloc(rows * k, "f32");
  backend.fill(ones, 1);
  const mask = backend.scatterColumns(ones, indices, rows, cols, k);
  backend.release(ones);
  backend.release(indices);
  return Tensor.fromStorage(backend, mask, [rows, cols]);
}

export function createMoh(
  context: AttentionContext,
  options: MohOptions,
): MixtureOfHeadsAttention {
  return new MixtureOfHeadsAttention(context, options);
}
