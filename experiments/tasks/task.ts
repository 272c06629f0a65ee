/**
 * The contract between the trainer and a task (language modelling, forecasting, classification,
 * recall). A task owns its data, builds its model and scores it; the trainer only runs steps.
 */

import type { Backend } from "../../kernels/backend.ts";
import type { Module } from "../../layers/module.ts";
import type { Rng, Tensor } from "../../tensor/mod.ts";

/** One batch on the device; its fields depend on the task (e.g. inputs and targets). */
export interface Batch {
  /** Tensors to dispose once the step is done. */
  tensors(): Tensor[];
  /** Elements processed, for throughput (tokens for text, samples for images). */
  readonly units: number;
}

/** A model trained by a task: a module with a scalar training loss. */
export interface TaskModel<B extends Batch = Batch> extends Module {
  /** The mean training loss of a batch, a one-element tensor. */
  loss(batch: B): Tensor;
  /** Runs after each optimizer update, for state that is not trained by gradients. */
  afterStep?(): void;
  /** Runs before each training step (from 0) of `totalSteps`, for step schedules inside the model. */
  setStep?(step: number, totalSteps: number): void;
}

export interface Task<B extends Batch = Batch> {
  readonly name: string;
  /** What `units` counts, for the log ("tokens", "samples"). */
  readonly unitName: string;
  /** One line for the run log: data source and split sizes. */
  describe(): string;
  /** Builds the task's model from the model section of the config. */
  createModel(backend: Backend, rng: Rng): TaskModel<B>;
  /** A random training batch drawn with `rng` (the only source of randomness). */
  trainBatch(rng: Rng, batchSize: number): B;
  /**
   * Scores the model on the fixed validation batches; returns named metrics, the first of which
   * is the one reports rank by (e.g. `{ loss, bitsPerByte }` or `{ mse, mae }`).
   */
  evaluate(
    model: TaskModel<B>,
    batchSize: number,
    batches: number,
  ): Promise<Record<string, number>>;
}
