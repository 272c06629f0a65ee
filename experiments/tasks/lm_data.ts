/**
 * Language-modelling batches of token windows: the target at each position is the next token.
 *
 * `TokenLmData` draws windows from a training and a validation token array; `ByteLmData` splits a
 * byte corpus (vocabulary size 256) at one point, the first part for training and the last
 * `valFraction` for validation. Every window lies inside one split, so no training window reads a
 * validation token.
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

/** Token ids of one split: bytes, or BPE ids. */
export type TokenArray = Uint8Array | Uint16Array | Int32Array;

/**
 * Training and validation batches drawn from two token arrays. Windows never cross from one split
 * into the other, and a batch copies only its own windows, never the whole split.
 */
export class TokenLmData {
  readonly seqLen: number;

  /**
   * @param unit what one token is, for error messages ("bytes", "tokens").
   */
  constructor(
    readonly train: TokenArray,
    readonly validation: TokenArray,
    seqLen: number,
    readonly vocabSize: number,
    unit = "tokens",
  ) {
    if (!Number.isInteger(seqLen) || seqLen < 2) {
      throw new UserError(`task.seqLen is ${seqLen}; choose an integer >= 2`);
    }
    this.seqLen = seqLen;

    for (const [name, split] of [["training", train], ["validation", validation]] as const) {
      if (split.length < seqLen + 1) {
        throw new UserError(
          `task.seqLen is ${seqLen} but the ${name} split contains only ${split.length} ${unit}; ` +
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

/** Training and validation batches drawn from a byte corpus split at one point. */
export class ByteLmData extends TokenLmData {
  declare readonly train: Uint8Array;
  declare readonly validation: Uint8Array;

  constructor(bytes: Uint8Array, options: ByteLmDataOptions) {
    const { seqLen, valFraction } = options;
    if (!Number.isInteger(seqLen) || seqLen < 2) {
      throw new UserError(`task.seqLen is ${seqLen}; choose an integer >= 2`);
    }
    if (!(valFraction > 0 && valFraction <= 0.5)) {
      throw new UserError(`task.valFraction is ${valFraction}; choose a value in (0, 0.5]`);
    }

    // The training split is the corpus before the last `valFraction`, the validation split the
    // rest.
    const splitIndex = bytes.length - Math.floor(bytes.length * valFraction);
    super(bytes.subarray(0, splitIndex), bytes.subarray(splitIndex), seqLen, 256, "bytes");
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
function fillRow(batch: LmBatch, row: number, source: TokenArray, start: number): void {
  const offset = row * batch.seqLen;
  batch.inputs.set(source.subarray(start, start + batch.seqLen), offset);
  batch.targets.set(source.subarray(start + 1, start + batch.seqLen + 1), offset);
}
