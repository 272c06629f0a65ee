/**
 * Byte-level language-modelling batches: each token is one byte (vocabulary size 256), and the
 * target at each position is the next byte.
 *
 * The corpus is split once: the first part is training data and the last `valFraction` is
 * validation data. Every window lies inside one split, so no training window reads a validation
 * byte.
 *
 * Example:
 * ```ts
 * const data = new ByteLmData(await loadMobyDick(), { seqLen: 64, valFraction: 0.1 });
 * const { inputs, targets } = data.trainBatch(new Rng(0).fork("data"), 16); // 16 * 64 tokens each
 * ```
 */

import type { Rng } from "../../tensor/rng.ts";
import { UserError } from "../errors.ts";

/** Token ids in row-major `[batchSize, seqLen]` order; `targets` is `inputs` shifted by one. */
export interface LmBatch {
  inputs: Int32Array;
  targets: Int32Array;
  batchSize: number;
  seqLen: number;
}

/** Options for `ByteLmData`. */
export interface ByteLmDataOptions {
  /** Tokens per sequence; each window reads seqLen + 1 bytes. */
  seqLen: number;
  /** Fraction of the corpus, taken from its end, used for validation; in (0, 0.5]. */
  valFraction: number;
}

/** Training and validation batches drawn from a byte corpus. */
export class ByteLmData {
  readonly vocabSize = 256;
  readonly seqLen: number;
  /** Training bytes: the corpus before the validation split. */
  readonly train: Uint8Array;
  /** Validation bytes: the last `valFraction` of the corpus. */
  readonly validation: Uint8Array;

  constructor(bytes: Uint8Array, options: ByteLmDataOptions) {
    const { seqLen, valFraction } = options;
    if (!Number.isInteger(seqLen) || seqLen < 2) {
      throw new UserError(`task.seqLen is ${seqLen}; choose an integer >= 2`);
    }
    if (!(valFraction > 0 && valFraction <= 0.5)) {
      throw new UserError(`task.valFraction is ${valFraction}; choose a value in (0, 0.5]`);
    }

    const validationLength = Math.floor(bytes.length * valFraction);
    const splitIndex = bytes.length - validationLength;
    this.seqLen = seqLen;
    this.train = bytes.subarray(0, splitIndex);
    this.validation = bytes.subarray(splitIndex);

    for (
      const [name, split] of [["training", this.train], ["validation", this.validation]] as const
    ) {
      if (split.length < seqLen + 1) {
        throw new UserError(
          `task.seqLen is ${seqLen} but the ${name} split holds only ${split.length} bytes; ` +
            `choose seqLen <= ${split.length - 1}, or change task.valFraction`,
        );
      }
    }
  }

  /** Samples `batchSize` windows uniformly at random from the training split. */
  trainBatch(rng: Rng, batchSize: number): LmBatch {
    const batch = emptyBatch(batchSize, this.seqLen);
    const windowCount = this.train.length - this.seqLen;

    for (let row = 0; row < batchSize; row++) {
      fillRow(batch, row, this.train, rng.int(windowCount));
    }
    return batch;
  }

  /**
   * Returns `count` fixed batches from the validation split, the same on every call.
   *
   * The `batchSize * count` windows start at evenly spaced offsets from the first to the last
   * possible start, so they cover the whole split (overlapping when the split is short).
   */
  valBatches(batchSize: number, count: number): LmBatch[] {
    const windowTotal = batchSize * count;
    const lastStart = this.validation.length - this.seqLen - 1;
    const batches: LmBatch[] = [];

    for (let b = 0; b < count; b++) {
      const batch = emptyBatch(batchSize, this.seqLen);
      for (let row = 0; row < batchSize; row++) {
        const window = b * batchSize + row;
        const start = windowTotal > 1 ? Math.floor((window * lastStart) / (windowTotal - 1)) : 0;
        fillRow(batch, row, this.validation, start);
      }
      batches.push(batch);
    }
    return batches;
  }
}

function emptyBatch(batchSize: number, seqLen: number): LmBatch {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`batchSize must be an integer >= 1, got ${batchSize}`);
  }
  return {
    inputs: new Int32Array(batchSize * seqLen),
    targets: new Int32Array(batchSize * seqLen),
    batchSize,
    seqLen,
  };
}

/** Copies the window `source[start, start + seqLen + 1)` into row `row` of the batch. */
function fillRow(batch: LmBatch, row: number, source: Uint8Array, start: number): void {
  const offset = row * batch.seqLen;
  batch.inputs.set(source.subarray(start, start + batch.seqLen), offset);
  batch.targets.set(source.subarray(start + 1, start + batch.seqLen + 1), offset);
}
