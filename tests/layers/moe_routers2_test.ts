/**
 * The Graph-of-Tokens (similarity, attention), progressive and segment routers and Super Experts
 * profiling: dispatch plans against references computed here, the top-K schedule, the flagging
 * rule on a hand-built table, expert disabling, and a tiny MoE language model per router that
 * trains to the same losses on the CPU and WebGPU backends.
 */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createWebGpuBackend } from "../../kernels/webgpu/backend.ts";
import { DecoderLM, type DecoderLmOptions } from "../../layers/models/decoder_lm.ts";
import { MoeLayer, type MoeLayerOptions } from "../../layers/moe/moe_layer.ts";
import type { RouterSpec } from "../../layers/moe/routers/mod.ts";
import {
  type ProgressiveRouter,
  resolveTopKSchedule,
  scheduledTopK,
} from "../../layers/moe/routers/progressive.ts";
import { progressiveOptions } from "../../layers/moe/routers/progressive.ts";
import type { SegmentRouter } from "../../layers/moe/routers/segment.ts";
import { resolveMoe } from "../../layers/moe/spec.ts";
import {
  compareSuperExpertPruning,
  flagSuperExperts,
  percentile,
  profileSuperExperts,
} from "../../layers/moe/super_experts.ts";
import { AdamW } from "../../optim/adamw.ts";
import { zeroGrad } from "../../optim/clip.ts";
import { backward, Rng, Tensor, withScope } from "../../tensor/mod.ts";

const cpu = createCpuBackend({ precision: "f64" });
const D = 6;
const E = 4;

function layerOptions(router: RouterSpec, extra: Partial<MoeLayerOptions> = {}): MoeLayerOptions {
  return {
    ...resolveMoe({ layers: "all", router, numExperts: E, topK: 2, dFF: 8 }),
    dModel: D,
    router,
    initStd: 1,
    outputInitStd: 1,
    vocabSize: 11,
    ...extra,
  };
}

function randomX(backend: Backend, n: number, seed: number): Tensor {
  return Tensor.fromArray(backend, new Rng(seed).normalArray(n * D), [n, D], "f32");
}

async function values(t: Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

type Matrix = number[][];

function rows(flat: number[], width: number): Matrix {
  return Array.from(
    { length: flat.length / width },
    (_, i) => flat.slice(i * width, (i + 1) * width),
  );
}

function hostLogits(x: Matrix, w: Matrix): Matrix {
  return x.map((row) => w.map((wRow) => row.reduce((s, v, i) => s + v * wRow[i], 0)));
}

function hostSoftmax(row: number[]): number[] {
  const m = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - m));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

function hostTopK(row: number[], k: number): number[] {
  return row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k)
    .map(([, i]) => i);
}

/** Row i of graph·m for one sequence's graph [T, T] and rows m [T, E]. */
function hostMix(graph: Matrix, m: Matrix): Matrix {
  return graph.map((g) => m[0].map((_, e) => g.reduce((s, gj, j) => s + gj * m[j][e], 0)));
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, i) => {
    assert.ok(Math.abs(a - expected[i]) <= tol, `${what}[${i}]: ${a} vs ${expected[i]}`);
  });
}

/** Expected experts and weights of a graph router from per-sequence graphs, as the docs define. */
function graphReference(
  x: Matrix,
  w: Matrix,
  graphs: Matrix[],
  settings: { mix: "prob" | "logit"; weightsFrom: "smoothed" | "raw" },
  k: number,
): { experts: number[]; weights: number[] } {
  const logits = hostLogits(x, w);
  const probs = logits.map(hostSoftmax);
  const seqLen = graphs[0].length;
  const mixed: Matrix = [];
  graphs.forEach((graph, b) => {
    const slice = (m: Matrix) => m.slice(b * seqLen, (b + 1) * seqLen);
    if (settings.mix === "prob") mixed.push(...hostMix(graph, slice(probs)));
    else mixed.push(...hostMix(graph, slice(logits)).map(hostSoftmax));
  });
  const experts: number[] = [];
  const weights: number[] = [];
  mixed.forEach((row, t) => {
    const picked = hostTopK(row, k);
    const source = settings.weightsFrom === "smoothed" ? row : probs[t];
    const total = picked.reduce((s, e) => s + source[e], 0);
    experts.push(...picked);
    weights.push(...picked.map((e) => source[e] / total));
  });
  return { experts, weights };
}

