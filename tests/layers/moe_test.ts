/**
 * The MoE layer, its routers and routing diagnostics: dispatch plans against references computed
 * here, balance and z-losses, the aux-free bias update, capacity dropping, and a tiny MoE
 * language model that trains to the same losses on the CPU and WebGPU backends.
 */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createWebGpuBackend } from "../../kernels/webgpu/backend.ts";
import {
  coefficientOfVariation,
  deadExperts,
  dropRate,
  expertLoad,
  maxViolation,
  meanEntropy,
  routingFluctuation,
  routingMetrics,
  tokenExpertSets,
} from "../../layers/moe/diagnostics.ts";
import { MoeLayer, type MoeLayerOptions } from "../../layers/moe/moe_layer.ts";
import { loadBalanceLoss, zLoss } from "../../layers/moe/router.ts";
import type { RouterSpec } from "../../layers/moe/routers/mod.ts";
import type { HashRouter } from "../../layers/moe/routers/hash.ts";
import type { TokenChoiceRouter } from "../../layers/moe/routers/softmax_topk.ts";
import { resolveMoe } from "../../layers/moe/spec.ts";
import { DecoderLM, type DecoderLmOptions } from "../../layers/models/decoder_lm.ts";
import { AdamW } from "../../optim/adamw.ts";
import { zeroGrad } from "../../optim/clip.ts";
import { backward, Rng, sumAll, Tensor, withScope } from "../../tensor/mod.ts";

const cpu = createCpuBackend({ precision: "f64" });

function layerOptions(router: RouterSpec, extra: Partial<MoeLayerOptions> = {}): MoeLayerOptions {
  return {
    ...resolveMoe({ layers: "all", router, numExperts: 4, topK: 2, dFF: 8 }),
    dModel: 6,
    router,
    initStd: 1,
    outputInitStd: 1,
    vocabSize: 11,
    ...extra,
  };
}

function randomX(backend: Backend, n: number, d: number, seed: number): Tensor {
  return Tensor.fromArray(backend, new Rng(seed).normalArray(n * d), [n, d], "f32");
}

async function ints(t: Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

async function floats(t: Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

/** Row-major x [n, d] times Wᵀ for W [E, d], on the host. */
function hostLogits(x: ArrayLike<number>, w: ArrayLike<number>, n: number, d: number, e: number) {
  return Array.from({ length: n }, (_, t) =>
    Array.from({ length: e }, (_, j) => {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[t * d + i] * w[j * d + i];
      return s;
    }));
}

function hostSoftmax(row: number[]): number[] {
  const m = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - m));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

/** Indices of the k largest values, ties to the lower index. */
function hostTopK(row: number[], k: number): number[] {
  return row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k)
    .map(([, i]) => i);
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, i) => {
    assert.ok(Math.abs(a - expected[i]) <= tol, `${what}[${i}]: ${a} vs ${expected[i]}`);
  });
}

// --- plans against references --------------------------------------------------------------------

