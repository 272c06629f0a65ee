/** The byte-level language-modelling task: batches of byte windows as device tensors. */

import type { Backend } from "../../kernels/backend.ts";
import { Rng, Tensor } from "../../tensor/mod.ts";
import type { ExperimentConfig } from "../config.ts";
import { loadMobyDick } from "../data/moby_dick.ts";
import { ByteLmData } from "./lm_data.ts";

export interface LmBatch {
  /** i32 byte ids [batch, seqLen]. */
  inputs: Tensor;
  /** i32 next-byte ids [batch, seqLen]. */
  targets: Tensor;
}

export class LmTask {
  /** Bytes: 256 ids. */
  readonly vocabSize = 256;

  constructor(readonly backend: Backend, readonly data: ByteLmData, readonly corpus: string) {}

  trainBatch(rng: Rng, batchSize: number): LmBatch {
    return this.#upload(this.data.trainBatch(rng, batchSize), batchSize);
  }

  valBatches(batchSize: number, count: number): LmBatch[] {
    return this.data.valBatches(batchSize, count).map((b) => this.#upload(b, batchSize));
  }

  describe(): string {
    return `${this.corpus}, ${this.data.train.length} train and ${this.data.validation.length} validation bytes`;
  }

  #upload(batch: { inputs: Int32Array; targets: Int32Array }, batchSize: number): LmBatch {
    const shape = [batchSize, this.data.seqLen];
    return {
      inputs: Tensor.fromArray(this.backend, batch.inputs, shape, "i32"),
      targets: Tensor.fromArray(this.backend, batch.targets, shape, "i32"),
    };
  }
}

/** Reads the configured corpus and builds the task. */
export async function loadTask(config: ExperimentConfig, backend: Backend): Promise<LmTask> {
  const bytes = await loadMobyDick();
  const data = new ByteLmData(bytes, {
    seqLen: config.task.seqLen,
    valFraction: config.task.valFraction,
  });
  return new LmTask(backend, data, config.task.corpus);
}
