/**
 * The pre-norm decoder block: x + attn(norm(x)), then x + ffn(norm(x)), where the feed-forward
 * part is a dense MLP or, when the block gets MoE options, a mixture-of-experts layer.
 */

import type { Backend } from "../kernels/backend.ts";
import { add, Rng, Tensor } from "../tensor/mod.ts";
import type { AttentionModule } from "./attention/base.ts";
import { type AttentionSpec, createAttention, DEFAULT_ATTENTION } from "./attention/registry.ts";
import { Mlp, type MlpKind } from "./mlp.ts";
import { type MoeContext, MoeLayer, type MoeLayerOptions } from "./moe/moe_layer.ts";
import { Module } from "./module.ts";
import { createNorm, type LayerNorm, type NormKind, type RMSNorm } from "./norm.ts";
import type { RopeTables } from "./rope.ts";

export interface BlockOptions {
  dModel: number;
  numHeads: number;
  dFF: number;
  mlp: MlpKind;
  norm: NormKind;
  normEps: number;
  initStd: number;
  outputInitStd: number;
  rope: RopeTables | null;
  /** The attention variant and its options; default `{ name: "mha" }`. */
  attention?: AttentionSpec;
  /** Longest sequence the model accepts, for attention option checks. */
  maxSeqLen?: number;
  /** When given, an MoE layer (registered as `moe`) replaces the MLP. */
  moe?: MoeLayerOptions | null;
}

export class DecoderBlock extends Module {
  readonly attentionNorm: RMSNorm | LayerNorm;
  readonly attention: AttentionModule;
  readonly mlpNorm: RMSNorm | LayerNorm;
  /** The dense MLP, or null in an MoE block. */
  readonly mlp: Mlp | null;
  /** The MoE layer, or null in a dense block. */
  readonly moe: MoeLayer | null;

  constructor(backend: Backend, rng: Rng, options: BlockOptions) {
    super();
    const { dModel, norm, normEps } = options;
    this.attentionNorm = this.addModule(
      "attentionNorm",
      createNorm(backend, norm, dModel, normEps),
    );
    this.attention = this.addModule(
      "attention",
      createAttention(options.attention ?? DEFAULT_ATTENTION, { backend, rng, ...options }),
    );
    this.mlpNorm = this.addModule("mlpNorm", createNorm(backend, norm, dModel, normEps));
    if (options.moe) {
      this.mlp = null;
      this.moe = this.addModule("moe", new MoeLayer(backend, rng, options.moe));
    } else {
      this.moe = null;
      this.mlp = this.addModule(
        "mlp",
        new Mlp(backend, rng, {
          dModel,
          dFF: options.dFF,
          kind: options.mlp,
          initStd: options.initStd,
          outputInitStd: options.outputInitStd,
        }),
      );
    }
  }

  forward(x: Tensor): Tensor {
    return this.forwardWithAux(x).y;
  }

  /** The block output and, in an MoE block, the sum of its weighted auxiliary losses. */
  forwardWithAux(
    x: Tensor,
    context: MoeContext = { tokenIds: null },
  ): { y: Tensor; auxLoss: Tensor | null } {
    const attentionInput = this.attentionNorm.forward(x);
    if (this.moe?.router.needsAttention) return this.#forwardWithProbs(x, attentionInput, context);
    const h = add(x, this.attention.forward(attentionInput));
    const normed = this.mlpNorm.forward(h);
    if (this.moe === null) return { y: add(h, this.mlp!.forward(normed)), auxLoss: null };
    const { y, auxLoss } = this.moe.forward(normed, context);
    return { y: add(h, y), auxLoss };
  }

  /** The MoE path of a router that routes with this block's attention probabilities. */
  #forwardWithProbs(
    x: Tensor,
    attentionInput: Tensor,
    context: MoeContext,
  ): { y: Tensor; auxLoss: Tensor | null } {
    const { output, probs } = this.attention.forwardWithProbs(attentionInput);
    if (probs === undefined) {
      throw new Error(
        `model.moe.router needs attention probabilities, but attention variant ` +
          `"${this.attention.variant}" returned none; choose another model.attention or a ` +
          `router that does not read attention (e.g. model.moe.router.name: similarity)`,
      );
    }
    const h = add(x, output);
    const { y, auxLoss } = this.moe!.forward(this.mlpNorm.forward(h), {
      ...context,
      attentionProbs: probs,
    });
    return { y: add(h, y), auxLoss };
  }
}
