/**
 * A patch-based transformer forecaster, after PatchTST (Nie et al., "A Time Series is Worth 64
 * Words: Long-term Forecasting with Transformers", 2023). Each channel of the lookback window is
 * cut into non-overlapping patches, which are embedded linearly with learned positions and passed
 * through a pre-norm transformer encoder (non-causal attention). One linear head maps all patch
 * states of a channel to its horizon. Channels share every weight and never attend to each other (channel
 * independence).
 *
 * Each block's attention is a registered variant (`attention`, default plain multi-head), built
 * non-causal. Each block's feed-forward layer comes from an optional `ffn` factory, so an MoE layer
 * can take the place of the MLP.
 *
 * `EncoderBlock` is shared with the ViT.
 */

import type { Backend } from "../../kernels/backend.ts";
import { add, meanAll, Rng, square, sub, Tensor, transpose } from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import type { AttentionModule } from "../attention/base.ts";
import { type AttentionSpec, createAttention, DEFAULT_ATTENTION } from "../attention/registry.ts";
import { Linear } from "../linear.ts";
import { Mlp, type MlpKind } from "../mlp.ts";
import { Module, normalParameter } from "../module.ts";
import { createNorm, type LayerNorm, type NormKind, type RMSNorm } from "../norm.ts";

/** A position-wise feed-forward layer: [..., dModel] to [..., dModel]. */
export interface FeedForward extends Module {
  forward(x: Tensor): Tensor;
}

/** Builds the feed-forward layer of block `layer` (from 0); the default is the config's MLP. */
export type FeedForwardFactory = (
  backend: Backend,
  rng: Rng,
  layer: number,
  options: { dModel: number; dFF: number; initStd: number; outputInitStd: number },
) => FeedForward;

/** Sizes and initialisation of a transformer encoder, shared by the forecaster and the ViT. */
export interface EncoderOptions {
  dModel: number;
  numLayers: number;
  numHeads: number;
  dFF: number;
  mlp: MlpKind;
  norm: NormKind;
  normEps: number;
  initStd: number;
  /** `model.attention`: the variant name and its options; default `{ name: "mha" }`. */
  attention?: AttentionSpec;
  /** Replaces each block's MLP, for example with an MoE layer. */
  ffn?: FeedForwardFactory;
}

/** The pre-norm encoder block: x + attention(norm(x)), then x + ffn(norm(x)), no causal mask. */
export class EncoderBlock extends Module {
  readonly attentionNorm: RMSNorm | LayerNorm;
  readonly attention: AttentionModule;
  readonly mlpNorm: RMSNorm | LayerNorm;
  readonly mlp: FeedForward;

  /** `seqLen` is the model's number of tokens, for the variants' option checks. */
  constructor(
    backend: Backend,
    rng: Rng,
    layer: number,
    options: EncoderOptions,
    seqLen: number,
  ) {
    super();
    const { dModel, norm, normEps, initStd } = options;
    // GPT-2 scales the init of projections into the residual stream by 1/√(2·layers).
    const outputInitStd = initStd / Math.sqrt(2 * options.numLayers);

    this.attentionNorm = this.addModule(
      "attentionNorm",
      createNorm(backend, norm, dModel, normEps),
    );
    // Encoders use learned positions, so the context has no rotary tables (MLA still rotates its
    // decoupled query and key parts with tables of its own).
    this.attention = this.addModule(
      "attention",
      createAttention(options.attention ?? DEFAULT_ATTENTION, {
        backend,
        rng,
        dModel,
        numHeads: options.numHeads,
        initStd,
        outputInitStd,
        rope: null,
        maxSeqLen: seqLen,
        causal: false,
      }),
    );
    this.mlpNorm = this.addModule("mlpNorm", createNorm(backend, norm, dModel, normEps));
    const ffnOptions = { dModel, dFF: options.dFF, initStd, outputInitStd };
    this.mlp = this.addModule(
      "mlp",
      options.ffn === undefined
        ? new Mlp(backend, rng, { ...ffnOptions, kind: options.mlp })
        : options.ffn(backend, rng, layer, ffnOptions),
    );
  }