Deno.test("softmax-topk plan matches reference", async () => {
  const router = new MoeLayer(cpu, new Rng(1), layerOptions({ name: "softmax-topk" })).router;
  const x = randomX(cpu, 7, 6, 2);
  const plan = router.route({ x, batch: 1, seqLen: 7, tokenIds: null });
  const w = await floats((router as TokenChoiceRouter).weight);
  const probs = hostLogits(await floats(x), w, 7, 6, 4).map(hostSoftmax);

  const experts: number[] = [];
  const weights: number[] = [];
  for (const p of probs) {
    const picked = hostTopK(p, 2);
    const total = p[picked[0]] + p[picked[1]];
    experts.push(...picked);
    weights.push(...picked.map((e) => p[e] / total));
  }
  assert.deepEqual(await ints(plan.experts), experts);
  assert.deepEqual(await ints(plan.tokens), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
  assertClose(await floats(plan.weights), weights, 1e-12, "weights");
  assertClose(await floats(plan.probs!), probs.flat(), 1e-12, "probs");
});

Deno.test("softmax-topk top-1 keeps raw probability", async () => {
  const options = layerOptions({ name: "softmax-topk" });
  const router = new MoeLayer(cpu, new Rng(1), { ...options, routedTopK: 1 }).router;
  const x = randomX(cpu, 5, 6, 3);
  const plan = router.route({ x, batch: 1, seqLen: 5, tokenIds: null });
  const probs = await floats(plan.probs!);
  const experts = await ints(plan.experts);
  const expected = experts.map((e, t) => probs[t * 4 + e]);
  assertClose(await floats(plan.weights), expected, 1e-12, "weights");
});

Deno.test("deepseek plan uses raw softmax gates", async () => {
  const router = new MoeLayer(cpu, new Rng(4), layerOptions({ name: "deepseek" })).router;
  const x = randomX(cpu, 6, 6, 5);
  const plan = router.route({ x, batch: 1, seqLen: 6, tokenIds: null });
  const probs = await floats(plan.probs!);
  const experts = await ints(plan.experts);
  const expected = experts.map((e, a) => probs[Math.floor(a / 2) * 4 + e]);
  assertClose(await floats(plan.weights), expected, 1e-12, "weights");
});

Deno.test("deepseek device balance loss matches reference", async () => {
  const spec = { name: "deepseek", deviceGroups: 2, deviceBalanceWeight: 0.5 };
  const layer = new MoeLayer(cpu, new Rng(6), layerOptions(spec, { auxLossWeight: 0 }));
  const plan = layer.router.route({
    x: randomX(cpu, 8, 6, 7),
    batch: 1,
    seqLen: 8,
    tokenIds: null,
  });
  const probs = await floats(plan.probs!);
  const load = expertLoad(await ints(plan.experts), 4);
  // f_i = N'/(K'·T)·count_i; f'_d = mean over the group, P'_d = sum of mean probabilities.
  const f = Array.from(load, (c) => (4 / (2 * 8)) * c);
  const p = [0, 1, 2, 3].map((e) =>
    probs.filter((_, i) => i % 4 === e).reduce((a, b) => a + b) / 8
  );
  const expected = 0.5 *
    (((f[0] + f[1]) / 2) * (p[0] + p[1]) + ((f[2] + f[3]) / 2) * (p[2] + p[3]));
  assertClose([await plan.auxLosses.deviceBalance.item()], [expected], 1e-12, "deviceBalance");
});

Deno.test("expert-choice plan matches reference", async () => {
  const layer = new MoeLayer(
    cpu,
    new Rng(8),
    layerOptions({ name: "expert-choice", capacityFactor: 2 }),
  );
  const batch = 4;
  const seqLen = 3;
  const x = randomX(cpu, batch * seqLen, 6, 9);
  const plan = layer.router.route({ x, batch, seqLen, tokenIds: null });
  const probs = await floats(plan.probs!);
  const c = 2; // ceil(4 · 2 / 4)

  const tokens: number[] = [];
  const experts: number[] = [];
  for (let t = 0; t < seqLen; t++) {
    for (let e = 0; e < 4; e++) {
      const candidates = Array.from({ length: batch }, (_, b) => probs[(b * seqLen + t) * 4 + e]);
      for (const b of hostTopK(candidates, c)) {
        tokens.push(b * seqLen + t);
        experts.push(e);
      }
    }
  }
  assert.deepEqual(await ints(plan.tokens), tokens);
  assert.deepEqual(await ints(plan.experts), experts);
});

Deno.test("expert-choice ignores later positions", async () => {
  const layer = new MoeLayer(cpu, new Rng(8), layerOptions({ name: "expert-choice" }));
  const batch = 4;
  const seqLen = 3;
  const values = new Rng(10).normalArray(batch * seqLen * 6);
  const changed = values.slice();
  // Change every token at the last position.
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < 6; i++) changed[(b * seqLen + seqLen - 1) * 6 + i] += 3;
  }
  const route = async (data: Float64Array) => {
    const x = Tensor.fromArray(cpu, data, [batch * seqLen, 6], "f32");
    const plan = layer.router.route({ x, batch, seqLen, tokenIds: null });
    const tokens = await ints(plan.tokens);
    // Entries (t, e, j) with t < seqLen − 1 come first.
    return tokens.slice(0, (seqLen - 1) * 4 * 2);
  };
  assert.deepEqual(await route(changed), await route(values));
});