// --- similarity and attention ----------------------------------------------------------------------

function causalCosineGraph(x: Matrix, temperature: number): Matrix {
  const unit = x.map((row) => {
    const norm = Math.sqrt(row.reduce((s, v) => s + v * v, 0));
    return row.map((v) => v / norm);
  });
  return unit.map((u, i) => {
    const scores = unit.slice(0, i + 1).map((v) =>
      u.reduce((s, a, j) => s + a * v[j], 0) / temperature
    );
    return [...hostSoftmax(scores), ...Array(x.length - i - 1).fill(0)];
  });
}

for (
  const settings of [
    { mix: "prob", weightsFrom: "smoothed" },
    { mix: "logit", weightsFrom: "raw" },
  ] as const
) {
  Deno.test(`similarity plan ${settings.mix} ${settings.weightsFrom} matches reference`, async () => {
    const spec = { name: "similarity", temperature: 0.5, ...settings };
    const router = new MoeLayer(cpu, new Rng(1), layerOptions(spec)).router;
    const x = randomX(cpu, 10, 2);
    const plan = router.route({ x, batch: 2, seqLen: 5, tokenIds: null });

    const xRows = rows(await values(x), D);
    const w = rows(await values((router as unknown as { weight: Tensor }).weight), D);
    const graphs = [
      causalCosineGraph(xRows.slice(0, 5), 0.5),
      causalCosineGraph(xRows.slice(5), 0.5),
    ];
    const expected = graphReference(xRows, w, graphs, settings, 2);
    assert.deepEqual(await values(plan.experts), expected.experts);
    assertClose(await values(plan.weights), expected.weights, 1e-12, "weights");
    assert.equal(plan.slotsPerToken, 2);
  });
}

Deno.test("similarity first token keeps own distribution", async () => {
  const router = new MoeLayer(cpu, new Rng(3), layerOptions({ name: "similarity" })).router;
  const x = randomX(cpu, 4, 4);
  const plan = router.route({ x, batch: 1, seqLen: 4, tokenIds: null });
  const w = rows(await values((router as unknown as { weight: Tensor }).weight), D);
  const own = hostSoftmax(hostLogits(rows(await values(x), D), w)[0]);
  assertClose((await values(plan.probs!)).slice(0, E), own, 1e-12, "token 0 probs");
});

/** Random causal row-stochastic probabilities [B, H, T, T] as a host array. */
function causalProbs(batch: number, heads: number, seqLen: number, seed: number): number[] {
  const rng = new Rng(seed);
  const out: number[] = [];
  for (let r = 0; r < batch * heads * seqLen; r++) {
    const i = r % seqLen;
    const raw = Array.from({ length: seqLen }, (_, j) => (j <= i ? rng.uniform() + 0.1 : 0));
    const total = raw.reduce((a, b) => a + b, 0);
    out.push(...raw.map((v) => v / total));
  }
  return out;
}

