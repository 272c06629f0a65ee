/**
 * ConceptMoE compression: boundary probabilities of hand-built states, the ratio loss, chunk
 * plans with padding and dropped boundaries, merge and dechunk values, a finite-difference
 * gradient check through the boundary scorer, causality of a decoder with concept blocks, and a
 * tiny model that trains to the same losses on the CPU and WebGPU backends.
 */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createWebGpuBackend } from "../../kernels/webgpu/backend.ts";
import { DecoderLM, type DecoderLmOptions } from "../../layers/models/decoder_lm.ts";
import {
  boundaryProbsOf,
  conceptSlots,
  type ConceptSpec,
  dechunk,
  mergeChunks,
  planChunks,
  ratioLoss,
  stepAtLeast,
} from "../../layers/moe/concept.ts";
import { AdamW } from "../../optim/adamw.ts";
import { zeroGrad } from "../../optim/clip.ts";
import {
  addScalar,
  backward,
  matmul,
  noGrad,
  Rng,
  sumAll,
  tanh,
  Tensor,
  withScope,
} from "../../tensor/mod.ts";
import { gradcheck } from "../helpers/gradcheck.ts";

const cpu = createCpuBackend({ precision: "f64" });

function close(actual: ArrayLike<number>, expected: number[], tolerance = 1e-9): void {
  assert.equal(actual.length, expected.length, `length ${actual.length} vs ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tolerance,
      `[${i}]: ${actual[i]} vs ${expected[i]} (all: ${Array.from(actual)})`,
    );
  }
}

function matrix(values: number[], shape: number[]): Tensor {
  return Tensor.fromArray(cpu, Float64Array.from(values), shape, "f32");
}

Deno.test("boundary probs of hand-built states", async () => {
  // Identity projections: same direction → p 0, opposite → 1, 135 degrees → (1 + √½)/2.
  const h = matrix([1, 0, 1, 0, -1, 0, 1, 1], [1, 4, 2]);
  const p = await boundaryProbsOf(h, h).data();
  close(p, [1, 0, 1, (1 + Math.SQRT1_2) / 2], 1e-9);

  const boundaries = await stepAtLeast(addScalar(boundaryProbsOf(h, h), -0.5)).data();
  close(boundaries, [1, 0, 1, 1]);
});

Deno.test("step at least zero", async () => {
  const x = matrix([-2, -1e-9, 0.25, 3], [4]);
  close(await stepAtLeast(x).data(), [0, 0, 1, 1]);
});

Deno.test("ratio loss values", async () => {
  const b = matrix([1, 0, 1, 0], [1, 4]);
  const p = matrix([1, 0.2, 0.6, 0.4], [1, 4]);
  // F = 0.5 and G = 0.55.
  close([await ratioLoss(b, p, 2).item()], [2 * (0.5 * 0.55 + 0.5 * 0.45)]);
  close([await ratioLoss(b, p, 3).item()], [1.5 * (2 * 0.5 * 0.55 + 0.5 * 0.45)]);
});

Deno.test("ratio loss gradient through probs only", async () => {
  const b = matrix([1, 0, 1, 0], [1, 4]);
  const p = matrix([1, 0.2, 0.6, 0.4], [1, 4]);
  p.requiresGrad = true;
  backward(ratioLoss(b, p, 2));
  // dL/dG = R/(R−1)·((R−1)·F − (1 − F)) = 0 at F = 1/R = 0.5; each p_t gets dL/dG / T.
  close(await p.grad!.data(), [0, 0, 0, 0]);
});

Deno.test("concept slots rounding", () => {
  assert.equal(conceptSlots(32, 2, 1), 16);
  assert.equal(conceptSlots(32, 1.5, 1), 22);
  assert.equal(conceptSlots(8, 1.5, 2), 8);
});

Deno.test("chunk plan with padding", async () => {
  const b = matrix([1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0], [2, 6]);
  const p = matrix([1, 0.1, 0.9, 0.8, 0.3, 0.2, 1, 0.4, 0.3, 0.2, 0.1, 0.4], [2, 6]);
  const plan = planChunks(b, p, 3);
  assert.deepEqual(plan.starts.shape, [2, 6, 3]);
  assert.deepEqual(plan.membership.shape, [2, 6, 3]);
  assert.deepEqual(plan.valid.shape, [2, 3, 1]);
  close(await plan.valid.data(), [1, 1, 1, 1, 0, 0]);
  close(await plan.kept.data(), [1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]);

  const oneHot = (k: number[]) => k.flatMap((j) => [0, 1, 2].map((i) => (i === j ? 1 : 0)));
  close(await plan.membership.data(), [
    ...oneHot([0, 0, 1, 2, 2, 2]),
    ...oneHot([0, 0, 0, 0, 0, 0]),
  ]);
  close(await plan.confidence.data(), [1, 0.9, 0.9, 0.8, 0.7, 0.8, 1, 0.6, 0.7, 0.8, 0.9, 0.6]);
});

Deno.test("chunk plan drops late boundaries", async () => {
  const b = matrix([1, 0, 1, 1, 0, 1], [1, 6]);
  const p = matrix([1, 0.2, 0.9, 0.8, 0.3, 0.7], [1, 6]);
  const plan = planChunks(b, p, 2);
  close(await plan.kept.data(), [1, 0, 1, 0, 0, 0]);
  const oneHot = (k: number[]) => k.flatMap((j) => [0, 1].map((i) => (i === j ? 1 : 0)));
  close(await plan.membership.data(), oneHot([0, 0, 1, 1, 1, 1]));
  close(await plan.valid.data(), [1, 1]);
});

Deno.test("merge select and sum", async () => {
  const b = matrix([1, 0, 1, 0], [1, 4]);
  const p = matrix([1, 0.2, 0.7, 0.1], [1, 4]);
  const h = matrix([1, 2, 3, 4, 5, 6, 7, 8], [1, 4, 2]);
  const plan = planChunks(b, p, 3);
  const selected = mergeChunks(h, plan, "select");
  assert.deepEqual(selected.shape, [1, 3, 2]);
  close(await selected.data(), [1, 2, 5, 6, 0, 0]);
  close(await mergeChunks(h, plan, "sum").data(), [4, 6, 12, 14, 0, 0]);
});

Deno.test("dechunk ema and broadcast", async () => {
  const b = matrix([1, 0, 1, 1], [1, 4]);
  const p = matrix([1, 0.2, 0.75, 0.6], [1, 4]);
  const h = matrix([0, 0, 0, 0], [1, 4, 1]);
  const plan = planChunks(b, p, 3);
  const conceptOut = matrix([2, 10, 20], [1, 3, 1]);
  const y = dechunk(h, conceptOut, plan);
  assert.deepEqual(y.shape, [1, 4, 1]);
  // z_0 = 2, z_1 = 0.25·2 + 0.75·10 = 8, z_2 = 0.4·8 + 0.6·20 = 15.2.
  close(await y.data(), [2, 2, 8, 15.2]);
});

Deno.test("concept path gradcheck through scorer", async () => {
  const batch = 2;
  const seqLen = 5;
  const dModel = 3;
  const rng = new Rng(5);
  const hValues = rng.normalArray(batch * seqLen * dModel);
  const wqValues = rng.normalArray(dModel * dModel);
  const wkValues = rng.normalArray(dModel * dModel);

  // Boundaries are decided once from the unperturbed inputs and held fixed, as in training.
  const boundaries = noGrad(() => {
    const h = Tensor.fromArray(cpu, hValues, [batch, seqLen, dModel], "f32");
    const wq = Tensor.fromArray(cpu, wqValues, [dModel, dModel], "f32");
    const wk = Tensor.fromArray(cpu, wkValues, [dModel, dModel], "f32");
    const p = boundaryProbsOf(matmul(h, wq, { transB: true }), matmul(h, wk, { transB: true }));
    return stepAtLeast(addScalar(p, -0.5));
  });
  const kept = await boundaries.data();
  assert.ok(kept.some((v, i) => i % seqLen !== 0 && v === 1), `boundaries ${Array.from(kept)}`);
  assert.ok(kept.some((v) => v === 0), `boundaries ${Array.from(kept)}`);

  for (const merge of ["select", "sum"] as const) {
    await gradcheck(
      cpu,
      `concept ${merge}`,
      [
        { shape: [batch, seqLen, dModel], values: hValues },
        { shape: [dModel, dModel], values: wqValues },
        { shape: [dModel, dModel], values: wkValues },
      ],
      (h, wq, wk) => {
        const p = boundaryProbsOf(
          matmul(h, wq, { transB: true }),
          matmul(h, wk, { transB: true }),
        );
        const plan = planChunks(boundaries, p, 4);
        const concepts = tanh(mergeChunks(h, plan, merge));
        return dechunk(h, concepts, plan, false);
      },
      { tolerance: 1e-6 },
    );
  }
});

Deno.test("dechunk straight-through gradient", async () => {
  const b = matrix([1, 0, 1], [1, 3]);
  const p = matrix([1, 0.2, 0.75], [1, 3]);
  p.requiresGrad = true;
  const plan = planChunks(b, p, 2);
  const y = dechunk(matrix([0, 0, 0], [1, 3, 1]), matrix([2, 10], [1, 2, 1]), plan);
  close(await y.data(), [2, 2, 8]);

  // dΣy/dp: token 1 gets −z_0 through q = 1 − p; token 2 gets z_1 = 8 through q = p plus the EMA
  // derivative dz_1/dq_1 = ĉ_1 − z_0 = 8. Token 0 gets z_0 = 2 through its q, 2 per token for
  // dz_0/dq_0 = ĉ_0 on tokens 0 and 1, and (1 − q_1)·2 = 0.5 through z_1.
  backward(sumAll(y));
  close(await p.grad!.data(), [2 + 4 + 0.5, -2, 8 + 8]);
});

function tinyOptions(concept: ConceptSpec | undefined): DecoderLmOptions {
  return {
    vocabSize: 13,
    maxSeqLen: 8,
    dModel: 8,
    numLayers: 3,
    numHeads: 2,
    dFF: 16,
    mlp: "gelu",
    norm: "rmsnorm",
    position: "rope",
    tieEmbeddings: true,
    normEps: 1e-5,
    initStd: 0.1,
    moe: {
      layers: "all",
      router: { name: "softmax-topk" },
      numExperts: 4,
      topK: 1,
      dFF: 8,
      auxLossWeight: 0.01,
    },
    concept,
  };
}

Deno.test("concept blocks get round(R·K) experts", () => {
  const model = new DecoderLM(cpu, new Rng(1), tinyOptions({ ratio: 2 }));
  const topKs = model.moeLayers().map(({ moe }) => moe.options.routedTopK);
  assert.deepEqual(topKs, [1, 2, 1]);
  model.dispose();
});

Deno.test("concept spec invalid depth", () => {
  assert.throws(
    () => new DecoderLM(cpu, new Rng(1), tinyOptions({ ratio: 2, encoderLayers: 2 })),
    /leave no concept block out of numLayers 3/,
  );
  assert.throws(() => new DecoderLM(cpu, new Rng(1), tinyOptions({ ratio: 1 })), /above 1/);
});

Deno.test("concept select merge is causal", async () => {
  const model = new DecoderLM(cpu, new Rng(2), tinyOptions({ ratio: 2, capacityFactor: 2 }));
  const first = [3, 1, 4, 1, 5, 9, 2, 6];
  const changed = [...first.slice(0, 5), 7, 8, 0];
  const logits = async (ids: number[]) =>
    await noGrad(() => model.forward(Tensor.fromArray(cpu, Int32Array.from(ids), [1, 8], "i32")))
      .data();
  const a = await logits(first);
  const b = await logits(changed);
  const prefix = 5 * 13;
  close(Array.from(b).slice(0, prefix), Array.from(a).slice(0, prefix), 1e-12);
  assert.ok(Math.abs(a[prefix + 3] - b[prefix + 3]) > 1e-9, "later logits did not change");
  model.dispose();
});

Deno.test("concept sum merge warns", () => {
  const messages: string[] = [];
  const warn = console.warn;
  console.warn = (message: string) => messages.push(message);
  try {
    new DecoderLM(cpu, new Rng(1), tinyOptions({ ratio: 2, merge: "sum" })).dispose();
  } finally {
    console.warn = warn;
  }
  assert.equal(messages.length, 1);
  assert.match(messages[0], /leaks the future/);
});

function tokenBatch(backend: Backend, seed: number) {
  const rng = new Rng(seed);
  const ids = Tensor.fromArray(backend, Int32Array.from({ length: 24 }, () => rng.int(13)), [3, 8]);
  const targets = Tensor.fromArray(
    backend,
    Int32Array.from({ length: 24 }, () => rng.int(13)),
    [24],
  );
  return { ids, targets };
}

/** Three AdamW steps of a tiny concept model on a fixed batch; returns the losses. */
async function trainThreeSteps(backend: Backend): Promise<number[]> {
  const model = new DecoderLM(backend, new Rng(21), tinyOptions({ ratio: 2 }));
  const optimizer = new AdamW(model.parameters(), {
    lr: 1e-2,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
  });
  const { ids, targets } = tokenBatch(backend, 22);
  const losses: number[] = [];
  for (let step = 0; step < 3; step++) {
    const loss = withScope(() => {
      const value = model.loss(ids, targets);
      backward(value);
      const grad = model.parameters().get("concept.query.weight")!.grad;
      assert.ok(grad !== null, "boundary scorer received no gradient");
      optimizer.update(1e-2);
      return value.detach();
    });
    losses.push(await loss.item());
    loss.dispose();
    zeroGrad(model.parameters().values());
  }
  const stats = model.concept!.stats!;
  const rate = await stats.boundaryRate.item();
  assert.ok(rate > 0 && rate <= 1, `boundary rate ${rate}`);
  optimizer.dispose();
  model.dispose();
  ids.dispose();
  targets.dispose();
  return losses;
}

let gpu: Backend | null = null;
try {
  gpu = await createWebGpuBackend();
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  console.warn(`webgpu concept tests skipped: ${error.message}`);
}

Deno.test("tiny concept model trains on cpu", async () => {
  const backend = createCpuBackend();
  const losses = await trainThreeSteps(backend);
  assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
  assert.ok(losses[2] < losses[0], `losses ${losses}`);
  assert.equal(backend.liveStorages(), 0, "storages leaked");
});

Deno.test({
  name: "tiny concept model cpu matches webgpu",
  ignore: gpu === null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const expected = await trainThreeSteps(createCpuBackend());
    const actual = await trainThreeSteps(gpu!);
    actual.forEach((loss, i) => {
      const error = Math.abs(loss - expected[i]) / Math.abs(expected[i]);
      assert.ok(error <= 1e-4, `step ${i + 1}: webgpu ${loss}, cpu ${expected[i]}`);
    });
  },
});

Deno.test({
  name: "webgpu concept tests dispose",
  ignore: gpu === null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => gpu!.dispose(),
});