Deno.test("hash plan follows the table", async () => {
  const layer = new MoeLayer(cpu, new Rng(11), layerOptions({ name: "hash" }));
  const router = layer.router as HashRouter;
  const ids = [3, 0, 10, 3];
  const tokenIds = Tensor.fromArray(cpu, Int32Array.from(ids), [4], "i32");
  const plan = router.route({ x: randomX(cpu, 4, 6, 1), batch: 1, seqLen: 4, tokenIds });
  const table = await router.tableValues();
  assert.deepEqual(
    await ints(plan.experts),
    ids.flatMap((id) => [table[id * 2], table[id * 2 + 1]]),
  );
  for (const id of ids) assert.notEqual(table[id * 2], table[id * 2 + 1]);
  assert.deepEqual(await floats(plan.weights), Array(8).fill(0.5));
});

Deno.test("random plan draws distinct experts", async () => {
  const layer = new MoeLayer(cpu, new Rng(12), layerOptions({ name: "random" }));
  const plan = layer.router.route({
    x: randomX(cpu, 9, 6, 1),
    batch: 1,
    seqLen: 9,
    tokenIds: null,
  });
  const experts = await ints(plan.experts);
  for (let t = 0; t < 9; t++) {
    assert.notEqual(experts[2 * t], experts[2 * t + 1], `token ${t} got one expert twice`);
    assert.ok(experts.slice(2 * t, 2 * t + 2).every((e) => e >= 0 && e < 4));
  }
});

// --- losses ---------------------------------------------------------------------------------------

Deno.test("switch loss equals alpha at balance", async () => {
  const alpha = 0.01;
  const probs = Tensor.full(cpu, [8, 4], 0.25);
  const experts = Tensor.fromArray(cpu, Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3]), [8], "i32");
  const loss = await loadBalanceLoss(probs, experts, 1).item();
  assert.ok(Math.abs(alpha * loss - alpha) < 1e-15, `α·loss is ${alpha * loss}`);

  const skewed = Tensor.fromArray(cpu, Int32Array.from(Array(8).fill(0)), [8], "i32");
  const skewedProbs = Tensor.fromArray(
    cpu,
    [0.7, 0.1, 0.1, 0.1].flatMap((p) => [p]).concat(
      ...Array(7).fill([0.7, 0.1, 0.1, 0.1]),
    ),
    [8, 4],
  );
  assert.ok(await loadBalanceLoss(skewedProbs, skewed, 1).item() > 1);
});

Deno.test("z-loss of large logits stays finite", async () => {
  const f32 = createCpuBackend({ precision: "f32" });
  const logits = Tensor.fromArray(f32, [1000, 0], [1, 2]);
  assert.equal(await zLoss(logits).item(), 1e6);
});

// --- aux-free bias --------------------------------------------------------------------------------

Deno.test("aux-free bias moves toward balance", async () => {
  const rate = 0.01;
  const layer = new MoeLayer(
    cpu,
    new Rng(13),
    layerOptions({ name: "aux-free", biasUpdateRate: rate }, { routedTopK: 1, auxLossWeight: 0 }),
  );
  const router = layer.router as TokenChoiceRouter;
  // Feature 0 is 1 for every token, and the router weights it by 5 for expert 0 only, so every
  // token prefers expert 0; the other features give each token its own ranking of the rest.
  const rng = new Rng(14);
  const weight = Array.from(rng.normalArray(24, 0.3));
  for (let e = 0; e < 4; e++) weight[e * 6] = e === 0 ? 5 : 0;
  Object.assign(router, { weight: Tensor.fromArray(cpu, weight, [4, 6]) });
  const xValues = Array.from(rng.normalArray(8 * 6));
  for (let t = 0; t < 8; t++) xValues[t * 6] = 1;
  const x = Tensor.fromArray(cpu, xValues, [8, 6]);
  const plan = router.route({ x, batch: 1, seqLen: 8, tokenIds: null });
  const load = expertLoad(await ints(plan.experts), 4);
  assert.deepEqual(Array.from(load), [8, 0, 0, 0]);

  router.afterStep();
  assert.deepEqual(await floats(router.bias!), [-rate, rate, rate, rate]);

  // After enough steps the bias overcomes the preference and the load spreads.
  for (let step = 0; step < 200; step++) {
    router.route({ x, batch: 1, seqLen: 8, tokenIds: null });
    router.afterStep();
  }
  const after = expertLoad(
    await ints(router.route({ x, batch: 1, seqLen: 8, tokenIds: null }).experts),
    4,
  );
  assert.ok(maxViolation(after) < maxViolation(load), `load ${Array.from(after)}`);
  layer.dispose();
});