for (const head of ["mean", 1] as const) {
  Deno.test(`attention plan head ${head} matches reference`, async () => {
    const [batch, heads, seqLen] = [2, 3, 4];
    const router = new MoeLayer(cpu, new Rng(5), layerOptions({ name: "attention", head })).router;
    assert.equal(router.needsAttention, true);
    const x = randomX(cpu, batch * seqLen, 6);
    const hostProbs = causalProbs(batch, heads, seqLen, 7);
    const attentionProbs = Tensor.fromArray(cpu, hostProbs, [batch, heads, seqLen, seqLen], "f32");
    const plan = router.route({ x, batch, seqLen, tokenIds: null, attentionProbs });

    const graphs = Array.from({ length: batch }, (_, b) => {
      const headGraph = (h: number) =>
        rows(
          hostProbs.slice((b * heads + h) * seqLen * seqLen, (b * heads + h + 1) * seqLen * seqLen),
          seqLen,
        );
      if (head !== "mean") return headGraph(head);
      const all = Array.from({ length: heads }, (_, h) => headGraph(h));
      return all[0].map((row, i) =>
        row.map((_, j) => all.reduce((s, g) => s + g[i][j], 0) / heads)
      );
    });
    const w = rows(await values((router as unknown as { weight: Tensor }).weight), D);
    const expected = graphReference(rows(await values(x), D), w, graphs, {
      mix: "prob",
      weightsFrom: "smoothed",
    }, 2);
    assert.deepEqual(await values(plan.experts), expected.experts);
    assertClose(await values(plan.weights), expected.weights, 1e-12, "weights");
  });
}

Deno.test("attention router without probabilities names the option", () => {
  const layer = new MoeLayer(cpu, new Rng(1), layerOptions({ name: "attention" }));
  assert.throws(
    () => layer.forward(randomX(cpu, 4, 1).reshape([1, 4, D])),
    /model\.moe\.router\.name is attention.*similarity/,
  );
});

Deno.test("attention router head out of range", () => {
  const router = new MoeLayer(cpu, new Rng(1), layerOptions({ name: "attention", head: 3 })).router;
  const attentionProbs = Tensor.fromArray(cpu, causalProbs(1, 2, 3, 1), [1, 2, 3, 3], "f32");
  assert.throws(
    () =>
      router.route({ x: randomX(cpu, 3, 1), batch: 1, seqLen: 3, tokenIds: null, attentionProbs }),
    /model\.moe\.router\.head is 3 but the attention has 2 heads/,
  );
});

// --- progressive ---------------------------------------------------------------------------------

Deno.test("progressive schedule values", () => {
  const schedule = { startTopK: 4, endTopK: 1, decayStart: 0.1, decayEnd: 0.4 };
  const cases: [number, number][] = [[0, 4], [10, 4], [11, 4], [20, 3], [30, 2], [39, 2], [40, 1], [
    99,
    1,
  ]];
  for (const [step, k] of cases) {
    assert.equal(scheduledTopK(schedule, step, 100), k, `step ${step}`);
  }
});

Deno.test("progressive default start per layer", () => {
  const options = progressiveOptions.parse({});
  const startOf = (layerIndex: number) =>
    resolveTopKSchedule(options, { numExperts: 8, topK: 1, layerIndex, numLayers: 8 }).startTopK;
  // ⌈8/4⌉ = 2 low blocks: K = 4 at block 0, 2 at block 1, the end K elsewhere.
  assert.deepEqual([0, 1, 2, 7].map(startOf), [4, 2, 1, 1]);
  const listed = progressiveOptions.parse({ startTopK: [3], decayStart: [0, 0.3] });
  const context = { numExperts: 8, topK: 2, numLayers: 4 };
  const block1 = resolveTopKSchedule(listed, { ...context, layerIndex: 1 });
  assert.deepEqual(block1, { startTopK: 2, endTopK: 2, decayStart: 0.3, decayEnd: 0.4 });
  const block0 = resolveTopKSchedule(listed, { ...context, layerIndex: 0 });
  assert.deepEqual(block0, { startTopK: 3, endTopK: 2, decayStart: 0, decayEnd: 0.4 });
  const reversed = progressiveOptions.parse({ decayStart: 0.5, decayEnd: 0.2 });
  assert.throws(
    () => resolveTopKSchedule(reversed, { ...context, layerIndex: 0 }),
    /decayEnd is 0.2 but decayStart is 0.5 for block 0/,
  );
});

