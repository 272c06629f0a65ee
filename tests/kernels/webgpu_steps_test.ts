/**
 * The steady-state invariant of training on WebGPU: after the first step a training step creates
 * no GPU buffers, submits once, leaves the live-storage count unchanged and adds no cached bind
 * groups. Checked over 100 steps of a small GPT. Skipped, with the reason, where WebGPU has no
 * adapter.
 *
 * Run: npx deno test -A tests/kernels/webgpu_steps_test.ts
 */

import assert from "node:assert/strict";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../../kernels/webgpu/backend.ts";
import { Rng } from "../../tensor/mod.ts";
import { type GptSizes, runTinyStep, tinyGpt } from "../../bench/moelab.ts";

const SIZES: GptSizes = {
  numLayers: 1,
  dModel: 32,
  numHeads: 2,
  seqLen: 16,
  batchSize: 2,
  vocabSize: 64,
  lr: 1e-3,
};
const STEPS = 100;
/**
 * Steps at the end over which the bind-group cache must not grow: every step after the first,
 * because the pool gives each step the same buffers.
 */
const FLAT_BIND_GROUP_STEPS = STEPS - 1;

async function webgpuOrSkipReason(): Promise<WebGpuBackend | string> {
  try {
    return await createWebGpuBackend();
  } catch (error) {
    if (error instanceof BackendUnavailableError) return error.message;
    throw error;
  }
}

const backendOrReason = await webgpuOrSkipReason();
const skipReason = typeof backendOrReason === "string" ? backendOrReason : null;
if (skipReason !== null) console.log(`webgpu steps tests skipped: ${skipReason}`);

Deno.test({
  name: "webgpu training steps steady state",
  ignore: skipReason !== null,
  fn: async () => {
    const backend = backendOrReason as WebGpuBackend;
    const gpt = tinyGpt(backend, SIZES);
    const rng = new Rng(11);

    const first = runTinyStep(backend, gpt, rng, SIZES);
    await first.loss.item();
    first.loss.dispose();
    first.normSq.dispose();
    const afterFirst = backend.stats();
    const liveAfterFirst = backend.liveStorages();

    let bindGroupsBeforeFlat = 0;
    for (let step = 2; step <= STEPS; step++) {
      if (step === STEPS - FLAT_BIND_GROUP_STEPS + 1) {
        bindGroupsBeforeFlat = backend.stats().bindGroupsCached;
      }
      const before = backend.stats();
      const { loss, normSq } = runTinyStep(backend, gpt, rng, SIZES);
      backend.flush();
      const submits = backend.stats().submits - before.submits;
      assert.equal(submits, 1, `step ${step} submitted ${submits} times`);
      if (step === STEPS) assert.ok(Number.isFinite(await loss.item()), "final loss is finite");
      loss.dispose();
      normSq.dispose();
      assert.equal(backend.liveStorages(), liveAfterFirst, `live storages after step ${step}`);
    }
    assert.equal(
      backend.stats().buffersCreated,
      afterFirst.buffersCreated,
      `buffers created after step 1`,
    );
    assert.equal(
      backend.stats().bindGroupsCached,
      bindGroupsBeforeFlat,
      `bind groups cached over the last ${FLAT_BIND_GROUP_STEPS} steps`,
    );

    gpt.optimizer.dispose();
    gpt.model.dispose();
    await backend.dispose();
  },
});
