/**
 * Multi-query associative recall (MQAR), after Arora et al., "Zoology: Measuring and Improving
 * Recall in Efficient Language Models" (2023). A sequence lists key-value pairs and then repeats
 * each key as a query, and the model must predict the key's value from context.
 *
 * Token ids: 0 is the filler, keys are 1..numKeys and values are numKeys+1..vocabSize−1, with
 * numKeys = floor((vocabSize − 1) / 2). A sequence of `seqLen` tokens reads
 * `k1 v1 k2 v2 … kP vP` (P = numPairs distinct keys, values drawn with replacement), then filler
 * with the P keys placed once each, in random order, at random positions. The target at a query
 * position is the key's value; every other target is −100, which the loss and accuracy skip.
 *
 * Validation sequences are drawn from a fixed seed and belong to a hash class that training
 * sequences are never drawn from (training redraws a sequence whose hash falls in it), so no
 * validation sequence can appear in training.
 */

import { z } from "zod";
import type { Backend } from "../../kernels/backend.ts";
import { crossEntropy, noGrad, Rng, withScope } from "../../tensor/mod.ts";
import { UserError } from "../errors.ts";
import {
  asLmModel,
  LmModel,
  type ModelSection,
  type TokenBatch,
  uploadTokenBatch,
} from "./lm_model.ts";
import type { Task, TaskModel } from "./task.ts";

/** Options of the `recall` task. */
export const RecallTaskOptions = z.strictObject({
  // Tokens per sequence; needs seqLen >= 3 * numPairs (the pairs, then one query per key).
  seqLen: z.int().min(3).default(64),
  // Key-value pairs per sequence, each queried once.
  numPairs: z.int().min(1).default(8),
  // Token ids, including the filler 0; about half are keys and half values.
  vocabSize: z.int().min(5).default(64)
    .describe("token ids of the sequences, filler 0 included; about half keys, half values"),
});

export type RecallTaskConfig = z.output<typeof RecallTaskOptions>;

/** Targets equal to this are not scored (the default `ignoreIndex` of `crossEntropy`). */
export const IGNORE_INDEX = -100;

/** One in VALIDATION_CLASS sequences (by hash) is reserved for validation. */
const VALIDATION_CLASS = 16;

/** Host-side MQAR sequences in row-major [batchSize, seqLen] order. */
export interface RecallSamples {
  inputs: Int32Array;
  targets: Int32Array;
  batchSize: number;
  seqLen: number;
}

/** Generates MQAR sequences; see the module comment for the layout. */
export class RecallData {
  readonly numKeys: number;
  readonly numValues: number;

  constructor(readonly options: RecallTaskConfig) {
    const { seqLen, numPairs, vocabSize } = options;
    this.numKeys = Math.floor((vocabSize - 1) / 2);
    this.numValues = vocabSize - 1 - this.numKeys;

    if (seqLen < 3 * numPairs) {
      throw new UserError(
        `task.seqLen is ${seqLen} but numPairs ${numPairs} needs ${3 * numPairs} positions ` +
          `(a pair and a query each); choose seqLen >= ${3 * numPairs} or fewer pairs`,
      );
    }
    if (numPairs > this.numKeys) {
      throw new UserError(
        `task.numPairs is ${numPairs} but vocabSize ${vocabSize} provides only ${this.numKeys} ` +
          `distinct keys; choose numPairs <= ${this.numKeys} or vocabSize >= ${2 * numPairs + 1}`,
      );
    }
  }

  /** Training sequences drawn with `rng`, never from the validation hash class. */
  trainSamples(rng: Rng, batchSize: number): RecallSamples {
    return this.#samples(rng, batchSize, false);
  }

  /** Generates the first `count` validation sequences, the same for a given `seed` on every call. */
  validationSamples(seed: number, count: number): RecallSamples {
    return this.#samples(new Rng(seed).fork("recall-validation"), count, true);
  }

  /** Whether a sequence belongs to the hash class reserved for validation. */
  static isValidationSequence(tokens: ArrayLike<number>): boolean {
    // FNV-1a over the token ids.
    let hash = 0x811c9dc5;
    for (let i = 0; i < tokens.length; i++) {
      hash = Math.imul(hash ^ tokens[i], 0x01000193);
    }
    return (hash >>> 0) % VALIDATION_CLASS === 0;
  }

  #samples(rng: Rng, batchSize: number, validation: boolean): RecallSamples {
    const { seqLen } = this.options;
    const inputs = new Int32Array(batchSize * seqLen);
    const targets = new Int32Array(batchSize * seqLen);

