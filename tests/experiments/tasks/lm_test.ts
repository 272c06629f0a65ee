import assert from "node:assert/strict";
import { join } from "node:path";
import type { TextDocument } from "../../../experiments/data/text_files.ts";
import { UserError } from "../../../experiments/errors.ts";
import { createLmTask, splitCorpus } from "../../../experiments/tasks/lm.ts";
import type { TokenArray } from "../../../experiments/tasks/lm_data.ts";
import { createCpuBackend } from "../../../kernels/cpu/backend.ts";
import { Rng } from "../../../tensor/mod.ts";
import { TINY_MODEL, trainTask } from "./_train.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Cross-entropy in nats of `validation` under add-one smoothed token frequencies of `train`. */
function unigramLoss(train: TokenArray, validation: TokenArray, vocabSize: number): number {
  const counts = new Float64Array(vocabSize).fill(1);
  for (const id of train) counts[id]++;
  const total = train.length + vocabSize;
  let loss = 0;
  for (const id of validation) loss -= Math.log(counts[id] / total);
  return loss / validation.length;
}

Deno.test("LmTask moby-dick bytes first batch", async () => {
  const backend = createCpuBackend();
  const task = await createLmTask(backend, { corpus: "moby-dick", seqLen: 16 }, TINY_MODEL);
  const batch = task.trainBatch(new Rng(0), 4);

  assert.equal(task.vocabSize, 256);
  assert.deepEqual(batch.inputs.shape, [4, 16]);
  assert.deepEqual(batch.targets.shape, [4, 16]);
  assert.equal(batch.units, 64);
  assert.equal(decoder.decode(task.data.train.subarray(0, 20)), "CHAPTER 1. Loomings.");
  const inputs = await batch.inputs.data();
  const targets = await batch.targets.data();
  assert.deepEqual([...targets.subarray(0, 15)], [...inputs.subarray(1, 16)]);
});

Deno.test("LmTask moby-dick splits disjoint and complete", async () => {
  const backend = createCpuBackend();
  const task = await createLmTask(backend, { corpus: "moby-dick", seqLen: 16 });

  assert.equal(task.bytes.train + task.bytes.validation, 1_204_997);
  assert.equal(task.data.train.buffer, task.data.validation.buffer);
  // Both splits are views of one buffer; disjoint when validation starts where training ends.
  assert.equal(
    task.data.validation.byteOffset,
    task.data.train.byteOffset + task.data.train.length,
  );
});

Deno.test("splitCorpus holds out whole documents", () => {
  const documents: TextDocument[] = Array.from({ length: 20 }, (_, i) => ({
    name: `doc${i}`,
    bytes: encoder.encode(`document ${i}\n`),
  }));
  const { train, validation } = splitCorpus(documents, 0.1);
  const trainNames = new Set(train.map((document) => document.name));

  assert.deepEqual(validation.map((document) => document.name), ["doc9", "doc19"]);
  assert.equal(train.length, 18);
  for (const document of validation) assert.equal(trainNames.has(document.name), false);
});

Deno.test("splitCorpus one document at character boundary", () => {
  // 17 × "a", then é (bytes 17 and 18), then "a": the nominal split at byte 18 falls inside é.
  const bytes = encoder.encode("a".repeat(17) + "éa");
  const { train, validation } = splitCorpus([{ name: "x", bytes }], 0.1);

  assert.equal(train[0].bytes.length, 19);
  assert.equal(decoder.decode(validation[0].bytes), "a");
});

Deno.test("splitCorpus rejects fraction that holds out nothing", () => {
  const documents = [0, 1, 2].map((i) => ({ name: `${i}`, bytes: encoder.encode("x") }));

  assert.throws(() => splitCorpus(documents, 0.1), UserError);
});

