import assert from "node:assert/strict";
import { UserError } from "../../../experiments/errors.ts";
import {
  createRecallTask,
  IGNORE_INDEX,
  RecallData,
  RecallTaskOptions,
} from "../../../experiments/tasks/recall.ts";
import { createCpuBackend } from "../../../kernels/cpu/backend.ts";
import { Rng } from "../../../tensor/mod.ts";
import { TINY_MODEL, trainTask } from "./_train.ts";

const OPTIONS = RecallTaskOptions.parse({ seqLen: 24, numPairs: 4, vocabSize: 33 });

Deno.test("RecallData batch shape and token ranges", () => {
  const data = new RecallData(OPTIONS);
  const samples = data.trainSamples(new Rng(0), 5);

  assert.equal(samples.inputs.length, 5 * 24);
  assert.equal(samples.targets.length, 5 * 24);
  assert.equal(data.numKeys, 16);
  assert.equal(data.numValues, 16);
  for (const token of samples.inputs) {
    assert.ok(token >= 0, `token ${token} is negative`);
    assert.ok(token < 33, `token ${token} is not below 33`);
  }
});

Deno.test("RecallData answers checkable from inputs", () => {
  const data = new RecallData(OPTIONS);
  const samples = data.trainSamples(new Rng(1), 64);
  const { seqLen } = samples;
  const numPairs = OPTIONS.numPairs;

  for (let row = 0; row < 64; row++) {
    const inputs = samples.inputs.subarray(row * seqLen, (row + 1) * seqLen);
    const targets = samples.targets.subarray(row * seqLen, (row + 1) * seqLen);
    const valueOf = new Map<number, number>();
    for (let i = 0; i < numPairs; i++) valueOf.set(inputs[2 * i], inputs[2 * i + 1]);

    assert.equal(valueOf.size, numPairs, "keys in a sequence are distinct");
    let queries = 0;
    for (let t = 0; t < seqLen; t++) {
      if (targets[t] === IGNORE_INDEX) continue;
      queries++;
      assert.ok(t >= 2 * numPairs, `query at ${t} lies inside the pairs`);
      assert.equal(targets[t], valueOf.get(inputs[t]));
    }
    assert.equal(queries, numPairs);
  }
});

Deno.test("RecallData unqueried positions ignored", () => {
  const samples = new RecallData(OPTIONS).trainSamples(new Rng(2), 8);

  for (let i = 0; i < samples.inputs.length; i++) {
    const t = i % samples.seqLen;
    if (t < 2 * OPTIONS.numPairs || samples.inputs[i] === 0) {
      assert.equal(samples.targets[i], IGNORE_INDEX);
    }
  }
});

Deno.test("RecallData validation fixed per seed", () => {
  const data = new RecallData(OPTIONS);

  assert.deepEqual(data.validationSamples(7, 16).inputs, data.validationSamples(7, 16).inputs);
  assert.notDeepEqual(data.validationSamples(7, 16).inputs, data.validationSamples(8, 16).inputs);
});

Deno.test("RecallData validation disjoint from training", () => {
  const data = new RecallData(OPTIONS);
  const { seqLen } = OPTIONS;
  const validation = data.validationSamples(0, 256);
  const validationRows = new Set<string>();
  for (let row = 0; row < 256; row++) {
    const tokens = validation.inputs.subarray(row * seqLen, (row + 1) * seqLen);
    assert.ok(RecallData.isValidationSequence(tokens));
    validationRows.add(tokens.join(","));
  }

  const rng = new Rng(0);
  for (let b = 0; b < 100; b++) {
    const train = data.trainSamples(rng, 64);
    for (let row = 0; row < 64; row++) {
      const tokens = train.inputs.subarray(row * seqLen, (row + 1) * seqLen);
      assert.equal(RecallData.isValidationSequence(tokens), false);
      assert.equal(validationRows.has(tokens.join(",")), false);
    }
  }
});

Deno.test("RecallData rejects too short sequences", () => {
  assert.throws(
    () => new RecallData(RecallTaskOptions.parse({ seqLen: 11, numPairs: 4 })),
    (error: Error) => error instanceof UserError && /seqLen is 11.*>= 12/.test(error.message),
  );
});

Deno.test("RecallData rejects more pairs than keys", () => {
  assert.throws(
    () => new RecallData(RecallTaskOptions.parse({ seqLen: 64, numPairs: 10, vocabSize: 17 })),
    (error: Error) =>
      error instanceof UserError && /numPairs is 10.*8 distinct keys/.test(error.message),
  );
});

Deno.test("RecallTask training beats chance", async () => {
  const backend = createCpuBackend();
  const task = createRecallTask(backend, OPTIONS, TINY_MODEL, 0);
  const started = performance.now();
  const trained = await trainTask(task, backend, { steps: 300, batchSize: 16, lr: 3e-3 });
  const metrics = await task.evaluate(trained.model, 32, 4);
  trained.model.dispose();
  console.log(
    `recall: ${JSON.stringify(metrics)} in ${Math.round(performance.now() - started)} ms`,
  );

  // Guessing a value uniformly scores 1 / numValues = 1/16; picking a value seen in context
  // scores 1 / numPairs = 1/4.
  assert.ok(metrics.accuracy > 2 / 16, `accuracy ${metrics.accuracy} is not above 2/16`);
  assert.ok(metrics.loss < Math.log(16), `loss ${metrics.loss} is not below ln 16`);
});
