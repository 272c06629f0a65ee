/**
 * A decoder-only language model: token embedding, optional learned positions, pre-norm blocks, a
 * final norm and an output head that may share the embedding matrix.
 */

import type { Backend } from "../../kernels/backend.ts";
import { add, crossEntropy, matmul, Rng, slice, Tensor } from "../../tensor/mod.ts";
import { isGradEnabled } from "../../tensor/tensor.ts";
import { ShapeError } from "../../tensor/shape.ts";
import type { AttentionSpec } from "../attention/registry.ts";
import { DecoderBlock } from "../block.ts";
import { Embedding, Linear } from "../linear.ts";
import type { MlpKind } from "../mlp.ts";
import { Module, normalParameter } from "../module.ts";
import {
  type ChunkPlan,
  ConceptChunker,
  type ConceptSpec,
  dechunk,
  resolveConcept,
} from "../moe/concept.ts";
import type { MoeLayer, RoutingRecord } from "../moe/moe_layer.ts";
import { moeLayerIndices, type MoeSpec, resolveMoe } from "../moe/spec.ts";
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
  /** `model.attention`: the variant name and its options; default `{ name: "mha" }`. */
  attention?: AttentionSpec;
  /** When given, MoE layers replace the MLP of the blocks that `moe.layers` names. */
  moe?: MoeSpec;
  /**
   * When given, ConceptMoE compression: the blocks between the first `encoderLayers` and the
   * last `decoderLayers` run on one state per chunk of about `ratio` tokens.
   */
  concept?: ConceptSpec;
}

export class DecoderLM extends Module {
  readonly tokenEmbedding: Embedding;
  readonly positionEmbedding: Tensor | null;
  readonly blocks: DecoderBlock[] = [];
  readonly finalNorm: RMSNorm | LayerNorm;
  readonly head: Linear | null;
  /** The ConceptMoE boundary scorer, or null without `concept`. */
  readonly concept: ConceptChunker | null;
  readonly #rope: RopeTables | null;
  #moeAuxLoss: Tensor | null = null;

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
    const moe = options.moe === undefined ? null : {
      ...resolveMoe(options.moe),
      dModel,
      router: options.moe.router,
      initStd,
      outputInitStd,
      vocabSize,
    };
    const moeLayers = new Set(
      options.moe === undefined ? [] : moeLayerIndices(options.moe.layers, numLayers),
    );
    const concept = options.concept === undefined
      ? null
      : resolveConcept(options.concept, numLayers);
    // Concept blocks activate more experts per concept so their expert FLOPs match the baseline.
    const conceptMoe = concept === null || options.moe === undefined ? null : {
      ...moe!,
      ...resolveMoe({
        ...options.moe,
        topK: concept.topK ?? Math.round(concept.ratio * options.moe.topK),
      }),
    };
    for (let i = 0; i < numLayers; i++) {
      const layerMoe = conceptMoe !== null && this.#isConceptBlock(i, concept!) ? conceptMoe : moe;
      this.blocks.push(
        this.addModule(
          `blocks.${i}`,
          new DecoderBlock(backend, rng, {
            ...options,
            outputInitStd,
            rope: this.#rope,
            moe: layerMoe !== null && moeLayers.has(i)
              ? { ...layerMoe, layerIndex: i, numLayers }
              : null,
          }),
        ),
      );
    }
    warnFutureLeak(this.moeLayers());
    this.concept = concept === null ? null : this.addModule(
      "concept",
      new ConceptChunker(backend, rng.fork("concept"), dModel, initStd, concept),
    );
    if (concept?.merge === "sum") {
      console.warn(
        `model.concept.merge "sum" gives each token the sum of its whole chunk, later tokens ` +
          `included, which leaks the future into this causal language model; use "select"`,
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
    const context = { tokenIds: ids.reshape([ids.size]) };
    let moeAuxLoss: Tensor | null = null;
    let tokenStates: Tensor | null = null;
    let plan: ChunkPlan | null = null;
    for (const [i, block] of this.blocks.entries()) {
      const spec = this.concept?.spec;
      if (spec !== undefined && i === spec.encoderLayers) {
        const chunked = this.concept!.chunk(h, isGradEnabled());
        tokenStates = h;
        plan = chunked.plan;
        h = chunked.concepts;
        moeAuxLoss = moeAuxLoss === null ? chunked.loss : add(moeAuxLoss, chunked.loss);
      }
      if (spec !== undefined && i === this.blocks.length - spec.decoderLayers) {
        h = dechunk(tokenStates!, h, plan!);
      }
      // Concept blocks have no token ids, so hash routing is unavailable there.
      const inConcept = spec !== undefined && this.#isConceptBlock(i, spec);
      const out = block.forwardWithAux(h, inConcept ? { tokenIds: null } : context);
      h = out.y;
      if (out.auxLoss !== null) {
        moeAuxLoss = moeAuxLoss === null ? out.auxLoss : add(moeAuxLoss, out.auxLoss);
      }
    }
    this.#moeAuxLoss = moeAuxLoss;
    h = this.finalNorm.forward(h);

    return this.head === null
      ? matmul(h, this.tokenEmbedding.weight, { transB: true })
      : this.head.forward(h);
  }

  /**
   * Sum of the attention layers' weighted auxiliary losses from the latest forward (MoH's head
   * load balance), or null when no layer has one. Add it to the task loss before backward.
   */
  attentionAuxLoss(): Tensor | null {
    let total: Tensor | null = null;
    for (const block of this.blocks) {
      const aux = block.attention.auxLoss;
      if (aux !== null) total = total === null ? aux : add(total, aux);
    }
    return total;
  }

  /**
   * Sum of the MoE layers' weighted auxiliary losses (load balance, z-loss, ...) from the latest
   * forward, or null when the model has no MoE layer or no loss is weighted above 0.
   */
  moeAuxLoss(): Tensor | null {
    return this.#moeAuxLoss;
  }

  /**
   * Mean next-token cross-entropy in nats, plus the weighted auxiliary losses of the MoE layers
   * and of the attention layers (MoH's head load balance) when the model has any.
   */
  loss(ids: Tensor, targets: Tensor): Tensor {
    const ce = crossEntropy(this.forward(ids), targets);
    let aux = this.#moeAuxLoss;
    this.#moeAuxLoss = null;
    const attentionAux = this.attentionAuxLoss();
    if (attentionAux !== null) aux = aux === null ? attentionAux : add(aux, attentionAux);
    return aux === null ? ce : add(ce, aux.reshape([]));
  }

  #isConceptBlock(i: number, concept: { encoderLayers: number; decoderLayers: number }): boolean {
    return i >= concept.encoderLayers && i < this.options.numLayers - concept.decoderLayers;
  }