    for (let row = 0; row < batchSize; row++) {
      const rowInputs = inputs.subarray(row * seqLen, (row + 1) * seqLen);
      const rowTargets = targets.subarray(row * seqLen, (row + 1) * seqLen);
      do {
        this.#fillSequence(rng, rowInputs, rowTargets);
      } while (RecallData.isValidationSequence(rowInputs) !== validation);
    }
    return { inputs, targets, batchSize, seqLen };
  }

  #fillSequence(rng: Rng, inputs: Int32Array, targets: Int32Array): void {
    const { seqLen, numPairs } = this.options;
    inputs.fill(0);
    targets.fill(IGNORE_INDEX);

    const keys = sampleDistinct(rng, this.numKeys, numPairs).map((k) => k + 1);
    const values = keys.map(() => this.numKeys + 1 + rng.int(this.numValues));
    for (let i = 0; i < numPairs; i++) {
      inputs[2 * i] = keys[i];
      inputs[2 * i + 1] = values[i];
    }

    // Each key is queried once, at a distinct position after the pairs, in random order.
    const queryStart = 2 * numPairs;
    const positions = sampleDistinct(rng, seqLen - queryStart, numPairs);
    const order = sampleDistinct(rng, numPairs, numPairs);
    for (let i = 0; i < numPairs; i++) {
      const position = queryStart + positions[i];
      inputs[position] = keys[order[i]];
      targets[position] = values[order[i]];
    }
  }
}

/** `count` distinct integers from [0, n) in random order (a partial Fisher–Yates shuffle). */
function sampleDistinct(rng: Rng, n: number, count: number): number[] {
  const pool = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(n - i);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, count);
}

/**
 * The `recall` task: a decoder LM (the config's model section) trained on MQAR sequences and
 * scored by loss and accuracy on the queried positions.
 */
export class RecallTask implements Task<TokenBatch> {
  readonly name = "recall";
  readonly unitName = "tokens";
  readonly data: RecallData;

  /**
   * @param seed draws the validation sequences (training sequences come from `trainBatch`'s rng).
   */
  constructor(
    readonly backend: Backend,
    readonly options: RecallTaskConfig,
    readonly model: ModelSection,
    readonly seed: number,
  ) {
    this.data = new RecallData(options);
  }

  describe(): string {
    const { seqLen, numPairs, vocabSize } = this.options;
    return `MQAR, ${numPairs} pairs in ${seqLen} tokens, vocabulary ${vocabSize} ` +
      `(${this.data.numKeys} keys, ${this.data.numValues} values), validation seed ${this.seed}`;
  }

  createModel(backend: Backend, rng: Rng): LmModel {
    return LmModel.create(backend, rng, this.model, this.options.vocabSize, this.options.seqLen);
  }

  trainBatch(rng: Rng, batchSize: number): TokenBatch {
    const samples = this.data.trainSamples(rng, batchSize);
    return uploadTokenBatch(
      this.backend,
      samples.inputs,
      samples.targets,
      batchSize,
      samples.seqLen,
    );
  }

  /**
   * Returns `loss` (mean nats per queried position) and `accuracy` (the fraction of queried
   * positions whose arg-max logit is the value), over `batches` fixed validation batches.
   */
  async evaluate(
    model: TaskModel<TokenBatch>,
    batchSize: number,
    batches: number,
  ): Promise<Record<string, number>> {
    const lm = asLmModel(model, this.name);
    const samples = this.data.validationSamples(this.seed, batchSize * batches);
    const { seqLen } = this.options;
    const vocabSize = this.options.vocabSize;
    let lossSum = 0;
    let correct = 0;
    let queried = 0;

    for (let b = 0; b < batches; b++) {
      const rows = samples.inputs.subarray(b * batchSize * seqLen, (b + 1) * batchSize * seqLen);
      const targets = samples.targets.subarray(
        b * batchSize * seqLen,
        (b + 1) * batchSize * seqLen,
      );
      const batch = uploadTokenBatch(this.backend, rows, targets, batchSize, seqLen);
      const { logits, loss } = withScope(() =>
        noGrad(() => {
          const logits = lm.logits(batch.inputs);
          return { logits, loss: crossEntropy(logits, batch.targets, IGNORE_INDEX) };
        })
      );
      const values = await logits.data();
      lossSum += await loss.item();
      logits.dispose();
      loss.dispose();
      for (const t of batch.tensors()) t.dispose();

      for (let i = 0; i < targets.length; i++) {
        if (targets[i] === IGNORE_INDEX) continue;
        queried++;
        if (argmax(values, i * vocabSize, vocabSize) === targets[i]) correct++;
      }
    }
    return { loss: lossSum / batches, accuracy: correct / queried };
  }
}

/** Returns the index of the largest of `values[offset, offset + length)`, relative to `offset`. */
export function argmax(values: ArrayLike<number>, offset: number, length: number): number {
  let best = 0;
  for (let i = 1; i < length; i++) {
    if (values[offset + i] > values[offset + best]) best = i;
  }
  return best;
}

/** Builds the recall task; `seed` is the run's seed, which fixes the validation sequences. */
export function createRecallTask(
  backend: Backend,
  options: RecallTaskConfig,
  model: ModelSection,
  seed: number,
): RecallTask {
  return new RecallTask(backend, RecallTaskOptions.parse(options), model, seed);
}