Deno.test("progressive rejects too many experts", () => {
  assert.throws(
    () => new MoeLayer(cpu, new Rng(1), layerOptions({ name: "progressive", startTopK: 5 })),
    /model\.moe\.router\.startTopK is 5 for block 0 but there are 4 routed experts/,
  );
});

Deno.test("progressive plan follows setStep", async () => {
  const layer = new MoeLayer(
    cpu,
    new Rng(2),
    layerOptions({ name: "progressive", startTopK: 3, endTopK: 1, decayStart: 0, decayEnd: 0.5 }),
  );
  const router = layer.router as ProgressiveRouter;
  const x = randomX(cpu, 5, 3);
  // K = ⌈3 − 2 · step / 5⌉ until step 5 of 10.
  for (const [step, k] of [[0, 3], [2, 3], [4, 2], [5, 1]]) {
    layer.setStep(step, 10);
    const plan = router.route({ x, batch: 1, seqLen: 5, tokenIds: null });
    assert.equal(plan.slotsPerToken, k, `step ${step}`);
    assert.equal(plan.experts.size, 5 * k, `step ${step} assignments`);
    const w = await values(plan.weights);
    if (k === 1) {
      const probs = await values(plan.probs!);
      const experts = await values(plan.experts);
      assertClose(w, experts.map((e, t) => probs[t * E + e]), 1e-12, "raw top-1 weights");
    } else {
      for (let t = 0; t < 5; t++) {
        const total = w.slice(t * k, (t + 1) * k).reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(total - 1) < 1e-12, `token ${t} weights sum ${total}`);
      }
    }
  }
});

// --- segment ---------------------------------------------------------------------------------------

for (const [omega, seqLen] of [[2, 6], [4, 6], [1, 3]]) {
  Deno.test(`segment plan omega ${omega} seqLen ${seqLen}`, async () => {
    const batch = 2;
    const layer = new MoeLayer(
      cpu,
      new Rng(4),
      layerOptions({ name: "segment", segmentLength: omega }),
    );
    const router = layer.router as SegmentRouter;
    const x = randomX(cpu, batch * seqLen, 5);
    const plan = router.route({ x, batch, seqLen, tokenIds: null });

    const xRows = rows(await values(x), D);
    const w = rows(await values(router.weight), D);
    const perSequence = Math.ceil(seqLen / omega);
    const experts: number[] = [];
    const weights: number[] = [];
    for (let b = 0; b < batch; b++) {
      for (let c = 0; c < perSequence; c++) {
        const members = xRows.slice(
          b * seqLen + c * omega,
          b * seqLen + Math.min((c + 1) * omega, seqLen),
        );
        const pooled = members[0].map((_, i) =>
          members.reduce((s, r) => s + r[i], 0) / members.length
        );
        const p = hostSoftmax(hostLogits([pooled], w)[0]);
        const picked = hostTopK(p, 2);
        const total = p[picked[0]] + p[picked[1]];
        for (let m = 0; m < members.length; m++) {
          experts.push(...picked);
          weights.push(...picked.map((e) => p[e] / total));
        }
      }
    }
    assert.deepEqual(await values(plan.experts), experts);
    assertClose(await values(plan.weights), weights, 1e-12, "weights");
    assert.deepEqual(
      await values(plan.tokens),
      Array.from({ length: batch * seqLen * 2 }, (_, a) => a >> 1),
    );
    assert.equal(router.usesLaterTokens, omega > 1);
  });
}

Deno.test("segment length list per block", () => {
  const spec = { name: "segment", segmentLength: [3, 5] };
  const block1 = new MoeLayer(cpu, new Rng(1), layerOptions(spec, { layerIndex: 1 }));
  assert.equal((block1.router as SegmentRouter).segmentLength, 5);
  assert.throws(
    () => new MoeLayer(cpu, new Rng(1), layerOptions(spec, { layerIndex: 2 })),
    /segmentLength lists 2 lengths but block 2 has an MoE layer/,
  );
});

