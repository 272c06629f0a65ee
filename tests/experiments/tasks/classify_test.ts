import assert from "node:assert/strict";
import { loadMnist, PIXELS } from "../../../experiments/data/mnist.ts";
import { UserError } from "../../../experiments/errors.ts";
import {
  ClassifyData,
  createClassifyTask,
  NOISE_STDS,
  noiseMetricName,
} from "../../../experiments/tasks/classify.ts";
import { createCpuBackend } from "../../../kernels/cpu/backend.ts";
import { Rng } from "../../../tensor/mod.ts";
import { TINY_MODEL, trainTask } from "./_train.ts";

Deno.test("loadMnist counts and first image", async () => {
  const mnist = await loadMnist();

  assert.equal(mnist.count, 10_000);
  assert.equal(mnist.images.length, 10_000 * PIXELS);
  // mnist 1.1.0: 1001 zeros, then 1127 ones.
  assert.equal(mnist.labels[1000], 0);
  assert.equal(mnist.labels[1001], 1);
  assert.equal(mnist.labels[9999], 9);
  // The first image of 0.json starts with 127 zero pixels, then 0.2, 0.624, 0.992.
  assert.equal(mnist.images[126], 0);
  assert.ok(Math.abs(mnist.images[127] - 0.2) < 1e-6);
  assert.ok(Math.abs(mnist.images[128] - 0.624) < 1e-6);
});

Deno.test("ClassifyData splits disjoint and stratified", async () => {
  const mnist = await loadMnist();
  const data = new ClassifyData(mnist, 0.1);
  const train = new Set(data.train);

  assert.equal(data.train.length + data.validation.length, 10_000);
  for (const index of data.validation) assert.equal(train.has(index), false);
  const perDigit = new Array(10).fill(0);
  for (const index of data.validation) perDigit[mnist.labels[index]]++;
  // floor(0.1 · count) of each digit: 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978.
  assert.deepEqual(perDigit, [100, 112, 99, 103, 98, 86, 101, 107, 94, 97]);
});

Deno.test("ClassifyTask first batch shape", async () => {
  const backend = createCpuBackend();
  const task = await createClassifyTask(backend, {}, TINY_MODEL);
  const batch = task.trainBatch(new Rng(0), 5);

  assert.deepEqual(batch.images.shape, [5, 28, 28, 1]);
  assert.deepEqual(batch.labels.shape, [5]);
  assert.equal(batch.units, 5);
  for (const label of await batch.labels.data()) assert.ok(label >= 0 && label < 10);
});

Deno.test("ClassifyTask rejects patch size not dividing 28", async () => {
  await assert.rejects(
    () => createClassifyTask(createCpuBackend(), { patchSize: 5 }),
    (error: Error) => error instanceof UserError && /patchSize is 5/.test(error.message),
  );
});

Deno.test("ClassifyTask training beats majority class", async () => {
  const backend = createCpuBackend();
  const task = await createClassifyTask(backend, { patchSize: 7, pooling: "mean" }, TINY_MODEL);
  const batchSize = 32;
  const batches = 8;
  const counts = new Array(10).fill(0);
  for (let i = 0; i < batchSize * batches; i++) {
    counts[task.data.images.labels[task.data.validation[i]]]++;
  }
  const majority = Math.max(...counts) / (batchSize * batches);

  const started = performance.now();
  const { model } = await trainTask(task, backend, { steps: 150, batchSize, lr: 1e-2 });
  const metrics = await task.evaluate(model, batchSize, batches);
  model.dispose();
  console.log(
    `classify: ${JSON.stringify(metrics)}, majority ${majority.toFixed(3)}, ` +
      `${Math.round(performance.now() - started)} ms`,
  );

  assert.ok(metrics.accuracy > 2 * majority, `accuracy ${metrics.accuracy} vs ${majority}`);
  for (const std of NOISE_STDS) {
    const noisy = metrics[noiseMetricName(std)];
    assert.ok(noisy >= 0, `${noiseMetricName(std)} is ${noisy}`);
    assert.ok(noisy <= 1, `${noiseMetricName(std)} is ${noisy}`);
  }
});

Deno.test("ClassifyTask class token pooling trains", async () => {
  const backend = createCpuBackend();
  const task = await createClassifyTask(backend, { patchSize: 14, pooling: "cls" }, TINY_MODEL);
  const { model, lastLoss } = await trainTask(task, backend, {
    steps: 20,
    batchSize: 16,
    lr: 3e-3,
  });
  model.dispose();

  assert.ok(Number.isFinite(lastLoss));
  assert.ok(lastLoss < Math.log(10) + 0.5, `loss ${lastLoss}`);
});
