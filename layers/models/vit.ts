/**
 * A small vision transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021). The
 * image is cut into square patches, each embedded linearly with a learned position. A pre-norm
 * transformer encoder runs over them without a causal mask, and a linear head maps the pooled
 * state (a prepended class token, or the mean of the patch states) to class logits.
 *
 * Each block's attention is a registered variant (`attention`, default plain multi-head), built
 * non-causal. Each block's feed-forward layer comes from an optional `ffn` factory, so an MoE layer
 * can take the place of the MLP.
 */

import type { Backend } from "../../kernels/backend.ts";
import {
  add,
  concat,
  crossEntropy,
  mean,
  Rng,
  slice,
  Tensor,
  transpose,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { Linear } from "../linear.ts";
import { Module, normalParameter } from "../module.ts";
import { createNorm, type LayerNorm, type RMSNorm } from "../norm.ts";
import { encoderAttentionAuxLoss, EncoderBlock, type EncoderOptions } from "./forecaster.ts";

export interface VitOptions extends EncoderOptions {
  /** Height and width of the square input image, in pixels. */
  imageSize: number;
  /** Side of a square patch; must divide imageSize. */
  patchSize: number;
  /** Channels per pixel (1 for greyscale). */
  channels: number;
  numClasses: number;
  /** "cls": the state of a prepended class token; "mean": the mean of the patch states. */
  pooling: "cls" | "mean";
}

export class VisionTransformer extends Module {
  readonly numPatches: number;
  readonly patchEmbedding: Linear;
  readonly classToken: Tensor | null;
  readonly positionEmbedding: Tensor;
  readonly blocks: EncoderBlock[] = [];
  readonly finalNorm: RMSNorm | LayerNorm;
  readonly head: Linear;

  constructor(readonly backend: Backend, rng: Rng, readonly options: VitOptions) {
    super();
    const { imageSize, patchSize, channels, dModel, initStd } = options;
    if (imageSize % patchSize !== 0) {
      throw new ShapeError(`ViT: patchSize ${patchSize} does not divide imageSize ${imageSize}`);
    }
    const side = imageSize / patchSize;
    this.numPatches = side * side;
    const tokens = this.numPatches + (options.pooling === "cls" ? 1 : 0);

    this.patchEmbedding = this.addModule(
      "patchEmbedding",
      new Linear(backend, rng, patchSize * patchSize * channels, dModel, { initStd, bias: true }),
    );
    this.classToken = options.pooling === "cls"
      ? this.addParameter("classToken", normalParameter(backend, rng, [1, 1, dModel], initStd))
      : null;
    this.positionEmbedding = this.addParameter(
      "positionEmbedding",
      normalParameter(backend, rng, [tokens, dModel], initStd),
    );
    for (let i = 0; i < options.numLayers; i++) {
      const block = new EncoderBlock(backend, rng, i, options, tokens);
      this.blocks.push(this.addModule(`blocks.${i}`, block));
    }
    this.finalNorm = this.addModule(
      "finalNorm",
      createNorm(backend, options.norm, dModel, options.normEps),
    );
    this.head = this.addModule(
      "head",
      new Linear(backend, rng, dModel, options.numClasses, { initStd, bias: true }),
    );
  }

  /** Logits [B, numClasses] for images [B, imageSize, imageSize, channels] (or [B, pixels]). */
  forward(images: Tensor): Tensor {
    const { imageSize, patchSize, channels, dModel } = this.options;
    const pixels = imageSize * imageSize * channels;
    if (images.size === 0 || images.size % pixels !== 0) {
      throw new ShapeError(
        `ViT: expected images of ${imageSize}×${imageSize}×${channels} pixels, got ${images.describe()}`,
      );
    }
    const batch = images.size / pixels;
    const side = imageSize / patchSize;

    // [B, side·p, side·p, ch] → [B, side, p, side, p·ch] → [B, side, side, p, p·ch] → patches.
    const grid = images.reshape([batch, side, patchSize, side, patchSize * channels]);
    const patches = transpose(grid, 2, 3).reshape([batch, this.numPatches, -1]);
    let h = this.patchEmbedding.forward(patches);
    if (this.classToken !== null) {
      const classTokens = add(Tensor.zeros(this.backend, [batch, 1, dModel]), this.classToken);
      h = concat([classTokens, h], 1);
    }
    h = add(h, this.positionEmbedding);
    for (const block of this.blocks) h = block.forward(h);
    h = this.finalNorm.forward(h);

    const pooled = this.classToken !== null
      ? slice(h, 1, 0, 1).reshape([batch, dModel])
      : mean(h, 1);
    return this.head.forward(pooled);
  }

  /** Mean cross-entropy in nats of the logits against i32 labels [B]. */
  loss(images: Tensor, labels: Tensor): Tensor {
    return crossEntropy(this.forward(images), labels);
  }

  /** The attention layers' weighted auxiliary losses from the latest forward, or null. */
  attentionAuxLoss(): Tensor | null {
    return encoderAttentionAuxLoss(this.blocks);
  }
}
