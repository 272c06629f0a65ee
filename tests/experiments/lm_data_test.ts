import assert from "node:assert/strict";
import { loadMobyDick } from "../../experiments/data/moby_dick.ts";
import { UserError } from "../../experiments/errors.ts";
import { ByteLmData, type LmBatch } from "../../experiments/tasks/lm_data.ts";
import { Rng } from "../../tensor/rng.ts";

/** Bytes 0, 1, 2, ... (mod 256), so each value shows its position. */
function countingBytes(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => i % 256);
}

/** Returns the start offset of each row, recovered from counting bytes below 256. */
function rowStarts(batch: LmBatch): number[] {
  return Array.from({ length: batch.batchSize }, (_, row) => batch.inputs[row * batch.seqLen]);
}

Deno.test("ByteLmData split sizes", () => {
  const data = new ByteLmData(countingBytes(200), { seqLen: 8, valFraction: 0.1 });

  assert.equal(data.train.length, 180);
  assert.equal(data.validation.length, 20);
  assert.equal(data.validation[0], 180);
});

Deno.test("ByteLmData trainBatch shapes", () => {
  const data = new ByteLmData(countingBytes(200), { seqLen: 8, valFraction: 0.1 });
  const batch = data.trainBatch(new Rng(0), 4);

  assert.equal(batch.inputs.length, 32);
  assert.equal(batch.targets.length, 32);
  assert.equal(batch.batchSize, 4);
  assert.equal(batch.seqLen, 8);
});

Deno.test("ByteLmData targets are inputs shifted by one", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.1 });
  const batches = [data.trainBatch(new Rng(1), 16), ...data.valBatches(4, 2)];

  for (const batch of batches) {
    for (let row = 0; row < batch.batchSize; row++) {
      for (let t = 0; t < batch.seqLen - 1; t++) {
        const i = row * batch.seqLen + t;
        assert.equal(batch.targets[i], batch.inputs[i + 1]);
      }
      const last = row * batch.seqLen + batch.seqLen - 1;
      assert.equal(batch.targets[last], batch.inputs[last] + 1);
    }
  }
});

Deno.test("ByteLmData train windows stay in train split", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.2 });
  const rng = new Rng(2);

  // Counting bytes below 250 equal their offsets; the training split is offsets 0..199.
  let maxTarget = 0;
  for (let i = 0; i < 200; i++) {
    maxTarget = Math.max(maxTarget, ...data.trainBatch(rng, 8).targets);
  }

  assert.equal(maxTarget, 199);
});

Deno.test("ByteLmData val windows stay in validation split", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.2 });
  const values = data.valBatches(4, 3).flatMap((batch) => [...batch.inputs, ...batch.targets]);

  assert.equal(Math.min(...values), 200);
  assert.equal(Math.max(...values), 249);
});

Deno.test("ByteLmData trainBatch deterministic for a seed", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.1 });

  const first = data.trainBatch(new Rng(7), 8);
  const second = data.trainBatch(new Rng(7), 8);
  const other = data.trainBatch(new Rng(8), 8);

  assert.deepEqual(second, first);
  assert.notDeepEqual(other, first);
});

Deno.test("ByteLmData trainBatch advances the rng", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.1 });
  const rng = new Rng(3);

  const first = data.trainBatch(rng, 8);
  const second = data.trainBatch(rng, 8);

  assert.notDeepEqual(second, first);
});

Deno.test("ByteLmData valBatches fixed and evenly spread", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.2 });
  const batches = data.valBatches(2, 2);

  // Validation contains offsets 200..249 and a window reads 9 bytes, so starts run from 200 to
  // 241 in steps of 41 / 3, rounded down.
  assert.deepEqual(batches.flatMap(rowStarts), [200, 213, 227, 241]);
  assert.deepEqual(data.valBatches(2, 2), batches);
});

Deno.test("ByteLmData single validation window", () => {
  const data = new ByteLmData(countingBytes(250), { seqLen: 8, valFraction: 0.2 });

  assert.deepEqual(data.valBatches(1, 1).flatMap(rowStarts), [200]);
});

Deno.test("ByteLmData seqLen too long for validation", () => {
  const error = captureError(() =>
    new ByteLmData(countingBytes(100), { seqLen: 20, valFraction: 0.1 })
  );

  assert.ok(error instanceof UserError);
  assert.match(error.message, /task\.seqLen is 20 but the validation split contains only 10 bytes/);
  assert.match(error.message, /choose seqLen <= 9, or change task\.valFraction/);
});

Deno.test("ByteLmData invalid valFraction", () => {
  const error = captureError(() =>
    new ByteLmData(countingBytes(100), { seqLen: 4, valFraction: 0 })
  );

  assert.match(error.message, /task\.valFraction is 0; choose a value in \(0, 0\.5\]/);
});

Deno.test("ByteLmData on moby dick first validation bytes", async () => {
  const bytes = await loadMobyDick();
  const data = new ByteLmData(bytes, { seqLen: 64, valFraction: 0.1 });

  assert.equal(data.train.length + data.validation.length, bytes.length);
  assert.equal(data.validation.length, Math.floor(bytes.length * 0.1));
  assert.equal(data.trainBatch(new Rng(0), 16).inputs.length, 16 * 64);
});

function captureError(action: () => unknown): Error {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  assert.fail("expected an error, but none was thrown");
}
