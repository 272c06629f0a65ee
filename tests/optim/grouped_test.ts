import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { DecoderLM } from "../../layers/models/decoder_lm.ts";
import { globalGradNorm, zeroGrad } from "../../optim/clip.ts";
import { createOptimizer, type OptimizerSettings } from "../../optim/create.ts";
import { lrFactor, type ScheduleOptions } from "../../optim/schedule.ts";
import { backward, Rng, Tensor, withScope } from "../../tensor/mod.ts";

const backend = createCpuBackend({ precision: "f64" });

const SETTINGS: OptimizerSettings = {
  name: "muon",
  lr: 0.01,
  weightDecay: 0.1,
  muon: { momentumWarmup: { start: 0.85, warmupSteps: 4 } },
};
const SCHEDULE: ScheduleOptions = { name: "cosine", warmupSteps: 5, minLrRatio: 0.1 };
const TOTAL_STEPS = 8;

function params(): Map<string, Tensor> {
  const rng = new Rng(1);
  const shapes: [string, number[]][] = [
    ["tokenEmbedding.weight", [10, 4]],
    ["blocks.0.mlp.up.weight", [6, 4]],
    ["blocks.0.mlp.down.weight", [4, 6]],
    ["blocks.0.norm1.weight", [4]],
    ["head.weight", [10, 4]],
  ];
  return new Map(shapes.map(([name, shape]) => {
    const p = Tensor.fromArray(backend, rng.normalArray(shape.reduce((a, b) => a * b, 1)), shape);
    p.requiresGrad = true;
    p.persistent = true;
    p.name = name;
    return [name, p];
  }));
}

/** Gradients that depend only on the step, so two runs see the same ones. */
function setGrads(model: Map<string, Tensor>, step: number): void {
  const rng = new Rng(100 + step);
  for (const p of model.values()) {
    p.grad?.dispose();
    p.grad = Tensor.fromArray(backend, rng.normalArray(p.size), p.shape);
    p.grad.persistent = true;
  }
}

async function snapshot(tensors: Map<string, Tensor>): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const [name, t] of tensors) out.set(name, [...await t.data()]);
  return out;
}

Deno.test("grouped optimizer resume mid warm-up", async () => {
  const uninterrupted = params();
  const a = createOptimizer(uninterrupted, SETTINGS).optimizer;
  for (let step = 0; step < 5; step++) {
    setGrads(uninterrupted, step);
    a.update(lrFactor(a.step, TOTAL_STEPS, SCHEDULE), null);
  }

  // Save after three updates, inside both warm-ups, then resume into fresh objects.
  const first = params();
  const b = createOptimizer(first, SETTINGS).optimizer;
  for (let step = 0; step < 3; step++) {
    setGrads(first, step);
    b.update(lrFactor(b.step, TOTAL_STEPS, SCHEDULE), null);
  }
  const savedWeights = await snapshot(first);
  const savedState = new Map(
    [...await snapshot(b.stateTensors())].map(([k, v]) => [k, Float64Array.from(v)]),
  );
  const savedStep = JSON.parse(JSON.stringify({ step: b.step })).step;

  const resumed = params();
  for (const [name, p] of resumed) {
    const restored = Tensor.fromArray(backend, savedWeights.get(name)!, p.shape);
    backend.copyAxis(restored.storage, p.storage, {
      outer: 1,
      inner: 1,
      srcAxisLen: p.size,
      dstAxisLen: p.size,
      srcStart: 0,
      dstStart: 0,
      len: p.size,
    });
  }
  const c = createOptimizer(resumed, SETTINGS).optimizer;
  c.loadState(savedState, savedStep);
  for (let step = 3; step < 5; step++) {
    setGrads(resumed, step);
    c.update(lrFactor(c.step, TOTAL_STEPS, SCHEDULE), null);
  }

  assert.equal(c.step, 5);
  assert.deepEqual(await snapshot(resumed), await snapshot(uninterrupted));
  assert.deepEqual(await snapshot(c.stateTensors()), await snapshot(a.stateTensors()));
});

Deno.test("grouped optimizer trains decoder", async () => {
  // A backend of its own, so the storage count starts at 0.
  const backend = createCpuBackend({ precision: "f64" });
  const rng = new Rng(3);
  const model = new DecoderLM(backend, rng, {
    vocabSize: 12,
    maxSeqLen: 6,
    dModel: 8,
    numLayers: 1,
    numHeads: 2,
    dFF: 16,
    mlp: "swiglu",
    norm: "rmsnorm",
    position: "rope",
    tieEmbeddings: false,
    normEps: 1e-5,
    initStd: 0.1,
  });
  const parameters = model.parameters();
  const { optimizer, warnings } = createOptimizer(parameters, { name: "muon", lr: 0.02 });
  const ids = Int32Array.from({ length: 12 }, (_, i) => i % 12);
  const inputs = Tensor.fromArray(backend, ids, [2, 6]);
  const targets = Tensor.fromArray(backend, ids.map((v) => (v + 1) % 12), [2, 6]);

  const losses: number[] = [];
  const live: number[] = [];
  for (let step = 0; step < 30; step++) {
    const loss = withScope(() => {
      const loss = model.loss(inputs, targets);
      backward(loss);
      const { coefficient } = globalGradNorm(parameters.values(), 1);
      optimizer.update(1, coefficient);
      return loss.detach();
    });
    zeroGrad(parameters.values());
    losses.push(await loss.item());
    loss.dispose();
    live.push(backend.liveStorages());
  }

  const muonGroup = optimizer.groups.find((g) => g.name === "muon")!;
  assert.deepEqual(warnings, []);
  assert.ok(muonGroup.paramNames.includes("blocks.0.mlp.gate.weight"));
  assert.ok(!muonGroup.paramNames.includes("head.weight"));
  assert.ok(losses[29] < 0.5 * losses[0], `loss ${losses[0]} -> ${losses[29]}`);
  assert.equal(live[29], live[0]);
  optimizer.dispose();
  model.dispose();
  inputs.dispose();
  targets.dispose();
  assert.equal(backend.liveStorages(), 0);
});
