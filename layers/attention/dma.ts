/**
 * DMA, trainable dynamic mask attention (Shi et al., arXiv 2508.02124). One score per key and
 * key/value head comes from the value projection: dt = Δ·v̄_j over the concatenated value heads,
 * and the log-domain bias b = A·softplus(dt) of the authors' code (`biasForm: exp` uses the
 * paper's exp(b)). Each query keeps the `keep` highest-scoring keys among its causal keys (all
 * of them while it has at most `keep`), ties going to the more recent key, and adds b to their
 * logits. The top-w selection reads the detached bias and has no gradient; the kept logits pass
 * gradients to b, so to A, Δ and the values.
 */

import { z } from "zod";
import {
  add,
  addScalar,
  attentionKeepEnds,
  exp,
  type FusedAttentionOptions,
  log,
  mul,
  neg,
  relu,
  Tensor,
  transpose,
} from "../../tensor/mod.ts";
import { Linear } from "../linear.ts";
import { constantParameter } from "../module.ts";
import { type AttentionContext, optionPath, requireCausal } from "./base.ts";
import { defaultDotProductConfig, DotProductAttention, type Projected } from "./dot_product.ts";
import { commonOptionsShape } from "./mha.ts";

export const dmaOptionsSchema = z.object({
  ...commonOptionsShape,
  /** Keys kept per query, w; must be below the sequence length for any sparsity. */
  keep: z.number().int().min(1),
  /** "log": b = A·softplus(dt) (the authors' code); "exp": exp of that (the paper). */
  biasForm: z.enum(["log", "exp"]).default("log"),
  /** Initial A of every head; 0 ties all keys at step 0, so DMA starts as a sliding window. */
  scaleInit: z.number().default(0),
}).strict();
export type DmaOptions = z.infer<typeof dmaOptionsSchema>;

/** softplus(x) = max(x, 0) + log(1 + exp(−|x|)); exp only sees values ≤ 0, so it cannot overflow. */
function softplus(x: Tensor): Tensor {
  const magnitude = add(relu(x), relu(neg(x)));
  return add(relu(x), log(addScalar(exp(neg(magnitude)), 1)));
}

export class DynamicMaskAttention extends DotProductAttention {
  readonly keep: number;
  readonly maskProjection: Linear;
  readonly maskScale: Tensor;
  /** i32 [B, kvHeads, T] key ends of the latest forward: query i keeps key j when i < end. */
  keyEnds: Tensor | null = null;
  #warnedSeqLen = -1;

  constructor(context: AttentionContext, readonly options: DmaOptions) {
    requireCausal(context, "dma", "keeps the top keys among each query's past keys");
    super(context, {
      ...defaultDotProductConfig(context.numHeads),
      variant: "dma",
      kernel: "fused",
      numKvHeads: options.numKvHeads ?? context.numHeads,
      alibi: options.alibi,
    });
    this.keep = options.keep;
    const { backend, rng, initStd } = context;
    const kvWidth = this.numKvHeads * this.headDim;
    this.maskProjection = this.addModule(
      "maskProjection",
      new Linear(backend, rng, kvWidth, this.numKvHeads, { initStd }),
    );
    this.maskScale = this.addParameter(
      "maskScale",
      constantParameter(backend, [this.numKvHeads], options.scaleInit),
    );
    if (context.maxSeqLen !== undefined) this.#warnIfDense(context.maxSeqLen);
  }

  protected override keyOptions(p: Projected): Partial<FusedAttentionOptions> {
    this.#warnIfDense(p.seqLen);
    // v̄_j: the value heads of key j side by side, [B, T, kvHeads·headDim].
    const values = transpose(p.v, 1, 2).reshape([p.batch, p.seqLen, -1]);
    let bias = mul(softplus(this.maskProjection.forward(values)), this.maskScale);
    if (this.options.biasForm === "exp") bias = exp(bias);

    const keyBias = transpose(bias, 1, 2);
    const keyEnds = attentionKeepEnds(keyBias, this.keep);
    this.keyEnds = keyEnds;
    return { bias: keyBias, keyEnds };
  }

  /** Warns once per length when keep ≥ seqLen, where DMA is dense attention plus a key bias. */
  #warnIfDense(seqLen: number): void {
    // A single position has nothing to drop, so it never warns.
    if (this.keep < seqLen || seqLen <= 1 || this.#warnedSeqLen === seqLen) return;
    this.#warnedSeqLen = seqLen;
    console.warn(
      `${optionPath(this.context, "keep")} is ${this.keep} but the sequence length is ` +
        `${seqLen}; every query keeps all its keys, so DMA is dense attention plus a learned ` +
        `key bias. Choose keep < ${seqLen} (e.g. ${Math.max(1, Math.floor(seqLen / 4))}).`,
    );
  }
}

export function createDma(context: AttentionContext, options: DmaOptions): DynamicMaskAttention {
  return new DynamicMaskAttention(context, options);
}
