/**
 * MLA, multi-head latent attention (DeepSeek-V2, arXiv 2405.04434). Keys and values come from one
 * compressed latent c^KV = W^DKV·x of `kvLatent` elements per token, which is what a KV cache
 * would hold, and queries from a latent c^Q of `queryLatent` elements (0 projects x directly).
 * Positions take a decoupled path: each head's query gains `ropeDim` rotated elements, and one
 * rotated key of `ropeDim` elements from x is shared by all heads. Scores are scaled by
 * 1/√(headDim + ropeDim). As in released implementations, both latents are RMS-normalised.
 */

import { z } from "zod";
import {
  attention,
  attentionProbs,
  concat,
  noGrad,
  rope,
  type Tensor,
  transpose,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { Linear } from "../linear.ts";
import { RMSNorm } from "../norm.ts";
import { RopeTables } from "../rope.ts";
import {
  AttentionConfigError,
  type AttentionContext,
  AttentionModule,
  type AttentionOutput,
  checkHeads,
  optionPath,
} from "./base.ts";
import { repeatHeads, unfusedAttention } from "./unfused.ts";

export const mlaOptionsSchema = z.object({
  /** Elements of the key/value latent c^KV per token; default dModel / 2. */
  kvLatent: z.number().int().positive().optional(),
  /** Elements of the query latent c^Q; default dModel / 2, and 0 projects queries from x. */
  queryLatent: z.number().int().nonnegative().optional(),
  /** Rotated elements per head on the decoupled RoPE path; even, default headDim / 2. */
  ropeDim: z.number().int().positive().optional(),
}).strict();
export type MlaOptions = z.infer<typeof mlaOptionsSchema>;

export class MultiHeadLatentAttention extends AttentionModule {
  readonly variant = "mla";
  readonly numHeads: number;
  readonly headDim: number;
  readonly ropeDim: number;
  readonly kvDown: Linear;
  readonly kvNorm: RMSNorm;
  readonly keyUp: Linear;
  readonly valueUp: Linear;
  readonly queryDown: Linear | null;
  readonly queryNorm: RMSNorm | null;
  readonly query: Linear;
  readonly queryRope: Linear;
  readonly keyRope: Linear;
  readonly output: Linear;
  readonly #rope: RopeTables;

  constructor(readonly context: AttentionContext, options: MlaOptions) {
    super();
    const { backend, rng, dModel, numHeads, initStd } = context;
    this.headDim = checkHeads(context);
    this.numHeads = numHeads;
    const kvLatent = options.kvLatent ?? Math.max(1, Math.floor(dModel / 2));
    const queryLatent = options.queryLatent ?? Math.max(1, Math.floor(dModel / 2));
    this.ropeDim = options.ropeDim ?? Math.max(2, 2 * Math.floor(this.headDim / 4));
    if (this.ropeDim % 2 !== 0) {
      throw new AttentionConfigError(
        `${optionPath(context, "ropeDim")} is ${this.ropeDim} but RoPE pairs elements; ` +
          "choose an even number",
      );
    }

    const linear = (name: string, inputs: number, outputs: number, std = initStd) =>
      this.addModule(name, new Linear(backend, rng, inputs, outputs, { initStd: std }));
    this.kvDown = linear("kvDown", dModel, kvLatent);
    this.kvNorm = this.addModule("kvNorm", new RMSNorm(backend, kvLatent, 1e-6));
    this.keyUp = linear("keyUp", kvLatent, dModel);
    this.valueUp = linear("valueUp", kvLatent, dModel);
    this.queryDown = queryLatent > 0 ? linear("queryDown", dModel, queryLatent) : null;
    this.queryNorm = queryLatent > 0
      ? this.addModule("queryNorm", new RMSNorm(backend, queryLatent, 1e-6))
      : null;
    const queryInputs = queryLatent > 0 ? queryLatent : dModel;
    this.query = linear("query", queryInputs, dModel);
    this.queryRope = linear("queryRope", queryInputs, numHeads * this.ropeDim);
    this.keyRope = linear("keyRope", dModel, this.ropeDim);
    this.output = linear("output", dModel, dModel, context.outputInitStd);
    this.#rope = new RopeTables(backend, this.ropeDim);
  }

  forward(x: Tensor): Tensor {
    if (!this.recordProbs) return this.#run(x, false).output;
    const { output, probs } = this.#run(x, true);
    this.probs = probs ?? null;
    return output;
  }

  forwardWithProbs(x: Tensor): AttentionOutput {
    return this.#run(x, true);
  }

  override dispose(): void {
    super.dispose();
    this.#rope.dispose();
  }

  #run(x: Tensor, withProbs: boolean): AttentionOutput {
    const dModel = this.context.dModel;
    if (x.rank !== 3 || x.shape[2] !== dModel) {
      throw new ShapeError(`mla: expected input [batch, seqLen, ${dModel}], got ${x.describe()}`);
    }
    const [batch, seqLen] = x.shape;
    const heads = this.numHeads;
    const split = (t: Tensor, count: number, dim: number) =>
      transpose(t.reshape([batch, seqLen, count, dim]), 1, 2);
    const { cos, sin } = this.#rope.get(seqLen);

    const latent = this.kvNorm.forward(this.kvDown.forward(x));
    const keyContent = split(this.keyUp.forward(latent), heads, this.headDim);
    const v = split(this.valueUp.forward(latent), heads, this.headDim);
    const sharedKeyRope = rope(split(this.keyRope.forward(x), 1, this.ropeDim), cos, sin);

    const queryInput = this.queryDown === null
      ? x
      : this.queryNorm!.forward(this.queryDown.forward(x));
    const queryContent = split(this.query.forward(queryInput), heads, this.headDim);
    const queryRope = rope(
      split(this.queryRope.forward(queryInput), heads, this.ropeDim),
      cos,
      sin,
    );

    const q = concat([queryContent, queryRope], 3);
    const k = concat([keyContent, repeatHeads(sharedKeyRope, heads)], 3);
    const options = { scale: 1 / Math.sqrt(this.headDim + this.ropeDim) };
    let context: Tensor;
    let probs: Tensor | undefined;
    if (this.context.causal === false) {
      // The fused kernel is causal only, so non-causal MLA runs unfused.
      const unfused = unfusedAttention(q, k, v, { ...options, causal: false });
      context = unfused.output;
      probs = withProbs ? unfused.probs : undefined;
    } else {
      context = attention(q, k, v, options);
      probs = withProbs ? noGrad(() => attentionProbs(q, k, options)) : undefined;
    }

    const merged = transpose(context, 1, 2).reshape([batch, seqLen, dModel]);
    return { output: this.output.forward(merged), probs };
  }
}

export function createMla(
  context: AttentionContext,
  options: MlaOptions,
): MultiHeadLatentAttention {
  return new MultiHeadLatentAttention(context, options);
}