// --- capacity and degenerate dispatch --------------------------------------------------------------

/** Builds a top-1 layer over 4 experts whose router sends all 5 tokens to expert 0. */
function overflowLayer(policy: "position" | "probability") {
  const layer = new MoeLayer(
    cpu,
    new Rng(15),
    layerOptions({ name: "softmax-topk" }, {
      routedTopK: 1,
      capacityFactor: 3, // C = ceil(5 / 4 · 3) = 4
      dropPolicy: policy,
    }),
  );
  Object.assign(layer.router, {
    weight: Tensor.fromArray(cpu, [
      ...[1, 0, 0, 0, 0, 0],
      ...Array(18).fill(0),
    ], [4, 6]),
  });
  // Token t has first feature [3, 5, 1, 4, 2][t], so token 2 has the lowest probability for expert 0.
  const x = Tensor.fromArray(
    cpu,
    [3, 5, 1, 4, 2].flatMap((v) => [v, 0, 0, 0, 0, 0]),
    [5, 6],
  );
  x.requiresGrad = true;
  const { y } = layer.forward(x);
  return { layer, x, y, record: layer.lastRouting! };
}

for (const [policy, dropped] of [["position", 4], ["probability", 2]] as const) {
  Deno.test(`capacity drops one token by ${policy}`, async () => {
    const { layer, x, y, record } = await overflowLayer(policy);
    const kept = await ints(record.keptExperts);
    const expected = [0, 0, 0, 0, 0];
    expected[dropped] = -1;
    assert.deepEqual(kept, expected);
    assert.equal(record.capacity, 4);
    const out = await floats(y);
    assert.ok(out.slice(dropped * 6, dropped * 6 + 6).every((v) => v === 0), "dropped row is 0");
    const metrics = await routingMetrics(record);
    assert.equal(metrics.drop_rate, 0.2);
    backward(sumAll(y));
    assert.ok(Array.from(await x.grad!.data()).every(Number.isFinite));
    layer.dispose();
  });
}

Deno.test("every token to expert 0 runs forward and backward", async () => {
  const layer = new MoeLayer(
    cpu,
    new Rng(16),
    layerOptions({ name: "softmax-topk" }, { routedTopK: 1 }),
  );
  Object.assign(layer.router, {
    weight: Tensor.fromArray(cpu, [
      ...Array(6).fill(1),
      ...Array(18).fill(0),
    ], [4, 6]),
  });
  const x = Tensor.fromArray(cpu, new Rng(17).uniformArray(24, 0.5, 1), [4, 6]);
  x.requiresGrad = true;
  const { y } = layer.forward(x);
  backward(sumAll(y));
  assert.deepEqual(await ints(layer.lastRouting!.keptExperts), [0, 0, 0, 0]);
  assert.ok(Array.from(await x.grad!.data()).every(Number.isFinite));
  const upGrad = await floats(layer.experts.up.grad!);
  const perExpert = upGrad.length / 4;
  assert.ok(upGrad.slice(perExpert).every((v) => v === 0), "empty experts get zero gradient");
  assert.ok(upGrad.slice(0, perExpert).some((v) => v !== 0));
  layer.dispose();
});

// --- diagnostics ----------------------------------------------------------------------------------

Deno.test("diagnostics on a known load", () => {
  const load = expertLoad([0, 0, 0, 1, -1, 2, 0, 1], 4);
  assert.deepEqual(Array.from(load), [4, 2, 1, 0]);
  assert.equal(maxViolation(load), (4 - 1.75) / 1.75);
  assert.equal(deadExperts(load), 1);
  const std = Math.sqrt(((4 - 1.75) ** 2 + (2 - 1.75) ** 2 + (1 - 1.75) ** 2 + 1.75 ** 2) / 4);
  assert.equal(coefficientOfVariation(load), std / 1.75);
  assert.equal(dropRate([0, 1, -1, 2], [0, -1, -1, 2]), 1 / 3);
  assert.ok(Math.abs(meanEntropy([0.5, 0.5, 1, 0], 2) - Math.log(2) / 2) < 1e-15);
});