Deno.test("segment shared gate needs shared experts", () => {
  assert.throws(
    () => new MoeLayer(cpu, new Rng(1), layerOptions({ name: "segment", sharedExpertGate: true })),
    /sharedExpertGate is true but the layer has no shared experts/,
  );
  const spec = { name: "segment", sharedExpertGate: true, segmentLength: 3 };
  const options = layerOptions(spec, {
    ...resolveMoe({
      layers: "all",
      router: spec,
      numExperts: 4,
      topK: 2,
      dFF: 8,
      sharedExperts: 1,
    }),
  });
  const layer = new MoeLayer(cpu, new Rng(1), options);
  const { y } = layer.forward(randomX(cpu, 7, 2).reshape([1, 7, D]));
  assert.deepEqual(y.shape, [1, 7, D]);
  assert.ok(layer.parameters().has("router.sharedGate"));
});

// --- super experts ---------------------------------------------------------------------------------

Deno.test("percentile interpolates like numpy", () => {
  assert.equal(percentile([1, 2, 3, 4], 50), 2.5);
  assert.equal(percentile([5], 99.5), 5);
  assertClose([percentile([0, 10], 99.5)], [9.95], 1e-12, "two values");
});

Deno.test("super experts flagged by rule", () => {
  const peaks = (special: Record<number, number>) =>
    Array.from({ length: 8 }, (_, e) => special[e] ?? 1 + e * 0.01);
  const table = {
    numLayers: 4,
    layers: [
      { layer: 0, peaks: peaks({ 2: 45 }) },
      { layer: 1, peaks: peaks({ 5: 50 }) },
      { layer: 2, peaks: peaks({}) },
      // Block 3 is past round(0.75 · 4) = 3, so its larger peak is not a candidate.
      { layer: 3, peaks: peaks({ 0: 500 }) },
    ],
  };
  // 24 candidates: the 99.5th percentile is 45 + 0.885 · 5 ≈ 49.4 and floor(50 / 10) = 5.
  assert.deepEqual(flagSuperExperts(table), [{ layer: 1, expert: 5, peak: 50 }]);
  assert.deepEqual(
    flagSuperExperts({ numLayers: 4, layers: [{ layer: 0, peaks: [1, 1, 1, 1] }] }),
    [],
  );
});

Deno.test("disabled experts zero the routed output", async () => {
  const layer = new MoeLayer(cpu, new Rng(1), layerOptions({ name: "softmax-topk" }));
  const x = randomX(cpu, 5, 2).reshape([1, 5, D]);
  layer.disabledExperts = [0, 1, 2, 3];
  assert.ok((await values(layer.forward(x).y)).every((v) => v === 0));
  layer.disabledExperts = [];
  assert.ok((await values(layer.forward(x).y)).some((v) => v !== 0));
  assert.throws(() => {
    layer.disabledExperts = [4];
  }, /disabledExperts contains 4/);
  layer.dispose();
});

// --- model -----------------------------------------------------------------------------------------

function tinyOptions(router: RouterSpec): DecoderLmOptions {
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
      layers: "all",
      router,
      numExperts: 4,
      topK: 2,
      dFF: 8,
      sharedExperts: router.name === "segment" ? 1 : 0,
      auxLossWeight: 0.01,
      zLossWeight: 0.001,
    },
  };
}

function tokenBatch(backend: Backend, seed: number) {
  const rng = new Rng(seed);
  const ids = Tensor.fromArray(backend, Int32Array.from({ length: 24 }, () => rng.int(13)), [3, 8]);
  const targets = Tensor.fromArray(backend, Int32Array.from({ length: 24 }, () => rng.int(13)), [
    24,
  ]);
  return { ids, targets };
}

/** Three AdamW steps on a fixed batch, with the step passed to the routers; returns the losses. */
async function trainThreeSteps(backend: Backend, router: RouterSpec): Promise<number[]> {
  const model = new DecoderLM(backend, new Rng(21), tinyOptions(router));
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
    model.setStep(step, 3);
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
  assert.ok(model.parameters().has("blocks.0.moe.router.weight"));
  optimizer.dispose();
  model.dispose();
  ids.dispose();
  targets.dispose();
  return losses;
}

