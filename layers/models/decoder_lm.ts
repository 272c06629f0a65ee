/**
 * A decoder-only language model: token embedding, optional learned positions, pre-norm blocks, a
 * final norm and an output head that may share the embedding matrix.
 */

import type { Backend } from "../../kernels/backend.ts";
import { add, crossEntropy, matmul, Rng, slice, Tensor } from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { DecoderBlock } from "../block.ts";
import { Embedding, Linear } from "../linear.ts";
import type { MlpKind } from "../mlp.ts";
import { Module, normalParameter } from "../module.ts";
import { createNorm, type LayerNorm, type NormKind, type RMSNorm } from "../norm.ts";
import { RopeTables } from "../rope.ts";

export interface DecoderLmOptions {
  vocabSize: number;
  maxSeqLen: number;
  dModel: number;
  numLayers: number;
  numHeads: number;
  dFF: number;
  mlp: MlpKind;
  norm: NormKind;
  position: "rope" | "learned" | "none";
  tieEmbeddings: boolean;
  normEps: number;
  initStd: number;
}

export class DecoderLM extends Module {
  readonly tokenEmbedding: Embedding;
  readonly positionEmbedding: Tensor | null;
  readonly blocks: DecoderBlock[] = [];
  readonly finalNorm: RMSNorm | LayerNorm;
  readonly head: Linear | null;
  readonly #rope: RopeTables | null;

  constructor(backend: Backend, rng: Rng, readonly options: DecoderLmOptions) {
    super();
    const { vocabSize, dModel, numLayers, initStd } = options;
    // GPT-2 scales the init of projections into the residual stream by 1/√(2·layers).
    const outputInitStd = initStd / Math.sqrt(2 * numLayers);
    this.#rope = options.position === "rope"
      ? new RopeTables(backend, dModel / options.numHeads)
      : null;

    this.tokenEmbedding = this.addModule(
      "tokenEmbedding",
      new Embedding(backend, rng, vocabSize, dModel, initStd),
    );
    this.positionEmbedding = options.position === "learned"
      ? this.addParameter(
        "positionEmbedding",
        normalParameter(backend, rng, [options.maxSeqLen, dModel], initStd),
      )
      : null;
    for (let i = 0; i < numLayers; i++) {
      this.blocks.push(
        this.addModule(
          `blocks.${i}`,
          new DecoderBlock(backend, rng, { ...options, outputInitStd, rope: this.#rope }),
        ),
      );
    }
    this.finalNorm = this.addModule(
      "finalNorm",
      createNorm(backend, options.norm, dModel, options.normEps),
    );
    this.head = options.tieEmbeddings
      ? null
      : this.addModule("head", new Linear(backend, rng, dModel, vocabSize, { initStd }));
  }

  /** Logits [B, T, vocab] for i32 token ids [B, T]. */
  forward(ids: Tensor): Tensor {
    if (ids.rank !== 2) {
      throw new ShapeError(`DecoderLM: ids must be [batch, seqLen], got ${ids.describe()}`);
    }
    const seqLen = ids.shape[1];
    if (seqLen > this.options.maxSeqLen) {
      throw new ShapeError(
        `DecoderLM: sequence length ${seqLen} exceeds maxSeqLen ${this.options.maxSeqLen}`,
      );
    }

    let h = this.tokenEmbedding.forward(ids);
    if (this.positionEmbedding !== null) {
      h = add(h, slice(this.positionEmbedding, 0, 0, seqLen));
    }
    for (const block of this.blocks) h = block.forward(h);
    h = this.finalNorm.forward(h);

    return this.head === null
      ? matmul(h, this.tokenEmbedding.weight, { transB: true })
      : this.head.forward(h);
  }

  /** Mean next-token cross-entropy in nats. */
  loss(ids: Tensor, targets: Tensor): Tensor {
    return crossEntropy(this.forward(ids), targets);
  }

  override dispose(): void {
    super.dispose();
    this.#rope?.dispose();
  }
}