Deno.test("LmTask brown validation documents not in training", async () => {
  const backend = createCpuBackend();
  const task = await createLmTask(backend, { corpus: "brown", seqLen: 16, valFraction: 0.1 });

  assert.ok(task.describe().startsWith("brown (500 documents)"));
  assert.equal(task.data.validation.length, task.bytes.validation);
  assert.ok(task.bytes.validation > 0.08 * (task.bytes.train + task.bytes.validation));
});

Deno.test("LmTask path corpus empty path", async () => {
  await assert.rejects(
    () => createLmTask(createCpuBackend(), { corpus: "path" }),
    (error: Error) => error instanceof UserError && /task\.path is empty/.test(error.message),
  );
});

Deno.test("LmTask path corpus folder", async () => {
  const dir = await Deno.makeTempDir();
  for (let i = 0; i < 10; i++) {
    await Deno.writeTextFile(join(dir, `${i}.txt`), `file ${i} says hello world.\n`.repeat(10));
  }
  const task = await createLmTask(createCpuBackend(), { corpus: "path", path: dir, seqLen: 8 });

  assert.equal(task.bytes.validation, "file 9 says hello world.\n".length * 10);
  assert.ok(task.describe().includes("(10 files)"));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("LmTask bpe tokenizer saved and restored", async () => {
  const backend = createCpuBackend();
  const options = {
    corpus: "moby-dick" as const,
    seqLen: 16,
    tokenizer: "bpe" as const,
    vocabSize: 300,
  };
  const task = await createLmTask(backend, options);
  const saved = JSON.parse(JSON.stringify(task.tokenizerJson()));
  const restored = await createLmTask(backend, options, undefined, { tokenizer: saved });

  assert.equal(task.vocabSize, 300);
  assert.equal(restored.vocabSize, 300);
  assert.deepEqual(restored.data.validation, task.data.validation);
  assert.ok(task.data.train.length < task.bytes.train);
});

Deno.test("LmTask bpe rejects vocabulary below 256", async () => {
  await assert.rejects(
    () => createLmTask(createCpuBackend(), { tokenizer: "bpe", vocabSize: 100 }),
    /vocabSize/,
  );
});

Deno.test("LmTask byte training beats unigram", async () => {
  const backend = createCpuBackend();
  const task = await createLmTask(backend, { corpus: "moby-dick", seqLen: 32 }, TINY_MODEL);
  const baseline = unigramLoss(task.data.train, task.data.validation, task.vocabSize);
  const started = performance.now();
  const { model } = await trainTask(task, backend, { steps: 150, batchSize: 8, lr: 1e-2 });
  const metrics = await task.evaluate(model, 8, 4);
  model.dispose();
  console.log(
    `lm bytes: ${JSON.stringify(metrics)}, unigram ${baseline.toFixed(3)} nats, ` +
      `${Math.round(performance.now() - started)} ms`,
  );

  assert.ok(metrics.loss < baseline, `loss ${metrics.loss} is not below unigram ${baseline}`);
  assert.ok(Math.abs(metrics.bitsPerByte - metrics.loss / Math.LN2) < 1e-9);
  assert.ok(Math.abs(metrics.perplexity - Math.exp(metrics.loss)) < 1e-9);
});

Deno.test("LmTask bpe training beats unigram", async () => {
  const backend = createCpuBackend();
  const task = await createLmTask(
    backend,
    { corpus: "brown", seqLen: 32, tokenizer: "bpe", vocabSize: 384 },
    TINY_MODEL,
  );
  const baseline = unigramLoss(task.data.train, task.data.validation, task.vocabSize);
  const started = performance.now();
  const { model } = await trainTask(task, backend, { steps: 150, batchSize: 8, lr: 1e-2 });
  const metrics = await task.evaluate(model, 8, 4);
  model.dispose();
  console.log(
    `lm bpe: ${JSON.stringify(metrics)}, unigram ${baseline.toFixed(3)} nats, ` +
      `${Math.round(performance.now() - started)} ms`,
  );

  assert.ok(metrics.loss < baseline, `loss ${metrics.loss} is not below unigram ${baseline}`);
});