  /** The MoE layers by block index, in block order. */
  moeLayers(): { layer: number; moe: MoeLayer }[] {
    const out: { layer: number; moe: MoeLayer }[] = [];
    this.blocks.forEach((block, layer) => {
      if (block.moe !== null) out.push({ layer, moe: block.moe });
    });
    return out;
  }

  /** The routing of each MoE layer's latest forward, by block index (empty before the first). */
  routing(): { layer: number; record: RoutingRecord }[] {
    return this.moeLayers().flatMap(({ layer, moe }) =>
      moe.lastRouting === null ? [] : [{ layer, record: moe.lastRouting }]
    );
  }

  /**
   * Runs every MoE router's post-update hook (the aux-free bias update); the trainer calls it
   * after each optimizer step.
   */
  afterStep(): void {
    for (const { moe } of this.moeLayers()) moe.afterStep();
  }

  /**
   * Passes training step `step` (0-based) of `totalSteps` to every MoE router (the progressive
   * top-K schedule); the trainer calls it before each training forward.
   */
  setStep(step: number, totalSteps: number): void {
    for (const { moe } of this.moeLayers()) moe.setStep(step, totalSteps);
  }

  override dispose(): void {
    super.dispose();
    for (const { moe } of this.moeLayers()) moe.dispose();
    this.concept?.dispose();
    this.#rope?.dispose();
  }
}

/** Warns once when a router routes tokens with later tokens' states, which a causal LM must not. */
function warnFutureLeak(layers: { layer: number; moe: MoeLayer }[]): void {
  const leaking = layers.filter(({ moe }) => moe.router.usesLaterTokens).map(({ layer }) => layer);
  if (leaking.length === 0) return;
  console.warn(
    `model.moe.router "${layers[0].moe.options.router.name}" routes each token with the states ` +
      `of later tokens in blocks ${leaking.join(", ")}, which leaks the future into this causal ` +
      `language model; its losses are not comparable with causal routers`,
  );
}