  /** x is [B, T, dModel]; returns [B, T, dModel]. */
  forward(x: Tensor): Tensor {
    const h = add(x, this.attention.forward(this.attentionNorm.forward(x)));
    return add(h, this.mlp.forward(this.mlpNorm.forward(h)));
  }
}

/**
 * Sums the weighted auxiliary losses that the blocks' attention left in their latest forward
 * (MoH's head load balance); null when no block has one.
 */
export function encoderAttentionAuxLoss(blocks: readonly EncoderBlock[]): Tensor | null {
  let total: Tensor | null = null;
  for (const block of blocks) {
    const aux = block.attention.auxLoss;
    if (aux !== null) total = total === null ? aux : add(total, aux);
  }
  return total;
}

export interface ForecasterOptions extends EncoderOptions {
  /** Time steps the model reads; a multiple of patchLen. */
  lookback: number;
  /** Time steps the model predicts. */
  horizon: number;
  /** Time steps per patch. */
  patchLen: number;
}

export class Forecaster extends Module {
  readonly numPatches: number;
  readonly patchEmbedding: Linear;
  readonly positionEmbedding: Tensor;
  readonly blocks: EncoderBlock[] = [];
  readonly finalNorm: RMSNorm | LayerNorm;
  readonly head: Linear;

  constructor(backend: Backend, rng: Rng, readonly options: ForecasterOptions) {
    super();
    const { lookback, patchLen, dModel, initStd } = options;
    if (lookback % patchLen !== 0) {
      throw new ShapeError(
        `Forecaster: lookback ${lookback} is not a multiple of patchLen ${patchLen}`,
      );
    }
    this.numPatches = lookback / patchLen;

    this.patchEmbedding = this.addModule(
      "patchEmbedding",
      new Linear(backend, rng, patchLen, dModel, { initStd, bias: true }),
    );
    this.positionEmbedding = this.addParameter(
      "positionEmbedding",
      normalParameter(backend, rng, [this.numPatches, dModel], initStd),
    );
    for (let i = 0; i < options.numLayers; i++) {
      const block = new EncoderBlock(backend, rng, i, options, this.numPatches);
      this.blocks.push(this.addModule(`blocks.${i}`, block));
    }
    this.finalNorm = this.addModule(
      "finalNorm",
      createNorm(backend, options.norm, dModel, options.normEps),
    );
    this.head = this.addModule(
      "head",
      new Linear(backend, rng, this.numPatches * dModel, options.horizon, { initStd, bias: true }),
    );
  }

  /** Forecasts [B, horizon, C] from a lookback window [B, lookback, C]. */
  forward(x: Tensor): Tensor {
    const { lookback, horizon, patchLen, dModel } = this.options;
    if (x.rank !== 3 || x.shape[1] !== lookback) {
      throw new ShapeError(
        `Forecaster: expected input [batch, ${lookback}, channels], got ${x.describe()}`,
      );
    }
    const [batch, , channels] = x.shape;

    // [B, L, C] → [B·C, patches, patchLen]: every channel is a separate sequence of patches.
    const series = transpose(x, 1, 2).reshape([batch * channels, this.numPatches, patchLen]);
    let h = add(this.patchEmbedding.forward(series), this.positionEmbedding);
    for (const block of this.blocks) h = block.forward(h);
    h = this.finalNorm.forward(h);

    const forecast = this.head.forward(h.reshape([batch * channels, this.numPatches * dModel]));
    return transpose(forecast.reshape([batch, channels, horizon]), 1, 2);
  }

  /** Mean squared error of the forecast against targets [B, horizon, C]. */
  loss(inputs: Tensor, targets: Tensor): Tensor {
    return meanAll(square(sub(this.forward(inputs), targets)));
  }

  /** The attention layers' weighted auxiliary losses from the latest forward, or null. */
  attentionAuxLoss(): Tensor | null {
    return encoderAttentionAuxLoss(this.blocks);
  }
}
