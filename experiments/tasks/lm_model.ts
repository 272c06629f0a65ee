/**
 * The decoder language model as a `TaskModel`, shared by the token tasks (`lm`, `recall`).
 *
 * `LmModel` wraps a `DecoderLM` without adding a name prefix, so parameter names
 * (`tokenEmbedding.weight`, `blocks.0.attention.query.weight`, `head.weight`) stay those of the
 * decoder, which the optimizer's group rules and checkpoints match on.
 */

import type { Backend } from "../../kernels/backend.ts";
import { DecoderLM } from "../../layers/models/decoder_lm.ts";
import { Module } from "../../layers/module.ts";
import { type Rng, Tensor } from "../../tensor/mod.ts";
import type { ExperimentConfig } from "../config.ts";
import type { Batch, TaskModel } from "./task.ts";

/** The `model` section of an experiment config. */
export type ModelSection = ExperimentConfig["model"];

/** Token ids and next-token targets on the device. */
export interface TokenBatch extends Batch {
  /** i32 token ids [batch, seqLen]. */
  readonly inputs: Tensor;
  /** i32 targets [batch, seqLen]; −100 marks a position without a target. */
  readonly targets: Tensor;
}

/** Uploads host token ids and targets of shape [batchSize, seqLen] as a `TokenBatch`. */
export function uploadTokenBatch(
  backend: Backend,
  inputs: Int32Array,
  targets: Int32Array,
  batchSize: number,
  seqLen: number,
): TokenBatch {
  const shape = [batchSize, seqLen];
  const batch = {
    inputs: Tensor.fromArray(backend, inputs, shape, "i32"),
    targets: Tensor.fromArray(backend, targets, shape, "i32"),
    units: batchSize * seqLen,
    tensors: () => [batch.inputs, batch.targets],
  };
  return batch;
}

/** A `DecoderLM` whose loss reads a `TokenBatch`. */
export class LmModel extends Module implements TaskModel<TokenBatch> {
  constructor(readonly decoder: DecoderLM) {
    super();
  }

  /** Builds a decoder from the config's model section for a vocabulary and maximum length. */
  static create(
    backend: Backend,
    rng: Rng,
    model: ModelSection,
    vocabSize: number,
    maxSeqLen: number,
  ): LmModel {
    return new LmModel(new DecoderLM(backend, rng, { ...model, vocabSize, maxSeqLen }));
  }

  override parameters(prefix = ""): Map<string, Tensor> {
    return this.decoder.parameters(prefix);
  }

  override buffers(prefix = ""): Map<string, Tensor> {
    return this.decoder.buffers(prefix);
  }

  /** Logits [batch, seqLen, vocab]. */
  logits(inputs: Tensor): Tensor {
    return this.decoder.forward(inputs);
  }

  /** Mean cross-entropy in nats over the positions whose target is not −100. */
  loss(batch: TokenBatch): Tensor {
    return this.decoder.loss(batch.inputs, batch.targets);
  }

  afterStep(): void {
    this.decoder.afterStep();
  }

  setStep(step: number, totalSteps: number): void {
    this.decoder.setStep(step, totalSteps);
  }

  override dispose(): void {
    this.decoder.dispose();
  }
}

/** Returns `model` as an `LmModel`; throws when a task receives a model it did not build. */
export function asLmModel(model: TaskModel<TokenBatch>, task: string): LmModel {
  if (!(model instanceof LmModel)) {
    throw new Error(
      `the ${task} task evaluates an LmModel from its createModel, got another model`,
    );
  }
  return model;
}