Deno.test("routing fluctuation identical and changed", () => {
  const before = tokenExpertSets([0, 0, 1, 1], [2, 0, 1, 3], 2);
  assert.deepEqual(before, [[2, 0], [1, 3]]);
  assert.deepEqual(routingFluctuation(before, before), { topKSet: 0, top1: 0 });
  assert.deepEqual(routingFluctuation(before, [[1, 3], [0, 2]]), { topKSet: 1, top1: 1 });
  // Same set in another order: the set is unchanged but the top-1 expert changed.
  assert.deepEqual(routingFluctuation(before, [[0, 2], [1, 3]]), { topKSet: 0, top1: 0.5 });
});

// --- model -----------------------------------------------------------------------------------------

function tinyMoeOptions(router: RouterSpec): DecoderLmOptions {
  return {
    vocabSize: 13,
    maxSeqLen: 8,
    dModel: 8,
    numLayers: 2,
    numHeads: 2,
    dFF: 16,
    mlp: "gelu",
    norm: "rmsnorm",
    position: "rope",
    tieEmbeddings: true,
    normEps: 1e-5,
    initStd: 0.1,
    moe: {
      layers: "every-other",
      router,
      numExperts: 4,
      topK: 2,
      dFF: 8,
      sharedExperts: 1,
      granularity: 2,
      ffn: "swiglu",
      auxLossWeight: 0.01,
      zLossWeight: 0.001,
    },
  };
}

/** Three AdamW steps on a fixed batch; returns the losses. */
async function trainThreeSteps(backend: Backend, router: RouterSpec): Promise<number[]> {
  const model = new DecoderLM(backend, new Rng(21), tinyMoeOptions(router));
  const optimizer = new AdamW(model.parameters(), {
    lr: 1e-2,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
  });
  const rng = new Rng(22);
  const ids = Tensor.fromArray(backend, Int32Array.from({ length: 24 }, () => rng.int(13)), [3, 8]);
  const targets = Tensor.fromArray(backend, Int32Array.from({ length: 24 }, () => rng.int(13)), [
    24,
  ]);
  const losses: number[] = [];
  for (let step = 0; step < 3; step++) {
    const loss = withScope(() => {
      const value = model.loss(ids, targets);
      backward(value);
      optimizer.update(1e-2);
      return value.detach();
    });
    model.afterStep();
    losses.push(await loss.item());
    loss.dispose();
    zeroGrad(model.parameters().values());
  }
  const routing = model.routing();
  assert.deepEqual(routing.map((r) => r.layer), [1]);
  const metrics = await routingMetrics(routing[0].record);
  assert.ok(Number.isFinite(metrics.max_vio), `max_vio ${metrics.max_vio}`);
  if (router.name !== "hash" && router.name !== "random") {
    assert.ok(model.parameters().has("blocks.1.moe.router.weight"));
  }
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
  console.warn(`webgpu moe model test skipped: ${error.message}`);
}

for (const router of [{ name: "softmax-topk" }, { name: "aux-free" }] as RouterSpec[]) {
  Deno.test({
    name: `tiny moe model ${router.name} cpu matches webgpu`,
    ignore: gpu === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const f32 = createCpuBackend();
      const expected = await trainThreeSteps(f32, router);
      assert.equal(f32.liveStorages(), 0, "cpu storages leaked");
      assert.ok(expected[2] < expected[0], `losses ${expected}`);
      const actual = await trainThreeSteps(gpu!, router);
      actual.forEach((loss, i) => {
        const error = Math.abs(loss - expected[i]) / Math.abs(expected[i]);
        assert.ok(error <= 1e-4, `step ${i + 1}: webgpu ${loss}, cpu ${expected[i]}`);
      });
    },
  });
}

Deno.test({
  name: "tiny moe model trains on cpu for every router",
  fn: async () => {
    for (const name of ["deepseek", "expert-choice", "hash", "random"]) {
      const backend = createCpuBackend();
      const losses = await trainThreeSteps(backend, { name });
      assert.ok(losses.every(Number.isFinite), `${name}: losses ${losses}`);
      assert.equal(backend.liveStorages(), 0, `${name}: storages leaked`);
    }
  },
});

Deno.test({
  name: "webgpu moe layer tests dispose",
  ignore: gpu === null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await gpu!.dispose();
  },
});