const NEW_ROUTERS: RouterSpec[] = [
  { name: "similarity" },
  { name: "attention" },
  { name: "progressive", startTopK: 3, endTopK: 1, decayStart: 0, decayEnd: 1 },
  { name: "segment", segmentLength: [3, 2], sharedExpertGate: true },
];

let gpu: Backend | null = null;
try {
  gpu = await createWebGpuBackend();
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  console.warn(`webgpu router tests skipped: ${error.message}`);
}

Deno.test("tiny moe model trains on cpu for new routers", async () => {
  const warn = console.warn;
  console.warn = () => {};
  try {
    for (const router of NEW_ROUTERS) {
      const backend = createCpuBackend();
      const losses = await trainThreeSteps(backend, router);
      assert.ok(losses.every(Number.isFinite), `${router.name}: losses ${losses}`);
      assert.ok(losses[2] < losses[0], `${router.name}: losses ${losses}`);
      assert.equal(backend.liveStorages(), 0, `${router.name}: storages leaked`);
    }
  } finally {
    console.warn = warn;
  }
});

Deno.test("segment router warns in decoder lm", () => {
  const messages: string[] = [];
  const warn = console.warn;
  console.warn = (message: string) => messages.push(message);
  try {
    new DecoderLM(cpu, new Rng(1), tinyOptions({ name: "segment" })).dispose();
  } finally {
    console.warn = warn;
  }
  assert.equal(messages.length, 1);
  assert.match(
    messages[0],
    /model\.moe\.router "segment" routes each token with the states of later/,
  );
});

Deno.test("super expert profiling on tiny model", async () => {
  const model = new DecoderLM(cpu, new Rng(3), tinyOptions({ name: "softmax-topk" }));
  const batches = [tokenBatch(cpu, 1), tokenBatch(cpu, 2)];
  const table = await profileSuperExperts(model, batches);
  assert.deepEqual(table.layers.map((l) => l.layer), [0, 1]);
  assert.equal(table.numLayers, 2);
  for (const { peaks } of table.layers) {
    assert.equal(peaks.length, 4);
    assert.ok(peaks.every((p) => Number.isFinite(p) && p >= 0), `peaks ${peaks}`);
    assert.ok(peaks.some((p) => p > 0), `peaks ${peaks}`);
  }
  assert.equal(model.moeLayers()[0].moe.lastExpertOutputs !== null, true);

  const none = await compareSuperExpertPruning(model, batches, [], new Rng(4));
  assert.equal(none.superLoss, none.baseLoss);
  const one = await compareSuperExpertPruning(
    model,
    batches,
    [{ layer: 0, expert: 1 }],
    new Rng(4),
    2,
  );
  assert.equal(one.randomLosses.length, 2);
  assert.notEqual(one.superLoss, one.baseLoss);
  assert.deepEqual(model.moeLayers()[0].moe.disabledExperts, []);
  model.dispose();
  for (const b of batches) {
    b.ids.dispose();
    b.targets.dispose();
  }
});

for (const router of NEW_ROUTERS) {
  Deno.test({
    name: `tiny moe model ${router.name} cpu matches webgpu`,
    ignore: gpu === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const warn = console.warn;
      console.warn = () => {};
      try {
        const expected = await trainThreeSteps(createCpuBackend(), router);
        const actual = await trainThreeSteps(gpu!, router);
        actual.forEach((loss, i) => {
          const error = Math.abs(loss - expected[i]) / Math.abs(expected[i]);
          assert.ok(error <= 1e-4, `step ${i + 1}: webgpu ${loss}, cpu ${expected[i]}`);
        });
      } finally {
        console.warn = warn;
      }
    },
  });
}

Deno.test({
  name: "webgpu router tests dispose",
  ignore: gpu === null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await gpu!.dispose();
  },
});
